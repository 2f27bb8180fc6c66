/*
 * A backend thread for simple virtio devices: waits on each queue's kick
 * eventfd, pops requests, hands each to the device's handler, pushes the
 * answers and interrupts the guest when the driver wants it. A broken queue
 * is dropped and the device flagged DEVICE_NEEDS_RESET; the other queues go
 * on.
 */
#ifndef FDVM_VIRTIO_BACKEND_H
#define FDVM_VIRTIO_BACKEND_H

#include "fdvm/loop.h"
#include "fdvm/virtio.h"

#define FDVM_BACKEND_MAX_QUEUES 64

struct fdvm_virtio_backend;

/*
 * Serves one request: true when it is answered now (*written = bytes
 * written into e->in); false when the device answers it later with
 * fdvm_virtio_backend_complete (it keeps what it needs of e: e is reused
 * for the next request).
 */
typedef bool (*fdvm_request_fn)(void *opaque, unsigned queue, struct fdvm_vq_elem *e,
				uint32_t *written);

struct fdvm_backend_queue {
	struct fdvm_virtio_backend *be;
	struct fdvm_virtio_queue *q;	/* the transport's, worked on in place */
	struct fdvm_vq_elem *elem;
	uint64_t own_kicks;		/* our own signals on kick_fd, not yet read */
	bool dead;
	bool completed;			/* answers pushed since the last interrupt decision */
};

struct fdvm_virtio_backend {
	/*
	 * After the queue runs dry, keep watching it this long (kicks stay
	 * off, so the guest does not pay an exit to notify) before sleeping
	 * on the kick eventfd. 0: sleep at once. Costs that much CPU per burst.
	 */
	uint64_t poll_ns;
	fdvm_request_fn handle;
	void *opaque;
	const char *name;
	struct fdvm_epoll_loop *loop;
	unsigned n;
	void (*broken)(void *ctx, unsigned index); /* from the transport's start */
	void *broken_ctx;
	/*
	 * A device that answers requests later: aux_fd is watched on the
	 * backend's thread, aux(opaque) called when it is readable (the
	 * device's completions); drain(opaque) is called by
	 * fdvm_virtio_backend_stop once that thread is gone, to answer what is
	 * still outstanding before the queues are let go. NULL: none.
	 */
	void (*aux)(void *opaque);
	void (*aux_poll)(void *opaque);	/* cheap: called while polling a ring */
	int aux_fd;
	void (*drain)(void *opaque);
	struct fdvm_backend_queue q[FDVM_BACKEND_MAX_QUEUES];
};

/*
 * Serves s->queues on a new thread. Each queue is looked at once at start,
 * as if kicked: requests that arrived while nobody watched (a restart, a
 * vhost-user reconnect) are not left waiting for a kick that already came.
 */
int fdvm_virtio_backend_start(struct fdvm_virtio_backend *be, const struct fdvm_virtio_start *s);
/* Joins the thread and drains: afterwards no queue is touched. */
void fdvm_virtio_backend_stop(struct fdvm_virtio_backend *be);
/* Answers a request of queue (its index, as handle got it) that handle
 * deferred. From aux on the backend's thread, or from drain. */
void fdvm_virtio_backend_complete(struct fdvm_virtio_backend *be, unsigned queue, uint16_t head,
				  uint32_t written);
/* After completions, on the backend's thread: the interrupts the driver
 * wants for them. */
void fdvm_virtio_backend_flush(struct fdvm_virtio_backend *be);

#endif
