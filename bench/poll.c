/*
 * The backend's side of the shared page (struct bench_shm): the polling
 * loop of the round-trip rows, the same code under fdvm's bench device and
 * under the floor loop, so that the two differ only in how they wake and
 * how they answer.
 */
#include <stdatomic.h>
#include <time.h>

#include "bench.h"
#include "bench_abi.h"

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

bool bench_poll_serve(struct bench_poll *p, uint64_t *seen, void (*answer)(void *), void *opaque)
{
	struct bench_shm *s = atomic_load(&p->shm);
	unsigned mode = atomic_load(&p->mode);
	if (!s || mode == BENCH_POLL_OFF)
		return false;
	s->polling = 1;
	atomic_thread_fence(memory_order_seq_cst);
	uint64_t deadline = now_ns() + p->poll_ns;
	for (;;) {
		uint64_t r = s->req;
		if (r != *seen) {
			/* One answer for what came since the last: the guest
			 * has one request out at a time. */
			*seen = r;
			mode = atomic_load(&p->mode);
			if (mode == BENCH_POLL_SHM)
				s->ack = r;
			else
				answer(opaque);
			deadline = now_ns() + p->poll_ns;
			continue;
		}
		if (mode == BENCH_POLL_OFF || now_ns() >= deadline) {
			/* Clear, then look once more: a request made before
			 * the guest saw polling 0 is taken here, any later one
			 * rings the doorbell. */
			s->polling = 0;
			atomic_thread_fence(memory_order_seq_cst);
			if (s->req == *seen)
				return true;
			s->polling = 1;
			atomic_thread_fence(memory_order_seq_cst);
			continue;
		}
		mode = atomic_load(&p->mode);
		__builtin_ia32_pause();
	}
}
