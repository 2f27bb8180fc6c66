/*
 * Fuzz target: the device side of a split virtqueue. The input is guest
 * RAM (rings, descriptors, indirect tables, all of it hostile) plus a few
 * bytes of queue setup; every buffer fdvm_vq_pop hands out must lie inside
 * that RAM, and the queue must end, broken or empty, without a hang.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fdvm_vq_elem elem;
	struct fdvm_vq vq;
	if (size < 8)
		return 0;
	/* Header: log2 size, flags, then three ring offsets (in 16-byte units). */
	uint16_t qsize = (uint16_t)(1u << (data[0] % 9));
	bool event_idx = data[1] & 1, indirect = data[1] & 2;
	uint64_t desc = 16ull * data[2], avail = 16ull * data[3] + 4096, used = 16ull * data[4] + 8192;
	struct ram r = { malloc(size + 12288), size + 12288 };
	if (!r.p)
		return 0;
	memset(r.p, 0, r.size);
	memcpy(r.p, data, size); /* the rest of the input is RAM, rings included */
	memcpy(r.p + avail, data + 5, size - 5 < 4096 ? size - 5 : 4096);
	if (fdvm_vq_init(&vq, qsize, desc, avail, used, event_idx, indirect, translate, &r) == 0) {
		int ret;
		unsigned n = 0;
		while ((ret = fdvm_vq_pop(&vq, &elem)) == 1) {
			inside(&r, elem.out, elem.nout);
			inside(&r, elem.in, elem.nin);
			fdvm_vq_push(&vq, elem.head, (uint32_t)elem.in_len);
			if (++n > qsize) /* the avail index limits a pass to one ring */
				abort();
		}
		fdvm_vq_should_notify(&vq);
		fdvm_vq_enable_kicks(&vq, true);
	}
	free(r.p);
	return 0;
}
