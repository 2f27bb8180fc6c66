/*
 * Unit tests for the benchmarks' shared parts: rounds (bench/rounds.c:
 * medians and spreads, the turning order, their JSON and text) and the
 * polling rows' backend loop (bench/poll.c), whose shared-page handshake
 * must never leave a request unanswered nor answer one twice.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_abi.h"

static void spread_median_min_max(void **state)
{
	(void)state;
	double odd[] = { 3, 1, 2 }, even[] = { 4, 1, 3, 2 }, gaps[] = { NAN, 5, NAN, 1, 9 };
	struct bench_spread s = bench_spread(odd, 3);
	assert_int_equal(s.n, 3);
	assert_true(s.median == 2 && s.min == 1 && s.max == 3);
	s = bench_spread(even, 4);
	assert_true(s.n == 4 && s.median == 2.5 && s.min == 1 && s.max == 4);
	/* NaN is a round with no figure: left out, not counted. */
	s = bench_spread(gaps, 5);
	assert_true(s.n == 3 && s.median == 5 && s.min == 1 && s.max == 9);
	double none[] = { NAN, NAN };
	assert_int_equal(bench_spread(none, 2).n, 0);
	assert_int_equal(bench_spread(none, 0).n, 0);
	/* The input is left as it was. */
	assert_true(odd[0] == 3 && odd[1] == 1 && odd[2] == 2);
}

static void order_turns(void **state)
{
	(void)state;
	for (unsigned n = 1; n <= 7; n++) {
		unsigned first[8] = { 0 };
		for (unsigned r = 0; r < n; r++) {
			unsigned o[8], seen[8] = { 0 };
			bench_order(r, n, o);
			for (unsigned i = 0; i < n; i++) {
				assert_true(o[i] < n);
				seen[o[i]]++;
			}
			for (unsigned i = 0; i < n; i++)
				assert_int_equal(seen[i], 1); /* each run once a round */
			first[o[0]]++;
			if (n > 1) { /* the same cycle, one place on */
				unsigned prev[8];
				bench_order(r + 1, n, prev);
				for (unsigned i = 0; i < n; i++)
					assert_int_equal(prev[i], o[(i + 1) % n]);
			}
		}
		for (unsigned i = 0; i < n; i++)
			assert_int_equal(first[i], 1); /* n rounds: each goes first once */
	}
}

static void json_and_text(void **state)
{
	(void)state;
	double v[] = { 1.5, NAN, 0.5 };
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	bench_json_spread(f, "x", v, 3, "%.2f");
	fclose(f);
	assert_string_equal(buf, "\"x\": {\"median\": 1.00, \"min\": 0.50, \"max\": 1.50, "
				 "\"rounds\": [1.50, null, 0.50]}");
	free(buf);
	f = open_memstream(&buf, &len);
	double nan1[] = { NAN };
	bench_json_spread(f, "y", nan1, 1, "%.2f");
	fclose(f);
	assert_string_equal(buf, "\"y\": {\"rounds\": [null]}");
	free(buf);

	char t[64];
	assert_string_equal(bench_fmt_spread(t, sizeof(t), bench_spread(v, 3), "%.2fx"),
			    "1.00x [0.50x..1.50x]");
	double one[] = { 2 };
	assert_string_equal(bench_fmt_spread(t, sizeof(t), bench_spread(one, 1), "%.1f"), "2.0");
	assert_string_equal(bench_fmt_spread(t, sizeof(t), bench_spread(nan1, 1), "%.1f"), "-");
}

/*
 * The polling handshake under stress: a "guest" thread makes requests one
 * at a time, ringing the doorbell (an eventfd) only when the backend is not
 * polling; a backend thread sleeps on the doorbell and serves through
 * bench_poll_serve with a poll time of a few microseconds, so that it falls
 * asleep and wakes up thousands of times. Every request must be answered
 * exactly once: a lost one stalls the guest (caught by a deadline), a
 * second one shows in the count.
 */
#define POLL_REQUESTS 100000

struct rig {
	struct bench_shm shm;
	struct bench_poll poll;
	int doorbell;
	atomic_uint_fast64_t answers;
	atomic_bool stop;
	uint64_t seen;
	unsigned long sleeps;
};

static void answer(void *opaque)
{
	struct rig *r = opaque;
	atomic_fetch_add(&r->answers, 1);
}

static void *backend(void *arg)
{
	struct rig *r = arg;
	uint64_t n;
	while (read(r->doorbell, &n, sizeof(n)) == sizeof(n) && !atomic_load(&r->stop)) {
		r->sleeps++;
		if (!bench_poll_serve(&r->poll, &r->seen, answer, r))
			answer(r);
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void run_rig(unsigned mode, uint64_t poll_ns)
{
	static struct rig r;
	memset(&r, 0, sizeof(r));
	r.doorbell = eventfd(0, EFD_CLOEXEC);
	assert_true(r.doorbell >= 0);
	r.poll.poll_ns = poll_ns;
	atomic_store(&r.poll.shm, &r.shm);
	atomic_store(&r.poll.mode, mode);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, backend, &r), 0);

	uint64_t rung = 0;
	double deadline = now_s() + 60;
	bool stalled = false;
	for (uint64_t seq = 1; seq <= POLL_REQUESTS && !stalled; seq++) {
		r.shm.req = seq;
		atomic_thread_fence(memory_order_seq_cst);
		if (!r.shm.polling) {
			uint64_t one = 1;
			assert_int_equal(write(r.doorbell, &one, sizeof(one)), sizeof(one));
			rung++;
		}
		for (unsigned spin = 0;; spin++) {
			bool done = mode == BENCH_POLL_SHM ? r.shm.ack == seq : atomic_load(&r.answers) == seq;
			if (done)
				break;
			if (!(spin & 0xffff) && now_s() > deadline) {
				stalled = true;
				fail_msg("request %llu of %d unanswered (lost): %llu answers",
					 (unsigned long long)seq, POLL_REQUESTS,
					 (unsigned long long)atomic_load(&r.answers));
			}
		}
	}
	/* Let the backend fall asleep, then stop it. */
	usleep(20000);
	atomic_store(&r.stop, true);
	uint64_t one = 1;
	assert_int_equal(write(r.doorbell, &one, sizeof(one)), sizeof(one));
	pthread_join(t, NULL);
	close(r.doorbell);
	if (mode == BENCH_POLL_LINE)
		assert_int_equal(atomic_load(&r.answers), POLL_REQUESTS); /* none twice */
	else
		assert_int_equal(atomic_load(&r.answers), 0);
	assert_int_equal(r.shm.polling, 0);
	/* It did fall asleep and wake, or the race was not exercised. */
	assert_true(rung >= 1 && r.sleeps >= 1);
	print_message("mode %u, poll %llu ns: %llu doorbells, %lu wake-ups for %d requests\n", mode,
		      (unsigned long long)poll_ns, (unsigned long long)rung, r.sleeps, POLL_REQUESTS);
}

static void poll_line_exact(void **state)
{
	(void)state;
	run_rig(BENCH_POLL_LINE, 0);
	run_rig(BENCH_POLL_LINE, 2000);
}

static void poll_shm_exact(void **state)
{
	(void)state;
	run_rig(BENCH_POLL_SHM, 0);
	run_rig(BENCH_POLL_SHM, 2000);
}

/* Polling off: one answer per doorbell, the page untouched. */
static void poll_off(void **state)
{
	(void)state;
	struct rig r = { 0 };
	r.poll.poll_ns = 1000;
	uint64_t seen = 0;
	assert_false(bench_poll_serve(&r.poll, &seen, answer, &r)); /* no page */
	atomic_store(&r.poll.shm, &r.shm);
	r.shm.req = 5;
	assert_false(bench_poll_serve(&r.poll, &seen, answer, &r)); /* mode off */
	assert_int_equal(seen, 0);
	assert_int_equal(r.shm.polling, 0);
	assert_int_equal(atomic_load(&r.answers), 0);
	/* A doorbell with nothing new in the page: no answer. */
	atomic_store(&r.poll.mode, BENCH_POLL_LINE);
	seen = 5;
	assert_true(bench_poll_serve(&r.poll, &seen, answer, &r));
	assert_int_equal(atomic_load(&r.answers), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(spread_median_min_max),
		cmocka_unit_test(order_turns),
		cmocka_unit_test(json_and_text),
		cmocka_unit_test(poll_off),
		cmocka_unit_test(poll_line_exact),
		cmocka_unit_test(poll_shm_exact),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
