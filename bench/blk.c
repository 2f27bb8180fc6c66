/*
 * fdvm bench blk: 4 KiB random reads and writes on a RAM-backed (tmpfs)
 * image at queue depths 1 and 32, the same guest on fdvm's virtio-blk and
 * on QEMU's virtio-blk-pci over the same image, in one run: IOPS and mean
 * and p99 latency, with ratios.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define KINDS 4 /* read/write x depth 1/32 */

struct blk_fig {
	unsigned n;
	double iops[BENCH_MAX_REPS], mean_us[BENCH_MAX_REPS], p99_us[BENCH_MAX_REPS];
	unsigned long errors;
};

static int kind_of(const char *rw, unsigned depth)
{
	return (strcmp(rw, "write") == 0) * 2 + (depth == 32);
}

static void parse(const char *out, double hz, struct blk_fig *f)
{
	for (const char *p = out; (p = strstr(p, "BLK ")); p++) {
		char rw[8];
		unsigned depth;
		unsigned long rep, ops, cycles, mean, p99, err;
		if (sscanf(p, "BLK %7s %u %lu %lu %lu %lu %lu %lu", rw, &depth, &rep, &ops, &cycles,
			   &mean, &p99, &err) != 8 || (depth != 1 && depth != 32))
			continue;
		struct blk_fig *k = &f[kind_of(rw, depth)];
		if (k->n == BENCH_MAX_REPS)
			continue;
		k->iops[k->n] = (double)ops / ((double)cycles / hz);
		k->mean_us[k->n] = (double)mean / hz * 1e6;
		k->p99_us[k->n] = (double)p99 / hz * 1e6;
		k->errors += err;
		k->n++;
	}
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int fdvm_cmd_bench_blk(int argc, char **argv)
{
	struct bench_opts o = { .reps = 3, .ops = 5000, .qemu = -1 };
	const char *dir = "/dev/shm", *json = "fdvm-bench-blk.json";
	unsigned long size_mb = 256, poll_us = 50;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("usage: fdvm bench blk [--reps N] [--ops N] [--size MiB] [--dir DIR] "
			       "[--poll-us N] [--json FILE] [--no-qemu] [--guest FILE]\n"
			       "4 KiB random reads and writes at queue depths 1 and 32 on a raw image\n"
			       "made in DIR (default /dev/shm, RAM-backed), under fdvm, QEMU, and fdvm\n"
			       "with its backend polling a dry queue for --poll-us (default 50) first.\n");
			return 0;
		}
		if (!strcmp(a, "--no-qemu")) {
			o.qemu = 0;
			continue;
		}
		if (!v) {
			fprintf(stderr, "fdvm bench blk: %s needs a value\n", a);
			return 2;
		}
		i++;
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		bool num = !*end && n > 0;
		if (!strcmp(a, "--reps") && num && n <= BENCH_MAX_REPS)
			o.reps = (unsigned)n;
		else if (!strcmp(a, "--ops") && num && n <= 50000)
			o.ops = n;
		else if (!strcmp(a, "--poll-us") && !*end && n <= 10000)
			poll_us = n;
		else if (!strcmp(a, "--size") && num && n >= 4)
			size_mb = n;
		else if (!strcmp(a, "--dir"))
			dir = v;
		else if (!strcmp(a, "--json"))
			json = v;
		else if (!strcmp(a, "--guest"))
			o.guest = v;
		else {
			fprintf(stderr, "fdvm bench blk: bad option %s %s\n", a, v);
			return 2;
		}
	}
	if (!o.guest && !(o.guest = bench_default_guest())) {
		fprintf(stderr, "fdvm bench blk: the bench guest was not found beside fdvm (use --guest)\n");
		return 2;
	}
	if (o.qemu < 0)
		o.qemu = bench_have_qemu();

	char image[4096];
	snprintf(image, sizeof(image), "%s/fdvm-bench-blk-XXXXXX", dir);
	int fd = mkstemp(image);
	if (fd < 0 || ftruncate(fd, (off_t)size_mb << 20) < 0) {
		fprintf(stderr, "fdvm bench blk: %s: %s\n", image, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(image);
		}
		return 2;
	}
	close(fd);
	o.blk_image = image;

	double hz = bench_tsc_hz();
	char cmdline[256];
	snprintf(cmdline, sizeof(cmdline), "blk reps=%u bops=%lu", o.reps, (unsigned long)o.ops);
	/* 0: fdvm, 1: QEMU, 2: fdvm with its backend polling a while before sleeping. */
	struct blk_fig fig[3][KINDS] = { 0 };
	int status = 0;
	for (int v = 0; v < 3 && !status; v++) {
		if (v == 1 && !o.qemu) {
			printf("note: QEMU skipped (%s)\n", bench_have_qemu() ? "--no-qemu" : "not installed");
			continue;
		}
		char *out = NULL;
		size_t len = 0;
		o.blk_poll_us = v == 2 ? poll_us : 0;
		int ret = v == 1 ? bench_run_qemu(&o, cmdline, &out, &len) : bench_run_fdvm(&o, cmdline, &out, &len);
		if (ret) {
			fprintf(stderr, "fdvm bench blk: %s run failed: %s\n", v == 1 ? "QEMU" : "fdvm", strerror(-ret));
			status = 6;
			break;
		}
		parse(out, hz, fig[v]);
		free(out);
	}
	unlink(image);
	if (status)
		return status;

	static const char *const names[KINDS] = { "randread qd1", "randread qd32", "randwrite qd1",
						  "randwrite qd32" };
	FILE *j = fopen(json, "w");
	if (j)
		fprintf(j, "{\n  \"image_mib\": %lu,\n  \"ops\": %lu,\n  \"reps\": %u,\n  \"rows\": [\n",
			size_mb, (unsigned long)o.ops, o.reps);
	printf("fdvm bench blk: 4 KiB, %lu ops x %u repetitions, %lu MiB image in %s (medians)\n\n",
	       (unsigned long)o.ops, o.reps, size_mb, dir);
	bool first = true;
	printf("%-15s %-12s %10s %10s %10s %10s %10s\n", "", "", "IOPS", "mean us", "p99 us",
	       "IOPS x", "p99 x");
	static const char *const vmm[3] = { "fdvm", "QEMU", "fdvm+poll" };
	for (int k = 0; k < KINDS; k++) {
		double m[3][3];
		for (int v = 0; v < 3; v++) {
			m[v][0] = median(fig[v][k].iops, fig[v][k].n);
			m[v][1] = median(fig[v][k].mean_us, fig[v][k].n);
			m[v][2] = median(fig[v][k].p99_us, fig[v][k].n);
		}
		for (int v = 0; v < 3; v++) {
			if (!fig[v][k].n)
				continue;
			printf("%-15s %-12s %10.0f %10.1f %10.1f", v ? "" : names[k], vmm[v], m[v][0],
			       m[v][1], m[v][2]);
			if (v != 1 && fig[1][k].n)
				printf(" %9.2fx %9.2fx", m[v][0] / m[1][0], m[1][2] / m[v][2]);
			printf("\n");
			if (fig[v][k].errors)
				printf("  (%lu errors)\n", fig[v][k].errors);
			if (j)
				fprintf(j, "%s    {\"test\": \"%s\", \"vmm\": \"%s\", \"iops\": %.0f, "
					   "\"mean_us\": %.2f, \"p99_us\": %.2f, \"errors\": %lu}",
					first ? "" : ",\n", names[k], vmm[v], m[v][0], m[v][1], m[v][2],
					fig[v][k].errors);
			first = false;
		}
	}
	printf("\nIOPS x: fdvm's IOPS over QEMU's (above 1: fdvm faster); p99 x: QEMU's p99 over\n"
	       "fdvm's (above 1: fdvm's tail is shorter). The guest polls for completions.\n"
	       "fdvm+poll: the backend watches a dry queue for %lu us before sleeping.\n", poll_us);
	if (j) {
		fprintf(j, "\n  ]\n}\n");
		fclose(j);
		printf("figures: %s\n", json);
	}
	return 0;
}
