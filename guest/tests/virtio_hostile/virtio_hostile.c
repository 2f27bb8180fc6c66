/*
 * A hostile driver against fdvm's virtio-blk: descriptor chains that loop,
 * indirect tables inside indirect tables, buffers outside guest RAM or
 * across its end, lengths that add up past 4 GiB, a queue size that is not a
 * power of two, an avail index that jumps past the ring, a head index
 * outside it, a writable buffer before a readable one, notifications for
 * queues never set up, a request header of the wrong size, status bits
 * cleared without a reset. Each gets the
 * spec's answer (DEVICE_NEEDS_RESET, or an error status); a second disk
 * keeps working throughout, and the attacked one works again after a reset.
 * Needs two disks and the default 64 MiB of RAM (QEMU: -m 64).
 *
 * "vhost-user" on the command line: the disks are QEMU's vhost-user-blk-pci
 * with a backend process behind each. QEMU owns the device status, so the
 * backend cannot set DEVICE_NEEDS_RESET; its answer to a broken queue is to
 * stop serving it. Then either NEEDS_RESET or a queue that completes nothing
 * passes, and after the reset the attacked disk must also serve a read.
 */
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"

#define NEEDS_RESET 64
#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4
#define RAM_END 0x4000000ull

static struct vdev a, b;
static struct vq qa, qb;
static bool vhost_user;
static struct {
	uint32_t type, ioprio;
	uint64_t sector;
} hdr __attribute__((aligned(16)));
static uint8_t status;
static uint8_t buf[4096] __attribute__((aligned(4096)));
static struct vring_desc table1[4] __attribute__((aligned(16))), table2[4] __attribute__((aligned(16)));

static bool up(struct vdev *d, struct vq *q, uint16_t size)
{
	if (!virtio_negotiate(d, 1ull << VIRTIO_F_INDIRECT_DESC))
		return false;
	if (!virtio_setup_vq(d, q, 0, size, 0xffff))
		return false;
	virtio_driver_ok(d);
	return true;
}

static long poll_status(void *arg)
{
	struct vdev *d = arg;
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 3000000000ull;)
		if (mmio_read8(d->common + 0x14) & NEEDS_RESET)
			return 1;
	return 0;
}

/* One good read: still served? */
static bool works(struct vq *q)
{
	static struct { uint32_t type, ioprio; uint64_t sector; } h;
	static uint8_t st;
	h.type = 0;
	h.sector = 1;
	st = 0xff;
	struct vbuf v[3] = { { (uint64_t)&h, 16, false }, { (uint64_t)buf, 512, true },
			     { (uint64_t)&st, 1, true } };
	if (!vq_add(q, v, 3, &h))
		return false;
	vq_kick(q);
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 3000000000ull;)
		if (vq_get(q, 0))
			return st == 0;
	return false;
}

static bool b_works(void)
{
	return works(&qb);
}

/* Posts head (whatever it points at) and moves avail idx by step. */
static void post(uint16_t head, uint16_t step)
{
	qa.avail[2 + qa.avail_idx % qa.size] = head;
	qa.avail_idx = (uint16_t)(qa.avail_idx + step);
	__atomic_store_n(&qa.avail[1], qa.avail_idx, __ATOMIC_RELEASE);
	mmio_write16(qa.notify_addr, 0);
}

static void d(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	qa.desc[i] = (struct vring_desc){ addr, len, flags, next };
}

static void expect_reset(const char *what)
{
	bool flagged = rt_user_call(poll_status, &a);
	bool other = b_works();
	if (vhost_user) {
		/* Every case posts on a fresh queue: nothing may have completed. */
		uint16_t used = ((volatile uint16_t *)qa.used)[1];
		virtio_reset(&a);
		bool again = up(&a, &qa, 256) && works(&qa);
		virtio_reset(&a);
		again = again && up(&a, &qa, 256);
		rt_tap_ok((flagged || !used) && other && again,
			  "%s: NEEDS_RESET %d, completions %u, other disk works %d, reset, up and reads again %d",
			  what, flagged, used, other, again);
		return;
	}
	virtio_reset(&a);
	bool again = up(&a, &qa, 256);
	rt_tap_ok(flagged && other && again, "%s: NEEDS_RESET %d, other disk works %d, reset and up again %d",
		  what, flagged, other, again);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	vhost_user = rt_cmdline_has("vhost-user");
	rt_tap_plan(15);
	virtio_pool_reset();
	bool found = virtio_find(2, 0, &a) && virtio_find(2, 1, &b);
	if (!found)
		rt_needs("two virtio-blk disks", "fdvm run --blk a.img --blk b.img GUEST.elf "
			 "(8 MiB raw images)");
	rt_tap_ok(found && up(&b, &qb, 64) && up(&a, &qa, 256), "two disks up");
	if (!found)
		return rt_tap_done();

	d(0, (uint64_t)&hdr, 16, DESC_NEXT, 0); /* next is itself */
	post(0, 1);
	expect_reset("a chain that loops");

	table2[0] = (struct vring_desc){ (uint64_t)&hdr, 16, 0, 0 };
	table1[0] = (struct vring_desc){ (uint64_t)table2, sizeof(table2), DESC_INDIRECT, 0 };
	d(0, (uint64_t)table1, sizeof(table1), DESC_INDIRECT, 0);
	post(0, 1);
	expect_reset("an indirect table inside an indirect table");

	d(0, (uint64_t)&hdr, 16, DESC_NEXT, 1);
	d(1, 0x200000000ull, 512, DESC_NEXT | DESC_WRITE, 2);
	d(2, (uint64_t)&status, 1, DESC_WRITE, 0);
	post(0, 1);
	expect_reset("a buffer outside guest RAM");

	d(0, (uint64_t)&hdr, 16, DESC_NEXT, 1);
	d(1, RAM_END - 256, 512, DESC_NEXT | DESC_WRITE, 2);
	d(2, (uint64_t)&status, 1, DESC_WRITE, 0);
	post(0, 1);
	expect_reset("a buffer across the end of guest RAM");

	for (unsigned i = 0; i < 80; i++) /* 80 x 60 MiB, each inside RAM */
		d(i, 0x100000, 60u << 20, (uint16_t)(DESC_NEXT | DESC_WRITE), (uint16_t)(i + 1));
	d(80, (uint64_t)&status, 1, DESC_WRITE, 0);
	qa.desc[0].flags = DESC_NEXT; /* the header-sized read part comes first */
	post(0, 1);
	expect_reset("lengths that add up past 4 GiB");

	post(0, 300);
	expect_reset("an avail index 300 ahead of a 256-entry ring");

	post(300, 1);
	expect_reset("a head index outside the ring");

	d(0, (uint64_t)buf, 512, DESC_NEXT | DESC_WRITE, 1);
	d(1, (uint64_t)&hdr, 16, 0, 0);
	post(0, 1);
	expect_reset("a writable buffer before a readable one");

	/* Queue size 100 (rings from the last bring-up): refused at DRIVER_OK. */
	virtio_reset(&a);
	virtio_negotiate(&a, 0);
	mmio_write16(a.common + 0x16, 0);
	mmio_write16(a.common + 0x18, 100);
	mmio_write64(a.common + 0x20, (uint64_t)qa.desc);
	mmio_write64(a.common + 0x28, (uint64_t)qa.avail);
	mmio_write64(a.common + 0x30, (uint64_t)qa.used);
	mmio_write16(a.common + 0x1c, 1);
	virtio_driver_ok(&a);
	expect_reset("a queue size of 100");

	/* Notifications for queues that do not exist or were never set up. */
	for (unsigned i = 1; i < 8; i++)
		mmio_write16(a.notify + (uint64_t)i * a.notify_mult, (uint16_t)i);
	virtio_reset(&a);
	mmio_write16(a.notify, 0); /* queue 0, device reset: no doorbell */
	rt_tap_ok(up(&a, &qa, 256) && !(virtio_status(&a) & NEEDS_RESET) && b_works(),
		  "notifications for queues never set up are ignored");

	/* A header of 8 bytes: the request fails with IOERR, the device goes on. */
	status = 0xff;
	struct vbuf v[3] = { { (uint64_t)&hdr, 8, false }, { (uint64_t)&status, 1, true } };
	vq_add(&qa, v, 2, &hdr);
	vq_kick(&qa);
	bool got = false;
	for (uint64_t t0 = rt_rdtsc(); !got && rt_rdtsc() - t0 < 3000000000ull;)
		got = vq_get(&qa, 0) != 0;
	rt_tap_ok(got && status == 1 && !(virtio_status(&a) & NEEDS_RESET),
		  "an 8-byte request header: IOERR (%u), device still fine", status);

	/* And the attacked disk serves a normal read at the end. */
	hdr.type = 0;
	hdr.sector = 2;
	status = 0xff;
	struct vbuf r[3] = { { (uint64_t)&hdr, 16, false }, { (uint64_t)buf, 512, true },
			     { (uint64_t)&status, 1, true } };
	vq_add(&qa, r, 3, &hdr);
	vq_kick(&qa);
	got = false;
	for (uint64_t t0 = rt_rdtsc(); !got && rt_rdtsc() - t0 < 3000000000ull;)
		got = vq_get(&qa, 0) != 0;
	rt_tap_ok(got && status == 0, "the attacked disk reads normally at the end");

	/* Clearing DRIVER_OK without a reset, then setting it again, many
	 * times: the device must not start twice, and must keep serving. */
	for (int i = 0; i < 50; i++) {
		virtio_set_status(&a, 0x0b);
		virtio_set_status(&a, 0x0f);
	}
	status = 0xff;
	vq_add(&qa, r, 3, &hdr);
	vq_kick(&qa);
	got = false;
	for (uint64_t t0 = rt_rdtsc(); !got && rt_rdtsc() - t0 < 3000000000ull;)
		got = vq_get(&qa, 0) != 0;
	rt_tap_ok(got && status == 0 && virtio_status(&a) == 0x0f,
		  "status bits cleared and set again 50 times: still one device, still serving");
	rt_tap_ok(b_works(), "and so does the other");
	return rt_tap_done();
}
