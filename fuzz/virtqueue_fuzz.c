/*
 * Fuzz target: the device side of a split virtqueue. The input is guest
 * RAM (rings, descriptors, indirect tables, all of it hostile) plus a few
 * bytes of queue setup (sizes up to FDVM_VQ_MAX_SIZE); every buffer
 * fdvm_vq_pop hands out must lie inside that RAM, and the queue must end,
 * broken or empty, without a hang. With flag 4 the device also gives
 * requests back (fdvm_vq_unpop, fdvm_vq_kick_after), answers them in
 * batches (fdvm_vq_push_batch) and copies through the iov helpers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fdvm/virtqueue.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ram {
	uint8_t *p;
	size_t size;
};

static void *translate(void *opaque, uint64_t gpa, uint64_t len)
{
	struct ram *r = opaque;
	if (gpa > r->size || len > r->size - gpa)
		return NULL;
	return r->p + gpa;
}

static void inside(const struct ram *r, const struct iovec *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if ((uint8_t *)v[i].iov_base < r->p ||
		    (uint8_t *)v[i].iov_base + v[i].iov_len > r->p + r->size)
			abort();
}

/*
 * The device's side, driven by the input's bytes after the header (which
 * are RAM too): pop, then push at once, give back (unpop: the next pop
 * takes the same ring slot again), or hold for a batch push; copy out of
 * and into the buffers at offsets; ask for a kick after an index.
 */
static void device(struct fdvm_vq *vq, const struct ram *r, const uint8_t *ops, size_t nops)
{
	static struct fdvm_vq_elem elem;
	static uint8_t buf[8192];
	struct fdvm_vring_used_elem held[16];
	unsigned nheld = 0, popped = 0;
	int unpopped = -1;
	bool idle = false;	/* waiting for a kick that will not come */
	size_t k = 0;

	for (unsigned step = 0; step < 4u * vq->size + 64 && !idle; step++) {
		uint8_t op = nops ? ops[k++ % nops] : 0;
		uint8_t arg = nops ? ops[k++ % nops] : 0;
		/* A request given back comes back first: the head in the slot
		 * it came from (which the driver, or a device write the driver
		 * aimed at its own ring, may have changed meanwhile). */
		int expect = unpopped >= 0 ? vq->avail->ring[vq->last_avail % vq->size] : -1;
		int ret = fdvm_vq_pop(vq, &elem);
		if (ret != 1)
			break;
		if (expect >= 0 && elem.head != expect)
			abort();
		unpopped = -1;
		inside(r, elem.out, elem.nout);
		inside(r, elem.in, elem.nin);
		/* The copy helpers move what fits, past the skip, never more. */
		size_t skip = (size_t)arg * (op & 0x10 ? 64 : 1), len = sizeof(buf) >> (op >> 5);
		size_t got = fdvm_iov_to_buf(elem.out, elem.nout, skip, buf, len);
		size_t want = skip < elem.out_len ? elem.out_len - skip : 0;
		if (got != (want < len ? want : len))
			abort();
		size_t put = fdvm_iov_from_buf(elem.in, elem.nin, skip, buf, len);
		want = skip < elem.in_len ? elem.in_len - skip : 0;
		if (put != (want < len ? want : len))
			abort();
		switch (op & 3) {
		case 0:
			fdvm_vq_push(vq, elem.head, (uint32_t)(skip + put));
			break;
		case 1: /* too little there: back, and a kick when more comes */
			fdvm_vq_unpop(vq, elem.head);
			unpopped = elem.head;
			if (fdvm_vq_kick_after(vq, (uint16_t)(vq->avail->idx - (arg & 1))))
				break;
			/* Not moved: the driver would kick; here, the pass ends. */
			idle = true;
			break;
		default:
			held[nheld++] = (struct fdvm_vring_used_elem){ elem.head, (uint32_t)put };
			if (nheld == 16 || (op & 4)) {
				fdvm_vq_push_batch(vq, held, nheld);
				nheld = 0;
			}
		}
		if (++popped > 4u * vq->size + 64)
			abort();
		if (op & 8)
			fdvm_vq_enable_kicks(vq, arg & 1);
	}
	fdvm_vq_push_batch(vq, held, nheld);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fdvm_vq_elem elem;
	struct fdvm_vq vq;
	if (size < 8)
		return 0;
	/* Header: log2 size, flags, then three ring offsets (in 16-byte units). */
	uint16_t qsize = (uint16_t)(1u << (data[0] % 11));
	bool event_idx = data[1] & 1, indirect = data[1] & 2;
	uint64_t desc = 16ull * data[2], avail = 16ull * data[3] + 4096, used = 16ull * data[4] + 8192;
	/* Room for rings of FDVM_VQ_MAX_SIZE entries past the offsets. */
	struct ram r = { malloc(size + 32768), size + 32768 };
	if (!r.p)
		return 0;
	memset(r.p, 0, r.size);
	memcpy(r.p, data, size); /* the rest of the input is RAM, rings included */
	memcpy(r.p + avail, data + 5, size - 5 < 4096 ? size - 5 : 4096);
	if (fdvm_vq_init(&vq, qsize, desc, avail, used, event_idx, indirect, translate, &r) == 0) {
		if (data[1] & 4) {
			device(&vq, &r, data + 8, size - 8);
		} else {
			int ret;
			unsigned n = 0;
			while ((ret = fdvm_vq_pop(&vq, &elem)) == 1) {
				inside(&r, elem.out, elem.nout);
				inside(&r, elem.in, elem.nin);
				fdvm_vq_push(&vq, elem.head, (uint32_t)elem.in_len);
				if (++n > qsize) /* the avail index limits a pass to one ring */
					abort();
			}
		}
		fdvm_vq_should_notify(&vq);
		fdvm_vq_enable_kicks(&vq, true);
	}
	free(r.p);
	return 0;
}
