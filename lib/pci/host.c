/*
 * The PCI host bridge: bus 0, configuration space through 0xcf8/0xcfc
 * (type 1, as on QEMU's pc and q35) and through ECAM, and the windows
 * fdvm assigns BARs from.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fdvm/abi.h"
#include "pci_priv.h"

/* Finds the device at slot and pins it against unplug. pci lock held. */
static struct fdvm_pci_dev *slot_dev(struct fdvm_pci *pci, unsigned slot, unsigned fn)
{
	return slot < PCI_SLOTS && fn == 0 ? pci->slots[slot] : NULL;
}

/*
 * One configuration access to bus 0. Absent devices read all-ones; an
 * access that crosses a dword, or another bus, is ignored (reads all-ones).
 * The pci lock is held across, so a device cannot be unplugged meanwhile.
 */
static uint64_t cfg_access(struct fdvm_pci *pci, unsigned bus, unsigned slot, unsigned fn,
			   unsigned off, unsigned size, bool write, uint32_t val)
{
	uint64_t ret = ~0ull;

	if (bus != 0 || off + size > PCI_CFG_SIZE || (off & 3) + size > 4)
		return ret;
	pthread_mutex_lock(&pci->lock);
	struct fdvm_pci_dev *dev = slot_dev(pci, slot, fn);
	if (dev) {
		if (write)
			fdvm_pci_cfg_write(dev, off, val, size);
		else
			ret = fdvm_pci_cfg_read(dev, off, size);
	}
	pthread_mutex_unlock(&pci->lock);
	return ret;
}

static uint64_t cfgio_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_pci *pci = opaque;
	uint32_t a;

	if (off < 4) {
		/* Only a dword access at 0xcf8 is the address register. */
		if (off != 0 || size != 4)
			return ~0ull;
		pthread_mutex_lock(&pci->lock);
		a = pci->cf8;
		pthread_mutex_unlock(&pci->lock);
		return a;
	}
	pthread_mutex_lock(&pci->lock);
	a = pci->cf8;
	pthread_mutex_unlock(&pci->lock);
	if (!(a & 0x80000000u))
		return ~0ull;
	return cfg_access(pci, (a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7,
			  (a & 0xfc) + (unsigned)(off - 4), size, false, 0);
}

static void cfgio_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct fdvm_pci *pci = opaque;
	uint32_t a;

	if (off < 4) {
		if (off == 0 && size == 4) {
			pthread_mutex_lock(&pci->lock);
			pci->cf8 = (uint32_t)val & 0x80fffffcu;
			pthread_mutex_unlock(&pci->lock);
		} else if (off == 1 && size == 1 && ((val & 0xff) == FDVM_RESET_VALUE || (val & 0xff) == 0x0e)) {
			/* 0xcf9 as a byte: the reset control register of a PC's
			 * host bridge, which the FADT names as its reset register. */
			fdvm_vm_set_stop(pci->vm, FDVM_STOP_RESET, 0);
		}
		return;
	}
	pthread_mutex_lock(&pci->lock);
	a = pci->cf8;
	pthread_mutex_unlock(&pci->lock);
	if (a & 0x80000000u)
		cfg_access(pci, (a >> 16) & 0xff, (a >> 11) & 0x1f, (a >> 8) & 7,
			   (a & 0xfc) + (unsigned)(off - 4), size, true, (uint32_t)val);
}

/* ECAM: bus << 20 | slot << 15 | fn << 12 | offset. */
static uint64_t ecam_read(void *opaque, uint64_t off, unsigned size)
{
	if (size > 4)
		return ~0ull;
	return cfg_access(opaque, (off >> 20) & 0xff, (off >> 15) & 0x1f, (off >> 12) & 7,
			  off & 0xfff, size, false, 0);
}

static void ecam_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	if (size <= 4)
		cfg_access(opaque, (off >> 20) & 0xff, (off >> 15) & 0x1f, (off >> 12) & 7,
			   off & 0xfff, size, true, (uint32_t)val);
}

static const struct fdvm_io_ops cfgio_ops = { .read = cfgio_read, .write = cfgio_write };
static const struct fdvm_io_ops ecam_ops = { .read = ecam_read, .write = ecam_write };

int fdvm_pci_init(struct fdvm_vm *vm)
{
	struct fdvm_pci *pci = calloc(1, sizeof(*pci));
	int ret;

	if (!pci)
		return -ENOMEM;
	pci->vm = vm;
	pci->mmio_next = FDVM_PCI_MMIO_START;
	pci->io_next = FDVM_PCI_IO_START;
	pthread_mutex_init(&pci->lock, NULL);
	vm->pci = pci;
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PCI_CONFIG_ADDRESS, 8, &cfgio_ops, pci,
			       "pci-config", &pci->cfg_io);
	if (ret)
		goto err_free;
	ret = fdvm_io_register(vm, FDVM_SPACE_MMIO, FDVM_PCI_ECAM_BASE, FDVM_PCI_ECAM_SIZE,
			       &ecam_ops, pci, "pci-ecam", &pci->ecam);
	if (ret)
		goto err_cfgio;
	/* The host bridge itself, in slot 0 (QEMU's generic PCIe host IDs). */
	struct fdvm_pci_dev_config hb = {
		.name = "host-bridge",
		.vendor_id = 0x1b36,
		.device_id = 0x0008,
		.class_code = 0x060000,
	};
	ret = fdvm_pci_dev_create(vm, &hb, &pci->host_bridge);
	if (ret)
		goto err_ecam;
	return 0;

err_ecam:
	fdvm_io_unregister(vm, pci->ecam);
err_cfgio:
	fdvm_io_unregister(vm, pci->cfg_io);
err_free:
	pthread_mutex_destroy(&pci->lock);
	free(pci);
	vm->pci = NULL;
	return ret;
}

void fdvm_pci_exit(struct fdvm_vm *vm)
{
	struct fdvm_pci *pci = vm->pci;

	if (!pci)
		return;
	for (unsigned s = PCI_SLOTS; s--;)
		if (pci->slots[s])
			fdvm_pci_dev_destroy(pci->slots[s]);
	fdvm_io_unregister(vm, pci->ecam);
	fdvm_io_unregister(vm, pci->cfg_io);
	pthread_mutex_destroy(&pci->lock);
	free(pci);
	vm->pci = NULL;
}

/* Takes a slot and BAR addresses for a new device. */
int fdvm_pci_plug(struct fdvm_vm *vm, struct fdvm_pci_dev *dev)
{
	struct fdvm_pci *pci = vm->pci;
	uint64_t mmio = pci->mmio_next, io = pci->io_next;
	int ret = -ENOSPC;

	pthread_mutex_lock(&pci->lock);
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		struct pci_bar *b = &dev->bars[i];
		uint64_t *next = b->type == FDVM_PCI_BAR_IO ? &io : &mmio;
		uint64_t end = b->type == FDVM_PCI_BAR_IO ? FDVM_PCI_IO_END : FDVM_PCI_MMIO_END;
		if (b->type == FDVM_PCI_BAR_NONE)
			continue;
		uint64_t at = (*next + b->size - 1) & ~(b->size - 1);
		if (at + b->size > end || at + b->size < at)
			goto out;
		b->addr = at;
		*next = at + b->size;
	}
	for (unsigned s = 0; s < PCI_SLOTS; s++) {
		if (!pci->slots[s]) {
			dev->slot = s;
			pci->slots[s] = dev;
			pci->mmio_next = mmio;
			pci->io_next = io;
			ret = 0;
			break;
		}
	}
out:
	pthread_mutex_unlock(&pci->lock);
	if (ret)
		fdvm_log(vm, FDVM_LOG_ERROR, "pci %s: no free slot or no room for its BARs", dev->name);
	return ret;
}

void fdvm_pci_unplug(struct fdvm_vm *vm, struct fdvm_pci_dev *dev)
{
	struct fdvm_pci *pci = vm->pci;

	/* After this, no configuration access reaches the device. */
	pthread_mutex_lock(&pci->lock);
	if (dev->slot < PCI_SLOTS && pci->slots[dev->slot] == dev)
		pci->slots[dev->slot] = NULL;
	pthread_mutex_unlock(&pci->lock);
}
