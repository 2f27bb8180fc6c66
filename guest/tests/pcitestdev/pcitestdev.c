/*
 * Drives pci-testdev (1b36:0005) as kvm-unit-tests does: for each of its
 * six tests, select it, read the header, write the data 16 times at the
 * offset, and read the count back: 16 for the no-eventfd tests, 0 where an
 * eventfd (a doorbell) took the writes. Runs unchanged on fdvm
 * (--device pci-testdev) and on QEMU (-device pci-testdev).
 */
#include "io.h"
#include "pci.h"
#include "rt.h"

#define WRITES 16

struct hdr_view {
	uint8_t test, width;
	uint32_t offset;
	uint8_t data;
	uint32_t count;
	char name[40];
};

/* Port or MMIO, by BAR type: byte accessors on one BAR. */
static struct pci_dev dev;

static uint8_t rd8(unsigned bar, uint32_t off)
{
	return dev.bar_io[bar] ? inb((uint16_t)(dev.bar[bar] + off)) : mmio_read8(dev.bar[bar] + off);
}
static uint32_t rd32(unsigned bar, uint32_t off)
{
	return dev.bar_io[bar] ? inl((uint16_t)(dev.bar[bar] + off)) : mmio_read32(dev.bar[bar] + off);
}
static void wr8(unsigned bar, uint32_t off, uint8_t v)
{
	if (dev.bar_io[bar])
		outb((uint16_t)(dev.bar[bar] + off), v);
	else
		mmio_write8(dev.bar[bar] + off, v);
}

static void read_hdr(unsigned bar, struct hdr_view *h)
{
	h->test = rd8(bar, 0);
	h->width = rd8(bar, 1);
	h->offset = rd32(bar, 4);
	h->data = rd8(bar, 8);
	h->count = rd32(bar, 12);
	unsigned i = 0;
	for (; i < sizeof(h->name) - 1; i++)
		if (!(h->name[i] = (char)rd8(bar, 16 + i)))
			break;
	h->name[i] = 0;
}

int guest_main(const char *cmdline)
{
	static const char *const names[] = { "mmio-no-eventfd", "mmio-wildcard-eventfd",
					     "mmio-datamatch-eventfd", "portio-no-eventfd",
					     "portio-wildcard-eventfd", "portio-datamatch-eventfd" };
	(void)cmdline;
	rt_tap_plan(2 + 6 * 3);
	bool found = pci_find(0x1b36, 0x0005, &dev);
	if (!found)
		rt_needs("QEMU's pci-testdev (1b36:0005)",
			 "fdvm run --device pci-testdev GUEST.elf, or QEMU's -device pci-testdev");
	rt_tap_ok(found, "pci-testdev found (slot %u)", dev.slot);
	if (!found)
		return rt_tap_done();
	rt_tap_ok(!dev.bar_io[0] && dev.bar_size[0] == 4096 && dev.bar_io[1] && dev.bar_size[1] == 256,
		  "BAR0 MMIO 4 KiB at 0x%lx, BAR1 256 ports at 0x%lx", (unsigned long)dev.bar[0],
		  (unsigned long)dev.bar[1]);
	for (unsigned t = 0; t < 6; t++) {
		unsigned bar = t / 3;
		struct hdr_view h;
		wr8(bar, 0, (uint8_t)(t % 3));
		read_hdr(bar, &h);
		rt_tap_ok(h.test == t && h.width == 1 && !strcmp(h.name, names[t]) && h.count == 0,
			  "test %u selected: \"%s\" width %u offset %u data 0x%x", t, h.name, h.width,
			  (unsigned)h.offset, h.data);
		for (int i = 0; i < WRITES; i++)
			wr8(bar, h.offset, h.data);
		uint32_t count = rd32(bar, 12);
		uint32_t expect = t % 3 == 0 ? WRITES : 0;
		rt_tap_ok(count == expect, "%s: count %u after %d writes (expected %u)", h.name,
			  (unsigned)count, WRITES, (unsigned)expect);
		/* A value the datamatch tests do not match reaches the device,
		 * which counts it only if it is the data. */
		wr8(bar, h.offset, (uint8_t)(h.data ^ 1));
		rt_tap_ok(rd32(bar, 12) == expect,
			  "%s: a non-matching value is not counted", h.name);
	}
	wr8(0, 0, 0xff); /* no test selected */
	return rt_tap_done();
}
