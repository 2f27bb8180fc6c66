/*
 * fdvm bench doorbell: the seed's 2009 table (qemu-mmio, ioeventfd-mmio,
 * ioeventfd-pio) made reproducible: every row measured by the same guest
 * under fdvm, under a bare KVM loop (the floor) and under QEMU, in rounds
 * that take turns (bench/rounds.c), the ratios taken within each round;
 * printed as a table of medians with their spread, written as JSON and
 * drawn as a PNG with error bars.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "bench.h"
#include "fdvm/sandbox.h"
#include "opts.h"

enum { VMM_FDVM, VMM_FLOOR, VMM_QEMU, N_VMM };
static const char *const vmm_names[N_VMM] = { "fdvm", "floor", "qemu" };

/*
 * floor, qemu: the row has a twin there (the same guest code on the same
 * path, bare or QEMU's); fast: counted with --fast-ops.
 */
static const struct row {
	const char *name, *desc;
	bool floor, qemu, fast;
} all_rows[] = {
	{ "mmio-exit", "MMIO write, exit to userspace", true, true, false },
	{ "mmio-wildcard", "MMIO write, ioeventfd wildcard", true, true, true },
	{ "mmio-datamatch", "MMIO write, ioeventfd datamatch", false, true, true },
	{ "pio-exit", "port write, exit to userspace (CPL0)", true, true, false },
	{ "pio-wildcard", "port write, ioeventfd wildcard (CPL0)", true, true, true },
	{ "pio-datamatch", "port write, ioeventfd datamatch (CPL0)", false, true, true },
	{ "irq-irqfd", "exit, the vCPU thread writes an irqfd -> ISR", true, false, false },
	{ "irq-signal-msi", "exit, the vCPU thread calls KVM_SIGNAL_MSI -> ISR (QEMU: edu)", true,
	  true, false },
	{ "irq-userspace", "exit, eventfd -> userspace line thread -> KVM_SIGNAL_MSI -> ISR", true,
	  false, false },
	{ "roundtrip-kernel", "ioeventfd -> backend thread -> irqfd -> ISR", true, false, false },
	{ "roundtrip-userspace", "exit -> eventfd -> backend -> userspace line -> ISR", true, false,
	  false },
	{ "roundtrip-kernel-poll", "shared page -> polling backend -> irqfd -> ISR", true, false,
	  false },
	{ "roundtrip-userspace-poll", "shared page -> polling backend -> userspace line -> ISR",
	  true, false, false },
	{ "pingpong", "shared page both ways: CPL3 loop and a polling host thread", true, false,
	  true },
};
#define N_ROWS (sizeof(all_rows) / sizeof(all_rows[0]))

double bench_tsc_hz(void)
{
	struct timespec a, b, d = { 0, 200000000 };
	clock_gettime(CLOCK_MONOTONIC, &a);
	uint64_t t0 = __rdtsc();
	nanosleep(&d, NULL);
	uint64_t t1 = __rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(t1 - t0) / ((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
}

int bench_parse(const char *out, size_t len, const char *const *rows, unsigned nrows,
		struct bench_result *results)
{
	(void)len;
	for (const char *p = out; (p = strstr(p, "BENCH ")); p++) {
		/* One line at a time: the optional field is never the next line's. */
		char line[256], name[64];
		size_t l = strcspn(p, "\n");
		snprintf(line, sizeof(line), "%.*s", (int)(l < sizeof(line) - 1 ? l : sizeof(line) - 1), p);
		unsigned long rep, ops, cycles, rung = 0;
		if (sscanf(line, "BENCH %63s %lu %lu %lu %lu", name, &rep, &ops, &cycles, &rung) < 4)
			continue;
		for (unsigned i = 0; i < nrows; i++) {
			if (strcmp(rows[i], name) || results[i].n >= BENCH_MAX_REPS)
				continue;
			results[i].ops = ops;
			results[i].rung += rung;
			results[i].cycles[results[i].n++] = cycles;
		}
	}
	return 0;
}

/* The median microseconds per operation over one boot's repetitions. */
static double boot_us(const struct bench_result *r, double hz)
{
	double v[BENCH_MAX_REPS];
	if (!r->n || !r->ops)
		return NAN;
	for (unsigned i = 0; i < r->n; i++)
		v[i] = (double)r->cycles[i] / (double)r->ops / hz * 1e6;
	return bench_spread(v, r->n).median;
}

static bool want_row(const struct bench_opts *o, const char *name)
{
	if (!o->rows || !*o->rows)
		return true;
	size_t n = strlen(name);
	for (const char *p = o->rows; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && !strncmp(p, name, n))
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm bench doorbell [OPTIONS]\n"
		"       fdvm bench blk [OPTIONS]       (see fdvm bench blk --help)\n"
		"       fdvm bench net [OPTIONS]       (see fdvm bench net --help)\n"
		"\n"
		"Measures doorbells (guest writes that notify the host) and interrupts, each\n"
		"row with the same guest under fdvm, under a bare KVM loop (the floor) and\n"
		"under QEMU (its pci-testdev, and its edu device for irq-signal-msi). The\n"
		"three take turns: each round boots each once (the order turning every\n"
		"round), and the ratios are taken within a round. Printed: the median over\n"
		"the rounds of each figure and ratio, with its spread [lowest..highest round].\n"
		"\n"
		"options:\n"
		"  --rounds N      rounds (default 5)\n"
		"  --reps N        repetitions per row in each boot (default 3)\n"
		"  --ops N         operations per repetition, exit rows (default 2000)\n"
		"  --fast-ops N    operations per repetition, ioeventfd rows and the\n"
		"                  ping-pong (default 20000)\n"
		"  --irq-ops N     operations per repetition, interrupt rows (default 1000)\n"
		"  --poll-us N     the polling rows' backends watch the shared page this long\n"
		"                  after a request before they sleep (default 100)\n"
		"  --rows A,B,...  only these rows (names as printed)\n"
		"  --json FILE     figures as JSON (default fdvm-bench-doorbell.json)\n"
		"  --png FILE      bar chart with error bars (default fdvm-bench-doorbell.png;\n"
		"                  needs gnuplot)\n"
		"  --no-qemu       skip the QEMU rows\n"
		"  --cpus N        vCPUs for fdvm's and QEMU's guests (default 1; the bench\n"
		"                  runs on the first, the others wait for a SIPI; the floor\n"
		"                  loop runs one)\n"
		"  --guest FILE    the bench guest (default: found beside fdvm)\n"
		"  --seccomp MODE  fdvm's threads' system call filters, as for fdvm run:\n"
		"                  kill (default), log or off (any benchmark)\n");
}

const char *bench_default_guest(void)
{
	static char path[4096 + 64];
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = 0;
			/* The build tree, then an installed tree. */
			snprintf(path, sizeof(path), "%s/../guest/bench.elf", exe);
			if (!access(path, R_OK))
				return path;
			snprintf(path, sizeof(path), "%s/../share/fdvm/bench.elf", exe);
			if (!access(path, R_OK))
				return path;
		}
	}
	return NULL;
}

bool bench_have_qemu(void)
{
	return system("command -v qemu-system-x86_64 >/dev/null 2>&1") == 0;
}

/* Every figure of a run: per row and VMM, a value per round (NaN: none). */
struct figures {
	unsigned rounds;
	double us[N_ROWS][N_VMM][BENCH_MAX_ROUNDS];
	double vs_floor[N_ROWS][BENCH_MAX_ROUNDS]; /* fdvm's time over the floor's - 1 */
	double vs_qemu[N_ROWS][BENCH_MAX_ROUNDS];  /* QEMU's time over fdvm's */
	uint64_t ops[N_ROWS][N_VMM], reps[N_ROWS][N_VMM], rung[N_ROWS][N_VMM];
};

static void write_json(const char *path, double hz, const struct bench_opts *o,
		       const struct figures *fg)
{
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "fdvm bench: %s: %s\n", path, strerror(errno));
		return;
	}
	fprintf(f, "{\n  \"tsc_hz\": %.0f,\n  \"rounds\": %u,\n  \"reps\": %u,\n  \"poll_us\": %u,\n"
		   "  \"rows\": [\n", hz, fg->rounds, o->reps, o->poll_us);
	bool first = true;
	for (unsigned i = 0; i < N_ROWS; i++) {
		for (unsigned v = 0; v < N_VMM; v++) {
			struct bench_spread sp = bench_spread(fg->us[i][v], fg->rounds);
			if (!sp.n)
				continue;
			fprintf(f, "%s    {\"row\": \"%s\", \"vmm\": \"%s\", \"ops\": %lu, \"reps\": %lu, "
				   "\"doorbells\": %lu, \"ops_per_s\": %.0f, ",
				first ? "" : ",\n", all_rows[i].name, vmm_names[v],
				(unsigned long)fg->ops[i][v], (unsigned long)fg->reps[i][v],
				(unsigned long)fg->rung[i][v], 1e6 / sp.median);
			bench_json_spread(f, "us", fg->us[i][v], fg->rounds, "%.4f");
			fprintf(f, "}");
			first = false;
		}
	}
	fprintf(f, "\n  ],\n  \"ratios\": [\n");
	first = true;
	for (unsigned i = 0; i < N_ROWS; i++)
		for (int k = 0; k < 2; k++) {
			const double *r = k ? fg->vs_qemu[i] : fg->vs_floor[i];
			if (!bench_spread(r, fg->rounds).n)
				continue;
			fprintf(f, "%s    {\"row\": \"%s\", \"ratio\": \"%s\", ", first ? "" : ",\n",
				all_rows[i].name, k ? "qemu_over_fdvm" : "fdvm_over_floor_minus_1");
			bench_json_spread(f, "value", r, fg->rounds, "%.4f");
			fprintf(f, "}");
			first = false;
		}
	fprintf(f, "\n  ]\n}\n");
	fclose(f);
}

/* The chart: the rows fdvm ran, in table order, for bench_chart. */
struct chart_ctx {
	const struct figures *fg;
	unsigned row[N_ROWS];
};

static struct bench_spread chart_value(void *opaque, unsigned panel, unsigned group, unsigned v)
{
	const struct chart_ctx *c = opaque;
	(void)panel;
	return bench_spread(c->fg->us[c->row[group]][v], c->fg->rounds);
}

static void write_png(const char *path, const struct figures *fg)
{
	static const char *const series[N_VMM] = { "fdvm", "floor (bare KVM loop)", "QEMU" };
	struct chart_ctx c = { .fg = fg };
	const char *names[N_ROWS];
	unsigned n = 0;

	for (unsigned i = 0; i < N_ROWS; i++)
		if (bench_spread(fg->us[i][VMM_FDVM], fg->rounds).n) {
			c.row[n] = i;
			names[n++] = all_rows[i].name;
		}
	struct bench_panel panel = { .title = "microseconds per operation (lower is better)",
				     .ylabel = "us per operation", .logscale = true,
				     .ngroups = n, .groups = names };
	bench_chart(path, "fdvm doorbell benchmark", fg->rounds, N_VMM, series, 1, &panel,
		    chart_value, &c);
}

/* The guest's command line for VMM v: the wanted rows it has a twin of. */
static bool cmdline_for(const struct bench_opts *o, unsigned v, char *buf, size_t len)
{
	char rows[1024] = "";
	for (unsigned i = 0; i < N_ROWS; i++) {
		const struct row *r = &all_rows[i];
		if (!want_row(o, r->name) || (v == VMM_FLOOR && !r->floor) ||
		    (v == VMM_QEMU && !r->qemu))
			continue;
		strcat(rows, *rows ? "," : "");
		strcat(rows, r->name);
	}
	if (!*rows)
		return false;
	snprintf(buf, len, "reps=%u ops=%lu fops=%lu iops=%lu rows=%s%s", o->reps,
		 (unsigned long)o->ops, (unsigned long)o->fops, (unsigned long)o->iops, rows,
		 v == VMM_FLOOR ? " floor" : "");
	return true;
}

int fdvm_cmd_bench(int argc, char **argv)
{
	struct bench_opts o = { .reps = 3, .ops = 2000, .fops = 20000, .iops = 1000,
				.poll_us = 100, .json = "fdvm-bench-doorbell.json",
				.png = "fdvm-bench-doorbell.png", .qemu = -1 };
	static struct figures fg;
	unsigned rounds = 5;
	const char *names[N_ROWS];

	if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	/* fdvm's rows run with the filters on, as fdvm run does; --seccomp,
	 * anywhere after the benchmark's name, is taken out here. */
	enum fdvm_seccomp_mode mode = FDVM_SECCOMP_KILL;
	int kept = 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		if (!strcmp(a, "--seccomp")) {
			if (i + 1 == argc) {
				fprintf(stderr, "fdvm bench: --seccomp needs a value\n");
				return 2;
			}
			v = argv[++i];
		} else if (!strncmp(a, "--seccomp=", 10)) {
			v = a + 10;
		} else {
			argv[kept++] = argv[i];
			continue;
		}
		if (fdvm_parse_seccomp(v, &mode)) {
			fprintf(stderr, "fdvm bench: --seccomp %s: expected off, log or kill\n", v);
			return 2;
		}
	}
	argc = kept;
	int ret = fdvm_sandbox_init(mode);
	if (ret) {
		fprintf(stderr, "fdvm bench: seccomp filters: %s\n", strerror(-ret));
		return 6;
	}
	if (!strcmp(argv[0], "blk"))
		return fdvm_cmd_bench_blk(argc, argv);
	if (!strcmp(argv[0], "net"))
		return fdvm_cmd_bench_net(argc, argv);
	if (strcmp(argv[0], "doorbell")) {
		fprintf(stderr, "fdvm bench: unknown benchmark '%s' (known: doorbell, blk, net)\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--no-qemu")) {
			o.qemu = 0;
			continue;
		}
		if (!v) {
			fprintf(stderr, "fdvm bench: %s needs a value (try --help)\n", a);
			return 2;
		}
		i++;
		unsigned long long n = strtoull(v, &end, 10);
		bool num = end && !*end && n > 0;
		if (!strcmp(a, "--reps") && num && n <= BENCH_MAX_REPS)
			o.reps = (unsigned)n;
		else if (!strcmp(a, "--rounds") && num && n <= BENCH_MAX_ROUNDS)
			rounds = (unsigned)n;
		else if (!strcmp(a, "--cpus") && num && n <= FDVM_MAX_CPUS)
			o.cpus = (unsigned)n;
		else if (!strcmp(a, "--ops") && num)
			o.ops = n;
		else if (!strcmp(a, "--fast-ops") && num)
			o.fops = n;
		else if (!strcmp(a, "--irq-ops") && num)
			o.iops = n;
		else if (!strcmp(a, "--poll-us") && end && !*end && *v && n <= 1000000)
			o.poll_us = (unsigned)n;
		else if (!strcmp(a, "--rows"))
			o.rows = v;
		else if (!strcmp(a, "--json"))
			o.json = v;
		else if (!strcmp(a, "--png"))
			o.png = v;
		else if (!strcmp(a, "--guest"))
			o.guest = v;
		else {
			fprintf(stderr, "fdvm bench: bad option %s %s (try --help)\n", a, v);
			return 2;
		}
	}
	if (!o.guest && !(o.guest = bench_default_guest())) {
		fprintf(stderr, "fdvm bench: the bench guest was not found beside fdvm (use --guest)\n");
		return 2;
	}
	if (o.qemu < 0)
		o.qemu = bench_have_qemu();
	for (unsigned i = 0; i < N_ROWS; i++)
		names[i] = all_rows[i].name;
	/* Every name in --rows must be a row. */
	for (const char *p = o.rows; p && *p;) {
		size_t l = strcspn(p, ",");
		bool known = false;
		for (unsigned i = 0; i < N_ROWS; i++)
			known |= strlen(names[i]) == l && !strncmp(names[i], p, l);
		if (!known) {
			fprintf(stderr, "fdvm bench: --rows: no row '%.*s' (see the table for names)\n",
				(int)l, p);
			return 2;
		}
		p += l + (p[l] == ',');
	}

	double hz = bench_tsc_hz();
	printf("fdvm bench doorbell: %u rounds of %u repetitions; %lu ops (exit rows), %lu (ioeventfd "
	       "rows, ping-pong), %lu (interrupt rows); polling %u us; %u vCPUs; TSC %.3f GHz\n",
	       rounds, o.reps, (unsigned long)o.ops, (unsigned long)o.fops, (unsigned long)o.iops,
	       o.poll_us, o.cpus ? o.cpus : 1, hz / 1e9);
	if (!o.qemu)
		printf("note: QEMU rows skipped (%s)\n",
		       bench_have_qemu() ? "--no-qemu" : "qemu-system-x86_64 not installed");
	fflush(stdout);

	/* The VMMs that run, and each one's guest command line. */
	unsigned vmms[N_VMM], nv = 0;
	char cmdlines[N_VMM][1536];
	for (unsigned v = 0; v < N_VMM; v++)
		if ((v != VMM_QEMU || o.qemu) && cmdline_for(&o, v, cmdlines[v], sizeof(cmdlines[v])))
			vmms[nv++] = v;
	memset(&fg, 0, sizeof(fg));
	fg.rounds = rounds;
	for (unsigned i = 0; i < N_ROWS; i++)
		for (unsigned r = 0; r < rounds; r++) {
			fg.vs_floor[i][r] = fg.vs_qemu[i][r] = NAN;
			for (unsigned v = 0; v < N_VMM; v++)
				fg.us[i][v][r] = NAN;
		}
	for (unsigned r = 0; r < rounds; r++) {
		unsigned order[N_VMM];
		bench_order(r, nv, order);
		printf("round %u/%u:", r + 1, rounds);
		for (unsigned k = 0; k < nv; k++) {
			unsigned v = vmms[order[k]];
			printf(" %s", vmm_names[v]);
			fflush(stdout);
			char *out = NULL;
			size_t len = 0;
			ret = v == VMM_FDVM ? bench_run_fdvm(&o, cmdlines[v], &out, &len)
			      : v == VMM_FLOOR ? bench_run_floor(&o, cmdlines[v], &out, &len)
			      : bench_run_qemu(&o, cmdlines[v], &out, &len);
			if (ret) {
				printf("\n");
				fprintf(stderr, "fdvm bench: %s run failed: %s\n", vmm_names[v], strerror(-ret));
				return 6;
			}
			struct bench_result tmp[N_ROWS] = { 0 };
			bench_parse(out, len, names, N_ROWS, tmp);
			free(out);
			for (unsigned i = 0; i < N_ROWS; i++) {
				fg.us[i][v][r] = boot_us(&tmp[i], hz);
				if (tmp[i].n) {
					fg.ops[i][v] = tmp[i].ops;
					fg.reps[i][v] += tmp[i].n;
					fg.rung[i][v] += tmp[i].rung;
				}
			}
		}
		printf("\n");
		for (unsigned i = 0; i < N_ROWS; i++) {
			double f = fg.us[i][VMM_FDVM][r], fl = fg.us[i][VMM_FLOOR][r],
			       q = fg.us[i][VMM_QEMU][r];
			fg.vs_floor[i][r] = (f / fl - 1) * 100; /* NaN if either is missing */
			fg.vs_qemu[i][r] = q / f;
		}
	}

	printf("\n%-25s %-24s %9s %-20s %-22s %-18s %-18s\n", "row", "fdvm us/op", "fdvm op/s",
	       "floor us/op", "fdvm vs floor", "QEMU us/op", "QEMU/fdvm");
	for (unsigned i = 0; i < N_ROWS; i++) {
		struct bench_spread f = bench_spread(fg.us[i][VMM_FDVM], rounds);
		if (!f.n)
			continue;
		char a[64], b[64], c[64], d[64], e[64];
		printf("%-25s %-24s %9.0f %-20s %-22s %-18s %-18s\n", all_rows[i].name,
		       bench_fmt_spread(a, sizeof(a), f, "%.2f"), 1e6 / f.median,
		       bench_fmt_spread(b, sizeof(b), bench_spread(fg.us[i][VMM_FLOOR], rounds), "%.2f"),
		       bench_fmt_spread(c, sizeof(c), bench_spread(fg.vs_floor[i], rounds), "%+.1f%%"),
		       bench_fmt_spread(d, sizeof(d), bench_spread(fg.us[i][VMM_QEMU], rounds), "%.2f"),
		       bench_fmt_spread(e, sizeof(e), bench_spread(fg.vs_qemu[i], rounds), "%.2fx"));
	}
	printf("\nEach figure: the median over the rounds [lowest..highest round]; a ratio is\n"
	       "taken within each round, then its median. fdvm vs floor: fdvm's time over the\n"
	       "bare loop's (+ is slower); QEMU/fdvm: QEMU's time over fdvm's (above 1: fdvm is\n"
	       "faster). Port rows loop at CPL0, which this machine emulates (about 1 us an\n"
	       "instruction): their loop overhead is in every column alike. Interrupt rows end\n"
	       "in a six-instruction ISR (count, EOI, iretq), the same in every column.\n"
	       "Seed 003 (2009): qemu-mmio 9.09 us, ioeventfd-mmio 5.00 us, ioeventfd-pio 2.72 us.\n"
	       "\nrows:\n");
	for (unsigned i = 0; i < N_ROWS; i++)
		if (bench_spread(fg.us[i][VMM_FDVM], rounds).n)
			printf("  %-25s %s\n", all_rows[i].name, all_rows[i].desc);
	printf("No QEMU twin: QEMU has no device whose write goes out through an eventfd (irqfd,\n"
	       "a userspace line thread) or to a backend thread and back; its edu device raises\n"
	       "its MSI on the vCPU thread, which is irq-signal-msi's shape.\n");
	/* How often the polling rows' guests found the backend asleep. */
	bool head = false;
	for (unsigned i = 0; i < N_ROWS; i++) {
		if (!strstr(all_rows[i].name, "-poll") && strcmp(all_rows[i].name, "pingpong"))
			continue;
		for (unsigned v = 0; v < N_VMM; v++) {
			uint64_t reqs = fg.ops[i][v] * fg.reps[i][v];
			if (!reqs)
				continue;
			if (!head)
				printf("Polling rows, doorbells rung (the backend was asleep) / requests:\n");
			head = true;
			printf("  %-25s %s %lu/%lu\n", all_rows[i].name, vmm_names[v],
			       (unsigned long)fg.rung[i][v], (unsigned long)reqs);
		}
	}
	write_json(o.json, hz, &o, &fg);
	printf("figures: %s\n", o.json);
	write_png(o.png, &fg);
	return 0;
}
