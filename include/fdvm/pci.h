/*
 * PCI: a host bridge with configuration space (ports 0xcf8/0xcfc and
 * ECAM), devices with BARs that fdvm assigns at boot, a capability list,
 * and MSI-X whose vectors are irq lines: a backend raises vector N by
 * writing the eventfd fdvm_pci_msix_fd(dev, N) and never learns whether
 * the guest has it masked.
 */
#ifndef FDVM_PCI_H
#define FDVM_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "fdvm/irq.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_pci_dev;
struct fdvm_io_region;

#define FDVM_PCI_MAX_BARS 6

enum fdvm_pci_bar_type {
	FDVM_PCI_BAR_NONE,
	FDVM_PCI_BAR_MMIO32,
	FDVM_PCI_BAR_MMIO64,	/* takes two BAR slots: the next must be NONE */
	FDVM_PCI_BAR_IO,
};

/* A device's side. All optional; they run on vCPU threads. */
struct fdvm_pci_dev_ops {
	/* Accesses to a BAR outside the MSI-X table and PBA. */
	uint64_t (*bar_read)(void *opaque, unsigned bar, uint64_t off, unsigned size);
	void (*bar_write)(void *opaque, unsigned bar, uint64_t off, uint64_t val, unsigned size);
	/*
	 * The guest moved a BAR or switched its decoding: addr is where it
	 * now is, mapped whether accesses reach it. Doorbells in a BAR are
	 * re-created here (fdvm_pci_bar_region gives the new region).
	 */
	void (*bar_remap)(void *opaque, unsigned bar, uint64_t addr, bool mapped);
};

struct fdvm_pci_dev_config {
	const char *name;
	uint16_t vendor_id, device_id, subsystem_vendor_id, subsystem_id;
	uint32_t class_code;	/* base << 16 | sub << 8 | prog-if */
	uint8_t revision;
	struct {
		enum fdvm_pci_bar_type type;
		uint64_t size;	/* a power of two; MMIO >= 4 KiB, I/O >= 4 */
	} bars[FDVM_PCI_MAX_BARS];
	unsigned msix_vectors;	/* 0: no MSI-X; else 1..2048 */
	unsigned msix_bar;	/* the BAR holding the table and the PBA */
	uint64_t msix_table_offset, msix_pba_offset; /* 8-byte aligned */
	enum fdvm_irq_mode irq_mode; /* for the MSI-X vectors' lines */
	const struct fdvm_pci_dev_ops *ops;
	void *opaque;
};

/*
 * Plugs a device into bus 0 at the first free slot, assigns and maps its
 * BARs, and enables decoding (as firmware does). The device belongs to the
 * VM (fdvm_vm_destroy removes devices left). -ENOSPC: no slot or no room
 * in a BAR window; -EINVAL: a bad BAR or MSI-X layout.
 */
int fdvm_pci_dev_create(struct fdvm_vm *vm, const struct fdvm_pci_dev_config *cfg,
			struct fdvm_pci_dev **out);
/*
 * Takes the device out of the guest's reach: configuration space and BARs
 * no longer reach it (no handler runs after this returns); its MSI-X lines
 * still work, so a backend being stopped may still interrupt. Idempotent.
 */
void fdvm_pci_dev_detach(struct fdvm_pci_dev *dev);
/* Detaches, destroys the MSI-X lines, frees. */
void fdvm_pci_dev_destroy(struct fdvm_pci_dev *dev);

/*
 * Adds a capability (id, then len - 2 bytes of body after the id and next
 * bytes) to the capability list before the guest runs; returns its offset
 * in configuration space, or -ENOSPC. body may be NULL (zeros); wmask marks
 * guest-writable bits of the whole capability (may be NULL).
 */
int fdvm_pci_add_cap(struct fdvm_pci_dev *dev, uint8_t id, const void *body,
		     const void *wmask, unsigned len);

unsigned fdvm_pci_dev_slot(const struct fdvm_pci_dev *dev);
uint64_t fdvm_pci_bar_addr(struct fdvm_pci_dev *dev, unsigned bar);
/* The region a mapped BAR occupies now, for doorbells inside it; NULL if
 * unmapped. Valid until the next bar_remap call for that BAR. */
struct fdvm_io_region *fdvm_pci_bar_region(struct fdvm_pci_dev *dev, unsigned bar);

/* MSI-X: the eventfd that raises vector n, and its line. */
int fdvm_pci_msix_fd(struct fdvm_pci_dev *dev, unsigned vector);
struct fdvm_irq_line *fdvm_pci_msix_line(struct fdvm_pci_dev *dev, unsigned vector);

#ifdef __cplusplus
}
#endif

#endif
