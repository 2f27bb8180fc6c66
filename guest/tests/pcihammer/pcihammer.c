/*
 * Hostile PCI accesses: random widths at random offsets of configuration
 * space (ports, including misaligned data-port accesses and other buses and
 * functions, and ECAM), of the MSI-X table and PBA wherever the guest has
 * moved the BAR, while a backend signals vectors. Run with unhandled
 * accesses ignored (a BAR may land on nothing). fdvm must survive it, and
 * the device must work again once reprogrammed.
 */
#include "testctl.h"
#include "io.h"
#include "pci.h"
#include "rt.h"

#define VEC 0x72

static struct tc_msix_mailbox mb __attribute__((aligned(64)));
static volatile uint64_t hits;
static uint64_t rng = 0x6a09e667f3bcc909ull;
static struct pci_dev d;

static void isr(struct rt_frame *f, void *opaque)
{
	(void)f;
	(void)opaque;
	hits++;
}

static void rand_access(uint64_t base, uint64_t span)
{
	uint64_t r = rt_rand(&rng), v = rt_rand(&rng);
	uint64_t a = base + (r % span);
	bool write = (r >> 40) & 1;
	switch ((r >> 41) & 3) {
	case 0: write ? mmio_write8(a, (uint8_t)v) : (void)mmio_read8(a); break;
	case 1: write ? mmio_write16(a, (uint16_t)v) : (void)mmio_read16(a); break;
	case 2: write ? mmio_write32(a, (uint32_t)v) : (void)mmio_read32(a); break;
	default: write ? mmio_write64(a, v) : (void)mmio_read64(a); break;
	}
}

/* CPL3: ECAM and the MSI-X BAR wherever it is now. */
static long hammer_mmio(void *arg)
{
	uint64_t n = (uint64_t)arg;
	for (uint64_t i = 0; i < n; i++) {
		/* Bus 0 mostly, sometimes beyond ECAM's one bus. */
		rand_access(FDVM_PCI_ECAM_BASE, (i & 15) ? 0x8000 * 4 : FDVM_PCI_ECAM_SIZE - 8);
		uint64_t bar = mmio_read32(FDVM_PCI_ECAM_BASE + ((uint64_t)d.slot << 15) + 0x10) & ~0xfu;
		if (bar >= FDVM_PCI_MMIO_START && bar < FDVM_PCI_MMIO_END)
			rand_access(bar, FDVM_TEST_MSIX_BAR_SIZE);
	}
	return 0;
}

/* CPL0: the port mechanism, fewer (each access is emulated here). */
static void hammer_ports(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t r = rt_rand(&rng), v = rt_rand(&rng);
		uint32_t addr = (uint32_t)r;
		if (r & (1ull << 33))
			addr = 0x80000000u | (uint32_t)(r >> 40) << 8; /* bus 0, random dev/fn/reg */
		outl(0xcf8, addr);
		uint16_t port = (uint16_t)(0xcf8 + ((r >> 34) & 7));
		bool write = (r >> 37) & 1;
		switch ((r >> 38) & 3) {
		case 0: write ? outb(port, (uint8_t)v) : (void)inb(port); break;
		case 1: write ? outw(port, (uint16_t)v) : (void)inw(port); break;
		default: write ? outl(port, (uint32_t)v) : (void)inl(port); break;
		}
	}
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(4);
	rt_need_harness();
	bool found = pci_find(FDVM_TEST_PCI_VENDOR, FDVM_TEST_PCI_MSIX_DEVICE, &d);
	rt_tap_ok(found, "MSI-X test device found");
	if (!found)
		return rt_tap_done();
	uint32_t bar0 = (uint32_t)d.bar[0];
	rt_irq_set_handler(VEC, isr, 0);
	tc(TC_MSIX_MAILBOX, (uint64_t)&mb, 0, 0);

	for (int round = 0; round < 10; round++) {
		tc(TC_MSIX_ROUND, 500, TC_BY_THREAD, (uint64_t)round + 1);
		rt_user_call(hammer_mmio, (void *)8000);
		hammer_ports(300);
		tc(TC_WAIT, 0, 0, 0);
	}
	rt_tap_ok(true, "80000 random ECAM/BAR accesses and 3000 random port accesses survived");

	/* Put everything back, as a driver would after a reset. */
	rt_irq_disable();
	outl(0xcf8, 0);
	pci_use_ecam(false);
	for (unsigned s = 0; s < 32; s++) /* stray state elsewhere: decoding off */
		if (s != d.slot && pci_cfg_read(s, 0, 2) != 0xffff && s != 0)
			pci_cfg_write(s, 4, 0, 2);
	pci_cfg_write(d.slot, 4, 0, 2);
	pci_cfg_write(d.slot, 0x10, bar0, 4);
	pci_cfg_write(d.slot, 4, 7, 2);
	pci_cfg_write(d.slot, d.msix_cap + 2, 0, 2);
	for (unsigned i = 0; i < d.msix_n; i++)
		msix_program(&d, i, VEC);
	msix_enable(&d, true);
	rt_tap_ok(pci_cfg_read(d.slot, 0, 2) == FDVM_TEST_PCI_VENDOR && mmio_read32(bar0 + 8) == VEC,
		  "reprogrammed: IDs and the table read back");
	/* Drain what the storm left pending, then one clean delivery. */
	for (unsigned i = 0; i < d.msix_n; i++)
		msix_mask(&d, i, false);
	rt_irq_enable();
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 50000000ull;)
		__asm__ volatile("pause");
	rt_irq_disable();
	uint64_t before = hits;
	tc(TC_MSIX_SIGNAL, 3, 1, 0);
	rt_irq_enable();
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 50000000ull;)
		__asm__ volatile("pause");
	rt_irq_disable();
	rt_tap_ok(hits == before + 1, "vector 3 delivers exactly once after the storm (%lu)",
		  (unsigned long)(hits - before));
	return rt_tap_done();
}
