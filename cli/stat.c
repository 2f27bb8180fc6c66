/*
 * The control socket's clients: fdvm stat, the notification counters of a
 * running fdvm run or fdvm serve (--api-socket) as a table of totals or,
 * with --interval, of rates per second; and fdvm api, one command.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"

static void stat_usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm stat SOCKET [--interval S] [--count N] [--json]\n"
		"\n"
		"Prints the notification counters of the fdvm run or fdvm serve whose\n"
		"control socket (--api-socket) is SOCKET: one row per queue.\n"
		"  --interval S  every S seconds (decimals allowed), the rates per second\n"
		"                over the last S seconds; until interrupted or --count\n"
		"  --count N     stop after N intervals\n"
		"  --json        the counters as the socket returns them, one JSON object\n"
		"                per line (totals, with time_ns: rates are differences)\n"
		"\n"
		"columns: kicks: doorbells the backend read (by ioeventfd / by the\n"
		"userspace exit); ksupp: requests taken with kicks off (no doorbell of\n"
		"their own); reqs, KiB out/in; irqs: interrupts signalled; isupp: times\n"
		"the driver wanted none (event index, NO_INTERRUPT); poll hit/miss: polling\n"
		"rounds that found work or not; masked: signals while the queue's MSI-X\n"
		"vector was masked; unmask: deliveries at unmask.\n");
}

#define NCOL 13
static const char *const col_names[NCOL] = { "kicks", "ioeventfd", "exit", "ksupp", "reqs",
					     "KiB out", "KiB in", "irqs", "isupp", "poll hit",
					     "poll miss", "masked", "unmask" };

struct row {
	char dev[24];
	unsigned q;
	char path[12];
	double v[NCOL];
};

static double num(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_integer(v) ? (double)json_integer_value(v) : 0;
}

/* The rows of one counters answer; how many (at most max). */
static unsigned rows_of(json_t *ret, struct row *rows, unsigned max)
{
	unsigned n = 0;
	size_t di, qi;
	json_t *d, *q;

	json_array_foreach(json_object_get(ret, "devices"), di, d) {
		json_t *vecs = json_object_get(d, "vectors");
		json_array_foreach(json_object_get(d, "queues"), qi, q) {
			if (n == max)
				return n;
			struct row *r = &rows[n++];
			memset(r, 0, sizeof(*r));
			json_t *slot = json_object_get(d, "slot");
			snprintf(r->dev, sizeof(r->dev), json_is_integer(slot) ? "%s@%lld" : "%s",
				 json_string_value(json_object_get(d, "name")) ?: "?",
				 (long long)json_integer_value(slot));
			r->q = (unsigned)num(q, "index");
			snprintf(r->path, sizeof(r->path), "%s",
				 json_string_value(json_object_get(q, "kick_path")) ?: "?");
			double *v = r->v;
			v[0] = num(q, "kicks");
			v[1] = num(q, "doorbells_ioeventfd");
			v[2] = num(q, "doorbells_exit");
			v[3] = num(q, "kicks_suppressed");
			v[4] = num(q, "requests");
			v[5] = num(q, "out_bytes") / 1024;
			v[6] = num(q, "in_bytes") / 1024;
			v[7] = num(q, "irqs");
			v[8] = num(q, "irqs_suppressed");
			v[9] = num(q, "poll_hits");
			v[10] = num(q, "poll_misses");
			json_t *vec = json_object_get(q, "vector");
			if (json_is_integer(vec)) {
				json_t *vo = json_array_get(vecs, (size_t)json_integer_value(vec));
				v[11] = num(vo, "masked_signals");
				v[12] = num(vo, "unmask_deliveries");
			}
		}
	}
	return n;
}

static void print_table(const struct row *rows, unsigned n, const struct row *prev, double dt)
{
	printf("%-16s %3s %-9s", "device", "q", "path");
	for (unsigned c = 0; c < NCOL; c++)
		printf(" %10s", col_names[c]);
	printf("\n");
	for (unsigned i = 0; i < n; i++) {
		printf("%-16s %3u %-9s", rows[i].dev, rows[i].q, rows[i].path);
		for (unsigned c = 0; c < NCOL; c++) {
			double v = prev ? (rows[i].v[c] - prev[i].v[c]) / dt : rows[i].v[c];
			printf(prev || c == 5 || c == 6 ? " %10.1f" : " %10.0f", v);
		}
		printf("\n");
	}
}

static volatile sig_atomic_t interrupted;
static void on_int(int sig)
{
	(void)sig;
	interrupted = 1;
}

int fdvm_cmd_stat(int argc, char **argv)
{
	const char *sock = NULL;
	double interval = 0;
	unsigned long count = 0;
	bool json = false;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			stat_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--json")) {
			json = true;
		} else if (!strcmp(a, "--interval") || !strcmp(a, "--count")) {
			char *end;
			if (i + 1 == argc) {
				fprintf(stderr, "fdvm stat: %s needs a value\n", a);
				return FDVM_EXIT_USAGE;
			}
			const char *v = argv[++i];
			errno = 0;
			if (a[2] == 'i') {
				interval = strtod(v, &end);
				if (*end || errno || !(interval >= 0.01 && interval <= 3600)) {
					fprintf(stderr, "fdvm stat: --interval %s: seconds, 0.01 to 3600\n", v);
					return FDVM_EXIT_USAGE;
				}
			} else {
				count = strtoul(v, &end, 10);
				if (*end || errno || !count || v[0] == '-') {
					fprintf(stderr, "fdvm stat: --count %s: a number above 0\n", v);
					return FDVM_EXIT_USAGE;
				}
			}
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "fdvm stat: unknown option %s (try fdvm stat --help)\n", a);
			return FDVM_EXIT_USAGE;
		} else if (sock) {
			fprintf(stderr, "fdvm stat: one socket only (%s, then %s)\n", sock, a);
			return FDVM_EXIT_USAGE;
		} else {
			sock = a;
		}
	}
	if (!sock) {
		stat_usage(stderr);
		return FDVM_EXIT_USAGE;
	}
	if (count && !interval) {
		fprintf(stderr, "fdvm stat: --count needs --interval\n");
		return FDVM_EXIT_USAGE;
	}
	int fd = api_connect("fdvm stat", sock);
	if (fd < 0)
		return FDVM_EXIT_USAGE;
	struct sigaction sa = { .sa_handler = on_int };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	enum { MAXROWS = 512 };
	struct row *cur = calloc(MAXROWS, sizeof(*cur)), *prev = calloc(MAXROWS, sizeof(*prev));
	unsigned ncur = 0, nprev = 0;
	double tprev = 0;
	int status = 0;
	char err[512];
	if (!cur || !prev) {
		fprintf(stderr, "fdvm stat: out of memory\n");
		status = 6;
		goto out;
	}
	for (unsigned long k = 0; !interrupted; k++) {
		json_t *ret = api_call(fd, "counters", err, sizeof(err));
		if (!ret) {
			if (!interrupted) {
				fprintf(stderr, "fdvm stat: %s: %s\n", sock, err);
				status = k ? 0 : 6; /* the guest went away: the end, if it ran */
			}
			break;
		}
		double t = (double)json_integer_value(json_object_get(ret, "time_ns")) / 1e9;
		if (json) {
			char *text = json_dumps(ret, JSON_COMPACT);
			if (text)
				printf("%s\n", text);
			free(text);
		} else {
			ncur = rows_of(ret, cur, MAXROWS);
			if (!interval) {
				print_table(cur, ncur, NULL, 0);
			} else if (k) {
				/* Rates need the same rows as last time. */
				bool same = ncur == nprev;
				for (unsigned i = 0; same && i < ncur; i++)
					same = !strcmp(cur[i].dev, prev[i].dev) && cur[i].q == prev[i].q;
				printf("\n-- per second over %.2f s\n", t - tprev);
				if (same && t > tprev)
					print_table(cur, ncur, prev, t - tprev);
				else
					print_table(cur, ncur, NULL, 0);
			}
			struct row *sw = prev;
			prev = cur;
			cur = sw;
			nprev = ncur;
		}
		tprev = t;
		json_decref(ret);
		fflush(stdout);
		if (!interval || (count && k == count))
			break;
		struct timespec ts = { (time_t)interval,
				       (long)((interval - (double)(time_t)interval) * 1e9) };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !interrupted)
			;
	}
out:
	free(cur);
	free(prev);
	close(fd);
	return status;
}

/* fdvm api SOCKET COMMAND: sends one command, prints its answer. */
int fdvm_cmd_api(int argc, char **argv)
{
	char err[512];

	if (argc == 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help"))) {
		printf("usage: fdvm api SOCKET COMMAND\n"
		       "Sends COMMAND to the control socket of fdvm run or fdvm serve (--api-socket)\n"
		       "and prints the answer's \"return\" value as JSON; an error answer goes to\n"
		       "standard error (exit 2). fdvm run: status, pause, resume, power-off,\n"
		       "counters; fdvm serve: status, counters.\n");
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: fdvm api SOCKET COMMAND (try fdvm api --help)\n");
		return FDVM_EXIT_USAGE;
	}
	int fd = api_connect("fdvm api", argv[0]);
	if (fd < 0)
		return FDVM_EXIT_USAGE;
	json_t *ret = api_call(fd, argv[1], err, sizeof(err));
	close(fd);
	if (!ret) {
		fprintf(stderr, "fdvm api: %s: %s\n", argv[1], err);
		return FDVM_EXIT_USAGE;
	}
	char *text = json_dumps(ret, JSON_COMPACT | JSON_ENCODE_ANY);
	printf("%s\n", text ? text : "null");
	free(text);
	json_decref(ret);
	return 0;
}
