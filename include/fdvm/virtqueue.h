/*
 * The device side of a virtio 1.x split virtqueue, for in-process devices
 * and for vhost-user backends alike: it reaches guest memory only through
 * the translate callback it is given, and treats every ring index,
 * descriptor, address and length as hostile. A malformed queue makes
 * fdvm_vq_pop return -EINVAL; the device must then stop using the queue and
 * set DEVICE_NEEDS_RESET (the transport does this for in-process devices).
 *
 * One thread owns a queue (the device's backend thread): nothing here is
 * locked.
 */
#ifndef FDVM_VIRTQUEUE_H
#define FDVM_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Guest-physical [gpa, gpa + len) -> host pointer, or NULL if not all RAM. */
typedef void *(*fdvm_translate_fn)(void *opaque, uint64_t gpa, uint64_t len);

#define FDVM_VQ_MAX_SIZE 1024
#define FDVM_VQ_MAX_SEGS 1024

/*
 * The split-ring inflight region of the vhost-user spec ("Inflight I/O
 * tracking"): shared with the frontend, which keeps it across a backend
 * crash, so the next backend knows which requests were taken and not
 * answered. One per queue; desc[] has one entry per ring slot.
 */
struct fdvm_vq_inflight_desc {
	uint8_t inflight;
	uint8_t padding[5];
	uint16_t next;
	uint64_t counter;
};
struct fdvm_vq_inflight {
	uint64_t features;
	uint16_t version;	/* 1; 0: never used */
	uint16_t desc_num;
	uint16_t last_batch_head;
	uint16_t used_idx;
	struct fdvm_vq_inflight_desc desc[];
};
#define FDVM_VQ_INFLIGHT_VERSION 1

struct fdvm_vq {
	uint16_t size;
	bool event_idx;		/* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;		/* VIRTIO_F_INDIRECT_DESC negotiated */
	fdvm_translate_fn translate;
	void *opaque;
	/* Host views of the rings, checked at start. */
	volatile struct fdvm_vring_desc *desc;
	volatile struct fdvm_vring_avail *avail;
	volatile struct fdvm_vring_used *used;
	uint16_t last_avail;	/* next avail entry to take */
	uint16_t used_idx;	/* next used entry to fill */
	uint16_t signalled_used; /* used_idx at the last interrupt */
	bool signalled_valid;
	bool kicks_off;		/* fdvm_vq_enable_kicks(false) in force */
	bool broken;
	/* Inflight tracking (fdvm_vq_inflight_attach), NULL when off. */
	volatile struct fdvm_vq_inflight *inflight;
	uint64_t counter;	/* the next request's fetch order */
	uint16_t nresubmit, resubmitted; /* heads to pop again first */
	uint16_t resubmit[FDVM_VQ_MAX_SIZE];
};

struct fdvm_vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags, next;
};
#define FDVM_VRING_DESC_F_NEXT 1
#define FDVM_VRING_DESC_F_WRITE 2
#define FDVM_VRING_DESC_F_INDIRECT 4

struct fdvm_vring_avail {
	uint16_t flags, idx;
	uint16_t ring[]; /* size entries, then used_event */
};
#define FDVM_VRING_AVAIL_F_NO_INTERRUPT 1

struct fdvm_vring_used_elem {
	uint32_t id, len;
};
struct fdvm_vring_used {
	uint16_t flags, idx;
	struct fdvm_vring_used_elem ring[]; /* size entries, then avail_event */
};
#define FDVM_VRING_USED_F_NO_NOTIFY 1

/* One request: the device reads out[], writes in[] (host pointers). */
struct fdvm_vq_elem {
	uint16_t head;
	unsigned nout, nin;
	uint64_t out_len, in_len;
	struct iovec out[FDVM_VQ_MAX_SEGS], in[FDVM_VQ_MAX_SEGS];
};

/*
 * Starts a queue on the guest's ring addresses. -EINVAL for a size that is
 * 0, not a power of two or above FDVM_VQ_MAX_SIZE, or rings outside RAM.
 */
int fdvm_vq_init(struct fdvm_vq *vq, uint16_t size, uint64_t desc, uint64_t avail,
		 uint64_t used, bool event_idx, bool indirect, fdvm_translate_fn translate,
		 void *opaque);

/*
 * Tracks requests in r, a region of sizeof(struct fdvm_vq_inflight) +
 * size * sizeof(struct fdvm_vq_inflight_desc) bytes, from now on. A fresh
 * region (version 0) is initialised. One that a crashed backend left is
 * recovered as the spec says: the last completion is settled against the
 * used ring (whose index the device goes on from), and every request still marked is popped again, in the order
 * it was first taken, before new ones; the avail index goes on after them
 * (requests complete in order here). Entries the frontend could have
 * spoiled are checked like anything else from outside. After
 * fdvm_vq_init, before the first pop.
 */
void fdvm_vq_inflight_attach(struct fdvm_vq *vq, volatile struct fdvm_vq_inflight *r);
size_t fdvm_vq_inflight_size(uint16_t size);

/* Takes the next request: 1 and *elem filled, 0 if none, -EINVAL if the
 * guest broke the queue (it stays broken). */
int fdvm_vq_pop(struct fdvm_vq *vq, struct fdvm_vq_elem *elem);

/* Returns a request with len bytes written into its in[] buffers. */
void fdvm_vq_push(struct fdvm_vq *vq, uint16_t head, uint32_t len);

/*
 * Returns n requests at once: the used index moves once, after all of them
 * (a packet spread over several buffers is seen whole or not at all).
 */
void fdvm_vq_push_batch(struct fdvm_vq *vq, const struct fdvm_vring_used_elem *e, unsigned n);

/*
 * Gives back the request fdvm_vq_pop returned last, not pushed: the next
 * pop returns it again. Several go back newest first. Not for a queue that
 * is resubmitting requests after a crash (fdvm_vq_inflight_attach).
 */
void fdvm_vq_unpop(struct fdvm_vq *vq, uint16_t head);

/* After pushes: true if the driver wants an interrupt now. */
bool fdvm_vq_should_notify(struct fdvm_vq *vq);

/*
 * Asks the driver for kicks (on) or not (off, while the device is busy).
 * Returns true if, after turning them on, work is already there (the
 * device must process it rather than wait for a kick).
 */
bool fdvm_vq_enable_kicks(struct fdvm_vq *vq, bool on);

/*
 * Asks for a kick once the driver's avail index moves past seen (an index
 * already looked at: the device found too little there and gave it back
 * with fdvm_vq_unpop). Returns true if it has moved already.
 */
bool fdvm_vq_kick_after(struct fdvm_vq *vq, uint16_t seen);

/* Copies between an element's iovecs and a flat buffer; return bytes moved. */
size_t fdvm_iov_to_buf(const struct iovec *iov, unsigned n, size_t skip, void *buf, size_t len);
size_t fdvm_iov_from_buf(const struct iovec *iov, unsigned n, size_t skip, const void *buf,
			 size_t len);

#ifdef __cplusplus
}
#endif

#endif
