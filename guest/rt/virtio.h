/*
 * The guest's virtio 1.x driver over PCI (modern interface only): finds the
 * device and its capabilities, negotiates features, sets up split queues
 * (with indirect descriptors and event-index notification when offered and
 * wanted), and gives MSI-X vectors to queues. Works on fdvm and against
 * QEMU's devices (transitional or modern-only).
 */
#ifndef RT_VIRTIO_H
#define RT_VIRTIO_H

#include "pci.h"
#include "rt.h"

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

#define VQ_MAX 256

struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};

struct vq {
	struct vdev *dev;
	uint16_t index, size;
	volatile struct vring_desc *desc;
	volatile uint16_t *avail;	/* flags, idx, ring[size], used_event */
	volatile uint32_t *used;	/* flags|idx, {id, len}[size], avail_event */
	uint16_t free_head, num_free, avail_idx, last_used, kicked_at;
	uint64_t notify_addr;
	void *cookie[VQ_MAX];
	struct vring_desc *indirect;	/* per head: a table of 8 */
	bool event_idx, use_indirect;
};

struct vdev {
	struct pci_dev pci;
	uint64_t common, isr, device, notify;
	uint32_t notify_mult;
	uint64_t features;
};

/* Finds a virtio device of this type (its virtio device ID). */
bool virtio_find(uint32_t device_id, unsigned nth, struct vdev *d);
/* Reset, ACKNOWLEDGE|DRIVER, features (wanted & offered), FEATURES_OK.
 * Returns false if the device refused. */
bool virtio_negotiate(struct vdev *d, uint64_t wanted);
/* Sets up queue i (size <= VQ_MAX, or the device's if smaller) with an
 * MSI-X vector (0xffff: none). Memory comes from a static pool. */
bool virtio_setup_vq(struct vdev *d, struct vq *q, uint16_t index, uint16_t size, uint16_t vector);
void virtio_driver_ok(struct vdev *d);
uint8_t virtio_status(struct vdev *d);
void virtio_set_status(struct vdev *d, uint8_t s);
void virtio_reset(struct vdev *d);
uint8_t virtio_cfg8(struct vdev *d, unsigned off);
uint32_t virtio_cfg32(struct vdev *d, unsigned off);
uint64_t virtio_cfg64(struct vdev *d, unsigned off);
/* Resets the pool of ring memory (after a device reset, to set up again). */
void virtio_pool_reset(void);

struct vbuf {
	uint64_t addr;
	uint32_t len;
	bool write;
};
/* virtio-blk (5.2.6): what a request starts with, its types and the
 * status the device writes into its last byte. */
struct vblk_hdr {
	uint32_t type, ioprio;
	uint64_t sector;
};
#define VBLK_T_IN 0
#define VBLK_T_OUT 1
#define VBLK_T_FLUSH 4
#define VBLK_T_GET_ID 8
#define VBLK_T_DISCARD 11
#define VBLK_T_WRITE_ZEROES 13
#define VBLK_S_OK 0
#define VBLK_S_IOERR 1
#define VBLK_S_UNSUPP 2

/* Adds a request; false if the ring is full. */
bool vq_add(struct vq *q, const struct vbuf *b, unsigned n, void *cookie);
/* Notifies the device if it asked for it (event index / NO_NOTIFY);
 * whether it did. */
bool vq_kick(struct vq *q);
/* A completed request's cookie (and written length), or NULL. */
void *vq_get(struct vq *q, uint32_t *len);
/* Tells the device whether to interrupt on completions. */
void vq_enable_interrupts(struct vq *q, bool on);

#endif
