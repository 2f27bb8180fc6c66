/*
 * A known workload for fdvm's notification counters (fdvm stat): on a
 * virtio-blk disk with event index, in four phases, counting on the guest's
 * side what the host's counters must show:
 *   A  requests one at a time, interrupts on: one interrupt each;
 *   B  requests one at a time, interrupts off (used_event out of reach):
 *      none, each one suppressed;
 *   C  rounds of one request with the queue's MSI-X vector masked: the
 *      completion's signal sets the pending bit, which the guest sees in
 *      the PBA; the unmask delivers it, once;
 *   D  64 requests in flight at once, one doorbell: fewer interrupts than
 *      requests.
 * Every doorbell the guest writes is counted. Then it prints one line,
 * "# tally ..." and "# ready", and waits, interrupts on, in HLT, for the
 * host to read the counters and power it off (fdvm run --api-socket).
 * "noready" on the command line ends the guest instead (exit port).
 */
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"

#define VEC 0x61
#define SECTOR 512
#define N_A 100
#define N_B 100
#define N_C 20
#define N_D 64

/* A request: its header, and the status byte after its data. */
static struct req {
	struct vblk_hdr h;
	uint8_t status;
} reqs[N_D];
static struct vdev dev;
static struct vq vq;
static uint8_t data[N_D][4096] __attribute__((aligned(4096)));
static volatile uint64_t irqs;
static unsigned kicks, requests;

static void isr(struct rt_frame *f, void *o)
{
	(void)f;
	(void)o;
	irqs++;
}

static void submit(unsigned i, uint64_t sector)
{
	struct req *r = &reqs[i];
	r->h = (struct vblk_hdr){ VBLK_T_OUT, 0, sector };
	r->status = 0xff;
	struct vbuf b[3] = { { (uint64_t)&r->h, sizeof(r->h), false },
			     { (uint64_t)data[i], 4096, false },
			     { (uint64_t)&r->status, 1, true } };
	vq_add(&vq, b, 3, r);
	requests++;
}

static void kick(void)
{
	kicks += vq_kick(&vq);
}

/* Waits (polling the used ring) for n completions; how many came ok. */
static unsigned complete(unsigned n)
{
	unsigned ok = 0;
	for (unsigned got = 0; got < n;) {
		struct req *r = vq_get(&vq, 0);
		if (!r) {
			__builtin_ia32_pause();
			continue;
		}
		got++;
		ok += r->status == VBLK_S_OK;
	}
	return ok;
}

/* Spins until cond() or about 2^31 cycles. */
static bool wait_for(bool (*cond)(void))
{
	uint64_t t0 = rt_rdtsc();
	while (!cond())
		if (rt_rdtsc() - t0 > (1ull << 31))
			return false;
	return true;
}

static bool pending0(void) { return msix_pending(&dev.pci, 0); }
static uint64_t irqs_before;
static bool one_more_irq(void) { return irqs > irqs_before; }

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(6);
	if (!virtio_find(2, 0, &dev))
		rt_needs("a virtio-blk disk", "fdvm run --blk disk.img GUEST.elf (a raw image of 4 MiB or more)");
	msix_program(&dev.pci, 0, VEC);
	msix_enable(&dev.pci, true);
	msix_mask(&dev.pci, 0, false);
	rt_irq_set_handler(VEC, isr, 0);
	virtio_pool_reset();
	bool up = virtio_negotiate(&dev, 1ull << VIRTIO_F_EVENT_IDX) &&
		  virtio_setup_vq(&dev, &vq, 0, VQ_MAX, 0);
	if (up)
		virtio_driver_ok(&dev);
	rt_tap_ok(up && vq.event_idx, "virtio-blk up with event index");
	if (!up || !vq.event_idx)
		return rt_tap_done();
	rt_irq_enable();

	unsigned ok = 0;
	uint64_t irq_a = irqs;
	for (unsigned i = 0; i < N_A; i++) {
		submit(0, 8 * i);
		kick();
		ok += complete(1);
	}
	rt_tap_ok(ok == N_A, "A: %u requests one at a time, interrupts on: %u ok, %lu interrupts",
		  N_A, ok, (unsigned long)(irqs - irq_a));

	ok = 0;
	uint64_t irq_b = irqs;
	for (unsigned i = 0; i < N_B; i++) {
		vq_enable_interrupts(&vq, false);
		submit(0, 8 * i);
		kick();
		ok += complete(1);
	}
	rt_tap_ok(ok == N_B && irqs == irq_b,
		  "B: %u requests, interrupts off: %u ok, %lu interrupts", N_B, ok,
		  (unsigned long)(irqs - irq_b));

	unsigned seen = 0, delivered = 0;
	ok = 0;
	for (unsigned i = 0; i < N_C; i++) {
		msix_mask(&dev.pci, 0, true);
		submit(0, 8 * i);
		kick();
		ok += complete(1);
		seen += wait_for(pending0);
		irqs_before = irqs;
		msix_mask(&dev.pci, 0, false);
		delivered += wait_for(one_more_irq) && irqs == irqs_before + 1;
	}
	rt_tap_ok(ok == N_C && seen == N_C && delivered == N_C,
		  "C: %u rounds masked: %u ok, pending bit seen %u times, one delivery at unmask %u times",
		  N_C, ok, seen, delivered);

	uint64_t irq_d = irqs;
	unsigned kicks_d = kicks;
	for (unsigned i = 0; i < N_D; i++)
		submit(i, 8 * i);
	kick();
	ok = complete(N_D);
	rt_tap_ok(ok == N_D && kicks == kicks_d + 1,
		  "D: %u requests in flight, %u doorbell: %u ok, %lu interrupts seen", N_D,
		  kicks - kicks_d, ok, (unsigned long)(irqs - irq_d));

	rt_tap_ok(kicks <= requests, "%u doorbells for %u requests", kicks, requests);
	rt_printf("# tally requests=%u kicks=%u out_bytes=%lu in_bytes=%u masked_rounds=%u "
		  "pending_seen=%u irqs_seen=%lu a=%u b=%u c=%u d=%u\n",
		  requests, kicks, (unsigned long)requests * (sizeof(struct vblk_hdr) + 4096), requests, N_C, seen,
		  (unsigned long)irqs, N_A, N_B, N_C, N_D);
	if (rt_cmdline_has("noready"))
		return rt_tap_done();
	rt_printf("# ready\n");
	for (;;)
		rt_wait_for_interrupt();
}
