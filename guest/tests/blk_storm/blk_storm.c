/*
 * The MSI-X storm's twin on a real virtio-blk device: whatever serves it
 * (fdvm's in-process device, `fdvm serve blk` over vhost-user, QEMU), its
 * completion interrupts are the backend's signals. This guest keeps a
 * ring's worth of reads in flight, so completions, and with them the
 * device's signals (one after every batch it returns: EVENT_IDX is not
 * negotiated and NO_INTERRUPT stays clear), come all the time; meanwhile,
 * at CPL3, it masks and unmasks the request queue's MSI-X vector through
 * the table in BAR memory at random, and retargets it (rewrites the
 * vector's MSI data to a second vector, and back), masked or not: fdvm
 * moves an unmasked vector atomically. The PCI spec leaves a rewrite of
 * an unmasked entry undefined (QEMU keeps the old route until the next
 * unmask), so "masked-retarget" on the command line retargets only while
 * masked. It checks:
 *  - no delivery while the vector is masked (beyond one already latched in
 *    the LAPIC when the mask was written), none on the vector it left
 *    (beyond one latched there when it was retargeted);
 *  - never more deliveries than completions (each delivery needs a signal,
 *    each signal a batch, each batch at least one completion);
 *  - never lost: at each quiet point (nothing in flight) and at the end,
 *    a delivery has seen the final used index, or the vector is masked and
 *    its PBA bit is set; and during the storm, a completion the guest saw
 *    in the used ring is seen by a delivery within a bounded time once the
 *    vector has stayed unmasked for a while (SETTLE);
 *  - PBA exact: a completion pushed after a mask was written sets the PBA
 *    bit within a bounded time; at quiet points, with nothing in flight,
 *    the bit stays clear after a mask, becomes set by one request
 *    completed while masked, and the unmask delivers it exactly once;
 *  - every read returns what was written (status and content).
 * Reading from the ring while masked decides the PBA only one way during
 * the storm: a set bit with no completion since the mask may be a batch
 * pushed before the mask whose signal came after it (counted as
 * undecidable); the quiet points decide both ways.
 * The disk must be at least 1 MiB.
 */
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"

#define F_BLK_SIZE 6
#define T_IN 0
#define T_OUT 1
#define SECTOR 512
#define AREA 256		/* sectors written with a pattern, then read */
#define VEC_A 0x60
#define VEC_B 0x61
#define ENTRY 0			/* the MSI-X table entry of queue 0 */
#define ROUNDS 40
#define PER_ROUND 3000		/* completions per round of storm */
#define SETTLE 650000000ull	/* ~250 ms: a signal that is coming has come (CI runs loaded) */
#define BOUND 5200000000ull	/* ~2 s: the longest a check waits */
#define ROUND_TIMEOUT 60000000000ull

struct req {
	uint32_t type, ioprio;
	uint64_t sector;
	uint8_t status;
};

static struct vdev dev;
static struct vq vq;
static struct req reqs[VQ_MAX];
static uint8_t data[VQ_MAX][SECTOR] __attribute__((aligned(4096)));
static uint32_t seed;
static uint64_t rng = 0x2545f4914f6cdd1dull;

/* What the ISR reads and writes. */
static volatile bool masked;
static volatile unsigned cur_vec = VEC_A;
static volatile uint64_t deliveries, spurious, latched, stale_latched[2], wrong_vector;
static volatile uint16_t isr_used;

/* CPL3 bookkeeping. */
static uint16_t u_after_mask, probe_u;
static bool probing;
static uint64_t probe_t0, unmasked_at, probes, lost_storm;
static unsigned inflight;
static uint64_t completions, bad, writes, masks, retargets, in_window, quiet_points, stuck;
static uint64_t lost, pba_wrong, pba_undecidable, pba_checked, unmask_wrong;

static uint16_t used_idx(void) { return __atomic_load_n(&((volatile uint16_t *)vq.used)[1], __ATOMIC_ACQUIRE); }

static void isr(struct rt_frame *f, void *o)
{
	unsigned v = (unsigned)f->vector;
	(void)o;
	deliveries++;
	isr_used = used_idx();
	if (v != cur_vec) {
		if (stale_latched[v - VEC_A])
			stale_latched[v - VEC_A]--;
		else
			wrong_vector++;
		return;
	}
	if (masked) {
		if (latched)
			latched--;
		else
			spurious++;
	}
}

static bool irr(unsigned vector)
{
	return (mmio_read32(FDVM_LAPIC_BASE + 0x200 + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

static void pause_cycles(uint64_t c)
{
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < c;)
		__asm__ volatile("pause");
}

static uint32_t pattern(uint64_t sector, unsigned word)
{
	uint64_t x = (sector * 0x9e3779b97f4a7c15ull) ^ (word * 0xbf58476d1ce4e5b9ull) ^ seed;
	x ^= x >> 29;
	return (uint32_t)(x * 0x94d049bb133111ebull >> 32);
}

static bool submit(unsigned slot, uint32_t type, uint64_t sector)
{
	struct req *r = &reqs[slot];
	*r = (struct req){ type, 0, sector, 0xff };
	if (type == T_OUT)
		for (unsigned w = 0; w < SECTOR / 4; w++)
			((uint32_t *)data[slot])[w] = pattern(sector, w);
	struct vbuf b[3] = { { (uint64_t)r, 16, false },
			     { (uint64_t)data[slot], SECTOR, type != T_OUT },
			     { (uint64_t)&r->status, 1, true } };
	if (!vq_add(&vq, b, 3, r))
		return false;
	inflight++;
	return true;
}

/* Takes every completion there is; checks reads by content. */
static void reap(void)
{
	struct req *r;
	while ((r = vq_get(&vq, 0))) {
		unsigned slot = (unsigned)(r - reqs);
		bool ok = r->status == 0;
		if (ok && r->type == T_IN)
			for (unsigned w = 0; w < SECTOR / 4 && ok; w++)
				ok = ((uint32_t *)data[slot])[w] == pattern(r->sector, w);
		bad += !ok;
		completions++;
		inflight--;
	}
}

/* Requests kept in flight: each round its own depth, so batches range
 * from one completion (a signal per request) to a ring's worth. */
static const unsigned depths[] = { 1, 4, 16, 64, VQ_MAX };
static unsigned depth = VQ_MAX;
/* Per round: frantic (a mask or unmask every other step) or, one round in
 * four, calm (one step in 64), so the vector also stays unmasked long
 * enough for the storm's lost-interrupt probes to be judged. */
static bool calm, masked_retarget;

static void refill(void)
{
	while (vq.num_free && inflight < depth) {
		unsigned slot = vq.free_head; /* its head descriptor: a free slot */
		if (!submit(slot, T_IN, rt_rand(&rng) % AREA))
			break;
	}
	vq_kick(&vq);
}

/* Reaps until nothing is in flight (bounded). */
static bool drain(void)
{
	for (uint64_t t0 = rt_rdtsc(); inflight && rt_rdtsc() - t0 < BOUND * 10;)
		reap();
	return inflight == 0;
}

/* Writes the mask bit (with interrupts off, so the ISR sees the state the
 * device has); counts completions pushed while the write was in flight. */
static void set_mask(bool m)
{
	rt_irq_disable();
	uint16_t u0 = used_idx();
	msix_mask(&dev.pci, ENTRY, m); /* the write and its read-back */
	uint16_t u1 = used_idx();
	in_window += (uint16_t)(u1 - u0);
	masked = m;
	if (!m)
		unmasked_at = rt_rdtsc();
	if (m) {
		u_after_mask = u1;
		/* Injected before the mask, not yet taken: it will come once. */
		latched = irr(cur_vec);
		masks++;
	}
	writes++;
	rt_irq_enable();
}

/* Moves the vector's MSI data to the other vector number. */
static void retarget(void)
{
	rt_irq_disable();
	unsigned old = cur_vec, to = old == VEC_A ? VEC_B : VEC_A;
	uint64_t e = dev.pci.msix_table + 16ull * ENTRY;
	mmio_write32(e + 8, to);
	(void)mmio_read32(e + 8);
	cur_vec = to;
	stale_latched[old - VEC_A] = irr(old);
	if (masked)
		latched = irr(to);
	retargets++;
	rt_irq_enable();
}

/* Masked: a completion pushed after the mask was written must show in
 * the PBA within BOUND; a set bit with none is undecidable here. */
static void check_pba_masked(void)
{
	bool must = used_idx() != u_after_mask, p = msix_pending(&dev.pci, ENTRY);
	if (must) {
		for (uint64_t t0 = rt_rdtsc(); !p && rt_rdtsc() - t0 < BOUND;)
			p = msix_pending(&dev.pci, ENTRY);
		pba_checked++;
		pba_wrong += !p;
	} else if (p) {
		pba_undecidable++;
	}
}

/* Waits (bounded) for a delivery that saw used index u. */
static bool delivered_at(uint16_t u)
{
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < BOUND;)
		if (isr_used == u)
			return true;
	return isr_used == u;
}

/*
 * A quiet point: nothing in flight. Unmasked, the last batch has been
 * delivered; masked, the PBA stays clear; one request completed while
 * masked sets it; unmasking delivers it once.
 */
static void quiet(void)
{
	quiet_points++;
	if (!drain()) {
		stuck++;
		return;
	}
	if (masked) {
		check_pba_masked();
		set_mask(false);
	}
	uint16_t fin = used_idx();
	lost += !delivered_at(fin);
	pause_cycles(SETTLE);
	set_mask(true);
	pause_cycles(SETTLE);
	if (msix_pending(&dev.pci, ENTRY))
		pba_wrong++; /* set, with nothing completed since the mask */
	pba_checked++;
	uint64_t d0 = deliveries;
	submit(vq.free_head, T_IN, rt_rand(&rng) % AREA);
	vq_kick(&vq);
	if (!drain()) {
		stuck++;
		return;
	}
	check_pba_masked(); /* the completion came after the mask: must be set */
	set_mask(false);
	fin = used_idx();
	for (uint64_t t0 = rt_rdtsc(); deliveries == d0 && rt_rdtsc() - t0 < BOUND;)
		;
	pause_cycles(SETTLE);
	unmask_wrong += deliveries != d0 + 1;
	lost += isr_used != fin;
}

/*
 * During the storm: a used index the guest has seen must be seen by a
 * delivery (the ISR reads the used index) within BOUND, judged only once
 * the vector has been unmasked for SETTLE (a signal that came while masked
 * is delivered by the unmask).
 */
static void probe(void)
{
	uint64_t now = rt_rdtsc();
	if (probing) {
		if ((uint16_t)(isr_used - probe_u) < 0x8000) {
			probing = false;
			probes++;
		} else if (!masked && now - probe_t0 > BOUND && now - unmasked_at > SETTLE) {
			lost_storm++;
			probing = false;
		}
	}
	if (!probing && !masked && used_idx() != isr_used) {
		probe_u = used_idx();
		probe_t0 = now;
		probing = true;
	}
}

/* CPL3: a round of storm, then a quiet point. */
static long storm(void *arg)
{
	uint64_t target = completions + PER_ROUND, t0 = rt_rdtsc();
	(void)arg;
	while (completions < target && rt_rdtsc() - t0 < ROUND_TIMEOUT) {
		refill();
		reap();
		probe();
		uint64_t r = rt_rand(&rng);
		unsigned a = (unsigned)((r >> 8) % 64);
		if (a < (calm ? 1u : 32u)) {
			if (masked)
				check_pba_masked();
			set_mask(!masked);
		} else if (a >= 32 && a < (calm ? 33u : 40u)) {
			if (masked || !masked_retarget)
				retarget();
		} else if (a >= 40 && a < 48) {
			pause_cycles((r >> 16) % 200000);
		}
	}
	probing = false;
	quiet();
	return completions >= target;
}

/* CPL3: writes the pattern area, a ring's worth at a time. */
static long write_area(void *arg)
{
	(void)arg;
	for (unsigned s = 0; s < AREA;) {
		while (s < AREA && vq.num_free)
			if (!submit(vq.free_head, T_OUT, s++))
				break;
		vq_kick(&vq);
		if (!drain())
			return 0;
	}
	return bad == 0;
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(10);
	bool found = virtio_find(2, 0, &dev);
	if (!found)
		rt_needs("a virtio-blk disk", "fdvm run --blk disk.img GUEST.elf (an 8 MiB raw image)");
	rt_tap_ok(found, "virtio-blk found (slot %u, device %04x)", dev.pci.slot, dev.pci.device);
	if (!found)
		return rt_tap_done();
	rt_irq_set_handler(VEC_A, isr, 0);
	rt_irq_set_handler(VEC_B, isr, 0);
	msix_program(&dev.pci, ENTRY, VEC_A);
	msix_enable(&dev.pci, true);
	msix_mask(&dev.pci, ENTRY, false);
	/* No EVENT_IDX: the device signals after every batch. */
	bool up = virtio_negotiate(&dev, 1ull << F_BLK_SIZE | 1ull << VIRTIO_F_INDIRECT_DESC) &&
		  virtio_setup_vq(&dev, &vq, 0, VQ_MAX, ENTRY);
	if (up)
		virtio_driver_ok(&dev);
	uint64_t cap = up ? virtio_cfg64(&dev, 0) : 0;
	rt_tap_ok(up && !vq.event_idx && cap >= AREA,
		  "features 0x%lx (event-idx %d, indirect %d), ring %u, %lu sectors",
		  (unsigned long)dev.features, vq.event_idx, vq.use_indirect, vq.size, (unsigned long)cap);
	if (!up)
		return rt_tap_done();
	seed = (uint32_t)rt_rdtsc();
	masked_retarget = rt_cmdline_has("masked-retarget");
	rt_irq_enable();
	rt_tap_ok(rt_user_call(write_area, 0) == 1, "pattern written: %u sectors", AREA);

	bool ran = true;
	uint64_t t0 = rt_rdtsc();
	for (int round = 0; round < ROUNDS && ran; round++) {
		unsigned nd = sizeof(depths) / sizeof(depths[0]);
		depth = depths[round % nd];
		calm = (round / nd) % 4 == 3;
		ran = rt_user_call(storm, 0) == 1;
	}
	uint64_t ms = (rt_rdtsc() - t0) / 2600000; /* nominal: the TSC's rate is not known */
	rt_irq_disable();

	rt_printf("# blk storm: completions %lu deliveries %lu masks %lu (mask/unmask writes %lu) "
		  "retargets %lu lost %lu spurious %lu wrong-vector %lu pba-wrong %lu "
		  "(pba checked %lu, undecidable %lu) unmask-wrong %lu bad %lu stuck %lu\n",
		  (unsigned long)completions, (unsigned long)deliveries, (unsigned long)masks,
		  (unsigned long)writes, (unsigned long)retargets, (unsigned long)lost,
		  (unsigned long)spurious, (unsigned long)wrong_vector, (unsigned long)pba_wrong,
		  (unsigned long)pba_checked, (unsigned long)pba_undecidable,
		  (unsigned long)unmask_wrong, (unsigned long)bad, (unsigned long)stuck);
	rt_printf("# completions pushed while a mask/unmask write was in flight %lu; %lu quiet points; "
		  "%lu storm probes seen delivered, %lu lost; ~%lu ms at a nominal 2.6 GHz\n",
		  (unsigned long)in_window, (unsigned long)quiet_points, (unsigned long)probes,
		  (unsigned long)lost_storm, (unsigned long)ms);
	rt_tap_ok(ran && !stuck && !bad,
		  "%d rounds of %d reads (1 to %u in flight) under the storm: %lu done, %lu bad",
		  ROUNDS, PER_ROUND, vq.size, (unsigned long)completions, (unsigned long)bad);
	rt_tap_ok(spurious == 0, "no delivery while masked (%lu)", (unsigned long)spurious);
	rt_tap_ok(wrong_vector == 0 && retargets > 0,
		  "no delivery on the vector left behind (%lu), %lu retargets",
		  (unsigned long)wrong_vector, (unsigned long)retargets);
	rt_tap_ok(lost == 0 && lost_storm == 0,
		  "never lost: the last completion delivered, or pending (%lu lost at quiet points, "
		  "%lu in the storm)", (unsigned long)lost, (unsigned long)lost_storm);
	rt_tap_ok(pba_wrong == 0, "PBA exact: set by a completion after the mask, clear without (%lu wrong)",
		  (unsigned long)pba_wrong);
	rt_tap_ok(unmask_wrong == 0, "unmask delivers a pending completion exactly once (%lu wrong)",
		  (unsigned long)unmask_wrong);
	rt_tap_ok(deliveries <= completions && masks > ROUNDS,
		  "deliveries %lu <= completions %lu, %lu masks", (unsigned long)deliveries,
		  (unsigned long)completions, (unsigned long)masks);
	return rt_tap_done();
}
