/*
 * The device side of split virtqueues (virtio 1.x, 2.7). Everything the
 * guest wrote is checked before use: indices against the queue size, chains
 * against loops (no more descriptors than the table holds), indirect tables
 * against nesting and size, buffers against guest RAM through translate,
 * lengths against overflow.
 */
#include <errno.h>
#include <string.h>

#include "fdvm/stats.h"
#include "fdvm/virtqueue.h"

#define LOAD_ACQ(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define MB() __atomic_thread_fence(__ATOMIC_SEQ_CST)

int fdvm_vq_init(struct fdvm_vq *vq, uint16_t size, uint64_t desc, uint64_t avail,
		 uint64_t used, bool event_idx, bool indirect, fdvm_translate_fn translate,
		 void *opaque)
{
	memset(vq, 0, sizeof(*vq));
	if (!size || (size & (size - 1)) || size > FDVM_VQ_MAX_SIZE)
		return -EINVAL;
	vq->size = size;
	vq->event_idx = event_idx;
	vq->indirect = indirect;
	vq->translate = translate;
	vq->opaque = opaque;
	vq->desc = translate(opaque, desc, 16ull * size);
	vq->avail = translate(opaque, avail, 6 + 2ull * size);
	vq->used = translate(opaque, used, 6 + 8ull * size);
	if (!vq->desc || !vq->avail || !vq->used ||
	    (desc & 15) || (avail & 1) || (used & 3)) {
		vq->broken = true;
		return -EINVAL;
	}
	return 0;
}

/* Adds one buffer to elem; -EINVAL if it is bad. */
static int add_buf(struct fdvm_vq *vq, struct fdvm_vq_elem *e, uint64_t addr, uint32_t len,
		   bool write)
{
	/* An empty buffer carries nothing: dropped, so that no iovec ever
	 * points outside guest RAM, even with a length of 0. */
	if (!len)
		return 0;
	void *p = vq->translate(vq->opaque, addr, len);
	if (!p)
		return -EINVAL;
	if (write) {
		if (e->nin == FDVM_VQ_MAX_SEGS)
			return -EINVAL;
		e->in[e->nin++] = (struct iovec){ p, len };
		e->in_len += len;
	} else {
		/* Readable buffers come first (2.7.4.2). */
		if (e->nin || e->nout == FDVM_VQ_MAX_SEGS)
			return -EINVAL;
		e->out[e->nout++] = (struct iovec){ p, len };
		e->out_len += len;
	}
	/* A request larger than 4 GiB is not a request. */
	return e->in_len + e->out_len > UINT32_MAX ? -EINVAL : 0;
}

/* Walks a chain in table (n entries) from index i. */
static int walk(struct fdvm_vq *vq, struct fdvm_vq_elem *e, volatile struct fdvm_vring_desc *table,
		uint32_t n, uint16_t i, bool nested)
{
	for (uint32_t count = 0;; count++) {
		if (i >= n || count >= n)
			return -EINVAL; /* out of the table, or a loop */
		/* Copied whole: an indirect table may sit at any guest address. */
		struct fdvm_vring_desc d;
		memcpy(&d, (const uint8_t *)table + (size_t)i * sizeof(d), sizeof(d));
		if (d.flags & FDVM_VRING_DESC_F_INDIRECT) {
			if (nested || !vq->indirect || (d.flags & FDVM_VRING_DESC_F_NEXT) ||
			    d.len % sizeof(struct fdvm_vring_desc) || !d.len ||
			    d.len / sizeof(struct fdvm_vring_desc) > FDVM_VQ_MAX_SEGS)
				return -EINVAL;
			volatile struct fdvm_vring_desc *ind = vq->translate(vq->opaque, d.addr, d.len);
			if (!ind)
				return -EINVAL;
			return walk(vq, e, ind, d.len / sizeof(struct fdvm_vring_desc), 0, true);
		}
		int ret = add_buf(vq, e, d.addr, d.len, d.flags & FDVM_VRING_DESC_F_WRITE);
		if (ret)
			return ret;
		if (!(d.flags & FDVM_VRING_DESC_F_NEXT))
			return 0;
		i = d.next;
	}
}

static int pop_head(struct fdvm_vq *vq, struct fdvm_vq_elem *e, uint16_t head)
{
	e->head = head;
	e->nout = e->nin = 0;
	e->out_len = e->in_len = 0;
	return walk(vq, e, vq->desc, vq->size, head, false);
}

int fdvm_vq_pop(struct fdvm_vq *vq, struct fdvm_vq_elem *e)
{
	if (vq->broken)
		return -EINVAL;
	if (vq->resubmitted < vq->nresubmit) {
		/* Taken by a backend that died before answering: again, first. */
		if (pop_head(vq, e, vq->resubmit[vq->resubmitted++]))
			goto broken;
		return 1;
	}
	uint16_t avail_idx = LOAD_ACQ(&vq->avail->idx);
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending > vq->size)
		goto broken; /* the driver claims more than the ring holds */
	if (!pending)
		return 0;
	uint16_t head = LOAD_ACQ(&vq->avail->ring[vq->last_avail % vq->size]);
	if (head >= vq->size || pop_head(vq, e, head))
		goto broken;
	if (vq->inflight) {
		volatile struct fdvm_vq_inflight_desc *d = &vq->inflight->desc[head];
		d->counter = vq->counter++;
		STORE_REL(&d->inflight, 1);
	}
	vq->last_avail++;
	/* Kicks on: the next one we want is for the entry after this. Off: the
	 * stale index keeps the driver from kicking (it never catches up). */
	if (vq->event_idx && !vq->kicks_off)
		STORE_REL((volatile uint16_t *)&vq->used->ring[vq->size], vq->last_avail);
	return 1;
broken:
	vq->broken = true;
	return -EINVAL;
}

void fdvm_vq_push_batch(struct fdvm_vq *vq, const struct fdvm_vring_used_elem *e, unsigned n)
{
	volatile struct fdvm_vq_inflight *r = vq->inflight;
	uint16_t idx = vq->used_idx;
	if (r) {
		/* One batch: if we die after the used index moves, the next
		 * backend settles these entries from last_batch_head back. */
		for (unsigned i = 0; i < n; i++) {
			if (e[i].id >= vq->size)
				continue;
			r->desc[e[i].id].next = r->last_batch_head;
			STORE_REL(&r->last_batch_head, (uint16_t)e[i].id);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		volatile struct fdvm_vring_used_elem *u = &vq->used->ring[idx++ % vq->size];
		u->id = e[i].id;
		u->len = e[i].len;
	}
	vq->used_idx = idx;
	/* The driver sees all of them at once, or none. */
	STORE_REL(&vq->used->idx, idx);
	if (r) {
		for (unsigned i = 0; i < n; i++)
			if (e[i].id < vq->size)
				STORE_REL(&r->desc[e[i].id].inflight, 0);
		STORE_REL(&r->used_idx, idx);
	}
}

void fdvm_vq_push(struct fdvm_vq *vq, uint16_t head, uint32_t len)
{
	struct fdvm_vring_used_elem e = { head, len };
	fdvm_vq_push_batch(vq, &e, 1);
}

void fdvm_vq_unpop(struct fdvm_vq *vq, uint16_t head)
{
	if (vq->inflight && head < vq->size) {
		STORE_REL(&vq->inflight->desc[head].inflight, 0);
		vq->counter--;
	}
	vq->last_avail--;
}

size_t fdvm_vq_inflight_size(uint16_t size)
{
	return sizeof(struct fdvm_vq_inflight) + (size_t)size * sizeof(struct fdvm_vq_inflight_desc);
}

void fdvm_vq_inflight_attach(struct fdvm_vq *vq, volatile struct fdvm_vq_inflight *r)
{
	uint16_t used = LOAD_ACQ(&vq->used->idx);

	vq->inflight = r;
	vq->used_idx = used;
	vq->nresubmit = vq->resubmitted = 0;
	vq->counter = 1;
	if (r->version != FDVM_VQ_INFLIGHT_VERSION || r->desc_num != vq->size) {
		/* New (or for another ring size: nothing in it can be ours). */
		for (unsigned i = 0; i < vq->size; i++)
			r->desc[i] = (struct fdvm_vq_inflight_desc){ 0 };
		r->features = 0;
		r->desc_num = vq->size;
		r->last_batch_head = 0;
		r->used_idx = used;
		STORE_REL(&r->version, FDVM_VQ_INFLIGHT_VERSION);
		return;
	}
	/* The used index moved past what the region says: the last batch was
	 * answered, its entries are not in flight any more. */
	uint16_t batch = (uint16_t)(used - r->used_idx);
	for (uint16_t i = r->last_batch_head, k = 0; batch && k < batch && i < vq->size; k++) {
		r->desc[i].inflight = 0;
		i = r->desc[i].next;
	}
	r->used_idx = used;
	/* Still marked: taken and never answered. By fetch order. */
	uint64_t max = 0;
	for (uint16_t i = 0; i < vq->size; i++) {
		if (r->desc[i].inflight != 1)
			continue;
		uint64_t c = r->desc[i].counter;
		unsigned k = vq->nresubmit++;
		while (k && r->desc[vq->resubmit[k - 1]].counter > c) {
			vq->resubmit[k] = vq->resubmit[k - 1];
			k--;
		}
		vq->resubmit[k] = i;
		if (c > max)
			max = c;
	}
	vq->counter = max + 1;
	vq->last_avail = (uint16_t)(used + vq->nresubmit);
}

bool fdvm_vq_should_notify(struct fdvm_vq *vq)
{
	MB(); /* the used index is visible before we read what the driver wants */
	if (!vq->event_idx)
		return !(LOAD_ACQ(&vq->avail->flags) & FDVM_VRING_AVAIL_F_NO_INTERRUPT);
	uint16_t event = LOAD_ACQ(&vq->avail->ring[vq->size]);
	uint16_t old = vq->signalled_used, new = vq->used_idx;
	bool valid = vq->signalled_valid;
	vq->signalled_used = new;
	vq->signalled_valid = true;
	/* vring_need_event: did we cross the index the driver asked about? */
	return !valid || (uint16_t)(new - event - 1) < (uint16_t)(new - old);
}

bool fdvm_vq_enable_kicks(struct fdvm_vq *vq, bool on)
{
	vq->kicks_off = !on;
	if (vq->event_idx) {
		/* Off: leave avail_event where it is, behind the driver. */
		if (on)
			STORE_REL((volatile uint16_t *)&vq->used->ring[vq->size], vq->last_avail);
	} else {
		uint16_t f = vq->used->flags;
		STORE_REL(&vq->used->flags, on ? (uint16_t)(f & ~FDVM_VRING_USED_F_NO_NOTIFY)
					       : (uint16_t)(f | FDVM_VRING_USED_F_NO_NOTIFY));
	}
	if (!on)
		return false;
	MB(); /* the request for kicks is visible before we look again */
	return LOAD_ACQ(&vq->avail->idx) != vq->last_avail;
}

bool fdvm_vq_kick_after(struct fdvm_vq *vq, uint16_t seen)
{
	vq->kicks_off = false;
	if (vq->event_idx) {
		/* The driver kicks when its index crosses this one. */
		STORE_REL((volatile uint16_t *)&vq->used->ring[vq->size], seen);
	} else {
		uint16_t f = vq->used->flags;
		STORE_REL(&vq->used->flags, (uint16_t)(f & ~FDVM_VRING_USED_F_NO_NOTIFY));
	}
	MB(); /* the request is visible before we look again */
	return LOAD_ACQ(&vq->avail->idx) != seen;
}

/* Copies between iov (after its first skip bytes) and buf, either way. */
static size_t iov_copy(const struct iovec *iov, unsigned n, size_t skip, void *buf, size_t len,
		       bool to_buf)
{
	size_t done = 0;
	for (unsigned i = 0; i < n && done < len; i++) {
		if (skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len;
			continue;
		}
		size_t c = iov[i].iov_len - skip;
		if (c > len - done)
			c = len - done;
		char *g = (char *)iov[i].iov_base + skip, *h = (char *)buf + done;
		memcpy(to_buf ? h : g, to_buf ? g : h, c);
		done += c;
		skip = 0;
	}
	return done;
}

size_t fdvm_iov_to_buf(const struct iovec *iov, unsigned n, size_t skip, void *buf, size_t len)
{
	return iov_copy(iov, n, skip, buf, len, true);
}

size_t fdvm_iov_from_buf(const struct iovec *iov, unsigned n, size_t skip, const void *buf,
			 size_t len)
{
	return iov_copy(iov, n, skip, (void *)buf, len, false);
}

void fdvm_queue_stats_read(const struct fdvm_queue_stats *s, struct fdvm_queue_stats *out)
{
#define READ(f) out->f = __atomic_load_n(&s->f, __ATOMIC_RELAXED)
	READ(kicks);
	READ(kicks_suppressed);
	READ(requests);
	READ(out_bytes);
	READ(in_bytes);
	READ(irqs);
	READ(irqs_suppressed);
	READ(poll_hits);
	READ(poll_misses);
#undef READ
}
