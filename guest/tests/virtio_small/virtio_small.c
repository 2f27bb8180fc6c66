/*
 * virtio-rng (and, with "console" on the command line, virtio-console):
 * random bytes arrive and are not all alike; a line written to the
 * console's transmit queue comes out. Runs against fdvm's devices and
 * QEMU's virtio-rng-pci.
 */
#include "rt.h"
#include "virtio.h"

static struct vdev dev;
static struct vq q;
static uint8_t buf[4096] __attribute__((aligned(64)));

static long wait_used(void *arg)
{
	uint32_t *len = arg;
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 6000000000ull;)
		if (vq_get(&q, len))
			return 1;
	return 0;
}

int guest_main(const char *cmdline)
{
	bool console = rt_cmdline_has("console");
	(void)cmdline;
	rt_tap_plan(console ? 5 : 3);

	if (!virtio_find(4, 0, &dev))
		rt_needs("a virtio-rng device", "fdvm run --device virtio-rng GUEST.elf "
			 "(and --device virtio-console with the argument console)");
	bool ok = virtio_find(4, 0, &dev) && virtio_negotiate(&dev, 0) &&
		  virtio_setup_vq(&dev, &q, 0, 16, 0xffff);
	rt_tap_ok(ok, "virtio-rng up");
	if (!ok)
		return rt_tap_done();
	virtio_driver_ok(&dev);
	struct vbuf b = { (uint64_t)buf, sizeof(buf), true };
	uint32_t len = 0;
	vq_add(&q, &b, 1, buf);
	vq_kick(&q);
	bool got = rt_user_call(wait_used, &len);
	unsigned distinct = 0;
	bool seen[256] = { 0 };
	for (uint32_t i = 0; i < len && i < sizeof(buf); i++)
		if (!seen[buf[i]]) {
			seen[buf[i]] = true;
			distinct++;
		}
	rt_tap_ok(got && len > 0, "%u random bytes", (unsigned)len);
	rt_tap_ok(distinct > 200, "%u distinct byte values", distinct);

	if (console) {
		ok = virtio_find(3, 0, &dev) && virtio_negotiate(&dev, 0) &&
		     virtio_setup_vq(&dev, &q, 1, 16, 0xffff);
		rt_tap_ok(ok, "virtio-console up (transmitq0)");
		virtio_driver_ok(&dev);
		static const char line[] = "# hello through virtio-console\n";
		struct vbuf t = { (uint64_t)line, sizeof(line) - 1, false };
		vq_add(&q, &t, 1, (void *)line);
		vq_kick(&q);
		rt_tap_ok(rt_user_call(wait_used, &len), "the console took the line");
	}
	return rt_tap_done();
}
