/*
 * The device side of split virtqueues, without KVM: rings in a buffer that
 * stands for guest RAM. Good chains come out as the driver put them in;
 * every kind of bad ring breaks the queue (and keeps it broken); event-index
 * notification follows vring_need_event; and 200000 random rings never make
 * fdvm_vq_pop touch memory outside "RAM" (the ASan build checks that).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fdvm/virtqueue.h"

#define RAM (1u << 20)
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define QSIZE 16

static uint8_t *ram;

static void *translate(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	if (gpa > RAM || len > RAM - gpa)
		return NULL;
	return ram + gpa;
}

static struct fdvm_vring_desc *desc(unsigned i) { return (struct fdvm_vring_desc *)(ram + DESC) + i; }
static uint16_t *avail(void) { return (uint16_t *)(ram + AVAIL); }
static uint16_t *used(void) { return (uint16_t *)(ram + USED); }

static void setd(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	*desc(i) = (struct fdvm_vring_desc){ addr, len, flags, next };
}

/* Driver side: put head in the avail ring. */
static void offer(uint16_t head)
{
	uint16_t idx = avail()[1];
	avail()[2 + idx % QSIZE] = head;
	avail()[1] = (uint16_t)(idx + 1);
}

static int setup(void **state)
{
	(void)state;
	ram = calloc(1, RAM);
	return ram ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(ram);
	return 0;
}

static struct fdvm_vq vq;
static struct fdvm_vq_elem elem;

static void start(bool event_idx, bool indirect)
{
	memset(ram, 0, 0x4000 + 16 * QSIZE);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC, AVAIL, USED, event_idx, indirect, translate, NULL), 0);
}

static void init_checks(void **s)
{
	(void)s;
	assert_int_equal(fdvm_vq_init(&vq, 0, DESC, AVAIL, USED, 0, 0, translate, NULL), -EINVAL);
	assert_int_equal(fdvm_vq_init(&vq, 100, DESC, AVAIL, USED, 0, 0, translate, NULL), -EINVAL);
	assert_int_equal(fdvm_vq_init(&vq, 2048, DESC, AVAIL, USED, 0, 0, translate, NULL), -EINVAL);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, RAM - 8, AVAIL, USED, 0, 0, translate, NULL), -EINVAL);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC + 8, AVAIL, USED, 0, 0, translate, NULL), -EINVAL);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC, AVAIL, RAM - 4, 0, 0, translate, NULL), -EINVAL);
}

static void good_chains(void **s)
{
	(void)s;
	start(false, true);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 0);
	/* Direct: 16 readable, 512 writable, 1 writable. */
	setd(0, 0x10000, 16, FDVM_VRING_DESC_F_NEXT, 5);
	setd(5, 0x20000, 512, FDVM_VRING_DESC_F_NEXT | FDVM_VRING_DESC_F_WRITE, 9);
	setd(9, 0x30000, 1, FDVM_VRING_DESC_F_WRITE, 0);
	offer(0);
	/* Indirect: a table of two. */
	struct fdvm_vring_desc *t = (struct fdvm_vring_desc *)(ram + 0x40000);
	t[0] = (struct fdvm_vring_desc){ 0x50000, 100, FDVM_VRING_DESC_F_NEXT, 1 };
	t[1] = (struct fdvm_vring_desc){ 0x60000, 200, FDVM_VRING_DESC_F_WRITE, 0 };
	setd(3, 0x40000, 2 * sizeof(*t), FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(3);

	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(elem.head, 0);
	assert_int_equal(elem.nout, 1);
	assert_int_equal(elem.nin, 2);
	assert_ptr_equal(elem.out[0].iov_base, ram + 0x10000);
	assert_int_equal(elem.in[0].iov_len, 512);
	assert_int_equal(elem.in_len, 513);
	assert_int_equal(elem.out_len, 16);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(elem.head, 3);
	assert_ptr_equal(elem.in[0].iov_base, ram + 0x60000);
	assert_int_equal(elem.out_len, 100);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 0);

	fdvm_vq_push(&vq, 3, 200);
	fdvm_vq_push(&vq, 0, 513);
	assert_int_equal(used()[1], 2);
	uint32_t *u = (uint32_t *)(ram + USED + 4);
	assert_int_equal(u[0], 3);
	assert_int_equal(u[1], 200);
	assert_int_equal(u[2], 0);
	assert_int_equal(u[3], 513);
}

static void expect_broken(void)
{
	assert_int_equal(fdvm_vq_pop(&vq, &elem), -EINVAL);
	assert_true(vq.broken);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), -EINVAL); /* stays broken */
}

static void bad_rings(void **s)
{
	(void)s;
	start(false, true);
	setd(0, 0x10000, 16, FDVM_VRING_DESC_F_NEXT, 0); /* loop */
	offer(0);
	expect_broken();

	start(false, true);
	setd(0, 0x10000, 16, FDVM_VRING_DESC_F_NEXT, 1);
	setd(1, 0x10000, 16, FDVM_VRING_DESC_F_NEXT, 0); /* a longer loop */
	offer(0);
	expect_broken();

	start(false, true);
	setd(0, 0x10000, 16, FDVM_VRING_DESC_F_NEXT, QSIZE); /* next outside the table */
	offer(0);
	expect_broken();

	start(false, true);
	setd(0, RAM - 8, 16, 0, 0); /* across the end of RAM */
	offer(0);
	expect_broken();

	start(false, true);
	setd(0, UINT64_MAX - 4, 16, 0, 0); /* address wraps */
	offer(0);
	expect_broken();

	start(false, true);
	for (unsigned i = 0; i < 8; i++) /* 8 x 0.9 MiB... still under 4 GiB: fine */
		setd(i, 0x1000, 900 << 10, FDVM_VRING_DESC_F_WRITE | (i < 7 ? FDVM_VRING_DESC_F_NEXT : 0), (uint16_t)(i + 1));
	offer(0);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);

	start(false, true);
	offer(QSIZE); /* head outside the ring */
	expect_broken();

	start(false, true);
	avail()[1] = QSIZE + 1; /* more than the ring holds */
	expect_broken();

	start(false, true);
	setd(0, 0x10000, 16, FDVM_VRING_DESC_F_WRITE | FDVM_VRING_DESC_F_NEXT, 1);
	setd(1, 0x10000, 16, 0, 0); /* readable after writable */
	offer(0);
	expect_broken();

	/* Indirect: not negotiated, nested, with NEXT, bad length, too long, outside RAM. */
	start(false, false);
	setd(0, 0x40000, 16, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	struct fdvm_vring_desc *t = (struct fdvm_vring_desc *)(ram + 0x40000);
	start(false, true);
	t[0] = (struct fdvm_vring_desc){ 0x40000, 16, FDVM_VRING_DESC_F_INDIRECT, 0 };
	setd(0, 0x40000, 16, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	start(false, true);
	t[0] = (struct fdvm_vring_desc){ 0x50000, 16, 0, 0 };
	setd(0, 0x40000, 16, FDVM_VRING_DESC_F_INDIRECT | FDVM_VRING_DESC_F_NEXT, 1);
	offer(0);
	expect_broken();
	start(false, true);
	setd(0, 0x40000, 15, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	start(false, true);
	setd(0, 0x40000, 0, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	start(false, true);
	setd(0, 0x40000, 16 * (FDVM_VQ_MAX_SEGS + 1), FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	start(false, true);
	setd(0, RAM - 16, 32, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
	start(false, true);
	t[0] = (struct fdvm_vring_desc){ 0x50000, 16, FDVM_VRING_DESC_F_NEXT, 0 }; /* loop inside */
	setd(0, 0x40000, 16, FDVM_VRING_DESC_F_INDIRECT, 0);
	offer(0);
	expect_broken();
}

/* Pretends every address is RAM (pop only records pointers). */
static void *everything(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	(void)len;
	return gpa < RAM ? ram + gpa : ram;
}

static void length_overflow(void **s)
{
	(void)s;
	memset(ram, 0, 0x4000 + 16 * QSIZE);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC, AVAIL, USED, false, false, everything, NULL), 0);
	for (unsigned i = 0; i < 3; i++) /* 3 x 2 GiB: past 4 GiB */
		setd(i, 0x1000, 0x7fffffff, FDVM_VRING_DESC_F_WRITE | (i < 2 ? FDVM_VRING_DESC_F_NEXT : 0),
		     (uint16_t)(i + 1));
	offer(0);
	expect_broken();
	memset(ram, 0, 0x4000 + 16 * QSIZE);
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC, AVAIL, USED, false, false, everything, NULL), 0);
	for (unsigned i = 0; i < 2; i++) /* 2 x 2 GiB - 1: still under */
		setd(i, 0x1000, 0x7fffffff, FDVM_VRING_DESC_F_WRITE | (i < 1 ? FDVM_VRING_DESC_F_NEXT : 0),
		     (uint16_t)(i + 1));
	offer(0);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(elem.in_len, 2ull * 0x7fffffff);
}

static void notify_rules(void **s)
{
	(void)s;
	/* Without event index: the NO_INTERRUPT flag decides. */
	start(false, false);
	fdvm_vq_push(&vq, 0, 0);
	assert_true(fdvm_vq_should_notify(&vq));
	avail()[0] = FDVM_VRING_AVAIL_F_NO_INTERRUPT;
	fdvm_vq_push(&vq, 0, 0);
	assert_false(fdvm_vq_should_notify(&vq));
	/* Kicks off sets NO_NOTIFY; on clears it and reports pending work. */
	fdvm_vq_enable_kicks(&vq, false);
	assert_true(used()[0] & FDVM_VRING_USED_F_NO_NOTIFY);
	assert_false(fdvm_vq_enable_kicks(&vq, true));
	assert_false(used()[0] & FDVM_VRING_USED_F_NO_NOTIFY);
	setd(0, 0x10000, 4, 0, 0);
	offer(0);
	fdvm_vq_enable_kicks(&vq, false);
	assert_true(fdvm_vq_enable_kicks(&vq, true));

	/* With event index: interrupt when used crosses used_event. */
	start(true, false);
	uint16_t *used_event = &avail()[2 + QSIZE];
	*used_event = 0;
	fdvm_vq_push(&vq, 0, 0); /* used 1: crossed 0 */
	assert_true(fdvm_vq_should_notify(&vq));
	*used_event = 3;
	fdvm_vq_push(&vq, 0, 0); /* used 2 */
	assert_false(fdvm_vq_should_notify(&vq));
	fdvm_vq_push(&vq, 0, 0); /* used 3 */
	assert_false(fdvm_vq_should_notify(&vq));
	fdvm_vq_push(&vq, 0, 0); /* used 4: crossed 3 */
	assert_true(fdvm_vq_should_notify(&vq));
	fdvm_vq_push(&vq, 0, 0);
	assert_false(fdvm_vq_should_notify(&vq));
	/* pop asks for the kick after the entry it took (avail_event). */
	setd(0, 0x10000, 4, 0, 0);
	offer(0);
	offer(0);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(*(uint16_t *)(ram + USED + 4 + 8 * QSIZE), 1);
}

static void random_rings(void **s)
{
	(void)s;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int round = 0; round < 200000; round++) {
		start(round & 1, round & 2);
		for (unsigned i = 0; i < QSIZE; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			uint64_t addr = (x & 1) ? x % (RAM + 64) : (x >> 8) % 0x60000;
			uint32_t len = (x >> 20) & 1 ? (uint32_t)(x >> 32) : (uint32_t)((x >> 24) % 4096);
			setd(i, (x >> 3) & 1 ? 0x40000 + 16 * (i % 4) : addr, len, (uint16_t)((x >> 40) & 7),
			     (uint16_t)((x >> 44) % (QSIZE + 2)));
		}
		struct fdvm_vring_desc *t = (struct fdvm_vring_desc *)(ram + 0x40000);
		for (unsigned i = 0; i < 8; i++)
			t[i] = (struct fdvm_vring_desc){ (x >> i) % RAM, (uint32_t)(x >> (i + 8)) % 8192,
							 (uint16_t)((x >> (i + 3)) & 7), (uint16_t)(i + 1) };
		avail()[1] = (uint16_t)((x >> 50) % (QSIZE + 3));
		for (unsigned i = 0; i < QSIZE; i++)
			avail()[2 + i] = (uint16_t)((x >> (i + 30)) % (QSIZE + 2));
		int r;
		unsigned n = 0;
		while ((r = fdvm_vq_pop(&vq, &elem)) == 1 && n++ < QSIZE + 2) {
			for (unsigned i = 0; i < elem.nout; i++)
				assert_true((uint8_t *)elem.out[i].iov_base >= ram &&
					    (uint8_t *)elem.out[i].iov_base + elem.out[i].iov_len <= ram + RAM);
			for (unsigned i = 0; i < elem.nin; i++)
				assert_true((uint8_t *)elem.in[i].iov_base >= ram &&
					    (uint8_t *)elem.in[i].iov_base + elem.in[i].iov_len <= ram + RAM);
			fdvm_vq_push(&vq, elem.head, 0);
		}
		assert_true(r == 0 || r == -EINVAL || n > QSIZE);
		assert_true(n <= QSIZE);
	}
}

/*
 * Inflight tracking across a backend crash (the vhost-user spec's split
 * format): a "crash" is dropping the vq without pushing, a "restart" is a
 * fresh fdvm_vq_init plus attach on the same region and rings.
 */
static uint8_t region_buf[sizeof(struct fdvm_vq_inflight) + QSIZE * sizeof(struct fdvm_vq_inflight_desc)];

static void restart(void)
{
	assert_int_equal(fdvm_vq_init(&vq, QSIZE, DESC, AVAIL, USED, false, false, translate, NULL), 0);
	fdvm_vq_inflight_attach(&vq, (struct fdvm_vq_inflight *)region_buf);
}

static void inflight_recovery(void **s)
{
	(void)s;
	struct fdvm_vq_inflight *r = (struct fdvm_vq_inflight *)region_buf;
	assert_int_equal(fdvm_vq_inflight_size(QSIZE), sizeof(region_buf));
	memset(region_buf, 0xa5, sizeof(region_buf)); /* garbage: a fresh region is set up */
	start(false, false);
	fdvm_vq_inflight_attach(&vq, r);
	assert_int_equal(r->version, FDVM_VQ_INFLIGHT_VERSION);
	assert_int_equal(r->desc_num, QSIZE);
	for (unsigned i = 0; i < 6; i++) {
		setd(i, 0x8000 + i * 0x100, 16, FDVM_VRING_DESC_F_WRITE, 0);
		offer((uint16_t)(5 - i)); /* heads 5, 4, 3, 2, 1, 0 */
	}
	/* Take three, answer the first, crash with two taken and unanswered. */
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	fdvm_vq_push(&vq, 5, 16);
	assert_int_equal(r->desc[5].inflight, 0);
	assert_int_equal(r->desc[4].inflight, 1);
	assert_int_equal(r->desc[3].inflight, 1);
	restart();
	/* Heads 4 then 3 again (the order they were taken), then 2, 1, 0. */
	uint16_t want[] = { 4, 3, 2, 1, 0 };
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
		assert_int_equal(elem.head, want[i]);
		if (i == 2) {
			/* Crash after the used index moved, before the region
			 * caught up: head 2 must not come back. */
			fdvm_vq_push(&vq, 4, 16);
			fdvm_vq_push(&vq, 3, 16);
			volatile struct fdvm_vring_used *u = (void *)used();
			u->ring[u->idx % QSIZE] = (struct fdvm_vring_used_elem){ 2, 16 };
			r->desc[2].next = r->last_batch_head;
			r->last_batch_head = 2;
			u->idx++;
			restart();
			break;
		}
	}
	/* 1 and 0 were never taken by this incarnation's predecessor... */
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(elem.head, 1);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
	assert_int_equal(elem.head, 0);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 0);
	/* ...and a frontend that spoils the region gets no request twice and
	 * no head outside the ring. */
	fdvm_vq_push(&vq, 1, 16);
	fdvm_vq_push(&vq, 0, 16);
	for (unsigned i = 0; i < QSIZE; i++)
		r->desc[i].inflight = 7;
	restart();
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 0);
}

/* A packet over several buffers: given back when there is not room for
 * all of it, then returned whole with one move of the used index. */
static void batch_and_unpop(void **s)
{
	(void)s;
	start(true, false);
	for (unsigned i = 0; i < 3; i++) {
		setd(i, 0x8000 + i * 0x100, 64, FDVM_VRING_DESC_F_WRITE, 0);
		offer((uint16_t)i);
	}
	struct fdvm_vring_used_elem got[3];
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
		got[i] = (struct fdvm_vring_used_elem){ elem.head, 64 };
	}
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 0);
	/* Not enough: all three go back, newest first, and come out again. */
	for (unsigned i = 3; i--;)
		fdvm_vq_unpop(&vq, (uint16_t)got[i].id);
	assert_int_equal(vq.last_avail, 0);
	/* Too few: a kick is wanted once the driver goes past index 3, not
	 * at the index given back (which it passed already). */
	assert_false(fdvm_vq_kick_after(&vq, 3));
	assert_int_equal(used()[2 + 4 * QSIZE], 3); /* avail_event, after the ring */
	setd(3, 0x8300, 64, FDVM_VRING_DESC_F_WRITE, 0);
	offer(3);
	assert_true(fdvm_vq_kick_after(&vq, 3));
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(fdvm_vq_pop(&vq, &elem), 1);
		assert_int_equal(elem.head, i);
	}
	fdvm_vq_push_batch(&vq, got, 3);
	assert_int_equal(used()[1], 3);
	assert_int_equal(fdvm_vq_pop(&vq, &elem), 1); /* the fourth, still there */
	assert_int_equal(elem.head, 3);
	uint32_t *u = (uint32_t *)(ram + USED + 4);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(u[2 * i], i);
		assert_int_equal(u[2 * i + 1], 64);
	}
	/* One interrupt for the batch, as the driver's used_event asks. */
	assert_true(fdvm_vq_should_notify(&vq));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(init_checks),   cmocka_unit_test(good_chains),
		cmocka_unit_test(bad_rings),     cmocka_unit_test(length_overflow),
		cmocka_unit_test(notify_rules),  cmocka_unit_test(random_rings),
		cmocka_unit_test(inflight_recovery), cmocka_unit_test(batch_and_unpop),
	};
	return cmocka_run_group_tests_name("virtqueue", tests, setup, teardown);
}
