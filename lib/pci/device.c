/*
 * A PCI device: its configuration space (with a mask of the bits the guest
 * may write), its BARs (mapped on the I/O bus where the guest puts them,
 * when decoding is on) and its capability list.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdvm/abi.h"
#include "pci_priv.h"

int fdvm_pci_plug(struct fdvm_vm *vm, struct fdvm_pci_dev *dev);
void fdvm_pci_unplug(struct fdvm_vm *vm, struct fdvm_pci_dev *dev);

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* ---- BAR regions ---- */

static uint64_t bar_read(void *opaque, uint64_t off, unsigned size)
{
	struct pci_bar *b = opaque;
	struct fdvm_pci_dev *dev = b->dev;
	uint64_t v;

	if (dev->msix && fdvm_msix_bar_read(dev, b->index, off, size, &v))
		return v;
	if (dev->ops && dev->ops->bar_read)
		return dev->ops->bar_read(dev->opaque, b->index, off, size);
	return ~0ull;
}

static void bar_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct pci_bar *b = opaque;
	struct fdvm_pci_dev *dev = b->dev;

	if (dev->msix && fdvm_msix_bar_write(dev, b->index, off, size, val))
		return;
	if (dev->ops && dev->ops->bar_write)
		dev->ops->bar_write(dev->opaque, b->index, off, val, size);
}

static const struct fdvm_io_ops bar_ops = { .read = bar_read, .write = bar_write };

/* Where a BAR should be mapped now, from cfg; false: not at all. */
static bool bar_target(struct fdvm_pci_dev *dev, unsigned i, uint64_t *addr)
{
	const struct pci_bar *b = &dev->bars[i];
	uint16_t cmd = get16(dev->cfg + PCI_COMMAND);
	struct fdvm_vm *vm = dev->vm;

	*addr = b->addr;
	if (b->type == FDVM_PCI_BAR_IO)
		return (cmd & PCI_COMMAND_IO) && b->addr && b->addr + b->size <= 0x10000;
	if (!(cmd & PCI_COMMAND_MEMORY) || !b->addr || b->addr + b->size < b->addr)
		return false;
	/* Never over guest RAM: KVM would hide it anyway. */
	for (unsigned r = 0; r < vm->nram; r++)
		if (b->addr < vm->ram[r].gpa + vm->ram[r].size &&
		    vm->ram[r].gpa < b->addr + b->size)
			return false;
	return true;
}

/* Brings every BAR's mapping in line with cfg. by_guest: the guest wrote
 * cfg, not the host's firmware step. remap_lock held, dev->lock not. */
static void remap_bars(struct fdvm_pci_dev *dev, bool by_guest)
{
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS && !dev->detached; i++) {
		struct pci_bar *b = &dev->bars[i];
		uint64_t addr;
		bool want;

		if (b->type == FDVM_PCI_BAR_NONE)
			continue;
		pthread_mutex_lock(&dev->lock);
		want = bar_target(dev, i, &addr);
		pthread_mutex_unlock(&dev->lock);
		if (b->region && want && b->region->base == addr)
			continue;
		if (!b->region && !want)
			continue;
		if (b->region) {
			fdvm_io_unregister(dev->vm, b->region);
			b->region = NULL;
		}
		if (want) {
			char name[48];
			snprintf(name, sizeof(name), "%s-bar%u", dev->name, i);
			enum fdvm_space sp = b->type == FDVM_PCI_BAR_IO ? FDVM_SPACE_PIO
								       : FDVM_SPACE_MMIO;
			/* Where the guest chose addr, a conflict is its doing: a
			 * warning it cannot flood the log with. */
			if ((by_guest ? fdvm_io_register_for_guest : fdvm_io_register)(
				    dev->vm, sp, addr, b->size, &bar_ops, b, name, &b->region)) {
				/* Overlaps something: the BAR stays unmapped, as
				 * a conflicting BAR decodes nothing useful. */
				b->region = NULL;
			}
		}
		if (dev->ops && dev->ops->bar_remap)
			dev->ops->bar_remap(dev->opaque, i, addr, b->region != NULL);
	}
}

/* ---- configuration space ---- */

uint32_t fdvm_pci_cfg_read(struct fdvm_pci_dev *dev, unsigned off, unsigned size)
{
	uint32_t v = 0;

	pthread_mutex_lock(&dev->lock);
	memcpy(&v, dev->cfg + off, size);
	pthread_mutex_unlock(&dev->lock);
	return v;
}

/* A BAR register write: keeps the type bits, aligns to the size. Lock held. */
static void bar_reg_write(struct fdvm_pci_dev *dev, unsigned i)
{
	struct pci_bar *b = &dev->bars[i];
	uint32_t lo = get32(dev->cfg + PCI_BAR0 + 4 * i);
	uint32_t flags = b->type == FDVM_PCI_BAR_IO ? 0x1 : b->type == FDVM_PCI_BAR_MMIO64 ? 0x4 : 0;
	uint64_t addr = lo & (b->type == FDVM_PCI_BAR_IO ? ~3u : ~0xfu);

	if (b->type == FDVM_PCI_BAR_MMIO64)
		addr |= (uint64_t)get32(dev->cfg + PCI_BAR0 + 4 * (i + 1)) << 32;
	addr &= ~(b->size - 1);
	if (b->type == FDVM_PCI_BAR_IO)
		addr &= 0xffffffffu;
	b->addr = addr;
	put32(dev->cfg + PCI_BAR0 + 4 * i, (uint32_t)addr | flags);
	if (b->type == FDVM_PCI_BAR_MMIO64)
		put32(dev->cfg + PCI_BAR0 + 4 * (i + 1), (uint32_t)(addr >> 32));
}

void fdvm_pci_cfg_write(struct fdvm_pci_dev *dev, unsigned off, uint32_t val, unsigned size)
{
	bool remap = false, msix = false;
	uint16_t msix_ctrl = 0;

	pthread_mutex_lock(&dev->lock);
	for (unsigned i = 0; i < size; i++) {
		uint8_t m = dev->wmask[off + i], nv = (uint8_t)(val >> (8 * i));
		dev->cfg[off + i] = (uint8_t)((dev->cfg[off + i] & ~m) | (nv & m));
	}
	/* Which registers did the write touch? */
	if (off < PCI_COMMAND + 2 && off + size > PCI_COMMAND)
		remap = true;
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		unsigned r = PCI_BAR0 + 4 * i;
		if (off < r + 4 && off + size > r) {
			unsigned owner = i;
			if (dev->bars[i].type == FDVM_PCI_BAR_NONE && i > 0 &&
			    dev->bars[i - 1].type == FDVM_PCI_BAR_MMIO64)
				owner = i - 1;
			if (dev->bars[owner].type != FDVM_PCI_BAR_NONE) {
				bar_reg_write(dev, owner);
				remap = true;
			}
		}
	}
	if (dev->msix_cap && off < dev->msix_cap + 4 && off + size > dev->msix_cap + 2) {
		msix = true;
		msix_ctrl = get16(dev->cfg + dev->msix_cap + 2);
	}
	pthread_mutex_unlock(&dev->lock);

	if (msix)
		fdvm_msix_control(dev, msix_ctrl);
	if (remap) {
		pthread_mutex_lock(&dev->remap_lock);
		remap_bars(dev, true);
		pthread_mutex_unlock(&dev->remap_lock);
	}
}

int fdvm_pci_add_cap(struct fdvm_pci_dev *dev, uint8_t id, const void *body,
		     const void *wmask, unsigned len)
{
	unsigned at;

	pthread_mutex_lock(&dev->lock);
	at = (dev->cap_end + 3u) & ~3u;
	if (len < 2 || at + len > PCI_CFG_SIZE) {
		pthread_mutex_unlock(&dev->lock);
		return -ENOSPC;
	}
	if (body)
		memcpy(dev->cfg + at + 2, body, len - 2);
	if (wmask)
		memcpy(dev->wmask + at, wmask, len);
	dev->wmask[at] = dev->wmask[at + 1] = 0;
	dev->cfg[at] = id;
	dev->cfg[at + 1] = 0;
	if (dev->last_cap)
		dev->cfg[dev->last_cap + 1] = (uint8_t)at;
	else
		dev->cfg[PCI_CAP_PTR] = (uint8_t)at;
	put16(dev->cfg + PCI_STATUS, get16(dev->cfg + PCI_STATUS) | PCI_STATUS_CAP_LIST);
	dev->last_cap = (uint8_t)at;
	dev->cap_end = (uint8_t)(at + len);
	pthread_mutex_unlock(&dev->lock);
	return (int)at;
}

/* ---- create / destroy ---- */

static int check_config(struct fdvm_vm *vm, const struct fdvm_pci_dev_config *c)
{
	const char *name = c->name ? c->name : "pci";

	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		enum fdvm_pci_bar_type t = c->bars[i].type;
		uint64_t sz = c->bars[i].size;
		if (t == FDVM_PCI_BAR_NONE)
			continue;
		if (t > FDVM_PCI_BAR_IO || !sz || (sz & (sz - 1)) ||
		    (t == FDVM_PCI_BAR_IO ? sz < 4 || sz > 256 : sz < 4096) ||
		    (t == FDVM_PCI_BAR_MMIO32 && sz > (1ull << 30)) ||
		    (t == FDVM_PCI_BAR_MMIO64 &&
		     (i == FDVM_PCI_MAX_BARS - 1 || c->bars[i + 1].type != FDVM_PCI_BAR_NONE))) {
			fdvm_log(vm, FDVM_LOG_ERROR, "pci %s: BAR%u: bad type or size", name, i);
			return -EINVAL;
		}
	}
	if (c->msix_vectors) {
		unsigned b = c->msix_bar;
		uint64_t tsz = 16ull * c->msix_vectors, psz = 8ull * ((c->msix_vectors + 63) / 64);
		if (c->msix_vectors > 2048 || b >= FDVM_PCI_MAX_BARS ||
		    (c->bars[b].type != FDVM_PCI_BAR_MMIO32 && c->bars[b].type != FDVM_PCI_BAR_MMIO64) ||
		    (c->msix_table_offset & 7) || (c->msix_pba_offset & 7) ||
		    c->msix_table_offset + tsz > c->bars[b].size ||
		    c->msix_pba_offset + psz > c->bars[b].size ||
		    (c->msix_table_offset < c->msix_pba_offset + psz &&
		     c->msix_pba_offset < c->msix_table_offset + tsz)) {
			fdvm_log(vm, FDVM_LOG_ERROR, "pci %s: bad MSI-X layout", name);
			return -EINVAL;
		}
	}
	return 0;
}

int fdvm_pci_dev_create(struct fdvm_vm *vm, const struct fdvm_pci_dev_config *c,
			struct fdvm_pci_dev **out)
{
	struct fdvm_pci_dev *dev;
	int ret;

	*out = NULL;
	ret = check_config(vm, c);
	if (ret)
		return ret;
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->vm = vm;
	dev->ops = c->ops;
	dev->opaque = c->opaque;
	snprintf(dev->name, sizeof(dev->name), "%s", c->name ? c->name : "pci");
	pthread_mutex_init(&dev->lock, NULL);
	pthread_mutex_init(&dev->remap_lock, NULL);
	dev->cap_end = 0x40;

	put16(dev->cfg + PCI_VENDOR_ID, c->vendor_id);
	put16(dev->cfg + 0x02, c->device_id);
	dev->cfg[0x08] = c->revision;
	dev->cfg[0x09] = (uint8_t)c->class_code;
	dev->cfg[0x0a] = (uint8_t)(c->class_code >> 8);
	dev->cfg[0x0b] = (uint8_t)(c->class_code >> 16);
	put16(dev->cfg + PCI_SUBSYSTEM_VENDOR_ID, c->subsystem_vendor_id);
	put16(dev->cfg + 0x2e, c->subsystem_id);
	put16(dev->wmask + PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
					 PCI_COMMAND_INTX_DISABLE);
	dev->wmask[PCI_INTERRUPT_LINE] = 0xff;
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		struct pci_bar *b = &dev->bars[i];
		*b = (struct pci_bar){ .type = c->bars[i].type, .size = c->bars[i].size,
				       .dev = dev, .index = i };
		if (b->type == FDVM_PCI_BAR_NONE)
			continue;
		put32(dev->wmask + PCI_BAR0 + 4 * i, 0xffffffffu);
		if (b->type == FDVM_PCI_BAR_MMIO64)
			put32(dev->wmask + PCI_BAR0 + 4 * (i + 1), 0xffffffffu);
	}

	ret = fdvm_pci_plug(vm, dev);
	if (ret)
		goto err_free;
	if (c->msix_vectors) {
		ret = fdvm_msix_init(dev, c);
		if (ret)
			goto err_unplug;
	}
	/* Firmware's part: BAR addresses, then decoding and bus mastering on. */
	pthread_mutex_lock(&dev->lock);
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		if (dev->bars[i].type == FDVM_PCI_BAR_NONE)
			continue;
		put32(dev->cfg + PCI_BAR0 + 4 * i, (uint32_t)dev->bars[i].addr);
		if (dev->bars[i].type == FDVM_PCI_BAR_MMIO64)
			put32(dev->cfg + PCI_BAR0 + 4 * (i + 1), (uint32_t)(dev->bars[i].addr >> 32));
		bar_reg_write(dev, i);
	}
	put16(dev->cfg + PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
	pthread_mutex_unlock(&dev->lock);
	pthread_mutex_lock(&dev->remap_lock);
	remap_bars(dev, false);
	pthread_mutex_unlock(&dev->remap_lock);
	*out = dev;
	return 0;

err_unplug:
	fdvm_pci_unplug(vm, dev);
err_free:
	pthread_mutex_destroy(&dev->remap_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
	return ret;
}

void fdvm_pci_dev_detach(struct fdvm_pci_dev *dev)
{
	fdvm_pci_unplug(dev->vm, dev);
	pthread_mutex_lock(&dev->remap_lock);
	dev->detached = true; /* no remap maps a BAR again */
	for (unsigned i = 0; i < FDVM_PCI_MAX_BARS; i++) {
		if (dev->bars[i].region)
			fdvm_io_unregister(dev->vm, dev->bars[i].region);
		dev->bars[i].region = NULL;
	}
	pthread_mutex_unlock(&dev->remap_lock);
}

void fdvm_pci_dev_destroy(struct fdvm_pci_dev *dev)
{
	if (!dev)
		return;
	fdvm_pci_dev_detach(dev);
	fdvm_msix_exit(dev);
	pthread_mutex_destroy(&dev->remap_lock);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

unsigned fdvm_pci_dev_slot(const struct fdvm_pci_dev *dev) { return dev->slot; }

uint64_t fdvm_pci_bar_addr(struct fdvm_pci_dev *dev, unsigned bar)
{
	if (bar >= FDVM_PCI_MAX_BARS)
		return 0;
	pthread_mutex_lock(&dev->lock);
	uint64_t a = dev->bars[bar].addr;
	pthread_mutex_unlock(&dev->lock);
	return a;
}

struct fdvm_io_region *fdvm_pci_bar_region(struct fdvm_pci_dev *dev, unsigned bar)
{
	return bar < FDVM_PCI_MAX_BARS ? dev->bars[bar].region : NULL;
}
