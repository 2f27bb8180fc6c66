/*
 * The notification contract, from the guest's side, under the test
 * harness (tests/kvm/harness): interrupts from the vCPU thread, a backend
 * thread and a backend process; coalescing; a signal pending at assign;
 * teardown and re-creation; a level line with resample; doorbells. Every
 * count is printed. Runs unchanged whether the harness uses the kernel
 * paths or forces the userspace fallbacks.
 *
 * Waiting is done at CPL3, where this machine runs code natively; taking
 * interrupts there is how the guest "enables" them.
 *
 * With "cpus" on the command line every CPU the MADT lists is started and
 * waits in HLT, and the level line's pin is aimed at the last one: every
 * delivery must land there (the userspace fallback pulses the pin from
 * that vCPU's thread). With "logical" too, every CPU's LAPIC is in the
 * flat logical model and the pin's entry names the last CPU by its LDR
 * bit, as Linux routes with up to 8 CPUs (the userspace fallback then
 * holds every vCPU out of the guest for the pulse).
 */
#include "testctl.h"
#include "io.h"
#include "rt.h"
#include "rt_defs.h"

#define V_INLINE 0x41
#define V_THREAD 0x42
#define V_PROCESS 0x43
#define V_PREASSIGN 0x44
#define V_TEARDOWN 0x45
#define V_LEVEL 0x50
#define LEVEL_PIN 20

#define STRESS_SIGNALS 20000
#define LEVEL_WORK 200
#define TIMEOUT_CYCLES 60000000000ull /* >= 20 s at up to 3 GHz */
#define GRACE_CYCLES 100000000ull     /* a settle time to catch extra deliveries */

static struct tc_mailbox mb __attribute__((aligned(64)));
static volatile uint64_t deliveries[256];
static volatile uint64_t last_seen[256];
static volatile uint64_t level_consumed, level_spurious, level_on_cpu[RT_MAX_CPUS];
/* "cpus": the level pin is aimed at the last CPU the MADT lists. */
static uint32_t ids[RT_MAX_CPUS];
static unsigned ncpu = 1, level_cpu;
static bool logical;
static volatile int aps_stop;
static volatile unsigned aps_logical; /* how many CPUs set their LDR */

static void count_isr(struct rt_frame *f, void *opaque)
{
	(void)opaque;
	deliveries[f->vector]++;
	last_seen[f->vector] = mb.seq;
}

static void level_isr(struct rt_frame *f, void *opaque)
{
	(void)opaque;
	deliveries[f->vector]++;
	level_on_cpu[rt_cpu_index()]++;
	/* Like a driver reading its device's status: takes one work item. */
	if (mmio_read64(FDVM_TESTCTL_MMIO + TC_REG_CONSUME))
		level_consumed++;
	else
		level_spurious++;
}

struct wait {
	volatile uint64_t *p;
	uint64_t target;
	volatile uint64_t *p2; /* optional second condition: *p2 != 0 */
};

/* At CPL3, interrupts on: until *p >= target (and *p2), or the timeout;
 * then a grace period for anything that should not come. */
static long wait_body(void *arg)
{
	struct wait *w = arg;
	uint64_t t0 = rt_rdtsc();
	while ((*w->p < w->target || (w->p2 && !*w->p2)) && rt_rdtsc() - t0 < TIMEOUT_CYCLES)
		__asm__ volatile("pause");
	for (uint64_t t1 = rt_rdtsc(); rt_rdtsc() - t1 < GRACE_CYCLES;)
		__asm__ volatile("pause");
	return *w->p >= w->target;
}

static bool wait_for(volatile uint64_t *p, uint64_t target, volatile uint64_t *p2)
{
	struct wait w = { p, target, p2 };
	return rt_user_call(wait_body, &w);
}

static void test_vcpu_and_coalescing(void)
{
	int64_t id = tc(TC_LINE_MSI, V_INLINE, 0, 0);
	rt_tap_ok(id >= 0, "MSI line created (%ld)", (long)id);

	rt_irq_disable();
	tc(TC_SIGNAL, id, 1, TC_BY_VCPU);
	wait_for(&deliveries[V_INLINE], 1, 0);
	rt_tap_ok(deliveries[V_INLINE] == 1, "one signal from the vCPU thread: %lu delivery",
		  (unsigned long)deliveries[V_INLINE]);

	rt_irq_disable();
	tc(TC_SIGNAL, id, 1000, TC_BY_VCPU);
	wait_for(&deliveries[V_INLINE], 2, 0);
	uint64_t d = deliveries[V_INLINE] - 1;
	rt_printf("# coalescing: signals 1000 (interrupts off) deliveries %lu\n", (unsigned long)d);
	rt_tap_ok(d >= 1 && d <= 1000, "1000 signals while masked by IF coalesce to 1..1000 deliveries (%lu)",
		  (unsigned long)d);
	rt_tap_ok(tc(TC_LINE_DESTROY, id, 0, 0) == 0, "line destroyed");
}

static void stress(const char *who, unsigned vector, uint64_t by)
{
	int64_t id = tc(TC_LINE_MSI, vector, 0, 0);
	mb.seq = 0;
	mb.done = 0;
	rt_tap_ok(id >= 0 && tc(TC_SIGNAL, id, STRESS_SIGNALS, by) == 0, "%s backend started", who);
	struct wait w = { &last_seen[vector], STRESS_SIGNALS, &mb.done };
	rt_user_call(wait_body, &w);
	uint64_t sent = (uint64_t)tc(TC_WAIT, 0, 0, 0);
	uint64_t d = deliveries[vector];
	uint64_t lost = last_seen[vector] == sent ? 0 : 1;
	rt_printf("# %s: signals %lu deliveries %lu last signal seen by the ISR %lu lost %lu spurious %lu\n",
		  who, (unsigned long)sent, (unsigned long)d, (unsigned long)last_seen[vector],
		  (unsigned long)lost, (unsigned long)(d > sent ? d - sent : 0));
	rt_tap_ok(sent == STRESS_SIGNALS && last_seen[vector] == sent,
		  "%s: the last of %lu signals was delivered (none lost)", who, (unsigned long)sent);
	rt_tap_ok(d >= 1 && d <= sent, "%s: %lu deliveries for %lu signals (none spurious)", who,
		  (unsigned long)d, (unsigned long)sent);
	/* The backend is gone (a process has exited); the line still works. */
	uint64_t before = deliveries[vector];
	rt_irq_disable();
	tc(TC_SIGNAL, id, 1, TC_BY_VCPU);
	wait_for(&deliveries[vector], before + 1, 0);
	rt_tap_ok(deliveries[vector] == before + 1, "%s: line works after the backend finished", who);
	tc(TC_LINE_DESTROY, id, 0, 0);
}

static void test_pending_at_assign(void)
{
	rt_irq_disable();
	int64_t id = tc(TC_LINE_PRESIGNALLED, V_PREASSIGN, 5, 0);
	wait_for(&deliveries[V_PREASSIGN], 1, 0);
	rt_tap_ok(id >= 0 && deliveries[V_PREASSIGN] == 1,
		  "eventfd signalled 5 times before assign: delivered once on assign (%lu)",
		  (unsigned long)deliveries[V_PREASSIGN]);
	tc(TC_LINE_DESTROY, id, 0, 0);
}

static void test_teardown(void)
{
	bool ok = true;
	uint64_t expect = 0;

	for (int round = 0; round < 20 && ok; round++) {
		int64_t id = tc(TC_LINE_MSI, V_TEARDOWN, TC_F_BORROW, 0);
		rt_irq_disable();
		ok &= id >= 0 && tc(TC_SIGNAL, id, 1, TC_BY_VCPU) == 0;
		wait_for(&deliveries[V_TEARDOWN], ++expect, 0);
		ok &= deliveries[V_TEARDOWN] == expect;
		/* The backend closes its eventfd under the live line. */
		ok &= tc(TC_LINE_CLOSE_BORROWED, id, 0, 0) == 0;
		ok &= tc(TC_LINE_DESTROY, id, 0, 0) == 0;
		/* And a new line on the same vector works. */
		id = tc(TC_LINE_MSI, V_TEARDOWN, 0, 0);
		rt_irq_disable();
		ok &= id >= 0 && tc(TC_SIGNAL, id, 1, TC_BY_VCPU) == 0;
		wait_for(&deliveries[V_TEARDOWN], ++expect, 0);
		ok &= deliveries[V_TEARDOWN] == expect;
		ok &= tc(TC_LINE_DESTROY, id, 0, 0) == 0;
	}
	rt_tap_ok(ok, "20 rounds: backend closes its eventfd, line torn down and re-created (%lu deliveries)",
		  (unsigned long)deliveries[V_TEARDOWN]);
}

static void test_level(void)
{
	if (logical)
		rt_ioapic_route_logical(LEVEL_PIN, V_LEVEL, true, false, (uint8_t)(1u << level_cpu));
	else
		rt_ioapic_route_dest(LEVEL_PIN, V_LEVEL, true, false, ids[level_cpu]);
	int64_t id = tc(TC_LINE_LEVEL, LEVEL_PIN, 0, 0);
	rt_tap_ok(id >= 0, "level line on IOAPIC pin %d, %s destination (%ld)", LEVEL_PIN,
		  logical ? "logical" : "physical", (long)id);
	mb.done = 0;
	tc(TC_LEVEL_WORK, id, LEVEL_WORK, 0);
	wait_for(&level_consumed, LEVEL_WORK, 0);
	uint64_t sent = (uint64_t)tc(TC_WAIT, 0, 0, 0);
	rt_printf("# level: work %d signals %lu deliveries %lu consumed %lu spurious %lu\n", LEVEL_WORK,
		  (unsigned long)sent, (unsigned long)deliveries[V_LEVEL],
		  (unsigned long)level_consumed, (unsigned long)level_spurious);
	rt_tap_ok(level_consumed == LEVEL_WORK,
		  "level: every work item was delivered (backend re-raised after each EOI)");
	/*
	 * A backend that re-raises on a resample may race with the ISR that
	 * takes the last item: one delivery then finds no work, as with any
	 * level-triggered device whose line is lowered only at EOI. Never
	 * more deliveries than signals, and no storm: at most a few such.
	 */
	rt_tap_ok(deliveries[V_LEVEL] <= sent && level_spurious <= LEVEL_WORK / 50,
		  "level: %lu deliveries for %lu signals, %lu without work (no storm)",
		  (unsigned long)deliveries[V_LEVEL], (unsigned long)sent,
		  (unsigned long)level_spurious);
	if (ncpu > 1)
		rt_tap_ok(level_on_cpu[level_cpu] == deliveries[V_LEVEL],
			  "level: every delivery on CPU %u (APIC id %u), the pin's destination (%lu of %lu)",
			  level_cpu, ids[level_cpu], (unsigned long)level_on_cpu[level_cpu],
			  (unsigned long)deliveries[V_LEVEL]);
	tc(TC_LINE_DESTROY, id, 0, 0);
	rt_ioapic_route(LEVEL_PIN, V_LEVEL, true, true);
}

/* Doorbells: each MMIO write at CPL3, each port write at CPL0. */
struct db {
	uint64_t space, addr, len, datamatch, data;
	int64_t id;
};

static long mmio_writes(void *arg)
{
	(void)arg;
	const uint64_t b = FDVM_TESTCTL_MMIO + TC_DOORBELL_AREA;
	for (int i = 0; i < 1000; i++) {
		mmio_write32(b + 0x00, (uint32_t)i);	/* wildcard len 4 */
		mmio_write32(b + 0x08, 0xfa);		/* datamatch 0xfa */
	}
	for (int i = 0; i < 10; i++)
		mmio_write16(b + 0x00, 1);		/* wrong size: to the device */
	for (int i = 0; i < 100; i++)
		mmio_write32(b + 0x08, 0xfb);		/* wrong value: to the device */
	for (int i = 0; i < 10; i++) {		/* any length */
		mmio_write8(b + 0x10, 1);
		mmio_write16(b + 0x10, 1);
		mmio_write32(b + 0x10, 1);
		mmio_write64(b + 0x10, 1);
	}
	for (int i = 0; i < 100; i++)
		mmio_write64(b + 0x18, 0x1122334455667788ull);
	for (int i = 0; i < 10; i++)
		mmio_write64(b + 0x18, 0x1122334455667789ull);
	return 0;
}

static void pio_writes(void)
{
	const uint16_t p = FDVM_TESTCTL_PIO;
	for (int i = 0; i < 100; i++) {
		outb(p, (uint8_t)i);
		outw(p + 2, 0xfa);
	}
	for (int i = 0; i < 10; i++)
		outw(p + 2, 0xfb);
	for (int i = 0; i < 10; i++) {
		outb(p + 4, 1);
		outw(p + 4, 1);
		outl(p + 4, 1);
	}
}

static void test_doorbells(void)
{
	const uint64_t b = FDVM_TESTCTL_MMIO + TC_DOORBELL_AREA;
	struct db dbs[] = {
		{ TC_SPACE_MMIO, b + 0x00, 4, 0, 0, 0 },
		{ TC_SPACE_MMIO, b + 0x08, 4, 1, 0xfa, 0 },
		{ TC_SPACE_MMIO, b + 0x10, 0, 0, 0, 0 },
		{ TC_SPACE_MMIO, b + 0x18, 8, 1, 0x1122334455667788ull, 0 },
		{ TC_SPACE_PIO, FDVM_TESTCTL_PIO, 1, 0, 0, 0 },
		{ TC_SPACE_PIO, FDVM_TESTCTL_PIO + 2, 2, 1, 0xfa, 0 },
		{ TC_SPACE_PIO, FDVM_TESTCTL_PIO + 4, 0, 0, 0, 0 },
	};
	const uint64_t expect[] = { 1000, 1000, 40, 100, 100, 100, 30 };
	const unsigned n = sizeof(dbs) / sizeof(dbs[0]);
	bool created = true;

	for (unsigned i = 0; i < n; i++) {
		dbs[i].id = tc(TC_DOORBELL, dbs[i].space | dbs[i].len << 8 | dbs[i].datamatch << 16,
			       dbs[i].addr, dbs[i].data);
		created &= dbs[i].id >= 0;
	}
	rt_tap_ok(created, "7 doorbells: MMIO/port x wildcard, datamatch, any-length");
	tc(TC_DEVICE_WRITES, 0, 0, 0);
	rt_user_call(mmio_writes, 0);
	pio_writes();
	for (unsigned i = 0; i < n; i++) {
		int64_t got = tc(TC_DOORBELL_COUNT, dbs[i].id, 0, 0);
		rt_tap_ok(got == (int64_t)expect[i], "%s doorbell 0x%lx len %lu%s: %ld signals, expected %lu",
			  dbs[i].space == TC_SPACE_PIO ? "port" : "mmio", (unsigned long)dbs[i].addr,
			  (unsigned long)dbs[i].len, dbs[i].datamatch ? " datamatch" : "", (long)got,
			  (unsigned long)expect[i]);
	}
	int64_t dev = tc(TC_DEVICE_WRITES, 0, 0, 0);
	rt_tap_ok(dev == 130, "writes that match no doorbell reach the device as before (%ld of 130)",
		  (long)dev);
	for (unsigned i = 0; i < n; i++)
		tc(TC_DOORBELL_DESTROY, dbs[i].id, 0, 0);
	rt_user_call(mmio_writes, 0);
	pio_writes();
	dev = tc(TC_DEVICE_WRITES, 0, 0, 0);
	rt_tap_ok(dev == 2500, "after unregistering, every write reaches the device (%ld of %d)",
		  (long)dev, 2500);
}

/* The other CPUs: asleep in HLT with interrupts on, so that their vCPU
 * threads leave the host's cores to the rest (a spinning CPU would slow
 * the storm on a host with fewer cores than vCPUs). */
static void ap_main(unsigned index)
{
	(void)index;
	if (logical) {
		rt_lapic_flat_logical();
		__atomic_add_fetch(&aps_logical, 1, __ATOMIC_SEQ_CST);
	}
	while (!aps_stop)
		rt_wait_for_interrupt();
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	for (unsigned v = V_INLINE; v <= V_TEARDOWN; v++)
		rt_irq_set_handler(v, count_isr, 0);
	rt_irq_set_handler(V_LEVEL, level_isr, 0);

	if (rt_cmdline_has("cpus")) {
		logical = rt_cmdline_has("logical");
		if (logical)
			rt_lapic_flat_logical();
		ncpu = rt_smp_start(ap_main, ids);
		level_cpu = logical && ncpu > 8 ? 7 : ncpu - 1; /* 8 LDR bits */
		while (logical && aps_logical < ncpu - 1)
			__builtin_ia32_pause();
	}
	rt_tap_plan(ncpu > 1 ? 29 : 28);
	rt_need_harness();
	rt_printf("# paths: %s\n", tc(TC_KERNEL_PATH, 0, 0, 0) ? "kernel (KVM_IRQFD, KVM_IOEVENTFD)"
								: "userspace fallbacks");
	rt_tap_ok(tc(TC_MAILBOX, (uint64_t)&mb, 0, 0) == 0, "mailbox registered");
	test_vcpu_and_coalescing();
	stress("thread", V_THREAD, TC_BY_THREAD);
	stress("process", V_PROCESS, TC_BY_PROCESS);
	test_pending_at_assign();
	test_teardown();
	test_level();
	test_doorbells();
	aps_stop = 1;
	return rt_tap_done();
}
