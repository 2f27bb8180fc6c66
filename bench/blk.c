/*
 * fdvm bench blk: 4 KiB random reads and writes on a RAM-backed (tmpfs)
 * image at queue depths 1 and 32, the same guest on fdvm's virtio-blk, on
 * QEMU's virtio-blk-pci, and on vhost-user-blk served by `fdvm serve blk`
 * (this executable) and by qemu-storage-daemon with QEMU's
 * vhost-user-blk-pci and with fdvm's vhost-user frontend, over the same
 * image, in one run: IOPS and mean and p99 latency, with ratios. The rows
 * take turns in rounds (bench/rounds.c); ratios are taken within a round.
 */
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "fdvm/vm.h"

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

/* The rows, in table order: V_VU_* have QEMU, V_FVU_* fdvm as the
 * vhost-user frontend; *_FDVM are served by `fdvm serve blk`, *_QSD by
 * qemu-storage-daemon. */
enum { V_FDVM, V_QEMU, V_POLL, V_VU_FDVM, V_VU_QSD, V_FVU_FDVM, V_FVU_QSD, NV };
static const char *const vmm_names[NV] = { "fdvm", "QEMU", "fdvm+poll", "QEMU + fdvm serve blk",
					   "QEMU + qemu-storage-daemon", "fdvm + fdvm serve blk",
					   "fdvm + qemu-storage-daemon" };

static bool served_by_fdvm(int v)
{
	return v == V_VU_FDVM || v == V_FVU_FDVM;
}

static bool vhost_user_row(int v)
{
	return v == V_VU_FDVM || v == V_VU_QSD || v == V_FVU_FDVM || v == V_FVU_QSD;
}

/* A vhost-user-blk backend process for one row. */
struct backend {
	pid_t pid;
	int log; /* its stdout and stderr: an unlinked temporary file */
	char dir[64], sock[128];
};

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static void backend_dump(const struct backend *b, const char *what)
{
	char buf[4096];
	ssize_t n;
	fprintf(stderr, "fdvm bench blk: %s said:\n", what);
	if (lseek(b->log, 0, SEEK_SET) == 0)
		while ((n = read(b->log, buf, sizeof(buf))) > 0)
			fwrite(buf, 1, (size_t)n, stderr);
}

static void backend_cleanup(struct backend *b)
{
	if (b->log >= 0)
		close(b->log);
	b->log = -1;
	unlink(b->sock);
	rmdir(b->dir);
}

/* Starts the backend on a fresh socket and waits (10 s at most) until it listens. */
static int backend_start(struct backend *b, int v, const char *image, unsigned poll_us,
			 bool direct)
{
	*b = (struct backend){ .pid = -1, .log = -1 };
	snprintf(b->dir, sizeof(b->dir), "/tmp/fdvm-bench-vu-XXXXXX");
	if (!mkdtemp(b->dir))
		return -errno;
	snprintf(b->sock, sizeof(b->sock), "%s/blk.sock", b->dir);
	char log[128];
	snprintf(log, sizeof(log), "%s/log", b->dir);
	b->log = open(log, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	unlink(log);
	if (b->log < 0) {
		int err = -errno;
		backend_cleanup(b);
		return err;
	}
	char spec[4200], blockdev[4200], export[4200];
	snprintf(spec, sizeof(spec), "%s,poll=%u%s", image, poll_us, direct ? ",cache=none" : "");
	snprintf(blockdev, sizeof(blockdev), "driver=file,node-name=f,filename=%s%s", image,
		 direct ? ",cache.direct=on,aio=io_uring" : "");
	snprintf(export, sizeof(export),
		 "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=%s,writable=on", b->sock);
	pid_t parent = getpid();
	fflush(NULL);
	b->pid = fork();
	if (b->pid < 0) {
		int err = -errno;
		backend_cleanup(b);
		return err;
	}
	if (b->pid == 0) {
		bench_child_init(parent);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(b->log, 1);
		dup2(b->log, 2);
		if (served_by_fdvm(v)) {
			/* The same executable as this benchmark. */
			const char *argv[] = { "fdvm", "serve", "blk", "--socket", b->sock, spec, NULL };
			execv("/proc/self/exe", (char *const *)argv);
		} else {
			const char *argv[] = { "qemu-storage-daemon", "--blockdev", blockdev,
					       "--export", export, NULL };
			execvp(argv[0], (char *const *)argv);
		}
		fprintf(stderr, "exec: %s\n", strerror(errno));
		_exit(127);
	}
	setpgid(b->pid, b->pid); /* as the child does: no window without its group */
	for (unsigned ms = 0; ms < 10000; ms += 10) {
		struct stat st;
		if (!stat(b->sock, &st) && S_ISSOCK(st.st_mode))
			return 0;
		siginfo_t si = { 0 };
		if (waitid(P_PID, (id_t)b->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == b->pid) {
			int status;
			bench_reap(b->pid, 0, &status); /* and anything it left in its group */
			fprintf(stderr, "fdvm bench blk: %s exited before listening (%s %d)\n", vmm_names[v],
				WIFEXITED(status) ? "status" : "signal",
				WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			backend_dump(b, vmm_names[v]);
			backend_cleanup(b);
			return -EIO;
		}
		sleep_ms(10);
	}
	fprintf(stderr, "fdvm bench blk: %s: no socket %s after 10 s\n", vmm_names[v], b->sock);
	bench_reap(b->pid, 0, NULL);
	backend_dump(b, vmm_names[v]);
	backend_cleanup(b);
	return -ETIMEDOUT;
}

/* SIGTERM; it must exit with status 0 within 10 s, else its group is
 * SIGKILLed. Either way the rest of its group is killed and it is reaped.
 * What it said is shown if it failed or the frontend did. */
static int backend_stop(struct backend *b, int v, bool frontend_failed)
{
	int status = 0, ret = 0;
	siginfo_t si = { 0 };
	bool gone = waitid(P_PID, (id_t)b->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == b->pid;
	if (gone) {
		fprintf(stderr, "fdvm bench blk: %s died while the frontend ran\n", vmm_names[v]);
		ret = -EIO;
	} else {
		kill(b->pid, SIGTERM);
	}
	if (bench_reap(b->pid, gone ? 0 : 10000, &status) && !gone) {
		fprintf(stderr, "fdvm bench blk: %s still running 10 s after SIGTERM: killed\n",
			vmm_names[v]);
		ret = -ETIMEDOUT;
	}
	if (!ret && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
		fprintf(stderr, "fdvm bench blk: %s ended with %s %d\n", vmm_names[v],
			WIFEXITED(status) ? "status" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		ret = -EIO;
	}
	if (ret || frontend_failed)
		backend_dump(b, vmm_names[v]);
	backend_cleanup(b);
	return ret;
}

/*
 * --cache none: the image filled with data, so that reads reach the
 * device, and the host's page cache dropped before each row where this
 * process may (root): the rows then measure the disk behind the image.
 */
static int fill_image(const char *image, unsigned long size_mb)
{
	int fd = open(image, O_WRONLY | O_CLOEXEC);
	static uint64_t chunk[1 << 17];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	if (fd < 0)
		return -errno;
	for (unsigned long mb = 0; mb < size_mb; mb++) {
		for (size_t i = 0; i < sizeof(chunk) / sizeof(chunk[0]); i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			chunk[i] = x;
		}
		if (write(fd, chunk, sizeof(chunk)) != (ssize_t)sizeof(chunk)) {
			int err = errno ? -errno : -EIO;
			close(fd);
			return err;
		}
	}
	int ret = fsync(fd) ? -errno : 0;
	close(fd);
	return ret;
}

static bool drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	bool ok = fd >= 0 && write(fd, "3\n", 2) == 2;
	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * --counters-cost: what the notification counters cost. fdvm+poll with
 * counters on and off, one boot each per round, the order alternating
 * (on-off, off-on, ...) so that a drift of the host's speed weighs on both;
 * per kind, the median over the rounds of each round's on/off IOPS ratio,
 * with the lowest and highest.
 */
static int counters_cost(struct bench_opts *o, unsigned rounds, unsigned poll_us, double hz,
			 const char *json, const char *const *names)
{
	double ratio[KINDS][BENCH_MAX_REPS], iops[2][KINDS][BENCH_MAX_REPS];
	unsigned n[KINDS] = { 0 };
	char cmdline[256];

	snprintf(cmdline, sizeof(cmdline), "blk reps=1 bops=%lu", (unsigned long)o->ops);
	o->blk_poll_us = poll_us;
	for (unsigned r = 0; r < rounds; r++) {
		struct blk_fig fig[2][KINDS];
		memset(fig, 0, sizeof(fig));
		for (unsigned i = 0; i < 2; i++) {
			unsigned off = (i + r) % 2; /* 0: counters on */
			char *out = NULL;
			size_t len = 0;
			o->no_counters = off;
			int ret = bench_run_fdvm(o, cmdline, &out, &len);
			if (ret) {
				fprintf(stderr, "fdvm bench blk: counters %s, round %u: %s\n",
					off ? "off" : "on", r + 1, strerror(-ret));
				return 6;
			}
			parse(out, hz, fig[off]);
			free(out);
		}
		for (int k = 0; k < KINDS; k++) {
			if (!fig[0][k].n || !fig[1][k].n || fig[1][k].iops[0] <= 0 ||
			    fig[0][k].errors || fig[1][k].errors)
				continue;
			iops[0][k][n[k]] = fig[0][k].iops[0];
			iops[1][k][n[k]] = fig[1][k].iops[0];
			ratio[k][n[k]] = fig[0][k].iops[0] / fig[1][k].iops[0];
			n[k]++;
		}
	}
	o->no_counters = false;

	FILE *j = fopen(json, "w");
	if (j)
		fprintf(j, "{\n  \"mode\": \"counters-cost\",\n  \"ops\": %lu,\n  \"rounds\": %u,\n"
			   "  \"poll_us\": %u,\n  \"rows\": [\n",
			(unsigned long)o->ops, rounds, poll_us);
	printf("fdvm bench blk --counters-cost: fdvm+poll (%u us), 4 KiB, %lu ops a boot, %u rounds\n"
	       "of one boot with the notification counters on and one with them off, in\n"
	       "alternating order; on/off: the median of the rounds' IOPS ratios\n\n",
	       poll_us, (unsigned long)o->ops, rounds);
	printf("%-15s %10s %10s %8s %8s %8s %8s\n", "", "IOPS on", "IOPS off", "on/off", "min",
	       "max", "cost");
	bool met = true, any32 = false;
	for (int k = 0; k < KINDS; k++) {
		if (!n[k]) {
			printf("%-15s (no figures)\n", names[k]);
			met = false;
			continue;
		}
		struct bench_spread sp = bench_spread(ratio[k], n[k]);
		double med = sp.median, lo = sp.min, hi = sp.max, cost = (1 - med) * 100;
		double on = bench_spread(iops[0][k], n[k]).median, offv = bench_spread(iops[1][k], n[k]).median;
		printf("%-15s %10.0f %10.0f %8.3f %8.3f %8.3f %7.1f%%\n", names[k], on, offv, med, lo,
		       hi, cost);
		if (k % 2) { /* depth 32 */
			any32 = true;
			met = met && cost < 2;
		}
		if (j)
			fprintf(j, "%s    {\"test\": \"%s\", \"iops_on\": %.0f, \"iops_off\": %.0f, "
				   "\"ratio\": %.4f, \"ratio_min\": %.4f, \"ratio_max\": %.4f, "
				   "\"rounds\": %u}",
				k ? ",\n" : "", names[k], on, offv, med, lo, hi, n[k]);
	}
	printf("\ncost: 1 - on/off (negative: counting was not measurably slower). Goal: under\n"
	       "2%% at depth 32: %s\n", any32 && met ? "met" : "NOT met");
	if (j) {
		fprintf(j, "\n  ],\n  \"goal\": \"cost < 2%% at depth 32\", \"met\": %s\n}\n",
			any32 && met ? "true" : "false");
		fclose(j);
		printf("figures: %s\n", json);
	}
	return 0;
}

static bool have_qsd(void)
{
	return system("command -v qemu-storage-daemon >/dev/null 2>&1") == 0;
}

/* The chart's figures: IOPS (panel 0) and p99 (panel 1) of each row and
 * workload over the rounds; a failed row has none. */
struct blk_chart {
	double (*iops)[KINDS][BENCH_MAX_ROUNDS], (*p99)[KINDS][BENCH_MAX_ROUNDS];
	unsigned rounds;
	const bool *failed;
};

static struct bench_spread blk_chart_value(void *opaque, unsigned panel, unsigned k, unsigned v)
{
	const struct blk_chart *c = opaque;
	if (c->failed[v])
		return (struct bench_spread){ 0 };
	return bench_spread(panel ? c->p99[v][k] : c->iops[v][k], c->rounds);
}

int fdvm_cmd_bench_blk(int argc, char **argv)
{
	struct bench_opts o = { .reps = 1, .ops = 5000, .qemu = -1 };
	unsigned rounds = 3;
	const char *dir = "/dev/shm", *json = "fdvm-bench-blk.json", *png = "fdvm-bench-blk.png";
	unsigned long size_mb = 256, poll_us = 50, cost_rounds = 0;
	bool vhost_user = true, ops_given = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			printf("usage: fdvm bench blk [--rounds N] [--reps N] [--ops N] [--size MiB] [--dir DIR]\n"
			       "       [--poll-us N] [--json FILE] [--png FILE] [--no-qemu] [--no-vhost-user]\n"
			       "       [--guest FILE]\n"
			       "       [--cache writeback|none] [--cpus N]\n"
			       "       fdvm bench blk --counters-cost ROUNDS [--ops N] [--poll-us N] ...\n"
			       "4 KiB random reads and writes at queue depths 1 and 32 on a raw image\n"
			       "made in DIR (default /dev/shm, RAM-backed), under fdvm, QEMU, and fdvm\n"
			       "with its backend polling a dry queue for --poll-us (default 50) first;\n"
			       "then vhost-user-blk (guest RAM shared by memfd) served by 'fdvm serve\n"
			       "blk' (this executable, polling as fdvm+poll) and by qemu-storage-daemon,\n"
			       "with QEMU's vhost-user-blk-pci and with fdvm's vhost-user frontend as\n"
			       "the frontend. --no-vhost-user leaves those four rows out, --no-qemu\n"
			       "every row that needs QEMU (not fdvm + qemu-storage-daemon).\n"
			       "The rows take turns: --rounds (default 3) rounds boot each row once, the\n"
			       "order turning every round, with --reps (default 1) repetitions of --ops\n"
			       "(default 5000) operations a boot; figures are medians over the rounds,\n"
			       "ratios are taken within each round and shown as their median\n"
			       "[lowest..highest]. --json (default fdvm-bench-blk.json) keeps every\n"
			       "round; --png (default fdvm-bench-blk.png) charts IOPS and p99 with the\n"
			       "rounds' spread as error bars (gnuplot).\n"
			       "--cache none: every row with O_DIRECT (QEMU and qemu-storage-daemon also\n"
			       "with aio=io_uring), the image filled with data first and the page cache\n"
			       "dropped before each row (root): use --dir on the disk to measure it.\n"
			       "--cpus N: vCPUs for fdvm's and QEMU's guests (default 1; the bench runs\n"
			       "on the first, the others wait for a SIPI).\n"
			       "--counters-cost ROUNDS: instead, fdvm+poll with its notification\n"
			       "counters on and off, ROUNDS boots of each in alternating order, and the\n"
			       "median of the rounds' IOPS ratios: what counting costs (--ops defaults\n"
			       "to 50000 there).\n");
			return 0;
		}
		if (!strcmp(a, "--no-qemu")) {
			o.qemu = 0;
			continue;
		}
		if (!strcmp(a, "--no-vhost-user")) {
			vhost_user = false;
			continue;
		}
		if (!strcmp(a, "--cache") && v && (!strcmp(v, "none") || !strcmp(v, "writeback"))) {
			o.blk_direct = !strcmp(v, "none");
			i++;
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
		else if (!strcmp(a, "--rounds") && num && n <= BENCH_MAX_ROUNDS)
			rounds = (unsigned)n;
		else if (!strcmp(a, "--cpus") && num && n <= FDVM_MAX_CPUS)
			o.cpus = (unsigned)n;
		else if (!strcmp(a, "--ops") && num && n <= 50000)
			o.ops = n, ops_given = true;
		else if (!strcmp(a, "--poll-us") && !*end && n <= 10000)
			poll_us = n;
		else if (!strcmp(a, "--counters-cost") && num && n <= BENCH_MAX_REPS)
			cost_rounds = n;
		else if (!strcmp(a, "--size") && num && n >= 4)
			size_mb = n;
		else if (!strcmp(a, "--dir"))
			dir = v;
		else if (!strcmp(a, "--json"))
			json = v;
		else if (!strcmp(a, "--png"))
			png = v;
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
	bool dropped = false;
	if (o.blk_direct) {
		int ret = fill_image(image, size_mb);
		if (ret) {
			fprintf(stderr, "fdvm bench blk: filling %s: %s\n", image, strerror(-ret));
			unlink(image);
			return 2;
		}
		dropped = drop_caches();
		printf("note: cache=none (QEMU: cache=none,aio=io_uring): %lu MiB of data in %s; the page cache %s\n",
		       size_mb, image, dropped ? "dropped before each row" : "NOT dropped (not root)");
	}
	/* A backend that stops answering leaves the guest polling forever: bound
	 * every run (boot, then every request at 2000 IOPS or better); QEMU's
	 * process group is killed, fdvm's guest stopped. */
	o.timeout_s = (unsigned)(60 + (uint64_t)o.reps * o.ops * KINDS / 2000);

	double hz = bench_tsc_hz();
	static const char *const names[KINDS] = { "randread qd1", "randread qd32", "randwrite qd1",
						  "randwrite qd32" };
	if (cost_rounds) {
		/* Short boots make noisy ratios: the most a boot allows, unless
		 * asked otherwise. */
		if (!ops_given)
			o.ops = 50000;
		o.timeout_s = (unsigned)(60 + (uint64_t)o.ops * KINDS / 2000);
		int st = counters_cost(&o, (unsigned)cost_rounds, (unsigned)poll_us, hz,
				       strcmp(json, "fdvm-bench-blk.json") ? json
								   : "fdvm-bench-blk-counters.json",
				       names);
		unlink(image);
		return st;
	}
	char cmdline[256];
	snprintf(cmdline, sizeof(cmdline), "blk reps=%u bops=%lu", o.reps, (unsigned long)o.ops);
	int status = 0;
	bool qsd = have_qsd();
	if (!o.qemu)
		printf("note: QEMU rows skipped (%s)\n", bench_have_qemu() ? "--no-qemu" : "not installed");
	if (!vhost_user)
		printf("note: vhost-user rows skipped (--no-vhost-user)\n");
	else if (!qsd)
		printf("note: qemu-storage-daemon rows skipped (not installed)\n");
	/* Each round boots every row once, the order turning a place a round;
	 * per round and kind a figure (the median of the boot's repetitions,
	 * NaN: none). A row that fails is reported and left out from then on;
	 * the others go on. */
	static double iops[NV][KINDS][BENCH_MAX_ROUNDS], mean[NV][KINDS][BENCH_MAX_ROUNDS],
		p99[NV][KINDS][BENCH_MAX_ROUNDS];
	unsigned long errors[NV][KINDS] = { { 0 } };
	bool failed[NV] = { false };
	unsigned active[NV], na = 0;
	for (int v = 0; v < NV; v++) {
		bool on_qemu = v == V_QEMU || v == V_VU_FDVM || v == V_VU_QSD;
		for (int k = 0; k < KINDS; k++)
			for (unsigned r = 0; r < rounds; r++)
				iops[v][k][r] = mean[v][k][r] = p99[v][k][r] = NAN;
		if (!((on_qemu && !o.qemu) || (vhost_user_row(v) && !vhost_user) ||
		      ((v == V_VU_QSD || v == V_FVU_QSD) && !qsd)))
			active[na++] = (unsigned)v;
	}
	for (unsigned r = 0; r < rounds; r++) {
		unsigned order[NV];
		bench_order(r, na, order);
		printf("round %u/%u:", r + 1, rounds);
		for (unsigned a = 0; a < na; a++) {
			int v = (int)active[order[a]];
			if (failed[v])
				continue;
			bool on_qemu = v == V_QEMU || v == V_VU_FDVM || v == V_VU_QSD;
			printf("%s %s", a ? "," : "", vmm_names[v]);
			fflush(stdout);
			char *out = NULL;
			size_t len = 0;
			struct backend be;
			int ret;
			o.blk_poll_us = v == V_POLL ? (unsigned)poll_us : 0;
			o.vhost_user_sock = NULL;
			if (dropped)
				drop_caches();
			if (vhost_user_row(v)) {
				if ((ret = backend_start(&be, v, image, (unsigned)poll_us, o.blk_direct))) {
					fprintf(stderr, "\nfdvm bench blk: %s: backend failed to start: %s\n",
						vmm_names[v], strerror(-ret));
					failed[v] = true;
					status = 6;
					continue;
				}
				o.vhost_user_sock = be.sock;
				ret = on_qemu ? bench_run_qemu(&o, cmdline, &out, &len)
					      : bench_run_fdvm(&o, cmdline, &out, &len);
				int bret = backend_stop(&be, v, ret != 0);
				if (!ret && bret) {
					free(out);
					ret = bret;
				}
			} else {
				ret = on_qemu ? bench_run_qemu(&o, cmdline, &out, &len)
					      : bench_run_fdvm(&o, cmdline, &out, &len);
			}
			if (ret) {
				fprintf(stderr, "\nfdvm bench blk: %s run failed: %s\n", vmm_names[v],
					strerror(-ret));
				failed[v] = true;
				status = 6;
				continue;
			}
			struct blk_fig f[KINDS] = { 0 };
			parse(out, hz, f);
			free(out);
			for (int k = 0; k < KINDS; k++) {
				if (!f[k].n)
					continue;
				iops[v][k][r] = bench_spread(f[k].iops, f[k].n).median;
				mean[v][k][r] = bench_spread(f[k].mean_us, f[k].n).median;
				p99[v][k][r] = bench_spread(f[k].p99_us, f[k].n).median;
				errors[v][k] += f[k].errors;
			}
		}
		printf("\n");
	}
	unlink(image);

	/* A failed row has no figures at all, not some rounds' worth. */
	double m[KINDS][NV][3];
	bool have[NV][KINDS];
	for (int k = 0; k < KINDS; k++)
		for (int v = 0; v < NV; v++) {
			m[k][v][0] = bench_spread(iops[v][k], rounds).median;
			m[k][v][1] = bench_spread(mean[v][k], rounds).median;
			m[k][v][2] = bench_spread(p99[v][k], rounds).median;
			have[v][k] = !failed[v] && bench_spread(iops[v][k], rounds).n > 0;
		}
	/* Per round: the row's IOPS over QEMU's, QEMU's p99 over the row's. */
	static double x_iops[NV][KINDS][BENCH_MAX_ROUNDS], x_p99[NV][KINDS][BENCH_MAX_ROUNDS];
	for (int v = 0; v < NV; v++)
		for (int k = 0; k < KINDS; k++)
			for (unsigned r = 0; r < rounds; r++) {
				x_iops[v][k][r] = iops[v][k][r] / iops[V_QEMU][k][r];
				x_p99[v][k][r] = p99[V_QEMU][k][r] / p99[v][k][r];
			}
	FILE *j = fopen(json, "w");
	if (j)
		fprintf(j, "{\n  \"image_mib\": %lu,\n  \"ops\": %lu,\n  \"reps\": %u,\n  \"rounds\": %u,\n"
			   "  \"poll_us\": %lu,\n  \"cache\": \"%s\",\n  \"rows\": [\n",
			size_mb, (unsigned long)o.ops, o.reps, rounds, poll_us,
			o.blk_direct ? "none" : "writeback");
	printf("\nfdvm bench blk: 4 KiB, %lu ops x %u repetitions a boot, %u rounds, %lu MiB image in %s, "
	       "cache=%s\n(medians over the rounds; ratios taken within each round, [lowest..highest])\n\n",
	       (unsigned long)o.ops, o.reps, rounds, size_mb, dir, o.blk_direct ? "none" : "writeback");
	bool first = true;
	printf("%-15s %-27s %10s %10s %10s  %-20s %-20s\n", "", "", "IOPS", "mean us", "p99 us",
	       "IOPS x", "p99 x");
	for (int k = 0; k < KINDS; k++) {
		bool named = false;
		for (int v = 0; v < NV; v++) {
			if (!have[v][k])
				continue;
			printf("%-15s %-27s %10.0f %10.1f %10.1f", named ? "" : names[k], vmm_names[v],
			       m[k][v][0], m[k][v][1], m[k][v][2]);
			named = true;
			bool vs = v != V_QEMU && have[V_QEMU][k];
			if (vs) {
				char a[64], b[64];
				printf("  %-20s %-20s",
				       bench_fmt_spread(a, sizeof(a), bench_spread(x_iops[v][k], rounds), "%.2fx"),
				       bench_fmt_spread(b, sizeof(b), bench_spread(x_p99[v][k], rounds), "%.2fx"));
			}
			printf("\n");
			if (errors[v][k])
				printf("  (%lu errors)\n", errors[v][k]);
			if (j) {
				fprintf(j, "%s    {\"test\": \"%s\", \"vmm\": \"%s\", \"iops\": %.0f, "
					   "\"mean_us\": %.2f, \"p99_us\": %.2f, \"errors\": %lu, ",
					first ? "" : ",\n", names[k], vmm_names[v], m[k][v][0], m[k][v][1],
					m[k][v][2], errors[v][k]);
				bench_json_spread(j, "iops_rounds", iops[v][k], rounds, "%.0f");
				fprintf(j, ", ");
				bench_json_spread(j, "p99_us_rounds", p99[v][k], rounds, "%.2f");
				if (vs) {
					fprintf(j, ", ");
					bench_json_spread(j, "iops_x_qemu", x_iops[v][k], rounds, "%.4f");
					fprintf(j, ", ");
					bench_json_spread(j, "p99_x_qemu", x_p99[v][k], rounds, "%.4f");
				}
				fprintf(j, "}");
			}
			first = false;
		}
	}
	printf("\nIOPS x: the row's IOPS over QEMU's virtio-blk-pci (above 1: faster); p99 x:\n"
	       "QEMU's p99 over the row's (above 1: the row's tail is shorter); both taken\n"
	       "within each round. The guest polls for completions. fdvm+poll and fdvm serve\n"
	       "blk: the backend watches a dry queue for %lu us before sleeping. \"A + B\": A\n"
	       "the vhost-user frontend, B the backend.\n",
	       poll_us);

	/* The vhost-user comparisons, each a median of per-round ratios with its goal. */
	enum { G_NONE, G_GT, G_GE }; /* no goal; ratio > goal; ratio >= goal */
	static const struct {
		int k, a, b, col; /* a's figure over b's within each round; col 0: IOPS, 2: p99 */
		int op;
		double goal;
		bool fdvm_frontend; /* which section */
		const char *what;
	} ratios[] = {
		{ 1, V_VU_FDVM, V_VU_QSD, 0, G_GE, 2.0, false, "fdvm serve / qemu-storage-daemon IOPS" },
		{ 3, V_VU_FDVM, V_VU_QSD, 0, G_GE, 2.0, false, "fdvm serve / qemu-storage-daemon IOPS" },
		{ 0, V_VU_QSD, V_VU_FDVM, 2, G_GT, 1.0, false, "qemu-storage-daemon / fdvm serve p99" },
		{ 2, V_VU_QSD, V_VU_FDVM, 2, G_GT, 1.0, false, "qemu-storage-daemon / fdvm serve p99" },
		{ 1, V_VU_FDVM, V_POLL, 0, G_NONE, 0, false, "out-of-process / in-process fdvm+poll IOPS" },
		{ 3, V_VU_FDVM, V_POLL, 0, G_NONE, 0, false, "out-of-process / in-process fdvm+poll IOPS" },
		{ 1, V_VU_FDVM, V_FDVM, 0, G_NONE, 0, false, "out-of-process / in-process fdvm IOPS" },
		{ 3, V_VU_FDVM, V_FDVM, 0, G_NONE, 0, false, "out-of-process / in-process fdvm IOPS" },
		/* fdvm as the frontend: on fdvm serve blk (polling --poll-us, as
		 * fdvm+poll does) within 10% of the in-process device... */
		{ 1, V_FVU_FDVM, V_POLL, 0, G_GE, 0.9, true, "fdvm + fdvm serve / in-process fdvm+poll IOPS" },
		{ 3, V_FVU_FDVM, V_POLL, 0, G_GE, 0.9, true, "fdvm + fdvm serve / in-process fdvm+poll IOPS" },
		/* ...and against QEMU as the frontend on the same backend. */
		{ 0, V_FVU_FDVM, V_VU_FDVM, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, fdvm serve IOPS" },
		{ 1, V_FVU_FDVM, V_VU_FDVM, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, fdvm serve IOPS" },
		{ 2, V_FVU_FDVM, V_VU_FDVM, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, fdvm serve IOPS" },
		{ 3, V_FVU_FDVM, V_VU_FDVM, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, fdvm serve IOPS" },
		{ 0, V_FVU_QSD, V_VU_QSD, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, qemu-storage-daemon IOPS" },
		{ 1, V_FVU_QSD, V_VU_QSD, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, qemu-storage-daemon IOPS" },
		{ 2, V_FVU_QSD, V_VU_QSD, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, qemu-storage-daemon IOPS" },
		{ 3, V_FVU_QSD, V_VU_QSD, 0, G_GE, 1.0, true, "fdvm / QEMU frontend, qemu-storage-daemon IOPS" },
	};
	for (int v = 0; v < NV; v++)
		if (failed[v])
			printf("FAILED: %s (no figures; see the messages above)\n", vmm_names[v]);

	bool header[2] = { false, false }, rfirst = true;
	for (int sec = 0; sec < 2; sec++)
		for (size_t i = 0; i < sizeof(ratios) / sizeof(ratios[0]); i++) {
			int k = ratios[i].k, a = ratios[i].a, b = ratios[i].b, col = ratios[i].col;
			if (ratios[i].fdvm_frontend != (sec == 1) || !have[a][k] || !have[b][k])
				continue;
			double per[BENCH_MAX_ROUNDS];
			for (unsigned r = 0; r < rounds; r++)
				per[r] = col ? p99[a][k][r] / p99[b][k][r] : iops[a][k][r] / iops[b][k][r];
			struct bench_spread sp = bench_spread(per, rounds);
			if (!sp.n)
				continue;
			double rv = sp.median, g = ratios[i].goal;
			bool met = ratios[i].op == G_GT ? rv > g : rv >= g;
			const char *op = ratios[i].op == G_GT ? ">" : ">=";
			if (!header[sec]) {
				printf(sec ? "\nvhost-user (fdvm as the frontend):\n"
					   : "\nvhost-user (QEMU as the frontend):\n");
				header[sec] = true;
			}
			char buf[80];
			printf("  %-15s %-47s %s", names[k], ratios[i].what,
			       bench_fmt_spread(buf, sizeof(buf), sp, "%.2fx"));
			if (ratios[i].op != G_NONE)
				printf("  goal %s %g: %s", op, g, met ? "met" : "NOT met");
			printf("\n");
			if (j) {
				if (rfirst)
					fprintf(j, "\n  ],\n  \"ratios\": [\n");
				fprintf(j, "%s    {\"test\": \"%s\", \"ratio\": \"%s\", \"value\": %.3f, "
					   "\"min\": %.3f, \"max\": %.3f, ",
					rfirst ? "" : ",\n", names[k], ratios[i].what, rv, sp.min, sp.max);
				bench_json_spread(j, "per_round", per, rounds, "%.4f");
				if (ratios[i].op != G_NONE)
					fprintf(j, ", \"goal\": \"%s %g\", \"met\": %s", op, g,
						met ? "true" : "false");
				fprintf(j, "}");
				rfirst = false;
			}
		}
	if (j) {
		fprintf(j, rfirst ? "\n  ],\n  \"ratios\": [],\n  \"failed\": [" : "\n  ],\n  \"failed\": [");
		bool ffirst = true;
		for (int v = 0; v < NV; v++)
			if (failed[v]) {
				fprintf(j, "%s\"%s\"", ffirst ? "" : ", ", vmm_names[v]);
				ffirst = false;
			}
		fprintf(j, "]\n}\n");
		fclose(j);
		printf("figures: %s\n", json);
	}
	struct blk_chart c = { .iops = iops, .p99 = p99, .rounds = rounds, .failed = failed };
	const struct bench_panel panels[2] = {
		{ "IOPS (higher is better)", "IOPS", true, KINDS, names },
		{ "p99 latency (lower is better)", "us", true, KINDS, names },
	};
	bench_chart(png, "fdvm bench blk, 4 KiB", rounds, NV, vmm_names, 2, panels, blk_chart_value,
		    &c);
	return status;
}
