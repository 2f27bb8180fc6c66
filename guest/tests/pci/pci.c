/*
 * PCI from the guest's side, under the test harness: configuration space
 * through ports and ECAM, read-only fields, BAR sizing and moving, the
 * capability list, and MSI-X table, PBA, masking, enable and re-routing.
 */
#include "testctl.h"
#include "io.h"
#include "pci.h"
#include "rt.h"

#define VEC 0x70
#define VEC_ALT 0x71
#define N FDVM_TEST_MSIX_VECTORS

static volatile uint64_t hits[256];

static void isr(struct rt_frame *f, void *opaque)
{
	(void)opaque;
	hits[f->vector]++;
}

/* Lets pending interrupts in: sti, a moment, cli. */
static void settle(void)
{
	rt_irq_enable();
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 20000000ull;)
		__asm__ volatile("pause");
	rt_irq_disable();
}

static bool cfg_agree(unsigned slot)
{
	for (unsigned off = 0; off < 64; off += 4) {
		pci_use_ecam(false);
		uint32_t a = pci_cfg_read(slot, off, 4);
		uint8_t b1 = (uint8_t)pci_cfg_read(slot, off + 1, 1);
		uint16_t w2 = (uint16_t)pci_cfg_read(slot, off + 2, 2);
		pci_use_ecam(true);
		uint32_t e = pci_cfg_read(slot, off, 4);
		pci_use_ecam(false);
		if (a != e || b1 != (uint8_t)(a >> 8) || w2 != (uint16_t)(a >> 16))
			return false;
	}
	return true;
}

int guest_main(const char *cmdline)
{
	struct pci_dev d;
	(void)cmdline;

	rt_tap_plan(17);
	rt_need_harness();
	rt_irq_set_handler(VEC, isr, 0);
	rt_irq_set_handler(VEC_ALT, isr, 0);

	uint32_t id = pci_cfg_read(0, 0, 4), cls = pci_cfg_read(0, 8, 4) >> 8;
	rt_tap_ok(id == 0x00081b36 && cls == 0x060000, "host bridge 1b36:0008 class %06x in slot 0",
		  (unsigned)cls);
	rt_tap_ok(pci_cfg_read(31, 0, 4) == 0xffffffffu, "an empty slot reads all-ones");
	bool found = pci_find(FDVM_TEST_PCI_VENDOR, FDVM_TEST_PCI_MSIX_DEVICE, &d);
	rt_tap_ok(found && !d.bar_io[0] && d.bar_size[0] == FDVM_TEST_MSIX_BAR_SIZE,
		  "MSI-X test device in slot %u, BAR0 %lu bytes at 0x%lx", d.slot,
		  (unsigned long)d.bar_size[0], (unsigned long)d.bar[0]);
	if (!found)
		return rt_tap_done();
	rt_tap_ok(cfg_agree(0) && cfg_agree(d.slot),
		  "ports and ECAM agree, at every width and offset of the header");
	pci_cfg_write(d.slot, 0, 0x12345678, 4);
	pci_cfg_write(d.slot, 9, 0xff, 1);
	rt_tap_ok(pci_cfg_read(d.slot, 0, 2) == FDVM_TEST_PCI_VENDOR &&
			  pci_cfg_read(d.slot, 8, 4) >> 8 == 0xff0000,
		  "IDs and class code are read-only");
	rt_tap_ok(d.msix_cap && d.msix_n == N && d.msix_table == d.bar[0] &&
			  d.msix_pba == d.bar[0] + FDVM_TEST_MSIX_PBA,
		  "capability list: MSI-X at 0x%x, %u vectors, table BAR0+0, PBA BAR0+0x%x", d.msix_cap,
		  d.msix_n, FDVM_TEST_MSIX_PBA);

	/* The table: fields read back; reserved bits read as zero. */
	bool table_ok = true;
	for (unsigned i = 0; i < N; i++) {
		uint64_t e = d.msix_table + 16 * i;
		mmio_write32(e + 12, 0xffffffff);
		mmio_write32(e + 0, 0xfee00003);
		mmio_write32(e + 4, 0);
		mmio_write32(e + 8, 0x12340000 | i);
		table_ok &= mmio_read32(e + 0) == 0xfee00000 && mmio_read32(e + 8) == (0x12340000 | i) &&
			    mmio_read32(e + 12) == 1 && mmio_read64(e) == 0xfee00000ull;
	}
	rt_tap_ok(table_ok, "table entries read back; address bits 1:0 and reserved control bits are 0");

	for (unsigned i = 0; i < N; i++)
		msix_program(&d, i, VEC);
	msix_enable(&d, true);

	rt_irq_disable();
	tc(TC_MSIX_SIGNAL, 0, 3, 0);
	settle();
	rt_tap_ok(hits[VEC] == 0 && msix_pending(&d, 0) && !msix_pending(&d, 1),
		  "masked vector: 3 signals, no delivery, PBA bit 0 set");
	msix_mask(&d, 0, false);
	settle();
	rt_tap_ok(hits[VEC] == 1 && !msix_pending(&d, 0), "unmask: delivered once, PBA clear (%lu)",
		  (unsigned long)hits[VEC]);

	msix_function_mask(&d, true);
	tc(TC_MSIX_SIGNAL, 0, 1, 0);
	settle();
	rt_tap_ok(hits[VEC] == 1 && msix_pending(&d, 0), "function mask: held as pending");
	msix_function_mask(&d, false);
	settle();
	rt_tap_ok(hits[VEC] == 2 && !msix_pending(&d, 0), "function unmask: delivered once");

	msix_enable(&d, false);
	tc(TC_MSIX_SIGNAL, 0, 1, 0);
	settle();
	rt_tap_ok(hits[VEC] == 2, "MSI-X disabled: no delivery");
	msix_enable(&d, true);
	settle();
	rt_tap_ok(hits[VEC] == 3, "MSI-X enabled: the pending one delivered once");

	/* Re-route while unmasked. */
	mmio_write32(d.msix_table + 8, VEC_ALT);
	tc(TC_MSIX_SIGNAL, 0, 1, 0);
	settle();
	rt_tap_ok(hits[VEC] == 3 && hits[VEC_ALT] == 1, "data rewritten while unmasked: new vector");

	/* Move BAR0: the table moves with it. */
	const uint32_t moved = 0xd0000000;
	pci_cfg_write(d.slot, 0x10, moved, 4);
	rt_tap_ok(pci_cfg_read(d.slot, 0x10, 4) == moved && mmio_read32(moved + 8) == VEC_ALT,
		  "BAR0 moved to 0x%x: the table is there", moved);
	tc(TC_MSIX_SIGNAL, 0, 1, 0);
	settle();
	rt_tap_ok(hits[VEC_ALT] == 2, "and vector 0 still delivers");
	uint16_t cmd = (uint16_t)pci_cfg_read(d.slot, 4, 2);
	pci_cfg_write(d.slot, 4, cmd & ~2u, 2);
	pci_cfg_write(d.slot, 4, cmd, 2);
	rt_tap_ok(mmio_read32(moved + 8) == VEC_ALT, "memory decoding off and on again: table back");
	return rt_tap_done();
}
