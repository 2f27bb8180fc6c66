/*
 * The guest's PCI library: configuration space through 0xcf8/0xcfc (CPL0,
 * works on fdvm and QEMU) or through fdvm's ECAM (any CPL), enumeration,
 * BARs, capabilities, MSI-X and MSI.
 */
#ifndef RT_PCI_H
#define RT_PCI_H

#include "rt.h"

struct pci_dev {
	unsigned slot;
	uint16_t vendor, device;
	uint64_t bar[6];	/* guest address (I/O BARs: the port) */
	uint64_t bar_size[6];
	bool bar_io[6];
	/* MSI-X, if present */
	unsigned msix_cap, msix_n;
	uint64_t msix_table, msix_pba; /* guest addresses */
};

/* Which mechanism pci_cfg_* use: false = ports (default), true = ECAM. */
void pci_use_ecam(bool on);
uint32_t pci_cfg_read(unsigned slot, unsigned off, unsigned size);
void pci_cfg_write(unsigned slot, unsigned off, uint32_t val, unsigned size);

/* Finds vendor:device on bus 0 and reads its BARs (sizing them) and its
 * MSI-X capability. */
bool pci_find(uint16_t vendor, uint16_t device, struct pci_dev *dev);
/* The same for the device in a given slot; false if the slot is empty. */
bool pci_probe(unsigned slot, struct pci_dev *dev);
/* Offset of the first capability with this id, or 0. */
unsigned pci_find_cap(unsigned slot, uint8_t id);

/* MSI-X. Vector i is programmed for LAPIC 0, the given vector, masked. */
void msix_program(struct pci_dev *dev, unsigned i, uint8_t vector);
/* The same for the CPU with APIC id dest (physical destination), left as
 * masked or unmasked as it was. */
void msix_program_dest(struct pci_dev *dev, unsigned i, uint8_t vector, uint32_t dest);
/* Rewrites only entry i's address for APIC id dest, and reads it back. */
void msix_set_dest(struct pci_dev *dev, unsigned i, uint32_t dest);
void msix_enable(struct pci_dev *dev, bool on);
void msix_function_mask(struct pci_dev *dev, bool masked);
void msix_mask(struct pci_dev *dev, unsigned i, bool masked);
bool msix_pending(struct pci_dev *dev, unsigned i);

/* Plain MSI (capability 0x05): one message for LAPIC 0 at vector, enabled
 * (MSI-X off). False if the device has no MSI capability. */
bool msi_enable(struct pci_dev *dev, uint8_t vector);

#endif
