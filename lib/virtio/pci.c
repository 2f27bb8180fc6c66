/*
 * virtio-pci, modern (virtio 1.x, 4.1): the common configuration, ISR,
 * device configuration and notification structures in BAR0, MSI-X in BAR1.
 * Each queue's notification address is a doorbell whose eventfd the device
 * waits on; each queue's MSI-X vector is an irq line whose eventfd the
 * device writes. Reset tears every doorbell down; DRIVER_OK builds them.
 * The guest drives all of this: every value it writes is checked here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fdvm/pci.h"
#include "fdvm/virtio.h"
#include "../vm_priv.h"

#define MAX_QUEUES 64
#define NO_VECTOR 0xffff

/* BAR0 layout. */
#define COMMON_OFF 0x0000
#define COMMON_LEN 0x38
#define ISR_OFF 0x1000
#define DEVICE_OFF 0x2000
#define DEVICE_LEN 0x1000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULT 4
#define BAR0_SIZE 0x4000
#define BAR1_SIZE 0x1000
#define MSIX_PBA 0x800

/* Vendor capability types (4.1.4). */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

struct queue {
	uint16_t size;
	bool enabled;
	uint16_t vector;
	uint64_t desc, driver, device;
	int kick_fd;			/* while started */
	struct fdvm_doorbell *db;	/* while started and BAR0 mapped */
};

struct fdvm_virtio_pci {
	struct fdvm_vm *vm;
	const struct fdvm_virtio_dev_ops *ops;
	void *opaque;
	enum fdvm_doorbell_mode mode;
	struct fdvm_pci_dev *pci;
	struct fdvm_owned *owned;
	struct fdvm_virtio_model *model; /* fdvm_virtio_pci_add_model's: destroyed after us */
	unsigned nq;

	/* Set by any thread (a backend that found a broken queue); read into
	 * status, cleared by reset. Not under lock: stop() may be waiting for
	 * the very thread that sets it. */
	atomic_bool needs_reset;
	_Atomic uint16_t msix_config_vector;

	pthread_mutex_t lock;		/* guards everything below */
	uint8_t status;
	uint8_t generation;
	uint32_t dfselect, gfselect;
	uint64_t guest_features;
	uint16_t queue_select, msix_config;
	bool started;
	struct queue q[MAX_QUEUES];
	struct fdvm_virtio_queue started_q[MAX_QUEUES];

	/* Queue i's counters: written by the thread that serves it, kept
	 * across resets (fdvm/stats.h). */
	struct fdvm_queue_stats stats[MAX_QUEUES];
	/* Under lock: kicks already put down to a doorbell path (as each
	 * doorbell goes), and how many went by each. */
	uint64_t kicks_placed[MAX_QUEUES];
	uint64_t kicks_by[MAX_QUEUES][2]; /* [0] ioeventfd, [1] exit */
};

static uint64_t offered(const struct fdvm_virtio_pci *t)
{
	return t->ops->features | 1ull << FDVM_VIRTIO_F_VERSION_1;
}

static void *translate(void *opaque, uint64_t gpa, uint64_t len)
{
	return fdvm_gpa(opaque, gpa, len);
}

/* Raises the config interrupt, if the driver gave it a vector. Any thread. */
static void config_irq(struct fdvm_virtio_pci *t)
{
	uint16_t v = atomic_load(&t->msix_config_vector);
	if (v != NO_VECTOR) {
		int fd = fdvm_pci_msix_fd(t->pci, v);
		if (fd >= 0)
			fdvm_eventfd_signal(fd);
	}
}

/* The device found a queue broken (any thread): DEVICE_NEEDS_RESET. */
static void queue_broken(void *ctx, unsigned index)
{
	struct fdvm_virtio_pci *t = ctx;
	if (!atomic_exchange(&t->needs_reset, true)) {
		fdvm_log(t->vm, FDVM_LOG_WARN, "virtio %s: queue %u cannot go on: device needs reset",
			 t->ops->name, index);
		config_irq(t);
	}
}

/* Lock held: the doorbells, where BAR0 is now. */
static void doorbells_create(struct fdvm_virtio_pci *t)
{
	struct fdvm_io_region *bar0 = fdvm_pci_bar_region(t->pci, 0);
	uint64_t base = fdvm_pci_bar_addr(t->pci, 0);

	for (unsigned i = 0; i < t->nq && bar0; i++) {
		struct queue *q = &t->q[i];
		if (q->kick_fd < 0 || q->db)
			continue;
		struct fdvm_doorbell_config c;
		fdvm_doorbell_config_init(&c);
		c.space = FDVM_SPACE_MMIO;
		c.addr = base + NOTIFY_OFF + i * NOTIFY_MULT;
		c.len = t->vm->caps.ioeventfd_any_length ? 0 : 2;
		c.mode = t->mode;
		c.region = bar0;
		c.fd = q->kick_fd;
		if (fdvm_doorbell_create(t->vm, &c, &q->db))
			q->db = NULL;
	}
}

/* Lock held: the kicks read since the last call went by the path of the
 * doorbell queue i has now. */
static void place_kicks(struct fdvm_virtio_pci *t, unsigned i)
{
	uint64_t k = __atomic_load_n(&t->stats[i].kicks, __ATOMIC_RELAXED);
	if (t->q[i].db)
		t->kicks_by[i][!fdvm_doorbell_in_kernel(t->q[i].db)] += k - t->kicks_placed[i];
	t->kicks_placed[i] = k;
}

static void doorbells_destroy(struct fdvm_virtio_pci *t)
{
	for (unsigned i = 0; i < t->nq; i++) {
		place_kicks(t, i);
		fdvm_doorbell_destroy(t->q[i].db);
		t->q[i].db = NULL;
	}
}

/* Lock held: DRIVER_OK. Checks what the guest set up, then starts the device. */
static void start(struct fdvm_virtio_pci *t)
{
	unsigned n = 0;
	bool ei = t->guest_features >> FDVM_VIRTIO_F_EVENT_IDX & 1;
	bool ind = t->guest_features >> FDVM_VIRTIO_F_INDIRECT_DESC & 1;

	for (unsigned i = 0; i < t->nq; i++) {
		struct queue *q = &t->q[i];
		if (!q->enabled)
			continue;
		struct fdvm_virtio_queue *sq = &t->started_q[n];
		sq->index = i;
		if (fdvm_vq_init(&sq->vq, q->size, q->desc, q->driver, q->device, ei, ind, translate,
				 t->vm)) {
			fdvm_log(t->vm, FDVM_LOG_WARN,
				 "virtio %s: queue %u: bad size %u or rings outside RAM", t->ops->name, i,
				 q->size);
			goto fail;
		}
		q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick_fd < 0) {
			fdvm_log_errno(t->vm, errno, "virtio %s: queue %u: eventfd", t->ops->name, i);
			goto fail;
		}
		sq->kick_fd = q->kick_fd;
		sq->call_fd = q->vector == NO_VECTOR ? -1 : fdvm_pci_msix_fd(t->pci, q->vector);
		sq->stats = t->vm->cfg.counters ? &t->stats[i] : NULL;
		n++;
	}
	doorbells_create(t);
	struct fdvm_virtio_start st = { .features = t->guest_features, .queues = t->started_q,
					.n = n, .broken = queue_broken, .ctx = t };
	if (t->ops->start(t->opaque, &st))
		goto fail;
	t->started = true;
	unsigned in_kernel = 0;
	for (unsigned i = 0; i < t->nq; i++)
		in_kernel += t->q[i].db && fdvm_doorbell_in_kernel(t->q[i].db);
	fdvm_log(t->vm, FDVM_LOG_INFO, "virtio %s: started, %u queues, %u doorbells in KVM, features 0x%llx",
		 t->ops->name, n, in_kernel, (unsigned long long)t->guest_features);
	return;
fail:
	doorbells_destroy(t);
	for (unsigned i = 0; i < t->nq; i++) {
		if (t->q[i].kick_fd >= 0)
			close(t->q[i].kick_fd);
		t->q[i].kick_fd = -1;
	}
	atomic_store(&t->needs_reset, true);
	config_irq(t);
}

/* Lock held: device reset (status 0). */
static void reset(struct fdvm_virtio_pci *t)
{
	if (t->started)
		t->ops->stop(t->opaque);
	t->started = false;
	doorbells_destroy(t);
	for (unsigned i = 0; i < t->nq; i++) {
		struct queue *q = &t->q[i];
		if (q->kick_fd >= 0)
			close(q->kick_fd);
		*q = (struct queue){ .size = t->ops->queue_max_size, .vector = NO_VECTOR, .kick_fd = -1 };
	}
	t->status = 0;
	t->dfselect = t->gfselect = 0;
	t->guest_features = 0;
	t->queue_select = 0;
	t->msix_config = NO_VECTOR;
	atomic_store(&t->msix_config_vector, NO_VECTOR);
	atomic_store(&t->needs_reset, false);
	t->generation++;
}

static void write_status(struct fdvm_virtio_pci *t, uint8_t v)
{
	if (v == 0) {
		reset(t);
		return;
	}
	uint8_t old = t->status;
	/* A driver sets status bits and never clears one but by reset (3.1.1);
	 * a write that tries is taken as setting what it sets. */
	v |= old;
	if ((v & FDVM_VIRTIO_STATUS_FEATURES_OK) && !(old & FDVM_VIRTIO_STATUS_FEATURES_OK)) {
		/* Only what was offered, and always version 1 (a modern-only device). */
		if ((t->guest_features & ~offered(t)) ||
		    !(t->guest_features >> FDVM_VIRTIO_F_VERSION_1 & 1))
			v &= (uint8_t)~FDVM_VIRTIO_STATUS_FEATURES_OK;
	}
	t->status = (uint8_t)(v & ~FDVM_VIRTIO_STATUS_NEEDS_RESET);
	if ((v & FDVM_VIRTIO_STATUS_DRIVER_OK) && !(old & FDVM_VIRTIO_STATUS_DRIVER_OK) &&
	    (t->status & FDVM_VIRTIO_STATUS_FEATURES_OK) && !atomic_load(&t->needs_reset) &&
	    !t->started)
		start(t);
}

static uint64_t common_read(struct fdvm_virtio_pci *t, uint64_t off, unsigned size)
{
	struct queue *q = t->queue_select < t->nq ? &t->q[t->queue_select] : NULL;
	uint64_t v = 0;

	switch (off) {
	case 0x00: v = t->dfselect; break;
	case 0x04: v = t->dfselect < 2 ? (uint32_t)(offered(t) >> (32 * t->dfselect)) : 0; break;
	case 0x08: v = t->gfselect; break;
	case 0x0c: v = t->gfselect < 2 ? (uint32_t)(t->guest_features >> (32 * t->gfselect)) : 0; break;
	case 0x10: v = t->msix_config; break;
	case 0x12: v = t->nq; break;
	case 0x14:
		v = t->status | (atomic_load(&t->needs_reset) ? FDVM_VIRTIO_STATUS_NEEDS_RESET : 0);
		break;
	case 0x15: v = t->generation; break;
	case 0x16: v = t->queue_select; break;
	case 0x18: v = q ? q->size : 0; break;
	case 0x1a: v = q ? q->vector : NO_VECTOR; break;
	case 0x1c: v = q ? q->enabled : 0; break;
	case 0x1e: v = q ? t->queue_select : 0; break; /* notify_off: queue i at i * mult */
	case 0x20: case 0x24: v = q ? q->desc >> (off == 0x24 ? 32 : 0) : 0; break;
	case 0x28: case 0x2c: v = q ? q->driver >> (off == 0x2c ? 32 : 0) : 0; break;
	case 0x30: case 0x34: v = q ? q->device >> (off == 0x34 ? 32 : 0) : 0; break;
	}
	return size == 8 ? v : v & ((1ull << (8 * size)) - 1);
}

static void set_half(uint64_t *field, uint64_t off, uint64_t lo_off, uint64_t v, unsigned size)
{
	if (size == 8 && off == lo_off)
		*field = v;
	else if (off == lo_off)
		*field = (*field & ~0xffffffffull) | (uint32_t)v;
	else
		*field = (*field & 0xffffffffull) | (uint64_t)(uint32_t)v << 32;
}

static void common_write(struct fdvm_virtio_pci *t, uint64_t off, uint64_t v, unsigned size)
{
	struct queue *q = t->queue_select < t->nq ? &t->q[t->queue_select] : NULL;
	/* Queue fields are frozen once the queue is enabled or the device runs. */
	bool q_ro = !q || q->enabled || t->started;

	switch (off) {
	case 0x00: t->dfselect = (uint32_t)v; break;
	case 0x08: t->gfselect = (uint32_t)v; break;
	case 0x0c:
		if (t->gfselect < 2 && !(t->status & FDVM_VIRTIO_STATUS_FEATURES_OK)) {
			uint64_t mask = 0xffffffffull << (32 * t->gfselect);
			t->guest_features = (t->guest_features & ~mask) | ((v & 0xffffffffull) << (32 * t->gfselect));
		}
		break;
	case 0x10:
		t->msix_config = (uint16_t)v < t->nq + 1 ? (uint16_t)v : NO_VECTOR;
		atomic_store(&t->msix_config_vector, t->msix_config);
		break;
	case 0x14: write_status(t, (uint8_t)v); break;
	case 0x16: t->queue_select = (uint16_t)v; break;
	case 0x18:
		if (!q_ro)
			q->size = (uint16_t)v; /* checked at DRIVER_OK */
		break;
	case 0x1a:
		if (!q_ro)
			q->vector = (uint16_t)v < t->nq + 1 ? (uint16_t)v : NO_VECTOR;
		break;
	case 0x1c:
		if (q && !t->started && (uint16_t)v == 1)
			q->enabled = true;
		break;
	case 0x20: case 0x24: if (!q_ro) set_half(&q->desc, off, 0x20, v, size); break;
	case 0x28: case 0x2c: if (!q_ro) set_half(&q->driver, off, 0x28, v, size); break;
	case 0x30: case 0x34: if (!q_ro) set_half(&q->device, off, 0x30, v, size); break;
	}
}

/* Each common field is read and written at its own size (4.1.3.1); 64-bit
 * fields also as two dwords or one qword. Others are ignored. */
static bool common_ok(uint64_t off, unsigned size)
{
	static const uint8_t sizes[COMMON_LEN] = {
		[0x00] = 4, [0x04] = 4, [0x08] = 4, [0x0c] = 4, [0x10] = 2, [0x12] = 2,
		[0x14] = 1, [0x15] = 1, [0x16] = 2, [0x18] = 2, [0x1a] = 2, [0x1c] = 2,
		[0x1e] = 2, [0x20] = 8, [0x24] = 4, [0x28] = 8, [0x2c] = 4, [0x30] = 8, [0x34] = 4,
	};
	if (off >= COMMON_LEN)
		return false;
	return sizes[off] == size || (sizes[off] == 8 && size == 4);
}

static uint64_t bar_read(void *opaque, unsigned bar, uint64_t off, unsigned size)
{
	struct fdvm_virtio_pci *t = opaque;
	uint64_t v = 0;

	if (bar != 0)
		return 0;
	pthread_mutex_lock(&t->lock);
	if (off < ISR_OFF) {
		if (common_ok(off, size))
			v = common_read(t, off, size);
	} else if (off == ISR_OFF) {
		v = 0; /* MSI-X only: the ISR is never set */
	} else if (off >= DEVICE_OFF && off - DEVICE_OFF + size <= t->ops->config_size) {
		if (t->ops->config_read)
			t->ops->config_read(t->opaque, (uint32_t)(off - DEVICE_OFF), &v, size);
	}
	pthread_mutex_unlock(&t->lock);
	return v;
}

static void bar_write(void *opaque, unsigned bar, uint64_t off, uint64_t v, unsigned size)
{
	struct fdvm_virtio_pci *t = opaque;

	if (bar != 0)
		return;
	pthread_mutex_lock(&t->lock);
	if (off < ISR_OFF) {
		if (common_ok(off, size))
			common_write(t, off, v, size);
	} else if (off >= DEVICE_OFF && off - DEVICE_OFF + size <= t->ops->config_size) {
		if (t->ops->config_write)
			t->ops->config_write(t->opaque, (uint32_t)(off - DEVICE_OFF), &v, size);
	}
	/* A notification that reaches us: no doorbell for it (a queue that was
	 * never set up, or BAR0 moved over nothing). Nothing to do. */
	pthread_mutex_unlock(&t->lock);
}

/* BAR0 moved: the doorbells move with it, on the same eventfds. */
static void bar_remap(void *opaque, unsigned bar, uint64_t addr, bool mapped)
{
	struct fdvm_virtio_pci *t = opaque;
	(void)addr;
	(void)mapped;
	if (bar != 0)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->started) {
		doorbells_destroy(t);
		doorbells_create(t);
	}
	pthread_mutex_unlock(&t->lock);
}

static const struct fdvm_pci_dev_ops pci_ops = {
	.bar_read = bar_read, .bar_write = bar_write, .bar_remap = bar_remap,
};

static int add_cap(struct fdvm_pci_dev *dev, uint8_t type, uint32_t off, uint32_t len, bool notify)
{
	/* struct virtio_pci_cap after the id/next bytes: cap_len, cfg_type, bar,
	 * id, padding[2], offset, length (+ notify_off_multiplier). */
	uint8_t body[18] = { 0 };
	unsigned clen = notify ? 20 : 16;
	body[0] = (uint8_t)clen;
	body[1] = type;
	body[2] = 0; /* BAR0 */
	memcpy(body + 6, &off, 4);
	memcpy(body + 10, &len, 4);
	if (notify) {
		uint32_t mult = NOTIFY_MULT;
		memcpy(body + 14, &mult, 4);
	}
	return fdvm_pci_add_cap(dev, 0x09, body, NULL, clen);
}

void fdvm_virtio_pci_destroy(struct fdvm_virtio_pci *t)
{
	if (!t)
		return;
	fdvm_vm_disown(t->vm, t->owned);
	/* First out of the guest's reach, then the device stops (its MSI-X
	 * lines still alive for a last interrupt), then the lines go. */
	fdvm_pci_dev_detach(t->pci);
	pthread_mutex_lock(&t->lock);
	reset(t);
	pthread_mutex_unlock(&t->lock);
	fdvm_pci_dev_destroy(t->pci);
	pthread_mutex_destroy(&t->lock);
	struct fdvm_virtio_model *m = t->model;
	free(t);
	/* The device is stopped and unreachable: its model can go. */
	if (m)
		m->destroy(m);
}

static void destroy_owned(void *t) { fdvm_virtio_pci_destroy(t); }

int fdvm_virtio_pci_stats(struct fdvm_virtio_pci *t, struct fdvm_virtio_pci_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->name = t->ops->name;
	out->slot = fdvm_pci_dev_slot(t->pci);
	out->counting = t->vm->cfg.counters;
	out->remote = t->ops->remote;
	pthread_mutex_lock(&t->lock);
	out->status = t->status;
	out->nq = t->nq;
	for (unsigned i = 0; i < t->nq; i++) {
		struct fdvm_virtio_queue_stats *q = &out->q[i];
		q->index = i;
		q->enabled = t->q[i].enabled;
		q->size = t->q[i].size;
		q->vector = t->q[i].vector;
		q->kick_path = !t->q[i].db ? FDVM_KICK_NONE
			       : fdvm_doorbell_in_kernel(t->q[i].db) ? FDVM_KICK_IOEVENTFD
								      : FDVM_KICK_EXIT;
		fdvm_queue_stats_read(&t->stats[i], &q->s);
		place_kicks(t, i);
		q->doorbells_ioeventfd = t->kicks_by[i][0];
		q->doorbells_exit = t->kicks_by[i][1];
	}
	pthread_mutex_unlock(&t->lock);
	/* Lines are the PCI device's, alive as long as it is. */
	out->nvec = t->nq + 1;
	for (unsigned v = 0; v < out->nvec; v++) {
		out->v[v].vector = v;
		struct fdvm_irq_line *l = fdvm_pci_msix_line(t->pci, v);
		if (l)
			fdvm_irq_line_stats(l, &out->v[v].s);
	}
	return 0;
}

int fdvm_virtio_pci_create(struct fdvm_vm *vm, const struct fdvm_virtio_dev_ops *ops,
			   void *opaque, enum fdvm_doorbell_mode mode, struct fdvm_virtio_pci **out)
{
	struct fdvm_virtio_pci *t;
	int ret;

	if (!ops->num_queues || ops->num_queues > MAX_QUEUES || !ops->queue_max_size ||
	    (ops->queue_max_size & (ops->queue_max_size - 1)) ||
	    ops->queue_max_size > FDVM_VQ_MAX_SIZE || ops->config_size > DEVICE_LEN)
		return -EINVAL;
	t = aligned_alloc(_Alignof(struct fdvm_virtio_pci), sizeof(*t));
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t));
	t->vm = vm;
	t->ops = ops;
	t->opaque = opaque;
	t->mode = mode;
	t->nq = ops->num_queues;
	pthread_mutex_init(&t->lock, NULL);
	for (unsigned i = 0; i < t->nq; i++)
		t->q[i].kick_fd = -1;
	pthread_mutex_lock(&t->lock);
	reset(t);
	pthread_mutex_unlock(&t->lock);

	struct fdvm_pci_dev_config c = {
		.name = ops->name,
		.vendor_id = 0x1af4,
		.device_id = (uint16_t)(0x1040 + ops->device_id),
		.subsystem_vendor_id = 0x1af4,
		.subsystem_id = (uint16_t)ops->device_id,
		.class_code = ops->pci_class,
		.revision = 1,
		.bars = { { FDVM_PCI_BAR_MMIO32, BAR0_SIZE }, { FDVM_PCI_BAR_MMIO32, BAR1_SIZE } },
		.msix_vectors = t->nq + 1,
		.msix_bar = 1,
		.msix_table_offset = 0,
		.msix_pba_offset = MSIX_PBA,
		.irq_mode = mode == FDVM_DOORBELL_USERSPACE ? FDVM_IRQ_USERSPACE
			  : mode == FDVM_DOORBELL_KERNEL ? FDVM_IRQ_KERNEL : FDVM_IRQ_AUTO,
		.ops = &pci_ops,
		.opaque = t,
	};
	ret = fdvm_pci_dev_create(vm, &c, &t->pci);
	if (ret)
		goto err_free;
	if (add_cap(t->pci, CAP_COMMON, COMMON_OFF, COMMON_LEN, false) < 0 ||
	    add_cap(t->pci, CAP_NOTIFY, NOTIFY_OFF, NOTIFY_MULT * t->nq, true) < 0 ||
	    add_cap(t->pci, CAP_ISR, ISR_OFF, 1, false) < 0 ||
	    (ops->config_size && add_cap(t->pci, CAP_DEVICE, DEVICE_OFF, ops->config_size, false) < 0)) {
		ret = -ENOSPC;
		goto err_pci;
	}
	ret = fdvm_vm_own(vm, destroy_owned, t, &t->owned);
	if (ret)
		goto err_pci;
	*out = t;
	return 0;

err_pci:
	fdvm_pci_dev_destroy(t->pci);
err_free:
	pthread_mutex_destroy(&t->lock);
	free(t);
	return ret;
}

int fdvm_virtio_pci_add_model(struct fdvm_vm *vm, struct fdvm_virtio_model *m,
			      enum fdvm_doorbell_mode mode, struct fdvm_virtio_pci **out)
{
	struct fdvm_virtio_pci *t;
	int ret = fdvm_virtio_pci_create(vm, m->ops, m->opaque, mode, &t);

	if (ret) {
		m->destroy(m);
		return ret;
	}
	t->model = m;
	if (out)
		*out = t;
	return 0;
}
