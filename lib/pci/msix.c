/*
 * MSI-X: the table and the pending-bit array in a BAR, each vector an
 * irq line. A vector is masked when MSI-X is off, the function is masked,
 * or its own mask bit is set; masking and unmasking go to the line, which
 * keeps the pending bit exactly (see lib/kvm/irqfd.c). Address/data
 * writes re-route the line at once, so a vector rewritten while unmasked
 * moves atomically.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pci_priv.h"

#define ENTRY_SIZE 16
#define CTRL_MASKED 1u

struct msix_entry {
	uint32_t addr_lo, addr_hi, data, ctrl;
	struct fdvm_irq_line *line;
	bool masked; /* what the line has now */
};

struct fdvm_msix {
	pthread_mutex_t lock; /* guards everything below */
	unsigned n, bar;
	uint64_t table, pba;
	bool enabled, fmask;
	struct msix_entry *e;
};

/* Lock held: brings vector i's line in line with the guest's state. */
static void sync_vector(struct fdvm_pci_dev *dev, struct fdvm_msix *m, unsigned i)
{
	struct msix_entry *e = &m->e[i];
	bool masked = !m->enabled || m->fmask || (e->ctrl & CTRL_MASKED);

	if (masked == e->masked)
		return;
	int ret = masked ? fdvm_irq_line_mask(e->line) : fdvm_irq_line_unmask(e->line);
	if (ret)
		/* The guest can repeat this at will: one budget for all. */
		fdvm_log_limited(dev->vm, FDVM_LOG_SITE_MSIX, FDVM_LOG_ERROR,
				 "pci %s: MSI-X vector %u: %s: %s", dev->name, i,
				 masked ? "mask" : "unmask", strerror(-ret));
	else
		e->masked = masked;
}

int fdvm_msix_init(struct fdvm_pci_dev *dev, const struct fdvm_pci_dev_config *c)
{
	struct fdvm_msix *m = calloc(1, sizeof(*m));
	int ret;

	if (!m)
		return -ENOMEM;
	m->n = c->msix_vectors;
	m->bar = c->msix_bar;
	m->table = c->msix_table_offset;
	m->pba = c->msix_pba_offset;
	m->e = calloc(m->n, sizeof(*m->e));
	if (!m->e) {
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_init(&m->lock, NULL);
	/* All routes in one KVM_SET_GSI_ROUTING. */
	fdvm_gsi_begin(dev->vm);
	for (unsigned i = 0; i < m->n; i++) {
		struct fdvm_irq_line_config lc;
		fdvm_irq_line_config_init(&lc);
		lc.mode = c->irq_mode;
		lc.masked = true;
		m->e[i].ctrl = CTRL_MASKED;
		m->e[i].masked = true;
		ret = fdvm_irq_line_create(dev->vm, &lc, &m->e[i].line);
		if (ret) {
			while (i--)
				fdvm_irq_line_destroy(m->e[i].line);
			fdvm_gsi_end(dev->vm);
			goto err_free;
		}
	}
	ret = fdvm_gsi_end(dev->vm);
	if (ret)
		goto err_lines;

	uint8_t body[10] = { 0 }, wmask[12] = { 0 };
	uint16_t ctrl = (uint16_t)(m->n - 1);
	uint32_t table = (uint32_t)m->table | m->bar, pba = (uint32_t)m->pba | m->bar;
	memcpy(body, &ctrl, 2);
	memcpy(body + 2, &table, 4);
	memcpy(body + 6, &pba, 4);
	wmask[3] = (PCI_MSIX_ENABLE | PCI_MSIX_MASKALL) >> 8;
	dev->msix = m;
	ret = fdvm_pci_add_cap(dev, PCI_CAP_ID_MSIX, body, wmask, 12);
	if (ret < 0)
		goto err_lines;
	dev->msix_cap = (unsigned)ret;
	return 0;

err_lines:
	dev->msix = NULL;
	for (unsigned i = 0; i < m->n; i++)
		fdvm_irq_line_destroy(m->e[i].line);
err_free:
	pthread_mutex_destroy(&m->lock);
	free(m->e);
	free(m);
	return ret;
}

void fdvm_msix_exit(struct fdvm_pci_dev *dev)
{
	struct fdvm_msix *m = dev->msix;

	if (!m)
		return;
	dev->msix = NULL;
	fdvm_gsi_begin(dev->vm);
	for (unsigned i = 0; i < m->n; i++)
		fdvm_irq_line_destroy(m->e[i].line);
	fdvm_gsi_end(dev->vm);
	pthread_mutex_destroy(&m->lock);
	free(m->e);
	free(m);
}

void fdvm_msix_control(struct fdvm_pci_dev *dev, uint16_t control)
{
	struct fdvm_msix *m = dev->msix;

	pthread_mutex_lock(&m->lock);
	m->enabled = control & PCI_MSIX_ENABLE;
	m->fmask = control & PCI_MSIX_MASKALL;
	for (unsigned i = 0; i < m->n; i++)
		sync_vector(dev, m, i);
	pthread_mutex_unlock(&m->lock);
}

/* Table and PBA accept aligned dword and qword accesses; others are
 * ignored (reads return 0), as the PCI spec allows. */
static bool aligned(uint64_t off, unsigned size)
{
	return (size == 4 || size == 8) && !(off & (size - 1));
}

bool fdvm_msix_bar_read(struct fdvm_pci_dev *dev, unsigned bar, uint64_t off,
			unsigned size, uint64_t *val)
{
	struct fdvm_msix *m = dev->msix;
	uint64_t tsz = (uint64_t)m->n * ENTRY_SIZE, psz = 8ull * ((m->n + 63) / 64);

	if (bar != m->bar)
		return false;
	if (off >= m->table && off - m->table < tsz) {
		uint64_t o = off - m->table;
		*val = 0;
		if (!aligned(o, size))
			return true;
		pthread_mutex_lock(&m->lock);
		for (unsigned k = 0; k < size; k += 4) {
			const struct msix_entry *e = &m->e[(o + k) / ENTRY_SIZE];
			uint32_t words[4] = { e->addr_lo, e->addr_hi, e->data, e->ctrl };
			*val |= (uint64_t)words[((o + k) % ENTRY_SIZE) / 4] << (8 * k);
		}
		pthread_mutex_unlock(&m->lock);
		return true;
	}
	if (off >= m->pba && off - m->pba < psz) {
		uint64_t o = off - m->pba;
		*val = 0;
		if (!aligned(o, size))
			return true;
		pthread_mutex_lock(&m->lock);
		for (unsigned bit = 0; bit < size * 8; bit++) {
			unsigned v = (unsigned)(o * 8 + bit);
			/* Pending means something only while masked. */
			if (v < m->n && m->e[v].masked && fdvm_irq_line_pending(m->e[v].line))
				*val |= 1ull << bit;
		}
		pthread_mutex_unlock(&m->lock);
		return true;
	}
	return false;
}

bool fdvm_msix_bar_write(struct fdvm_pci_dev *dev, unsigned bar, uint64_t off,
			 unsigned size, uint64_t val)
{
	struct fdvm_msix *m = dev->msix;
	uint64_t tsz = (uint64_t)m->n * ENTRY_SIZE, psz = 8ull * ((m->n + 63) / 64);

	if (bar != m->bar)
		return false;
	if (off >= m->pba && off - m->pba < psz)
		return true; /* read-only */
	if (!(off >= m->table && off - m->table < tsz))
		return false;
	uint64_t o = off - m->table;
	if (!aligned(o, size))
		return true;
	pthread_mutex_lock(&m->lock);
	for (unsigned k = 0; k < size; k += 4) {
		unsigned i = (unsigned)((o + k) / ENTRY_SIZE);
		struct msix_entry *e = &m->e[i];
		uint32_t w = (uint32_t)(val >> (8 * k));
		switch (((o + k) % ENTRY_SIZE) / 4) {
		case 0:
			e->addr_lo = w & ~3u;
			break;
		case 1:
			e->addr_hi = w;
			break;
		case 2:
			e->data = w;
			break;
		case 3:
			e->ctrl = w & CTRL_MASKED; /* other bits reserved */
			break;
		}
		if (((o + k) % ENTRY_SIZE) / 4 < 3) {
			struct fdvm_msi msg = { (uint64_t)e->addr_hi << 32 | e->addr_lo, e->data };
			fdvm_irq_line_set_msi(e->line, &msg);
		}
		sync_vector(dev, m, i);
	}
	pthread_mutex_unlock(&m->lock);
	return true;
}

int fdvm_pci_msix_fd(struct fdvm_pci_dev *dev, unsigned vector)
{
	return dev->msix && vector < dev->msix->n ? fdvm_irq_line_fd(dev->msix->e[vector].line) : -1;
}

struct fdvm_irq_line *fdvm_pci_msix_line(struct fdvm_pci_dev *dev, unsigned vector)
{
	return dev->msix && vector < dev->msix->n ? dev->msix->e[vector].line : NULL;
}
