/*
 * Rounds: every benchmark runs its VMMs (or rows) in turns, one boot each
 * per round, the order turning from round to round, and takes its ratios
 * within a round; a figure printed is then the median over the rounds
 * with its spread (the lowest and highest round), so that drift of the
 * machine over a run shows as spread instead of as a ratio.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* One panel's data: a line per group, its name quoted, then median, lowest
 * and highest for each series (NaN: none); *has: the series with a figure
 * (bit s). 0 or -1. */
static int chart_data(char *path, unsigned p, const struct bench_panel *panel, unsigned nseries,
		      struct bench_spread (*value)(void *, unsigned, unsigned, unsigned), void *ctx,
		      uint64_t *has)
{
	*has = 0;
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(path);
		return -1;
	}
	for (unsigned g = 0; g < panel->ngroups; g++) {
		fprintf(f, "\"%s\"", panel->groups[g]);
		for (unsigned s = 0; s < nseries; s++) {
			struct bench_spread sp = value(ctx, p, g, s);
			if (sp.n) {
				fprintf(f, " %g %g %g", sp.median, sp.min, sp.max);
				*has |= 1ull << s;
			} else
				fprintf(f, " NaN NaN NaN");
		}
		fprintf(f, "\n");
	}
	if (fclose(f)) {
		unlink(path);
		return -1;
	}
	return 0;
}

int bench_chart(const char *path, const char *what, unsigned rounds, unsigned nseries,
		const char *const *series, unsigned npanels, const struct bench_panel *panels,
		struct bench_spread (*value)(void *ctx, unsigned panel, unsigned group, unsigned series),
		void *ctx)
{
	char dat[4][32];
	uint64_t has[4];
	unsigned made = 0;
	int ret = -1;

	if (npanels > 4)
		npanels = 4;
	if (nseries > 64)
		nseries = 64;
	for (; made < npanels; made++) {
		snprintf(dat[made], sizeof(dat[made]), "/tmp/fdvm-bench-XXXXXX");
		if (chart_data(dat[made], made, &panels[made], nseries, value, ctx, &has[made])) {
			fprintf(stderr, "fdvm bench: the chart's data in /tmp: %s: no %s\n",
				strerror(errno), path);
			goto out;
		}
	}
	FILE *g = popen("gnuplot 2>/dev/null", "w");
	if (!g) {
		fprintf(stderr, "fdvm bench: starting gnuplot: %s: no %s\n", strerror(errno), path);
		goto out;
	}
	unsigned width = 0;
	for (unsigned p = 0; p < npanels; p++) { /* room for every bar */
		unsigned w = 40 + panels[p].ngroups * (nseries + 1) * 18;
		width += w > 600 ? w : 600;
	}
	fprintf(g, "set terminal png size %u,700\nset output '%s'\n", width, path);
	fprintf(g, "set multiplot layout 1,%u title '%s: median of %u round%s; bars: lowest and "
		   "highest round'\n", npanels, what, rounds, rounds == 1 ? "" : "s");
	fprintf(g, "set style data histogram\nset style histogram errorbars gap 1 lw 1\n"
		   "set style fill solid border -1\nset boxwidth 0.9\nset grid ytics\n"
		   "set xtics rotate by -30\nset rmargin 10\nset datafile missing 'NaN'\nset key below\n");
	for (unsigned p = 0; p < npanels; p++) {
		/* A linear axis starts at 0, so that bar heights compare. */
		fprintf(g, "%sset logscale y\nset yrange [%s:*]\nset title '%s'\nset ylabel '%s'\n",
			panels[p].logscale ? "" : "un", panels[p].logscale ? "*" : "0", panels[p].title,
			panels[p].ylabel);
		/* Only the series with a figure here (gnuplot refuses a column
		 * with none), each in its own colour in every panel. */
		bool first = true;
		for (unsigned s = 0; s < nseries; s++) {
			if (!(has[p] >> s & 1))
				continue;
			fprintf(g, "%s'%s' using %u:%u:%u%s lt %u title '%s'", first ? "plot " : ", ",
				dat[p], 2 + 3 * s, 3 + 3 * s, 4 + 3 * s, first ? ":xtic(1)" : "", s + 1,
				series[s]);
			first = false;
		}
		fputs(first ? "plot NaN notitle\n" : "\n", g);
	}
	fprintf(g, "unset multiplot\n");
	if (pclose(g) == 0) {
		printf("chart: %s\n", path);
		ret = 0;
	} else {
		fprintf(stderr, "fdvm bench: gnuplot failed or is missing: no %s\n", path);
	}
out:
	for (unsigned i = 0; i < made; i++)
		unlink(dat[i]);
	return ret;
}
