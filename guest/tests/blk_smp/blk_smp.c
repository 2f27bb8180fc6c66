/*
 * virtio-blk with one queue per CPU: every CPU the MADT lists is started,
 * queue i's MSI-X vector (its own vector number, VEC0 + i) is aimed at CPU
 * i's APIC id, and all CPUs drive their queues at once from CPL3: rounds
 * of writes then reads of their own region, checked by content, sleeping
 * in HLT until a completion interrupt whenever nothing has completed. Every interrupt must be taken by the CPU its
 * vector names, and every CPU must take some. Needs a disk with as many
 * queues as CPUs (fdvm run --cpus N --blk disk.img,queues=N), at least
 * 1 MiB a CPU.
 */
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "rt_defs.h"
#include "virtio.h"

#define VEC0 0x60
#define SECTOR 512
#define DEPTH 16
#define ROUNDS 40
#define REGION 2048		/* sectors a CPU owns */

struct req {
	struct vblk_hdr h;
	uint8_t status;
};

static struct vdev dev;
static struct vq vqs[RT_MAX_CPUS];
static struct req reqs[RT_MAX_CPUS][DEPTH];
static uint8_t data[RT_MAX_CPUS][DEPTH][4096] __attribute__((aligned(4096)));
static volatile uint64_t irqs[RT_MAX_CPUS], wrong_cpu, completed[RT_MAX_CPUS], bad[RT_MAX_CPUS];
static volatile unsigned finished;
static volatile int go; /* every vector aimed and unmasked: start */
static uint32_t ids[RT_MAX_CPUS];
static unsigned ncpu;

static void isr(struct rt_frame *f, void *o)
{
	(void)o;
	unsigned q = (unsigned)f->vector - VEC0, me = rt_cpu_index();
	if (q != me)
		__atomic_add_fetch(&wrong_cpu, 1, __ATOMIC_RELAXED);
	else
		irqs[me]++;
}

static uint32_t word(unsigned cpu, unsigned round, uint64_t sector, unsigned w)
{
	uint64_t x = (sector * 0x9e3779b97f4a7c15ull) ^ (w * 0xbf58476d1ce4e5b9ull) ^
		     ((uint64_t)cpu << 40 | round);
	x ^= x >> 29;
	return (uint32_t)(x * 0x94d049bb133111ebull >> 32);
}

/* CPL0, from CPL3 through a kernel call: sleeps until an interrupt (one
 * that came already is taken at the sti). */
static long halt_once(void *arg)
{
	(void)arg;
	rt_wait_for_interrupt();
	return 0;
}

/*
 * CPL3, interrupts on: DEPTH requests at once, then takes the completions
 * as an interrupt-driven driver does: when none is there, it asks for an
 * interrupt at the next one (event index), looks once more, and sleeps in
 * HLT until an interrupt comes. A CPU that spun here would keep the
 * device's thread off a host with fewer cores than vCPUs.
 */
static bool batch(unsigned cpu, uint32_t type, unsigned round)
{
	struct vq *q = &vqs[cpu];
	vq_enable_interrupts(q, true);
	for (unsigned k = 0; k < DEPTH; k++) {
		struct req *r = &reqs[cpu][k];
		uint64_t sector = (uint64_t)cpu * REGION + (round % 16) * DEPTH * 8 + k * 8;
		r->h = (struct vblk_hdr){ type, 0, sector };
		r->status = 0xff;
		if (type == VBLK_T_OUT)
			for (unsigned w = 0; w < 1024; w++)
				((uint32_t *)data[cpu][k])[w] = word(cpu, round, sector + w / 128, w % 128);
		struct vbuf b[3] = { { (uint64_t)&r->h, 16, false },
				     { (uint64_t)data[cpu][k], 4096, type == VBLK_T_IN },
				     { (uint64_t)&r->status, 1, true } };
		if (!vq_add(q, b, 3, r))
			return false;
	}
	vq_kick(q);
	unsigned got = 0;
	while (got < DEPTH) {
		struct req *r = vq_get(q, 0);
		if (r) {
			got++;
			completed[cpu]++;
			if (r->status != 0)
				bad[cpu]++;
			continue;
		}
		uint64_t before = irqs[cpu];
		vq_enable_interrupts(q, true);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if ((r = vq_get(q, 0))) {
			got++;
			completed[cpu]++;
			if (r->status != 0)
				bad[cpu]++;
			continue;
		}
		while (irqs[cpu] == before)
			rt_kernel_call(halt_once, 0);
	}
	if (type == VBLK_T_IN)
		for (unsigned k = 0; k < DEPTH; k++) {
			uint64_t sector = reqs[cpu][k].h.sector;
			for (unsigned w = 0; w < 1024; w++)
				if (((uint32_t *)data[cpu][k])[w] != word(cpu, round, sector + w / 128, w % 128)) {
					bad[cpu]++;
					break;
				}
		}
	return true;
}

static long drive(void *arg)
{
	(void)arg;
	unsigned cpu = rt_cpu_index();
	for (unsigned round = 0; round < ROUNDS; round++)
		if (!batch(cpu, VBLK_T_OUT, round) || !batch(cpu, VBLK_T_IN, round)) {
			bad[cpu]++;
			break;
		}
	__atomic_add_fetch(&finished, 1, __ATOMIC_SEQ_CST);
	return 0;
}

static void ap_main(unsigned index)
{
	(void)index;
	while (!go)
		__asm__ volatile("pause");
	rt_user_call(drive, 0);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(5);
	bool found = virtio_find(2, 0, &dev);
	if (!found)
		rt_needs("a virtio-blk disk with a queue per CPU",
			 "fdvm run --cpus N --blk disk.img,queues=N GUEST.elf");
	unsigned listed = rt_acpi_cpus(ids, RT_MAX_CPUS);
	uint16_t nq = (uint16_t)(virtio_cfg32(&dev, 32) >> 16);
	if (virtio_cfg64(&dev, 0) < (uint64_t)listed * REGION)
		rt_needs("a larger disk", "1 MiB a CPU");
	rt_tap_ok(listed >= 2 && nq >= listed, "%u CPUs, %u queues", listed, nq);
	/* Queue i for CPU index i (the start order). */
	virtio_pool_reset();
	bool ok = virtio_negotiate(&dev, 1ull << 12 | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_F_INDIRECT_DESC);
	ncpu = listed < RT_MAX_CPUS ? listed : RT_MAX_CPUS;
	if (nq < ncpu)
		ncpu = nq;
	msix_enable(&dev.pci, true);
	for (unsigned i = 0; ok && i < ncpu; i++) {
		rt_irq_set_handler(VEC0 + i, isr, 0);
		ok = virtio_setup_vq(&dev, &vqs[i], (uint16_t)i, 64, (uint16_t)i);
	}
	if (ok)
		virtio_driver_ok(&dev);
	rt_tap_ok(ok, "%u queues set up, vector i for queue i", ncpu);
	if (!ok)
		return rt_tap_done();
	unsigned n = rt_smp_start(ap_main, ids);
	/* Now the APIC ids by index are known: aim each vector at its CPU. */
	for (unsigned i = 0; i < ncpu && i < n; i++) {
		msix_program_dest(&dev.pci, i, (uint8_t)(VEC0 + i), ids[i]);
		msix_mask(&dev.pci, i, false);
	}
	/* Only now, with every vector where it belongs, does I/O start (an AP
	 * done before its vector was unmasked would halt with its interrupt
	 * still pending). CPU 0 drives its own queue too. */
	go = 1;
	rt_user_call(drive, 0);
	for (uint64_t t0 = rt_rdtsc(); finished < n && rt_rdtsc() - t0 < 120000000000ull;)
		__asm__ volatile("pause");
	rt_tap_ok(n == ncpu && finished == n, "%u CPUs drove their queues at once (%u finished)", n, finished);
	bool all_ok = true, all_irq = true;
	for (unsigned i = 0; i < n; i++) {
		all_ok &= bad[i] == 0 && completed[i] == 2ull * ROUNDS * DEPTH;
		all_irq &= irqs[i] > 0;
		rt_printf("# cpu %u (apic %u): %lu requests, %lu interrupts, %lu bad\n", i, ids[i],
			  (unsigned long)completed[i], (unsigned long)irqs[i], (unsigned long)bad[i]);
	}
	rt_tap_ok(all_ok, "every request completed and every read as written");
	rt_tap_ok(all_irq && wrong_cpu == 0, "each queue's interrupts on its own CPU (%lu elsewhere)",
		  (unsigned long)wrong_cpu);
	return rt_tap_done();
}
