/* Guest PCI library. */
#include "pci.h"
#include "io.h"

static bool ecam;

void pci_use_ecam(bool on) { ecam = on; }

static uint64_t ecam_addr(unsigned slot, unsigned off)
{
	return FDVM_PCI_ECAM_BASE + ((uint64_t)slot << 15) + off;
}

uint32_t pci_cfg_read(unsigned slot, unsigned off, unsigned size)
{
	if (ecam) {
		uint64_t a = ecam_addr(slot, off);
		return size == 1 ? mmio_read8(a) : size == 2 ? mmio_read16(a) : mmio_read32(a);
	}
	outl(FDVM_PCI_CONFIG_ADDRESS, 0x80000000u | slot << 11 | (off & 0xfc));
	uint16_t port = (uint16_t)(FDVM_PCI_CONFIG_DATA + (off & 3));
	return size == 1 ? inb(port) : size == 2 ? inw(port) : inl(port);
}

void pci_cfg_write(unsigned slot, unsigned off, uint32_t val, unsigned size)
{
	if (ecam) {
		uint64_t a = ecam_addr(slot, off);
		if (size == 1)
			mmio_write8(a, (uint8_t)val);
		else if (size == 2)
			mmio_write16(a, (uint16_t)val);
		else
			mmio_write32(a, val);
		return;
	}
	outl(FDVM_PCI_CONFIG_ADDRESS, 0x80000000u | slot << 11 | (off & 0xfc));
	uint16_t port = (uint16_t)(FDVM_PCI_CONFIG_DATA + (off & 3));
	if (size == 1)
		outb(port, (uint8_t)val);
	else if (size == 2)
		outw(port, (uint16_t)val);
	else
		outl(port, val);
}

unsigned pci_find_cap(unsigned slot, uint8_t id)
{
	if (!(pci_cfg_read(slot, 0x06, 2) & 0x10))
		return 0;
	unsigned p = pci_cfg_read(slot, 0x34, 1) & 0xfc;
	for (int guard = 0; p && guard < 48; guard++) {
		if (pci_cfg_read(slot, p, 1) == id)
			return p;
		p = pci_cfg_read(slot, p + 1, 1) & 0xfc;
	}
	return 0;
}

bool pci_find(uint16_t vendor, uint16_t device, struct pci_dev *d)
{
	for (unsigned s = 0; s < 32; s++)
		if (pci_cfg_read(s, 0, 4) == ((uint32_t)device << 16 | vendor))
			return pci_probe(s, d);
	return false;
}

bool pci_probe(unsigned s, struct pci_dev *d)
{
	uint32_t id = pci_cfg_read(s, 0, 4);
	uint16_t vendor = (uint16_t)id, device = (uint16_t)(id >> 16);
	{
		if (vendor == 0xffff)
			return false;
		memset(d, 0, sizeof(*d));
		d->slot = s;
		d->vendor = vendor;
		d->device = device;
		uint16_t cmd = (uint16_t)pci_cfg_read(s, 0x04, 2);
		pci_cfg_write(s, 0x04, cmd & ~3u, 2); /* decoding off while sizing */
		for (unsigned b = 0; b < 6; b++) {
			unsigned r = 0x10 + 4 * b;
			uint32_t lo = pci_cfg_read(s, r, 4);
			pci_cfg_write(s, r, 0xffffffffu, 4);
			uint32_t mask = pci_cfg_read(s, r, 4);
			pci_cfg_write(s, r, lo, 4);
			if (!mask)
				continue;
			d->bar_io[b] = lo & 1;
			if (d->bar_io[b]) {
				d->bar[b] = lo & ~3u;
				d->bar_size[b] = (~(mask & ~3u) + 1) & 0xffff;
				continue;
			}
			d->bar[b] = lo & ~0xfu;
			d->bar_size[b] = ~(uint64_t)(mask & ~0xfu) + 1;
			d->bar_size[b] &= 0xffffffffu;
			if ((lo & 6) == 4 && b < 5) { /* 64-bit */
				d->bar[b] |= (uint64_t)pci_cfg_read(s, r + 4, 4) << 32;
				b++;
			}
		}
		pci_cfg_write(s, 0x04, cmd | 7, 2);
		unsigned c = pci_find_cap(s, 0x11);
		if (c) {
			d->msix_cap = c;
			d->msix_n = (pci_cfg_read(s, c + 2, 2) & 0x7ff) + 1;
			uint32_t t = pci_cfg_read(s, c + 4, 4), p = pci_cfg_read(s, c + 8, 4);
			d->msix_table = d->bar[t & 7] + (t & ~7u);
			d->msix_pba = d->bar[p & 7] + (p & ~7u);
		}
		return true;
	}
}

void msix_program(struct pci_dev *d, unsigned i, uint8_t vector)
{
	mmio_write32(d->msix_table + 16ull * i + 12, 1);
	msix_program_dest(d, i, vector, 0);
}

/* An MSI's address: fixed delivery, physical destination APIC id dest. */
static uint32_t msi_address(uint32_t dest) { return 0xfee00000u | (dest & 0xff) << 12; }

void msix_program_dest(struct pci_dev *d, unsigned i, uint8_t vector, uint32_t dest)
{
	uint64_t e = d->msix_table + 16ull * i;
	mmio_write32(e + 0, msi_address(dest));
	mmio_write32(e + 4, 0);
	mmio_write32(e + 8, vector);
}

void msix_set_dest(struct pci_dev *d, unsigned i, uint32_t dest)
{
	uint64_t e = d->msix_table + 16ull * i;
	mmio_write32(e + 0, msi_address(dest));
	(void)mmio_read32(e + 0);
}

static void msix_ctrl(struct pci_dev *d, uint16_t set, uint16_t clear)
{
	uint16_t c = (uint16_t)pci_cfg_read(d->slot, d->msix_cap + 2, 2);
	pci_cfg_write(d->slot, d->msix_cap + 2, (c | set) & ~clear, 2);
}

void msix_enable(struct pci_dev *d, bool on) { msix_ctrl(d, on ? 0x8000 : 0, on ? 0 : 0x8000); }
void msix_function_mask(struct pci_dev *d, bool m) { msix_ctrl(d, m ? 0x4000 : 0, m ? 0 : 0x4000); }

void msix_mask(struct pci_dev *d, unsigned i, bool masked)
{
	mmio_write32(d->msix_table + 16ull * i + 12, masked ? 1 : 0);
	(void)mmio_read32(d->msix_table + 16ull * i + 12); /* flush the posted write */
}

bool msix_pending(struct pci_dev *d, unsigned i)
{
	return (mmio_read64(d->msix_pba + 8ull * (i / 64)) >> (i % 64)) & 1;
}

bool msi_enable(struct pci_dev *d, uint8_t vector)
{
	unsigned c = pci_find_cap(d->slot, 0x05);
	if (!c)
		return false;
	if (d->msix_cap)
		msix_enable(d, false);
	uint16_t ctrl = (uint16_t)pci_cfg_read(d->slot, c + 2, 2);
	bool is64 = ctrl & 0x80;
	pci_cfg_write(d->slot, c + 4, msi_address(0), 4);
	if (is64)
		pci_cfg_write(d->slot, c + 8, 0, 4);
	pci_cfg_write(d->slot, c + (is64 ? 12 : 8), vector, 2);
	/* One message (multiple message enable 0), enabled. */
	pci_cfg_write(d->slot, c + 2, (ctrl & ~0x70u) | 1, 2);
	return true;
}
