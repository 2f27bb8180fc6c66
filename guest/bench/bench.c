/*
 * The benchmark guest. The same file runs under fdvm, QEMU and the bare
 * KVM floor loop; it times each row with the TSC and prints
 *   BENCH <row> <repetition> <operations> <cycles>
 * for the host to turn into a table. Command line:
 *   reps=R ops=N iops=M rows=a,b,...   (rows by name, see below)
 *   floor                              (addresses of the floor loop, no PCI)
 * MMIO rows loop at CPL3, where this machine runs guest code natively;
 * port I/O rows must loop at CPL0 (port I/O faults at CPL3 here).
 */
#include "fdvm/bench.h"
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"

static uint64_t reps = 5, ops = 2000, iops = 1000;
static const char *rows = "";
static volatile uint64_t irqs;

static uint64_t arg(const char *key, uint64_t def)
{
	size_t n = strlen(key);
	for (const char *p = rt_cmdline(); *p; p++) {
		if ((p == rt_cmdline() || p[-1] == ' ') && !strncmp(p, key, n) && p[n] == '=') {
			uint64_t v = 0;
			for (p += n + 1; *p >= '0' && *p <= '9'; p++)
				v = v * 10 + (uint64_t)(*p - '0');
			return v;
		}
	}
	return def;
}

static bool want(const char *row)
{
	size_t n = strlen(row);
	for (const char *p = rows; *p;) {
		const char *e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		if ((size_t)(e - p) == n && !strncmp(p, row, n))
			return true;
		if (*e != ',')
			break;
		p = e + 1;
	}
	return false;
}

struct loop {
	uint64_t addr, n;
	uint8_t data;
	uint64_t cycles;
};

static long mmio_loop(void *arg)
{
	struct loop *l = arg;
	volatile uint8_t *p = (volatile uint8_t *)l->addr;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++)
		*p = l->data;
	l->cycles = rt_rdtsc() - t0;
	return 0;
}

static void pio_loop(struct loop *l)
{
	uint16_t port = (uint16_t)l->addr;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++)
		outb(port, l->data);
	l->cycles = rt_rdtsc() - t0;
}

static void row(const char *name, bool mmio, uint64_t addr, uint8_t data)
{
	if (!want(name))
		return;
	for (uint64_t r = 0; r < reps; r++) {
		struct loop l = { addr, ops, data, 0 };
		if (mmio)
			rt_user_call(mmio_loop, &l);
		else
			pio_loop(&l);
		rt_printf("BENCH %s %lu %lu %lu\n", name, (unsigned long)r, (unsigned long)ops,
			  (unsigned long)l.cycles);
	}
}

static void isr(struct rt_frame *f, void *opaque)
{
	(void)f;
	(void)opaque;
	irqs++;
}

/* CPL3, interrupts on: trigger one interrupt, wait for its ISR, n times. */
static long irq_loop(void *arg)
{
	struct loop *l = arg;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++) {
		uint64_t before = irqs;
		*(volatile uint32_t *)l->addr = 1;
		while (irqs == before)
			__asm__ volatile("pause");
	}
	l->cycles = rt_rdtsc() - t0;
	return 0;
}

static void irq_row(const char *name, uint64_t mode, uint64_t reg)
{
	if (!want(name))
		return;
	mmio_write64(FDVM_BENCH_MMIO + BENCH_REG_MODE, mode);
	for (uint64_t r = 0; r < reps; r++) {
		struct loop l = { FDVM_BENCH_MMIO + reg, iops, 0, 0 };
		rt_user_call(irq_loop, &l);
		rt_printf("BENCH %s %lu %lu %lu\n", name, (unsigned long)r, (unsigned long)iops,
			  (unsigned long)l.cycles);
	}
}

/* ---- blk: 4 KiB random reads and writes at a queue depth ---- */

#define BLK_MAX_OPS 50000
static struct vdev blk;
static struct vq bq;
static struct {
	uint32_t type, ioprio;
	uint64_t sector;
	uint8_t status;
	uint64_t t0;
} breq[VQ_MAX];
static uint8_t bdata[64][4096] __attribute__((aligned(4096)));
static uint64_t lat[BLK_MAX_OPS];

struct blk_run {
	uint32_t type;
	unsigned depth;
	uint64_t ops, blocks, cycles, errors;
};

static bool blk_submit(unsigned slot, uint32_t type, uint64_t sector)
{
	breq[slot].type = type;
	breq[slot].sector = sector;
	breq[slot].status = 0xff;
	breq[slot].t0 = rt_rdtsc();
	struct vbuf b[3] = { { (uint64_t)&breq[slot], 16, false },
			     { (uint64_t)bdata[slot], 4096, type == 0 },
			     { (uint64_t)&breq[slot].status, 1, true } };
	return vq_add(&bq, b, 3, &breq[slot]);
}

static long blk_loop(void *arg)
{
	struct blk_run *r = arg;
	uint64_t rng = 0x853c49e6748fea9bull, done = 0, started = 0;
	uint64_t t0 = rt_rdtsc();
	for (unsigned s = 0; s < r->depth && started < r->ops; s++, started++)
		blk_submit(s, r->type, (rt_rand(&rng) % r->blocks) * 8);
	vq_kick(&bq);
	while (done < r->ops) {
		void *c = vq_get(&bq, 0);
		if (!c)
			continue;
		unsigned s = (unsigned)((__typeof__(&breq[0]))c - breq);
		lat[done++] = rt_rdtsc() - breq[s].t0;
		r->errors += breq[s].status != 0;
		if (started < r->ops) {
			blk_submit(s, r->type, (rt_rand(&rng) % r->blocks) * 8);
			started++;
			vq_kick(&bq);
		}
	}
	r->cycles = rt_rdtsc() - t0;
	return 0;
}

static void sort(uint64_t *a, uint64_t n)
{
	/* Heapsort: no recursion, no allocation. */
	for (uint64_t i = n / 2; i-- > 0;) {
		for (uint64_t k = i;;) {
			uint64_t c = 2 * k + 1;
			if (c >= n)
				break;
			if (c + 1 < n && a[c + 1] > a[c])
				c++;
			if (a[k] >= a[c])
				break;
			uint64_t t = a[k]; a[k] = a[c]; a[c] = t; k = c;
		}
	}
	for (uint64_t end = n; end-- > 1;) {
		uint64_t t = a[0]; a[0] = a[end]; a[end] = t;
		for (uint64_t k = 0;;) {
			uint64_t c = 2 * k + 1;
			if (c >= end)
				break;
			if (c + 1 < end && a[c + 1] > a[c])
				c++;
			if (a[k] >= a[c])
				break;
			t = a[k]; a[k] = a[c]; a[c] = t; k = c;
		}
	}
}

static int blk_bench(void)
{
	uint64_t bops = arg("bops", 5000);
	if (bops > BLK_MAX_OPS)
		bops = BLK_MAX_OPS;
	if (!virtio_find(2, 0, &blk) || !virtio_negotiate(&blk, 1ull << VIRTIO_F_EVENT_IDX |
							       1ull << VIRTIO_F_INDIRECT_DESC) ||
	    !virtio_setup_vq(&blk, &bq, 0, 64, 0xffff)) {
		rt_printf("bench: no usable virtio-blk\n");
		return 1;
	}
	virtio_driver_ok(&blk);
	uint64_t blocks = virtio_cfg64(&blk, 0) / 8;
	static const unsigned depths[] = { 1, 32 };
	for (uint64_t rep = 0; rep < reps; rep++)
		for (unsigned w = 0; w < 2; w++)
			for (unsigned d = 0; d < 2; d++) {
				struct blk_run r = { w ? 1 : 0, depths[d], bops, blocks, 0, 0 };
				rt_user_call(blk_loop, &r);
				sort(lat, bops);
				uint64_t sum = 0;
				for (uint64_t i = 0; i < bops; i++)
					sum += lat[i];
				rt_printf("BLK %s %u %lu %lu %lu %lu %lu %lu\n", w ? "write" : "read",
					  depths[d], (unsigned long)rep, (unsigned long)bops,
					  (unsigned long)r.cycles, (unsigned long)(sum / bops),
					  (unsigned long)lat[bops * 99 / 100], (unsigned long)r.errors);
			}
	rt_printf("BENCH-END\n");
	return 0;
}

static void select_test(const struct pci_dev *d, unsigned bar, uint8_t test)
{
	if (d->bar_io[bar])
		outb((uint16_t)d->bar[bar], test);
	else
		mmio_write8(d->bar[bar], test);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	reps = arg("reps", reps);
	ops = arg("ops", ops);
	iops = arg("iops", iops);
	for (const char *p = rt_cmdline(); *p; p++)
		if ((p == rt_cmdline() || p[-1] == ' ') && !strncmp(p, "rows=", 5))
			rows = p + 5;
	rt_printf("BENCH-START reps=%lu ops=%lu iops=%lu\n", (unsigned long)reps,
		  (unsigned long)ops, (unsigned long)iops);

	if (rt_cmdline_has("blk"))
		return blk_bench();
	if (rt_cmdline_has("floor")) {
		row("mmio-exit", true, FDVM_FLOOR_MMIO, 0xfa);
		row("mmio-wildcard", true, FDVM_FLOOR_MMIO + 8, 0xce);
		row("pio-exit", false, FDVM_FLOOR_PIO, 0xfa);
		row("pio-wildcard", false, FDVM_FLOOR_PIO + 8, 0xce);
		rt_printf("BENCH-END\n");
		return 0;
	}

	/* pci-testdev: test 0..2 = no eventfd, wildcard, datamatch; the
	 * header says where to write what. */
	struct pci_dev d;
	if (!pci_find(0x1b36, 0x0005, &d)) {
		rt_printf("bench: no pci-testdev\n");
		return 1;
	}
	static const char *const names[2][3] = {
		{ "mmio-exit", "mmio-wildcard", "mmio-datamatch" },
		{ "pio-exit", "pio-wildcard", "pio-datamatch" },
	};
	for (unsigned bar = 0; bar < 2; bar++) {
		for (uint8_t t = 0; t < 3; t++) {
			if (!want(names[bar][t]))
				continue;
			select_test(&d, bar, t);
			uint32_t off, data;
			if (d.bar_io[bar]) {
				off = inl((uint16_t)(d.bar[bar] + 4));
				data = inb((uint16_t)(d.bar[bar] + 8));
			} else {
				off = mmio_read32(d.bar[bar] + 4);
				data = mmio_read8(d.bar[bar] + 8);
			}
			row(names[bar][t], !d.bar_io[bar], d.bar[bar] + off, (uint8_t)data);
		}
	}
	select_test(&d, 0, 0xff);

	if (mmio_read32(FDVM_BENCH_MMIO + BENCH_REG_MAGIC) == FDVM_BENCH_MAGIC) {
		rt_irq_set_handler(BENCH_VECTOR, isr, 0);
		irq_row("irq-irqfd", BENCH_INJECT_IRQFD, BENCH_REG_KICK);
		irq_row("irq-signal-msi", BENCH_INJECT_SIGNAL_MSI, BENCH_REG_KICK);
		irq_row("irq-userspace", BENCH_INJECT_USERSPACE, BENCH_REG_KICK);
		irq_row("roundtrip-kernel", 0, BENCH_DOORBELL_KERNEL);
		irq_row("roundtrip-userspace", 0, BENCH_DOORBELL_USER);
	}
	rt_printf("BENCH-END\n");
	return 0;
}
