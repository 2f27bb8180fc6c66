/* The backend thread of simple virtio devices (see backend.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <time.h>

#include "backend.h"
#include "../vm_priv.h"

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Kicks off: watch the ring a little before sleeping (see backend.h). */
static bool poll_ring(struct fdvm_backend_queue *bq)
{
	struct fdvm_vq *vq = &bq->q->vq;
	uint64_t limit = bq->be->poll_ns;
	if (!limit)
		return false;
	for (uint64_t t0 = now_ns(); now_ns() - t0 < limit;) {
		if (__atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE) != vq->last_avail)
			return true;
		if (bq->be->aux_poll)
			bq->be->aux_poll(bq->be->opaque);
		__builtin_ia32_pause();
	}
	return false;
}

/* Completions were pushed: the interrupt, if the driver wants it. */
static void notify(struct fdvm_backend_queue *bq)
{
	struct fdvm_queue_stats *st = bq->q->stats;
	bq->completed = false;
	if (bq->q->call_fd < 0)
		return;
	if (fdvm_vq_should_notify(&bq->q->vq)) {
		fdvm_eventfd_signal(bq->q->call_fd);
		FDVM_STAT_ADD(st, irqs, 1);
	} else {
		FDVM_STAT_ADD(st, irqs_suppressed, 1);
	}
}

void fdvm_virtio_backend_complete(struct fdvm_virtio_backend *be, unsigned queue, uint16_t head,
				  uint32_t written)
{
	unsigned pos = 0;
	while (pos < be->n && be->q[pos].q->index != queue)
		pos++;
	if (pos == be->n)
		return;
	struct fdvm_backend_queue *bq = &be->q[pos];
	fdvm_vq_push(&bq->q->vq, head, written);
	FDVM_STAT_ADD(bq->q->stats, in_bytes, written);
	bq->completed = true;
}

void fdvm_virtio_backend_flush(struct fdvm_virtio_backend *be)
{
	for (unsigned i = 0; i < be->n; i++)
		if (be->q[i].completed && !be->q[i].dead)
			notify(&be->q[i]);
}

static void on_aux(void *opaque, int fd, uint32_t events)
{
	struct fdvm_virtio_backend *be = opaque;
	(void)fd;
	(void)events;
	be->aux(be->opaque);
}

/* Serves the queue until it runs dry; kicked: the doorbells that woke us
 * (requests beyond them came with kicks off, see fdvm/stats.h). */
static void serve(struct fdvm_backend_queue *bq, uint64_t kicked)
{
	struct fdvm_vq *vq = &bq->q->vq;
	struct fdvm_queue_stats *st = bq->q->stats;
	bool pushed = false;

	for (;;) {
		int r;
		fdvm_vq_enable_kicks(vq, false);
		while ((r = fdvm_vq_pop(vq, bq->elem)) == 1) {
			uint32_t written = 0;
			FDVM_STAT_ADD(st, requests, 1);
			FDVM_STAT_ADD(st, out_bytes, bq->elem->out_len);
			if (bq->be->handle(bq->be->opaque, bq->q->index, bq->elem, &written)) {
				fdvm_vq_push(vq, bq->elem->head, written);
				pushed = true;
				FDVM_STAT_ADD(st, in_bytes, written);
			}
			if (kicked)
				kicked--;
			else
				FDVM_STAT_ADD(st, kicks_suppressed, 1);
		}
		if (r < 0) {
			bq->dead = true;
			bq->be->broken(bq->be->broken_ctx, bq->q->index);
			return;
		}
		if (pushed)
			notify(bq);
		pushed = false;
		if (bq->be->poll_ns) {
			bool hit = poll_ring(bq);
			if (hit) {
				FDVM_STAT_ADD(st, poll_hits, 1);
				continue;
			}
			FDVM_STAT_ADD(st, poll_misses, 1);
		}
		if (!fdvm_vq_enable_kicks(vq, true))
			return;
	}
}

static void on_kick(void *opaque, int fd, uint32_t events)
{
	struct fdvm_backend_queue *bq = opaque;
	uint64_t n = 0;

	(void)events;
	fdvm_eventfd_drain(fd, &n);
	/* The look we asked for at start is not the guest's doorbell. */
	uint64_t own = bq->own_kicks < n ? bq->own_kicks : n;
	bq->own_kicks -= own;
	n -= own;
	FDVM_STAT_ADD(bq->q->stats, kicks, n);
	if (!bq->dead)
		serve(bq, n);
}

int fdvm_virtio_backend_start(struct fdvm_virtio_backend *be, const struct fdvm_virtio_start *s)
{
	unsigned n = s->n;
	int ret;

	if (n > FDVM_BACKEND_MAX_QUEUES)
		return -EINVAL;
	be->n = 0;
	be->broken = s->broken;
	be->broken_ctx = s->ctx;
	ret = fdvm_epoll_loop_create(&be->loop);
	if (ret)
		return ret;
	struct fdvm_loop *l = fdvm_epoll_loop_handle(be->loop);
	for (unsigned i = 0; i < n; i++) {
		struct fdvm_backend_queue *bq = &be->q[i];
		*bq = (struct fdvm_backend_queue){ .be = be, .q = &s->queues[i] };
		bq->elem = malloc(sizeof(*bq->elem));
		if (!bq->elem) {
			ret = -ENOMEM;
			goto err;
		}
		be->n++;
		ret = fdvm_loop_add(l, bq->q->kick_fd, EPOLLIN, on_kick, bq);
		if (ret)
			goto err;
		/* Only this thread reads the kick eventfd: one more count is one
		 * more look at the ring, nothing else. */
		fdvm_eventfd_signal(bq->q->kick_fd);
		bq->own_kicks = 1;
	}
	if (be->aux && (ret = fdvm_loop_add(l, be->aux_fd, EPOLLIN, on_aux, be)))
		goto err;
	ret = fdvm_epoll_loop_start(be->loop, be->name);
	if (ret)
		goto err;
	return 0;
err:
	fdvm_virtio_backend_stop(be);
	return ret;
}

void fdvm_virtio_backend_stop(struct fdvm_virtio_backend *be)
{
	fdvm_epoll_loop_destroy(be->loop); /* joins the thread */
	be->loop = NULL;
	/* What the device still owes is answered while the queues are ours. */
	if (be->drain)
		be->drain(be->opaque);
	for (unsigned i = 0; i < be->n; i++) {
		free(be->q[i].elem);
		be->q[i].elem = NULL;
	}
	be->n = 0;
}
