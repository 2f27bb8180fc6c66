/* The guest's virtio-pci driver (modern). */
#include "virtio.h"
#include "io.h"

#define STATUS_ACK 1
#define STATUS_DRIVER 2
#define STATUS_DRIVER_OK 4
#define STATUS_FEATURES_OK 8
#define DESC_NEXT 1
#define DESC_WRITE 2
#define DESC_INDIRECT 4
#define IND_MAX 8

/* Ring memory: a bump allocator over a static pool. */
static uint8_t pool[4 << 20] __attribute__((aligned(4096)));
static uint64_t pool_used;

void virtio_pool_reset(void) { pool_used = 0; }

static void *pool_alloc(uint64_t size)
{
	uint64_t at = (pool_used + 4095) & ~4095ull;
	if (at + size > sizeof(pool))
		return 0;
	pool_used = at + size;
	memset(pool + at, 0, size);
	return pool + at;
}

bool virtio_find(uint32_t device_id, unsigned nth, struct vdev *d)
{
	memset(d, 0, sizeof(*d));
	for (unsigned s = 0; s < 32; s++) {
		uint32_t id = pci_cfg_read(s, 0, 4);
		uint16_t dev = (uint16_t)(id >> 16);
		if ((uint16_t)id != 0x1af4 || dev < 0x1000)
			continue;
		/* Modern IDs are 0x1040 + type; transitional ones carry the type
		 * in the subsystem ID. */
		uint32_t type = dev >= 0x1040 ? dev - 0x1040u : pci_cfg_read(s, 0x2e, 2);
		if (type != device_id || nth--)
			continue;
		if (!pci_probe(s, &d->pci))
			continue;
		unsigned p = pci_cfg_read(s, 0x34, 1) & 0xfc;
		for (int guard = 0; p && guard < 48; guard++) {
			if (pci_cfg_read(s, p, 1) == 0x09) {
				uint8_t type_ = (uint8_t)pci_cfg_read(s, p + 3, 1);
				uint8_t bar = (uint8_t)pci_cfg_read(s, p + 4, 1);
				uint64_t addr = d->pci.bar[bar & 7] + pci_cfg_read(s, p + 8, 4);
				if (type_ == 1 && !d->common)
					d->common = addr;
				else if (type_ == 2 && !d->notify) {
					d->notify = addr;
					d->notify_mult = pci_cfg_read(s, p + 16, 4);
				} else if (type_ == 3 && !d->isr)
					d->isr = addr;
				else if (type_ == 4 && !d->device)
					d->device = addr;
			}
			p = pci_cfg_read(s, p + 1, 1) & 0xfc;
		}
		return d->common && d->notify;
	}
	return false;
}

uint8_t virtio_status(struct vdev *d) { return mmio_read8(d->common + 0x14); }
void virtio_set_status(struct vdev *d, uint8_t s) { mmio_write8(d->common + 0x14, s); }

void virtio_reset(struct vdev *d)
{
	virtio_set_status(d, 0);
	while (virtio_status(d) != 0)
		;
}

bool virtio_negotiate(struct vdev *d, uint64_t wanted)
{
	virtio_reset(d);
	virtio_set_status(d, STATUS_ACK);
	virtio_set_status(d, STATUS_ACK | STATUS_DRIVER);
	mmio_write32(d->common + 0x00, 0);
	uint64_t f = mmio_read32(d->common + 0x04);
	mmio_write32(d->common + 0x00, 1);
	f |= (uint64_t)mmio_read32(d->common + 0x04) << 32;
	d->features = f & (wanted | 1ull << VIRTIO_F_VERSION_1);
	mmio_write32(d->common + 0x08, 0);
	mmio_write32(d->common + 0x0c, (uint32_t)d->features);
	mmio_write32(d->common + 0x08, 1);
	mmio_write32(d->common + 0x0c, (uint32_t)(d->features >> 32));
	virtio_set_status(d, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
	return (virtio_status(d) & STATUS_FEATURES_OK) && (d->features >> VIRTIO_F_VERSION_1 & 1);
}

bool virtio_setup_vq(struct vdev *d, struct vq *q, uint16_t index, uint16_t size, uint16_t vector)
{
	memset(q, 0, sizeof(*q));
	mmio_write16(d->common + 0x16, index);
	uint16_t max = mmio_read16(d->common + 0x18);
	if (!max)
		return false;
	if (size > max)
		size = max;
	if (size > VQ_MAX)
		size = VQ_MAX;
	q->dev = d;
	q->index = index;
	q->size = size;
	q->event_idx = d->features >> VIRTIO_F_EVENT_IDX & 1;
	q->use_indirect = d->features >> VIRTIO_F_INDIRECT_DESC & 1;
	q->desc = pool_alloc(16ull * size);
	q->avail = pool_alloc(6 + 2ull * size);
	q->used = pool_alloc(6 + 8ull * size);
	q->indirect = pool_alloc(sizeof(struct vring_desc) * IND_MAX * size);
	if (!q->desc || !q->avail || !q->used || !q->indirect)
		return false;
	for (uint16_t i = 0; i < size; i++)
		q->desc[i].next = (uint16_t)(i + 1);
	q->num_free = size;
	mmio_write16(d->common + 0x18, size);
	mmio_write16(d->common + 0x1a, vector);
	mmio_write64(d->common + 0x20, (uint64_t)q->desc);
	mmio_write64(d->common + 0x28, (uint64_t)q->avail);
	mmio_write64(d->common + 0x30, (uint64_t)q->used);
	q->notify_addr = d->notify + (uint64_t)mmio_read16(d->common + 0x1e) * d->notify_mult;
	mmio_write16(d->common + 0x1c, 1);
	return true;
}

void virtio_driver_ok(struct vdev *d)
{
	virtio_set_status(d, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

uint8_t virtio_cfg8(struct vdev *d, unsigned off) { return mmio_read8(d->device + off); }
uint32_t virtio_cfg32(struct vdev *d, unsigned off) { return mmio_read32(d->device + off); }
uint64_t virtio_cfg64(struct vdev *d, unsigned off)
{
	return mmio_read32(d->device + off) | (uint64_t)mmio_read32(d->device + off + 4) << 32;
}

bool vq_add(struct vq *q, const struct vbuf *b, unsigned n, void *cookie)
{
	bool ind = q->use_indirect && n > 1 && n <= IND_MAX;
	unsigned need = ind ? 1 : n;
	if (q->num_free < need || !n)
		return false;
	uint16_t head = q->free_head;
	if (ind) {
		struct vring_desc *t = &q->indirect[head * IND_MAX];
		for (unsigned i = 0; i < n; i++)
			t[i] = (struct vring_desc){ b[i].addr, b[i].len,
						    (uint16_t)((b[i].write ? DESC_WRITE : 0) |
							       (i + 1 < n ? DESC_NEXT : 0)),
						    (uint16_t)(i + 1) };
		q->desc[head].addr = (uint64_t)t;
		q->desc[head].len = (uint32_t)(n * sizeof(*t));
		q->desc[head].flags = DESC_INDIRECT;
		q->free_head = q->desc[head].next;
	} else {
		uint16_t i = head, last = head;
		for (unsigned k = 0; k < n; k++) {
			q->desc[i].addr = b[k].addr;
			q->desc[i].len = b[k].len;
			q->desc[i].flags = (uint16_t)((b[k].write ? DESC_WRITE : 0) | (k + 1 < n ? DESC_NEXT : 0));
			last = i;
			i = q->desc[i].next;
		}
		q->free_head = q->desc[last].next;
	}
	q->num_free = (uint16_t)(q->num_free - need);
	q->cookie[head] = cookie;
	q->avail[2 + q->avail_idx % q->size] = head;
	__atomic_store_n(&q->avail[1], (uint16_t)(q->avail_idx + 1), __ATOMIC_RELEASE);
	q->avail_idx++;
	return true;
}

bool vq_kick(struct vq *q)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	bool kick;
	if (q->event_idx) {
		uint16_t event = ((volatile uint16_t *)&q->used[1 + 2 * q->size])[0];
		uint16_t new = q->avail_idx, old = q->kicked_at;
		kick = (uint16_t)(new - event - 1) < (uint16_t)(new - old);
	} else {
		kick = !(((volatile uint16_t *)q->used)[0] & 1);
	}
	q->kicked_at = q->avail_idx;
	if (kick)
		mmio_write16(q->notify_addr, q->index);
	return kick;
}

void *vq_get(struct vq *q, uint32_t *len)
{
	uint16_t used_idx = __atomic_load_n(&((volatile uint16_t *)q->used)[1], __ATOMIC_ACQUIRE);
	if (used_idx == q->last_used)
		return 0;
	volatile uint32_t *e = &q->used[1 + 2 * (q->last_used % q->size)];
	uint16_t head = (uint16_t)e[0];
	if (len)
		*len = e[1];
	q->last_used++;
	if (q->event_idx) /* interrupt me on the next completion */
		q->avail[2 + q->size] = q->last_used;
	if (head >= q->size)
		return 0;
	void *cookie = q->cookie[head];
	/* Free the chain. */
	uint16_t i = head, n = 1;
	if (!(q->desc[head].flags & DESC_INDIRECT))
		while (q->desc[i].flags & DESC_NEXT) {
			i = q->desc[i].next;
			n++;
		}
	q->desc[i].next = q->free_head;
	q->free_head = head;
	q->num_free = (uint16_t)(q->num_free + n);
	return cookie;
}

void vq_enable_interrupts(struct vq *q, bool on)
{
	if (q->event_idx)
		/* Off: an index the device will not reach for a long while. */
		q->avail[2 + q->size] = on ? q->last_used : (uint16_t)(q->last_used + 0x8000);
	else
		q->avail[0] = on ? 0 : 1;
}
