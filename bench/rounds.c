/*
 * Rounds: every benchmark runs its VMMs (or rows) in turns, one boot each
 * per round, the order turning from round to round, and takes its ratios
 * within a round; a figure printed is then the median over the rounds
 * with its spread (the lowest and highest round), so that drift of the
 * machine over a run shows as spread instead of as a ratio.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

struct bench_spread bench_spread(const double *v, unsigned n)
{
	double s[BENCH_MAX_ROUNDS];
	struct bench_spread r = { 0 };
	for (unsigned i = 0; i < n && r.n < BENCH_MAX_ROUNDS; i++)
		if (isfinite(v[i]))
			s[r.n++] = v[i];
	if (!r.n)
		return r;
	qsort(s, r.n, sizeof(s[0]), cmp_double);
	r.min = s[0];
	r.max = s[r.n - 1];
	r.median = r.n % 2 ? s[r.n / 2] : (s[r.n / 2 - 1] + s[r.n / 2]) / 2;
	return r;
}

void bench_order(unsigned round, unsigned n, unsigned *order)
{
	for (unsigned i = 0; i < n; i++)
		order[i] = (i + round) % n;
}

void bench_json_spread(FILE *f, const char *key, const double *v, unsigned n, const char *fmt)
{
	struct bench_spread s = bench_spread(v, n);
	char num[64];
	fprintf(f, "\"%s\": {", key);
	if (s.n) {
		fprintf(f, "\"median\": ");
		fprintf(f, fmt, s.median);
		fprintf(f, ", \"min\": ");
		fprintf(f, fmt, s.min);
		fprintf(f, ", \"max\": ");
		fprintf(f, fmt, s.max);
		fprintf(f, ", ");
	}
	fprintf(f, "\"rounds\": [");
	for (unsigned i = 0; i < n; i++) {
		if (isfinite(v[i]))
			snprintf(num, sizeof(num), fmt, v[i]);
		else
			snprintf(num, sizeof(num), "null");
		fprintf(f, "%s%s", i ? ", " : "", num);
	}
	fprintf(f, "]}");
}

const char *bench_fmt_spread(char *buf, size_t len, struct bench_spread s, const char *fmt)
{
	char a[32], b[32], c[32];
	if (!s.n) {
		snprintf(buf, len, "-");
		return buf;
	}
	snprintf(a, sizeof(a), fmt, s.median);
	snprintf(b, sizeof(b), fmt, s.min);
	snprintf(c, sizeof(c), fmt, s.max);
	if (s.n == 1)
		snprintf(buf, len, "%s", a);
	else
		snprintf(buf, len, "%s [%s..%s]", a, b, c);
	return buf;
}
