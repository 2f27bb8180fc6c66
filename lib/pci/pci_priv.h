/* PCI inside lib/: the bus, a device, MSI-X. */
#ifndef FDVM_PCI_PRIV_H
#define FDVM_PCI_PRIV_H

#include "fdvm/pci.h"
#include "../vm_priv.h"

#define PCI_SLOTS 32
#define PCI_CFG_SIZE 256

/* Standard configuration registers. */
#define PCI_VENDOR_ID 0x00
#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS 0x06
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define PCI_CAP_PTR 0x34
#define PCI_INTERRUPT_LINE 0x3c
#define PCI_CAP_ID_MSIX 0x11
#define PCI_MSIX_ENABLE 0x8000
#define PCI_MSIX_MASKALL 0x4000

struct fdvm_msix;

struct pci_bar {
	enum fdvm_pci_bar_type type;
	uint64_t size;
	uint64_t addr;			/* as the guest last wrote it */
	struct fdvm_io_region *region;	/* when mapped */
	struct fdvm_pci_dev *dev;	/* for the region's handlers */
	unsigned index;
};

struct fdvm_pci_dev {
	struct fdvm_vm *vm;
	unsigned slot;
	char name[32];
	const struct fdvm_pci_dev_ops *ops;
	void *opaque;

	pthread_mutex_t lock;		/* guards cfg and each bar's addr */
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];	/* guest-writable bits */
	uint8_t cap_end;		/* next free byte for a capability */
	uint8_t last_cap;		/* offset of the last capability, or 0 */

	pthread_mutex_t remap_lock;	/* serialises BAR (un)mapping; never
					 * taken by BAR handlers */
	struct pci_bar bars[FDVM_PCI_MAX_BARS];
	bool detached;			/* under remap_lock */

	struct fdvm_msix *msix;
	unsigned msix_cap;		/* its offset in cfg */
};

struct fdvm_pci {
	struct fdvm_vm *vm;
	pthread_mutex_t lock;		/* guards slots, cf8, the windows */
	struct fdvm_pci_dev *slots[PCI_SLOTS];
	uint32_t cf8;
	uint64_t mmio_next, io_next;
	struct fdvm_io_region *cfg_io, *ecam;
	struct fdvm_pci_dev *host_bridge;
};

int fdvm_pci_init(struct fdvm_vm *vm);
void fdvm_pci_exit(struct fdvm_vm *vm);

/* device.c: configuration space of one device (offset + size <= 256). */
uint32_t fdvm_pci_cfg_read(struct fdvm_pci_dev *dev, unsigned off, unsigned size);
void fdvm_pci_cfg_write(struct fdvm_pci_dev *dev, unsigned off, uint32_t val, unsigned size);

/* msix.c */
int fdvm_msix_init(struct fdvm_pci_dev *dev, const struct fdvm_pci_dev_config *cfg);
void fdvm_msix_exit(struct fdvm_pci_dev *dev);
/* Message control changed (enable, function mask). */
void fdvm_msix_control(struct fdvm_pci_dev *dev, uint16_t control);
/* true if [off, off + size) in bar is the table or the PBA (and was handled). */
bool fdvm_msix_bar_read(struct fdvm_pci_dev *dev, unsigned bar, uint64_t off,
			unsigned size, uint64_t *val);
bool fdvm_msix_bar_write(struct fdvm_pci_dev *dev, unsigned bar, uint64_t off,
			 unsigned size, uint64_t val);

#endif
