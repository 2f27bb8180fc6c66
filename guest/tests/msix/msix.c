/*
 * The MSI-X storm: a backend (a thread, or with "process" on the command
 * line another process) signals random vectors of the harness's MSI-X test
 * device at random times while this guest, at CPL3, masks and unmasks
 * vectors and the whole function at random. Per round it checks:
 *  - no delivery while a vector is masked (beyond one already in the LAPIC
 *    when the mask was written, which it accounts for);
 *  - after the last signal, every unmasked vector has been delivered since
 *    that signal; every masked vector shows pending exactly when a signal
 *    came after its mask (when that can be decided: a signal racing with
 *    the mask write itself may land either way);
 *  - unmasking a pending vector delivers it exactly once;
 *  - in all, no more deliveries than signals.
 * The backend paces itself on the guest (TC_PACE): it sends at most PACE
 * signals per mask or unmask write the guest announces in the mailbox, so
 * the signals spread over the whole storm and race with the writes. It
 * prints signals, deliveries, masks, lost, spurious, and how many signals
 * met a mask/unmask write in flight. A write's window runs from the guest's
 * marks read just before it announces the write (guest_ops) to those read
 * just after the write's read-back returned; per vector, with the
 * backend's seq (bumped before the eventfd write) and written (after it):
 *  - overlapping: the signal's [seq bump, eventfd written] met the window:
 *    seq at the end minus written at the start;
 *  - inside: the whole signal fell in the window: written at the end minus
 *    seq at the start (when positive).
 * A function-mask write is a window for every vector.
 *
 * With "cpus" on the command line every CPU the MADT lists is started and
 * waits in HLT with interrupts on, and the storm also retargets vectors
 * at random to another CPU (a rewrite of the entry's address while the
 * vector is masked, as the PCI spec allows). Each delivery must land on
 * the CPU its vector names at that moment. A mask of a vector aimed at
 * another CPU is fenced: once the mask write is done, an IPI at a lower
 * priority than every MSI-X vector goes to that CPU and is answered, so a
 * delivery latched there before the mask has been taken by then (its IRR
 * is served highest first); only then does the guest count the vector as
 * masked. An unmask works the other way round: from the write on, a
 * delivery on another CPU may come before the guest records the vector as
 * unmasked, and is not counted as one while masked.
 */
#include "testctl.h"
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "rt_defs.h"

#define N FDVM_TEST_MSIX_VECTORS
#define VEC0 0x60
#define ROUNDS 40
#define SIGNALS_PER_ROUND 3000
#define GRACE_CYCLES 60000000ull	/* ~23 ms for what may still be on its way */
#define SETTLE_BOUND 5200000000ull	/* ~2 s: a loaded host's slowest delivery */
#define TIMEOUT_CYCLES 60000000000ull
#define PACE 4 /* signals per mask/unmask write, at most */
#define FENCE_VEC 0x40 /* a lower priority class than VEC0.. */
#define FENCE_CYCLES 10000000000ull

static struct pci_dev dev;
static struct tc_msix_mailbox mb __attribute__((aligned(64)));

/* Guest-side state of each vector; the ISR reads it. */
static volatile bool vmask[N], fmask;
static volatile uint64_t deliveries[N], last_seen[N], inflight[N];
static volatile uint64_t spurious_masked;
static uint64_t s_after_mask[N], w_before_mask[N];
static uint64_t masks, lost, pba_wrong, ambiguous, unmask_wrong;
static uint64_t writes, overlapping, inside, win_s0[N], win_w0[N];
static uint64_t rng = 0x243f6a8885a308d3ull;

/* Several CPUs: the CPU index each vector names now, deliveries by CPU. */
static uint32_t ids[RT_MAX_CPUS];
static unsigned ncpu = 1;
static volatile unsigned target[N];
static volatile uint64_t wrong_cpu, on_cpu[RT_MAX_CPUS], fence_acks[RT_MAX_CPUS];
static volatile int aps_stop;
/* An unmask write in flight (of vector v, or of the function mask): a
 * delivery on another CPU may land before the guest records the vector
 * as unmasked. */
static volatile bool opening[N], opening_all;
static uint64_t retargets, fence_timeouts;

static bool masked(unsigned v) { return vmask[v] || fmask; }

static void isr(struct rt_frame *f, void *opaque)
{
	unsigned v = (unsigned)f->vector - VEC0;
	(void)opaque;
	unsigned me = rt_cpu_index();
	on_cpu[me]++;
	if (me != target[v])
		__atomic_add_fetch(&wrong_cpu, 1, __ATOMIC_RELAXED);
	deliveries[v]++;
	last_seen[v] = mb.seq[v];
	/* The opening flags first: one read clear was cleared after the vector
	 * was recorded as unmasked (the order of set_*_mask). */
	bool open = opening[v] || (opening_all && !vmask[v]);
	if (masked(v) && !open) {
		if (inflight[v])
			inflight[v]--;
		else
			spurious_masked++;
	}
}

static bool irr(unsigned vector)
{
	return (mmio_read32(FDVM_LAPIC_BASE + 0x200 + 0x10 * (vector / 32)) >> (vector % 32)) & 1;
}

static void on_fence(struct rt_frame *f, void *opaque)
{
	(void)f;
	(void)opaque;
	fence_acks[rt_cpu_index()]++;
}

/* Until CPU cpu has taken everything latched for it (see the top). */
static void fence(unsigned cpu)
{
	uint64_t before = fence_acks[cpu];
	rt_send_ipi(ids[cpu], FENCE_VEC);
	uint64_t t0 = rt_rdtsc();
	while (fence_acks[cpu] == before && rt_rdtsc() - t0 < FENCE_CYCLES)
		__asm__ volatile("pause");
	if (fence_acks[cpu] == before)
		fence_timeouts++;
}

/* Records, for a vector about to become masked, what the PBA check needs. */
static void before_mask(unsigned v) { w_before_mask[v] = mb.written[v]; }
static void after_mask(unsigned v)
{
	s_after_mask[v] = mb.seq[v];
	/* Injected before the mask, not yet taken by this CPU: it will come
	 * once. (Aimed at another CPU, the fence took it.) */
	if (target[v] == 0 && irr(VEC0 + v))
		inflight[v] = 1;
}

/* The window of a mask/unmask write for vectors [lo, hi) (see the top). */
static void window_begin(unsigned lo, unsigned hi)
{
	for (unsigned v = lo; v < hi; v++) {
		win_w0[v] = mb.written[v];
		win_s0[v] = mb.seq[v];
	}
	__atomic_store_n(&mb.guest_ops, mb.guest_ops + 1, __ATOMIC_SEQ_CST);
	writes++;
}

static void window_end(unsigned lo, unsigned hi)
{
	for (unsigned v = lo; v < hi; v++) {
		uint64_t s1 = mb.seq[v], w1 = mb.written[v];
		overlapping += s1 - win_w0[v];
		if (w1 > win_s0[v])
			inside += w1 - win_s0[v];
	}
}

static void set_vector_mask(unsigned v, bool m)
{
	rt_irq_disable();
	bool was = masked(v);
	if (m && !was)
		before_mask(v);
	if (!m && vmask[v] && !fmask)
		opening[v] = true;
	window_begin(v, v + 1);
	msix_mask(&dev, v, m); /* the write and its read-back */
	window_end(v, v + 1);
	if (m && !was && target[v] != 0)
		fence(target[v]);
	vmask[v] = m;
	opening[v] = false;
	if (m && !was)
		after_mask(v);
	masks += m;
	rt_irq_enable();
}

static void set_function_mask(bool m)
{
	bool was[N];
	rt_irq_disable();
	for (unsigned v = 0; v < N; v++) {
		was[v] = masked(v);
		if (m && !was[v])
			before_mask(v);
	}
	if (!m && fmask)
		opening_all = true;
	window_begin(0, N);
	msix_function_mask(&dev, m);
	(void)pci_cfg_read(dev.slot, dev.msix_cap + 2, 2);
	window_end(0, N);
	bool fenced[RT_MAX_CPUS] = { false };
	for (unsigned v = 0; v < N; v++)
		if (m && !was[v] && target[v] != 0 && !fenced[target[v]]) {
			fence(target[v]);
			fenced[target[v]] = true;
		}
	fmask = m;
	opening_all = false;
	for (unsigned v = 0; v < N; v++)
		if (m && !was[v])
			after_mask(v);
	masks += m;
	rt_irq_enable();
}

static void pause_cycles(uint64_t c)
{
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < c;)
		__asm__ volatile("pause");
}

/* Aims vector v at CPU to: masked first (if it is not), so that nothing is
 * on its way to the CPU it leaves. */
static void retarget(unsigned v, unsigned to)
{
	if (to == target[v])
		return;
	if (!masked(v))
		set_vector_mask(v, true);
	target[v] = to;
	msix_set_dest(&dev, v, ids[to]); /* the write and its read-back */
	retargets++;
}

/* CPL3: random masking until the backend is done. */
static long storm(void *arg)
{
	(void)arg;
	uint64_t t0 = rt_rdtsc();
	while (!mb.done && rt_rdtsc() - t0 < TIMEOUT_CYCLES) {
		uint64_t r = rt_rand(&rng);
		unsigned v = (unsigned)(r % N);
		switch ((r >> 8) % 10) {
		case 0:
			set_function_mask(!fmask);
			break;
		case 1:
		case 2:
			pause_cycles((r >> 16) % 100000);
			break;
		case 3:
			if (ncpu > 1) {
				retarget(v, (unsigned)((r >> 24) % ncpu));
				break;
			}
			/* fall through */
		default:
			set_vector_mask(v, !vmask[v]);
		}
	}
	return mb.done != 0;
}

/*
 * Waits until every unmasked vector has been delivered since its last
 * signal (and, with want, has the deliveries it should), at most
 * SETTLE_BOUND: on a loaded host a delivery through a service thread can
 * take a while; a lost one is not waited for beyond the bound. Then GRACE
 * more, for anything extra still on its way.
 */
static void settle(const uint64_t *want)
{
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < SETTLE_BOUND;) {
		bool all = true;
		for (unsigned v = 0; v < N && all; v++)
			all = (masked(v) || last_seen[v] == mb.seq[v]) && (!want || deliveries[v] >= want[v]);
		if (all)
			break;
	}
	pause_cycles(GRACE_CYCLES);
}

/* CPL3: the checks at the end of a round. */
static long check_round(void *arg)
{
	(void)arg;
	bool pba[N];

	settle(NULL); /* let the last deliveries land */
	for (unsigned v = 0; v < N; v++) {
		if (!masked(v)) {
			if (last_seen[v] != mb.seq[v])
				lost++;
			continue;
		}
		pba[v] = msix_pending(&dev, v);
		bool must_set = mb.seq[v] > s_after_mask[v];
		bool must_clear = mb.written[v] == w_before_mask[v];
		if (must_set && !pba[v])
			pba_wrong++;
		else if (must_clear && pba[v])
			pba_wrong++;
		else if (!must_set && !must_clear)
			ambiguous++;
	}
	/* Unmask all: each pending vector is delivered exactly once. */
	uint64_t before[N];
	bool was[N];
	for (unsigned v = 0; v < N; v++) {
		before[v] = deliveries[v] + inflight[v];
		was[v] = masked(v);
	}
	if (fmask)
		set_function_mask(false);
	for (unsigned v = 0; v < N; v++)
		if (vmask[v])
			set_vector_mask(v, false);
	uint64_t want[N];
	for (unsigned v = 0; v < N; v++)
		want[v] = before[v] + (was[v] && pba[v] ? 1 : 0);
	settle(want);
	for (unsigned v = 0; v < N; v++) {
		if (was[v] && deliveries[v] != before[v] + (pba[v] ? 1 : 0))
			unmask_wrong++;
		if (last_seen[v] != mb.seq[v])
			lost++;
	}
	return 0;
}

/* The other CPUs: asleep in HLT with interrupts on, so that their vCPU
 * threads leave the host's cores to the rest (a spinning CPU would slow
 * the storm on a host with fewer cores than vCPUs). */
static void ap_main(unsigned index)
{
	(void)index;
	while (!aps_stop)
		rt_wait_for_interrupt();
}

int guest_main(const char *cmdline)
{
	bool by_process = rt_cmdline_has("process");
	(void)cmdline;

	rt_tap_plan(9);
	rt_need_harness();
	bool found = pci_find(FDVM_TEST_PCI_VENDOR, FDVM_TEST_PCI_MSIX_DEVICE, &dev);
	rt_tap_ok(found && dev.msix_n == N, "MSI-X test device: %u vectors", dev.msix_n);
	if (!found)
		return rt_tap_done();
	pci_use_ecam(true); /* the function mask is config space: reach it from CPL3 */
	rt_tap_ok(tc(TC_MSIX_MAILBOX, (uint64_t)&mb, 0, 0) == 0, "mailbox registered");
	rt_irq_set_handler(FENCE_VEC, on_fence, 0);
	for (unsigned v = 0; v < N; v++)
		rt_irq_set_handler(VEC0 + v, isr, 0);
	ids[0] = rt_lapic_id();
	if (rt_cmdline_has("cpus"))
		ncpu = rt_smp_start(ap_main, ids);
	for (unsigned v = 0; v < N; v++) {
		msix_program_dest(&dev, v, (uint8_t)(VEC0 + v), ids[0]);
		vmask[v] = true;
	}
	msix_enable(&dev, true);
	for (unsigned v = 0; v < N; v++)
		msix_mask(&dev, v, false), vmask[v] = false;

	bool ok = true;
	for (int round = 0; round < ROUNDS && ok; round++) {
		ok &= tc(TC_MSIX_ROUND, SIGNALS_PER_ROUND,
			 (by_process ? TC_BY_PROCESS : TC_BY_THREAD) | TC_PACE(PACE),
			 0x9e3779b9ull * (uint64_t)(round + 1)) == 0;
		ok &= rt_user_call(storm, 0) != 0;
		ok &= tc(TC_WAIT, 0, 0, 0) == SIGNALS_PER_ROUND;
		rt_user_call(check_round, 0);
	}
	uint64_t signals = 0, total = 0;
	for (unsigned v = 0; v < N; v++) {
		signals += mb.seq[v];
		total += deliveries[v];
	}
	rt_printf("# msix storm (%s backend, %d rounds): signals %lu deliveries %lu masks %lu lost %lu "
		  "spurious %lu pba-wrong %lu pba-undecidable %lu unmask-wrong %lu\n",
		  by_process ? "process" : "thread", ROUNDS, (unsigned long)signals,
		  (unsigned long)total, (unsigned long)masks, (unsigned long)lost,
		  (unsigned long)spurious_masked, (unsigned long)pba_wrong, (unsigned long)ambiguous,
		  (unsigned long)unmask_wrong);
	rt_printf("# paced %d signals per write: mask/unmask writes %lu (%lu per 10 signals), "
		  "signals overlapping a write in flight %lu, entirely inside one %lu, pace stalls %lu\n",
		  PACE, (unsigned long)writes, (unsigned long)(signals ? writes * 10 / signals : 0),
		  (unsigned long)overlapping, (unsigned long)inside, (unsigned long)mb.pace_stalls);
	rt_tap_ok(ok, "%d rounds of %d signals ran", ROUNDS, SIGNALS_PER_ROUND);
	rt_tap_ok(spurious_masked == 0, "no delivery while masked (%lu)", (unsigned long)spurious_masked);
	rt_tap_ok(lost == 0, "every vector delivered after its last signal, or pending (lost %lu)",
		  (unsigned long)lost);
	rt_tap_ok(pba_wrong == 0, "PBA set exactly when a signal came while masked (%lu wrong)",
		  (unsigned long)pba_wrong);
	rt_tap_ok(unmask_wrong == 0, "unmask delivers a pending vector exactly once (%lu wrong)",
		  (unsigned long)unmask_wrong);
	aps_stop = 1;
	bool every_cpu = true;
	for (unsigned c = 0; c < ncpu; c++)
		every_cpu &= on_cpu[c] > 0;
	rt_printf("# %u CPUs: %lu retargets, %lu fences timed out; deliveries by CPU:", ncpu,
		  (unsigned long)retargets, (unsigned long)fence_timeouts);
	for (unsigned c = 0; c < ncpu; c++)
		rt_printf(" %lu", (unsigned long)on_cpu[c]);
	rt_printf("\n");
	rt_tap_ok(wrong_cpu == 0 && every_cpu && fence_timeouts == 0 &&
		  (ncpu == 1 || retargets > 0),
		  "every delivery on the CPU its vector named at that moment (%lu elsewhere; "
		  "%u CPUs, %lu retargets)", (unsigned long)wrong_cpu, ncpu, (unsigned long)retargets);
	/* What pacing is for: many writes, and signals that met them. A pace
	 * stall (the guest's vCPU not scheduled for seconds on a loaded host)
	 * only ends pacing for that round; the counts above hold regardless. */
	rt_tap_ok(total <= signals && writes * 10 >= signals && overlapping > 0,
		  "deliveries %lu <= signals %lu; %lu mask/unmask writes >= a tenth of the signals, "
		  "%lu signals met one in flight (%lu pace stalls)", (unsigned long)total,
		  (unsigned long)signals, (unsigned long)writes, (unsigned long)overlapping,
		  (unsigned long)mb.pace_stalls);
	return rt_tap_done();
}
