/*
 * Fuzz target: PCI as a guest reaches it, through ports 0xcf8/0xcfc, ECAM
 * and the BARs, on a real VM's I/O bus (made once; no vCPU runs). Each
 * input plugs a device of its own (BAR layout, MSI-X size and place,
 * capabilities with guest-writable bits, all from the input), then plays a
 * sequence of accesses: configuration reads and writes, BAR sizing and
 * moves, decoding on and off, MSI-X table, PBA and control writes, vectors
 * raised by the backend. The device's callbacks check that every access
 * they get lies inside the BAR and every remap matches the BAR register.
 * Input: 3 bytes of device layout (make_config), the capabilities
 * (add_caps), then operations (fuzz_ops).
 */
#include <stdlib.h>
#include <string.h>

#include "fdvm/abi.h"
#include "fuzz_input.h"
#include "fuzz_vm.h"
#include "../lib/pci/pci_priv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fdvm_vm *vm;
struct fuzz_dev {
	struct fdvm_pci_dev *pci;
	struct fdvm_pci_dev_config cfg;
};

static void check_access(struct fuzz_dev *d, unsigned bar, uint64_t off, unsigned size)
{
	if (bar >= FDVM_PCI_MAX_BARS || d->cfg.bars[bar].type == FDVM_PCI_BAR_NONE ||
	    off + size > d->cfg.bars[bar].size)
		abort();
}

static uint64_t dev_bar_read(void *opaque, unsigned bar, uint64_t off, unsigned size)
{
	check_access(opaque, bar, off, size);
	return off ^ bar;
}

static void dev_bar_write(void *opaque, unsigned bar, uint64_t off, uint64_t val, unsigned size)
{
	(void)val;
	check_access(opaque, bar, off, size);
}

static void dev_bar_remap(void *opaque, unsigned bar, uint64_t addr, bool mapped)
{
	struct fuzz_dev *d = opaque;
	check_access(d, bar, 0, 1);
	if (!d->pci)
		return; /* inside fdvm_pci_dev_create: no handle yet */
	struct fdvm_io_region *r = fdvm_pci_bar_region(d->pci, bar);
	/* The region is where the BAR register says, or there is none. */
	if (mapped != (r != NULL) || (r && (r->base != addr || r->len != d->cfg.bars[bar].size)))
		abort();
	if (mapped && addr != fdvm_pci_bar_addr(d->pci, bar))
		abort();
}

static const struct fdvm_pci_dev_ops dev_ops = {
	.bar_read = dev_bar_read, .bar_write = dev_bar_write, .bar_remap = dev_bar_remap,
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	vm = fuzz_vm();
	return 0;
}

/* BARs: 0 MMIO32, 1 I/O, 2+3 MMIO64, 4 MMIO32 (sizes from the input). */
static void make_config(struct fin *in, struct fuzz_dev *d)
{
	uint8_t b0 = fin_u8(in), b1 = fin_u8(in), b2 = fin_u8(in);
	struct fdvm_pci_dev_config *c = &d->cfg;

	*c = (struct fdvm_pci_dev_config){
		.name = "fuzz",
		.vendor_id = 0x1234, .device_id = 0x5678, .class_code = 0xff0000,
		.irq_mode = (enum fdvm_irq_mode)(b0 % 3),
		.ops = &dev_ops, .opaque = d,
	};
	c->bars[0].type = FDVM_PCI_BAR_MMIO32;
	c->bars[0].size = 4096ull << (b1 & 3);
	c->bars[1].type = FDVM_PCI_BAR_IO;
	c->bars[1].size = 4ull << (b1 >> 2 & 7) > 256 ? 256 : 4ull << (b1 >> 2 & 7);
	c->bars[2].type = FDVM_PCI_BAR_MMIO64;
	c->bars[2].size = 16384ull << (b1 >> 5);
	if (b2 & 0x80) {
		c->bars[4].type = FDVM_PCI_BAR_MMIO32;
		c->bars[4].size = 4096;
	}
	if (b0 & 0x80)
		return; /* no MSI-X */
	c->msix_vectors = 1 + (b2 & 0x3f);
	if (b0 & 0x40) {
		c->msix_bar = 2;
		c->msix_table_offset = 0x2000;
		c->msix_pba_offset = 0x3000;
	} else {
		c->msix_bar = 0;
		c->msix_table_offset = 0;
		c->msix_pba_offset = 0x800;
	}
}

/* Capabilities after MSI-X: id, length, body and writable bits from the input. */
static void add_caps(struct fin *in, struct fuzz_dev *d)
{
	for (unsigned n = fin_u8(in) & 3; n--;) {
		uint8_t id = fin_u8(in), len = (uint8_t)(2 + fin_u8(in) % 40);
		uint8_t body[64] = { 0 }, wmask[64] = { 0 };
		for (unsigned i = 0; i < len; i++) {
			body[i] = fin_u8(in);
			wmask[i] = fin_u8(in);
		}
		fdvm_pci_add_cap(d->pci, id, body, wmask, len);
	}
}

static uint64_t ecam(unsigned slot, unsigned off)
{
	return FDVM_PCI_ECAM_BASE + ((uint64_t)slot << 15) + off;
}

static void bar_sizing(struct fin *in, struct fuzz_dev *d)
{
	unsigned slot = fdvm_pci_dev_slot(d->pci), bar = fin_u8(in) % FDVM_PCI_MAX_BARS;
	uint64_t reg = ecam(slot, PCI_BAR0 + 4 * bar);
	uint32_t old = (uint32_t)fuzz_vm_read(FDVM_SPACE_MMIO, reg, 4);

	fuzz_vm_write(FDVM_SPACE_MMIO, reg, 4, 0xffffffffu);
	uint32_t v = (uint32_t)fuzz_vm_read(FDVM_SPACE_MMIO, reg, 4);
	enum fdvm_pci_bar_type t = d->cfg.bars[bar].type;
	if (t == FDVM_PCI_BAR_IO || t == FDVM_PCI_BAR_MMIO32 || t == FDVM_PCI_BAR_MMIO64) {
		/* Sizing reads back the size's mask and the type bits. */
		uint32_t mask = t == FDVM_PCI_BAR_IO ? ~3u : ~0xfu;
		uint64_t size = (uint32_t)(~(v & mask) + 1);
		if (size != d->cfg.bars[bar].size)
			abort();
	}
	/* Then back where it was, or somewhere the input says. */
	uint8_t how = fin_u8(in);
	uint32_t to = how & 1 ? fin_u32(in) : old;
	fuzz_vm_write(FDVM_SPACE_MMIO, reg, 4, to);
}

static void bar_access(struct fin *in, struct fuzz_dev *d)
{
	unsigned bar = fin_u8(in) % FDVM_PCI_MAX_BARS;
	uint64_t size = d->cfg.bars[bar].size ? d->cfg.bars[bar].size : 4096;
	uint64_t off = fin_u32(in) % (size + 16);
	unsigned sz = fin_size(in);
	bool write = fin_u8(in) & 1;
	uint64_t val = fin_u64(in);
	enum fdvm_space sp = d->cfg.bars[bar].type == FDVM_PCI_BAR_IO ? FDVM_SPACE_PIO : FDVM_SPACE_MMIO;
	uint64_t at = fdvm_pci_bar_addr(d->pci, bar) + off;

	if (sp == FDVM_SPACE_PIO && sz == 8)
		sz = 4;
	if (write)
		fuzz_vm_write(sp, at, sz, val);
	else
		fuzz_vm_read(sp, at, sz);
}

/* The MSI-X table: address, data and control of a vector. */
static void msix_entry(struct fin *in, struct fuzz_dev *d)
{
	if (!d->cfg.msix_vectors)
		return;
	unsigned bar = d->cfg.msix_bar, vec = fin_u8(in) % (d->cfg.msix_vectors + 1);
	unsigned field = fin_u8(in) & 0xf, sz = fin_size(in);
	uint64_t at = fdvm_pci_bar_addr(d->pci, bar) + d->cfg.msix_table_offset + 16 * vec + field;
	fuzz_vm_write(FDVM_SPACE_MMIO, at, sz, fin_u64(in));
}

static void fuzz_ops(struct fin *in, struct fuzz_dev *d)
{
	unsigned slot = fdvm_pci_dev_slot(d->pci);

	for (unsigned n = 0; n < 512 && fin_more(in); n++) {
		uint8_t op = fin_u8(in);
		switch (op % 12) {
		case 0: { /* the address register: aimed at a device, or anything */
			uint32_t a = fin_u32(in);
			if (op & 0x80)
				a = 0x80000000u | (a & 0x3u) << 11 | (a >> 8 & 0xff);
			fuzz_vm_write(FDVM_SPACE_PIO, FDVM_PCI_CONFIG_ADDRESS + (op >> 4 & 3), op & 0x40 ? 4 : 2, a);
			break;
		}
		case 1: { /* the data window */
			unsigned port = FDVM_PCI_CONFIG_DATA + (fin_u8(in) & 3), sz = 1u << (op >> 4 & 3);
			if (sz == 8)
				sz = 4;
			if (op & 0x80)
				fuzz_vm_write(FDVM_SPACE_PIO, port, sz, fin_u32(in));
			else
				fuzz_vm_read(FDVM_SPACE_PIO, port, sz);
			break;
		}
		case 2: { /* ECAM: slots 0-3, sometimes another function or bus */
			uint32_t a = fin_u32(in);
			uint64_t off = (a & 0xfff) | (uint64_t)(a >> 12 & 3) << 15;
			if (op & 0x40)
				off |= (uint64_t)(a >> 14) << 12 & (FDVM_PCI_ECAM_SIZE - 1);
			unsigned sz = 1u << (op >> 4 & 3);
			if (op & 0x80)
				fuzz_vm_write(FDVM_SPACE_MMIO, FDVM_PCI_ECAM_BASE + off, sz, fin_u32(in));
			else
				fuzz_vm_read(FDVM_SPACE_MMIO, FDVM_PCI_ECAM_BASE + off, sz);
			break;
		}
		case 3: bar_sizing(in, d); break;
		case 4: case 5: bar_access(in, d); break;
		case 6: msix_entry(in, d); break;
		case 7: { /* the backend raises a vector */
			int fd = fdvm_pci_msix_fd(d->pci, fin_u8(in));
			if (fd >= 0)
				fdvm_eventfd_signal(fd);
			break;
		}
		case 8: /* decoding on and off */
			fuzz_vm_write(FDVM_SPACE_MMIO, ecam(slot, PCI_COMMAND), 2, fin_u16(in));
			break;
		case 9: /* MSI-X enable and function mask */
			if (d->pci->msix_cap)
				fuzz_vm_write(FDVM_SPACE_MMIO, ecam(slot, d->pci->msix_cap + 2), 2,
					      fin_u16(in) & 0xc000);
			break;
		case 10: { /* the BAR windows, whatever lies there */
			uint32_t a = fin_u32(in);
			if (op & 0x80)
				fuzz_vm_read(FDVM_SPACE_PIO, FDVM_PCI_IO_START + (a & 0x3fff), (op & 3) == 3 ? 4 : 1u << (op & 3));
			else
				fuzz_vm_read(FDVM_SPACE_MMIO, FDVM_PCI_MMIO_START + (a & 0x3ffffff), 1u << (op & 3));
			break;
		}
		default: { /* the PBA */
			if (!d->cfg.msix_vectors)
				break;
			uint64_t at = fdvm_pci_bar_addr(d->pci, d->cfg.msix_bar) +
				      d->cfg.msix_pba_offset + (fin_u8(in) & 0xf);
			fuzz_vm_read(FDVM_SPACE_MMIO, at, 1u << (op >> 4 & 3));
			break;
		}
		}
		/* Identity is read-only whatever the guest wrote. */
		if (fuzz_vm_read(FDVM_SPACE_MMIO, ecam(slot, 0), 4) != 0x56781234u)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_dev d;
	struct fin in = { data, size };

	if (!vm)
		LLVMFuzzerInitialize(NULL, NULL);
	fuzz_vm_reset_pci();
	make_config(&in, &d);
	if (fdvm_pci_dev_create(vm, &d.cfg, &d.pci))
		abort(); /* every layout made above is valid */
	add_caps(&in, &d);
	fuzz_ops(&in, &d);
	fdvm_pci_dev_destroy(d.pci);
	d.pci = NULL;
	return 0;
}
