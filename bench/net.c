/*
 * fdvm bench net: the bench guest's virtio-net driver against four
 * devices on one tap, in one run: fdvm's in-process device (--net),
 * fdvm's vhost-user frontend and QEMU's, each on `fdvm serve net` (this
 * executable), and QEMU's own virtio-net-pci on its tap netdev (userspace:
 * there is no vhost-net here). Figures: UDP round trips to an echo the
 * benchmark runs (mean and p99), and the guest's transmit packet rate at
 * 64-byte frames and 1500-byte IP packets, as the guest sees completions
 * and as the tap's counters see frames arrive.
 *
 * Isolation: the benchmark moves itself into a network namespace of its
 * own before anything else (root only), makes the tap there (10.77.0.1/24;
 * the guest is 10.77.0.2) and runs every VMM and backend in it as a child:
 * no packet leaves it, and it goes away with the benchmark.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define TAP "fdvmb0"
#define HOST_IP "10.77.0.1"
#define GUEST_IP "10.77.0.2"
#define GUEST_MAC "52:54:00:77:00:02" /* every row: the host's neighbour entry stays right */
#define ECHO_PORT 7
#define DISCARD_PORT 9
#define GO_PORT 5000

enum { K_RTT, K_TX64, K_TX1500, NK };
static const char *const kind_names[NK] = { "rtt", "tx64", "tx1500" };

/* The rows, in table order. */
enum { R_FDVM, R_FDVM_VU, R_QEMU_VU, R_QEMU_TAP, NR };
static const char *const row_names[NR] = { "fdvm --net", "fdvm + fdvm serve net",
					   "QEMU + fdvm serve net", "QEMU tap" };

static bool row_on_qemu(int r)
{
	return r == R_QEMU_VU || r == R_QEMU_TAP;
}

static bool row_vhost_user(int r)
{
	return r == R_FDVM_VU || r == R_QEMU_VU;
}

/* One row's figures for one kind, a value per repetition. rtt: a = mean
 * us, b = p99 us, lost; tx: a = pps from the guest's completions, b = pps
 * from the tap's counter (0: too short to time), tap/completed frames. */
struct net_fig {
	unsigned n;
	double a[BENCH_MAX_REPS], b[BENCH_MAX_REPS];
	unsigned long lost, completed, tap, drops;
};

/* The host's side of one tx burst, from the tap's counters. */
struct tx_check {
	bool done;
	uint64_t delta;	  /* frames the tap took from the VMM during the burst */
	uint64_t dropped; /* the tap's rx_dropped, same window */
	double pps;	  /* from the go to the last change seen (0: under 5 ms) */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the namespace and the tap ---- */

/* Runs `ip ARGS...`; its output is dropped, its errors shown. 0 if it exited 0. */
static int run_ip(const char *const *args)
{
	const char *argv[16] = { "ip" };
	unsigned n = 1;
	for (; args[n - 1] && n < 15; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		bench_child_init(parent);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		execvp("ip", (char *const *)argv);
		fprintf(stderr, "fdvm bench net: exec ip: %s\n", strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	int status;
	bench_reap(pid, 10000, &status);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static void write_proc(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, v, strlen(v)) < 0) {
			/* Best effort: IPv6 chatter on the tap is only noise. */
		}
		close(fd);
	}
}

/* This process (and every child from now on) into a new network
 * namespace, with lo up and the tap at HOST_IP/24, up. */
static int netns_setup(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "fdvm bench net: must run as root: it makes a network namespace of "
				"its own and a tap in it\n");
		return -EPERM;
	}
	if (access("/dev/net/tun", R_OK | W_OK)) {
		fprintf(stderr, "fdvm bench net: /dev/net/tun: %s\n", strerror(errno));
		return -ENODEV;
	}
	if (unshare(CLONE_NEWNET)) {
		int err = -errno;
		fprintf(stderr, "fdvm bench net: unshare(CLONE_NEWNET): %s\n", strerror(errno));
		return err;
	}
	/* /proc/sys/net is this namespace's now. No IPv6: no router
	 * solicitations or MLD reports into the guest's queue. */
	write_proc("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
	write_proc("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	static const char *const cmds[][10] = {
		{ "link", "set", "lo", "up", NULL },
		{ "tuntap", "add", "mode", "tap", "name", TAP, "vnet_hdr", NULL },
		{ "addr", "add", HOST_IP "/24", "dev", TAP, NULL },
		{ "link", "set", TAP, "up", NULL },
	};
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (run_ip(cmds[i])) {
			fprintf(stderr, "fdvm bench net: 'ip %s %s ...' failed in the new namespace\n",
				cmds[i][0], cmds[i][1]);
			return -EIO;
		}
	return 0;
}

/* Deletes the tap (the namespace would take it with it anyway). */
static void netns_teardown(void)
{
	static const char *const del[] = { "link", "del", TAP, NULL };
	run_ip(del);
}

/* The tap's rx_packets and rx_dropped (frames the VMM wrote to it), from
 * /proc/net/dev: /sys/class/net shows the namespace sysfs was mounted in. */
static int tap_counters(uint64_t *rx, uint64_t *dropped)
{
	char buf[8192];
	int fd = open("/proc/self/net/dev", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	const char *p = strstr(buf, TAP ":");
	unsigned long long bytes, pk, errs, drop;
	if (!p || sscanf(p + sizeof(TAP), "%llu %llu %llu %llu", &bytes, &pk, &errs, &drop) != 4)
		return -EIO;
	*rx = pk;
	*dropped = drop;
	return 0;
}

/* ---- the host's UDP endpoints ---- */

struct net_host {
	int echo, discard, go;
	pthread_t echo_thread;
	bool echo_running;
	atomic_bool stop;
	atomic_ulong echoed;
};

static int udp_bound(uint16_t port, int *fd)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, HOST_IP, &a.sin_addr);
	*fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (*fd < 0)
		return -errno;
	if (bind(*fd, (struct sockaddr *)&a, sizeof(a))) {
		int err = -errno;
		close(*fd);
		*fd = -1;
		return err;
	}
	return 0;
}

/* Echoes every datagram to ECHO_PORT back to its sender until stop. */
static void *echo_main(void *arg)
{
	struct net_host *h = arg;
	char buf[2048];
	while (!atomic_load(&h->stop)) {
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(h->echo, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n < 0)
			continue; /* the receive timeout: look at stop */
		if (sendto(h->echo, buf, (size_t)n, 0, (struct sockaddr *)&from, fl) == n)
			atomic_fetch_add(&h->echoed, 1);
	}
	return NULL;
}

static void host_stop(struct net_host *h)
{
	if (h->echo_running) {
		atomic_store(&h->stop, true);
		pthread_join(h->echo_thread, NULL);
		h->echo_running = false;
	}
	if (h->go >= 0)
		close(h->go);
	if (h->discard >= 0)
		close(h->discard);
	if (h->echo >= 0)
		close(h->echo);
	h->go = h->discard = h->echo = -1;
}

/* The echo (a thread), the discard port (a socket nobody reads: what
 * overflows its buffer is dropped, and no ICMP goes back to the guest) and
 * the socket that sends "go". */
static int host_start(struct net_host *h)
{
	*h = (struct net_host){ .echo = -1, .discard = -1, .go = -1 };
	int ret, small = 4096;
	struct timeval tv = { 0, 100000 };
	if ((ret = udp_bound(ECHO_PORT, &h->echo)) || (ret = udp_bound(DISCARD_PORT, &h->discard)) ||
	    (ret = udp_bound(GO_PORT, &h->go)))
		goto fail;
	setsockopt(h->discard, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	setsockopt(h->echo, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if ((ret = -pthread_create(&h->echo_thread, NULL, echo_main, h)))
		goto fail;
	h->echo_running = true;
	return 0;
fail:
	fprintf(stderr, "fdvm bench net: host sockets: %s\n", strerror(-ret));
	host_stop(h);
	return ret;
}

static void send_go(const struct net_host *h)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(GO_PORT) };
	inet_pton(AF_INET, GUEST_IP, &a.sin_addr);
	if (sendto(h->go, "go", 2, 0, (struct sockaddr *)&a, sizeof(a)) < 0)
		fprintf(stderr, "fdvm bench net: sending go: %s\n", strerror(errno));
}

/* ---- one run of the guest, its console read as it comes ---- */

struct run_ctx {
	const struct net_host *host;
	struct tx_check chk[NK][BENCH_MAX_REPS];
	/* The burst being watched (between NET-READY and its NET line). */
	bool sampling;
	int kind;
	unsigned rep;
	uint64_t c0, d0, last;
	double t_start, t_last;
};

static int kind_of(const char *s)
{
	for (int k = 0; k < NK; k++)
		if (!strcmp(s, kind_names[k]))
			return k;
	return -1;
}

static void sample(struct run_ctx *c)
{
	uint64_t v, d;
	if (tap_counters(&v, &d))
		return;
	double t = now_s();
	if (v != c->last) {
		c->last = v;
		c->t_last = t;
	}
}

static void on_line(struct run_ctx *c, const char *line)
{
	char kind[16];
	unsigned rep;
	if (sscanf(line, "NET-READY %15s %u", kind, &rep) == 2) {
		int k = kind_of(kind);
		if (k <= K_RTT || rep >= BENCH_MAX_REPS)
			return;
		c->sampling = !tap_counters(&c->c0, &c->d0);
		c->kind = k;
		c->rep = rep;
		c->last = c->c0;
		c->t_start = now_s();
		send_go(c->host); /* the guest starts on it */
	} else if (c->sampling && sscanf(line, "NET %15s %u", kind, &rep) == 2 &&
		   kind_of(kind) == c->kind && rep == c->rep) {
		/* Printed after the last completion: the tap has every frame. */
		sample(c);
		uint64_t v, d;
		struct tx_check *x = &c->chk[c->kind][c->rep];
		if (!tap_counters(&v, &d)) {
			x->done = true;
			x->delta = v - c->c0;
			x->dropped = d - c->d0;
			/* Low by up to a sampling interval (and the go's trip):
			 * only shown for bursts that take some milliseconds. */
			double t = c->t_last - c->t_start;
			x->pps = t >= 0.005 ? (double)(c->last - c->c0) / t : 0;
		}
		c->sampling = false;
	}
}

/*
 * Runs argv (self: this executable, else found on PATH) in its own process
 * group with the console on a pipe, acting on lines as they arrive; kills
 * the group after timeout_s. 0 with *out (the whole console, the caller
 * frees it) if it exited 0.
 */
static int run_guest(struct run_ctx *c, const char *const *argv, bool self, unsigned timeout_s,
		     char **out, size_t *len)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		int err = -errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return err;
	}
	if (pid == 0) {
		bench_child_init(parent);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		if (self)
			execv("/proc/self/exe", (char *const *)argv);
		else
			execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	setpgid(pid, pid); /* as the child does: no window without its group */
	close(pipefd[1]);
	size_t cap = 1 << 16, n = 0, scanned = 0;
	char *buf = malloc(cap);
	double t0 = now_s();
	bool timed_out = false;
	while (buf) {
		double left = timeout_s - (now_s() - t0);
		if (left <= 0) {
			timed_out = true;
			break;
		}
		/* Watching a burst: look at the tap every millisecond. */
		int wait_ms = c->sampling ? 1 : left * 1000 > INT_MAX ? INT_MAX : (int)(left * 1000) + 1;
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		int pr = poll(&pfd, 1, wait_ms);
		if (c->sampling) {
			sample(c);
			if (now_s() - c->t_start > 60)
				c->sampling = false; /* no NET line: no check for it */
		}
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue;
		ssize_t r = read(pipefd[0], buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = 0;
		for (char *nl; (nl = memchr(buf + scanned, '\n', n - scanned)); scanned = (size_t)(nl - buf) + 1) {
			*nl = 0;
			on_line(c, buf + scanned);
			*nl = '\n';
		}
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb)
				free(buf);
			buf = nb;
		}
	}
	close(pipefd[0]);
	c->sampling = false;
	int status;
	if (bench_reap(pid, timed_out || !buf ? 0 : 10000, &status) && !timed_out && buf) {
		fprintf(stderr, "fdvm bench net: %s closed its output but did not exit: killed\n", argv[0]);
		free(buf);
		return -ETIMEDOUT;
	}
	if (!buf)
		return -ENOMEM;
	buf[n] = 0;
	if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (timed_out)
			fprintf(stderr, "fdvm bench net: killed after %u s (the guest hung); it said:\n",
				timeout_s);
		else
			fprintf(stderr, "fdvm bench net: exited with %s %d; it said:\n",
				WIFEXITED(status) ? "status" : "signal",
				WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		fprintf(stderr, "%s\n", n > 4000 ? buf + n - 4000 : buf);
		free(buf);
		return timed_out ? -ETIMEDOUT : -EIO;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* ---- fdvm serve net, for the vhost-user rows ---- */

struct backend {
	pid_t pid;
	int log; /* its output: an unlinked temporary file */
	char dir[64], sock[128];
};

static void backend_dump(const struct backend *b)
{
	char buf[4096];
	ssize_t n;
	fprintf(stderr, "fdvm bench net: fdvm serve net said:\n");
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

/* Starts `fdvm serve net` on a fresh socket; waits (10 s at most) until it listens. */
static int backend_start(struct backend *b, const char *tapspec)
{
	*b = (struct backend){ .pid = -1, .log = -1 };
	snprintf(b->dir, sizeof(b->dir), "/tmp/fdvm-bench-net-XXXXXX");
	if (!mkdtemp(b->dir))
		return -errno;
	snprintf(b->sock, sizeof(b->sock), "%s/net.sock", b->dir);
	char log[128];
	snprintf(log, sizeof(log), "%s/log", b->dir);
	b->log = open(log, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int err = -errno;
	unlink(log);
	if (b->log < 0)
		goto fail;
	pid_t parent = getpid();
	fflush(NULL);
	if ((b->pid = fork()) < 0) {
		err = -errno;
		goto fail;
	}
	if (b->pid == 0) {
		bench_child_init(parent);
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(b->log, 1);
		dup2(b->log, 2);
		const char *argv[] = { "fdvm", "serve", "net", "--socket", b->sock, "--tap", tapspec, "-q", NULL };
		execv("/proc/self/exe", (char *const *)argv);
		_exit(127);
	}
	setpgid(b->pid, b->pid);
	for (unsigned ms = 0; ms < 10000; ms += 10) {
		struct stat st;
		if (!stat(b->sock, &st) && S_ISSOCK(st.st_mode))
			return 0;
		siginfo_t si = { 0 };
		if (waitid(P_PID, (id_t)b->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == b->pid)
			break;
		struct timespec ts = { 0, 10 * 1000000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "fdvm bench net: fdvm serve net did not listen on %s\n", b->sock);
	bench_reap(b->pid, 0, NULL);
	backend_dump(b);
	err = -EIO;
fail:
	backend_cleanup(b);
	return err;
}

/* SIGTERM: it must exit 0 within 10 s, else its group is killed. */
static int backend_stop(struct backend *b, bool frontend_failed)
{
	int status = 0, ret = 0;
	siginfo_t si = { 0 };
	bool gone = waitid(P_PID, (id_t)b->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == b->pid;
	if (!gone)
		kill(b->pid, SIGTERM);
	if (gone || bench_reap(b->pid, gone ? 0 : 10000, &status) || !WIFEXITED(status) ||
	    WEXITSTATUS(status)) {
		fprintf(stderr, "fdvm bench net: fdvm serve net %s\n",
			gone ? "died while the frontend ran" : "did not exit cleanly on SIGTERM");
		ret = -EIO;
	}
	if (ret || frontend_failed)
		backend_dump(b);
	backend_cleanup(b);
	return ret;
}

/* ---- one row ---- */

static void parse(const char *out, double hz, const struct run_ctx *c, struct net_fig *f)
{
	for (const char *p = out; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		char kind[16];
		unsigned rep;
		unsigned long a, b, cc, d, e;
		if (strncmp(p, "NET ", 4))
			continue;
		if (sscanf(p, "NET rtt %u %lu %lu %lu %lu %lu", &rep, &a, &b, &cc, &d, &e) == 6) {
			struct net_fig *x = &f[K_RTT];
			if (!a || x->n == BENCH_MAX_REPS)
				continue;
			x->a[x->n] = (double)cc / hz * 1e6;
			x->b[x->n] = (double)d / hz * 1e6;
			x->lost += e;
			x->n++;
		} else if (sscanf(p, "NET %15s %u %lu %lu %lu", kind, &rep, &a, &b, &cc) == 5) {
			int k = kind_of(kind);
			if (k <= K_RTT || rep >= BENCH_MAX_REPS || !a || !b)
				continue;
			struct net_fig *x = &f[k];
			if (x->n == BENCH_MAX_REPS)
				continue;
			const struct tx_check *t = &c->chk[k][rep];
			x->a[x->n] = (double)a / ((double)b / hz);
			x->b[x->n] = t->done ? t->pps : 0;
			x->completed += a;
			x->lost += cc - a; /* asked for, not completed in time */
			if (t->done) {
				x->tap += t->delta;
				x->drops += (a > t->delta ? a - t->delta : 0) + t->dropped;
			}
			x->n++;
		}
	}
}

struct net_opts {
	const char *guest;
	unsigned rounds, count, poll_us;
	bool poll_set;
	unsigned timeout_s;
};

static int run_row(int r, const struct net_opts *o, const struct net_host *h, double hz,
		   struct net_fig *fig)
{
	char cmdline[256], tapspec[128], netspec[160], vuspec[300], qtap[200], qchardev[200];
	static struct run_ctx ctx;
	struct backend be;
	int ret;
	snprintf(cmdline, sizeof(cmdline), "net reps=%u count=%u rows=net-rtt,net-tx64,net-tx1500",
		 1u, o->count);
	char poll[32] = "";
	if (o->poll_set)
		snprintf(poll, sizeof(poll), ",poll=%u", o->poll_us);
	snprintf(tapspec, sizeof(tapspec), "%s,mac=%s%s", TAP, GUEST_MAC, poll);
	snprintf(netspec, sizeof(netspec), "tap=%s", tapspec);
	snprintf(qtap, sizeof(qtap), "tap,id=n0,ifname=%s,script=no,downscript=no,vhost=off", TAP);
	if (row_vhost_user(r) && (ret = backend_start(&be, tapspec)))
		return ret;
	snprintf(vuspec, sizeof(vuspec), "net,socket=%s,mac=%s", row_vhost_user(r) ? be.sock : "",
		 GUEST_MAC);
	snprintf(qchardev, sizeof(qchardev), "socket,id=c0,path=%s", row_vhost_user(r) ? be.sock : "");

	const char *argv[40];
	unsigned n = 0;
	if (row_on_qemu(r)) {
		static const char *const base[] = {
			"qemu-system-x86_64", "-accel", "kvm", "-cpu", "qemu64", "-m", "128",
			"-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=4",
		};
		for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
			argv[n++] = base[i];
		if (r == R_QEMU_VU) {
			/* The backend maps guest RAM: it must be shareable. */
			argv[n++] = "-object";
			argv[n++] = "memory-backend-memfd,id=mem,size=128M,share=on";
			argv[n++] = "-machine";
			argv[n++] = "memory-backend=mem";
			argv[n++] = "-chardev";
			argv[n++] = qchardev;
			argv[n++] = "-netdev";
			argv[n++] = "vhost-user,id=n0,chardev=c0";
		} else {
			argv[n++] = "-netdev";
			argv[n++] = qtap;
		}
		argv[n++] = "-device";
		argv[n++] = "virtio-net-pci,netdev=n0,disable-legacy=on,mac=" GUEST_MAC;
		argv[n++] = "-kernel";
		argv[n++] = o->guest;
		argv[n++] = "-append";
		argv[n++] = cmdline;
	} else {
		argv[n++] = "fdvm";
		argv[n++] = "run";
		argv[n++] = r == R_FDVM ? "--net" : "--vhost-user";
		argv[n++] = r == R_FDVM ? netspec : vuspec;
		argv[n++] = o->guest;
		argv[n++] = "--";
		argv[n++] = cmdline;
	}
	argv[n] = NULL;

	memset(&ctx, 0, sizeof(ctx));
	ctx.host = h;
	char *out = NULL;
	size_t len = 0;
	ret = run_guest(&ctx, argv, !row_on_qemu(r), o->timeout_s, &out, &len);
	if (row_vhost_user(r)) {
		int bret = backend_stop(&be, ret != 0);
		ret = ret ? ret : bret;
	}
	if (!ret) {
		unsigned before[NK];
		for (int k = 0; k < NK; k++)
			before[k] = fig[k].n;
		parse(out, hz, &ctx, fig);
		for (int k = 0; k < NK; k++)
			if (fig[k].n != before[k] + 1) {
				fprintf(stderr, "fdvm bench net: %s: %u %s figures, not 1; the guest said:\n%s\n",
					row_names[r], fig[k].n - before[k], kind_names[k],
					len > 4000 ? out + len - 4000 : out);
				ret = -EIO;
				break;
			}
	}
	free(out);
	return ret;
}

/* ---- figures ---- */

/* A table row's two ratio cells: median [lowest..highest round], or -. */
static void print_ratios(double per[2][BENCH_MAX_ROUNDS], const bool have[2], unsigned rounds)
{
	for (int i = 0; i < 2; i++) {
		char buf[64] = "-";
		if (have[i])
			bench_fmt_spread(buf, sizeof(buf), bench_spread(per[i], rounds), "%.2fx");
		printf("  %-20s", buf);
	}
	printf("\n");
}

static void usage(void)
{
	printf("usage: fdvm bench net [--rounds N] [--count N] [--poll US] [--json FILE]\n"
	       "                      [--png FILE] [--no-qemu] [--no-vhost-user] [--guest FILE]\n"
	       "The bench guest's virtio-net driver (polling, one queue pair) on four\n"
	       "devices on the same tap, in one run: fdvm's in-process device (fdvm --net),\n"
	       "fdvm's and QEMU's vhost-user frontends on 'fdvm serve net' (this\n"
	       "executable), and QEMU's own virtio-net-pci on its tap netdev (QEMU tap,\n"
	       "vhost=off), each booted once a round (--rounds, default 3), the rows taking\n"
	       "turns in an order that turns each round. Each boot: --count (default 20000, at most 50000) UDP round trips\n"
	       "to an echo on the host (mean, p99), then --count frames to a discard port\n"
	       "at 64-byte frames and at 1500-byte IP packets: packets per second from the\n"
	       "guest's completions and from the tap's rx counter, and frames the tap did\n"
	       "not get (drops); medians over the rounds, ratios taken within each round and\n"
	       "shown as their median [lowest..highest]. --poll: fdvm's devices watch a dry\n"
	       "queue this long before sleeping (default: the device's default).\n"
	       "Needs root: everything runs in a network namespace the benchmark makes\n"
	       "(tap " TAP ", host " HOST_IP ", guest " GUEST_IP ") and that goes with it.\n"
	       "--no-qemu leaves out the QEMU rows, --no-vhost-user the fdvm serve net rows.\n"
	       "--json (default fdvm-bench-net.json) keeps every round; --png (default\n"
	       "fdvm-bench-net.png) charts the round trip and the packet rates with the\n"
	       "rounds' spread as error bars (gnuplot).\n");
}

/* The chart's figures, per row over the rounds: the round trip's mean and
 * p99 (panel 0), the guest's rates at both sizes (panel 1). */
struct net_chart {
	double (*ra)[NK][BENCH_MAX_ROUNDS], (*rb)[NK][BENCH_MAX_ROUNDS];
	unsigned rounds;
	const bool *failed;
};

static struct bench_spread net_chart_value(void *opaque, unsigned panel, unsigned g, unsigned r)
{
	const struct net_chart *c = opaque;
	if (c->failed[r])
		return (struct bench_spread){ 0 };
	if (panel == 0)
		return bench_spread(g ? c->rb[r][K_RTT] : c->ra[r][K_RTT], c->rounds);
	return bench_spread(c->ra[r][g ? K_TX1500 : K_TX64], c->rounds);
}

int fdvm_cmd_bench_net(int argc, char **argv)
{
	struct net_opts o = { .rounds = 3, .count = 20000 };
	const char *json = "fdvm-bench-net.json", *png = "fdvm-bench-net.png";
	int qemu = -1;
	bool vhost_user = true;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage();
			return 0;
		}
		if (!strcmp(a, "--no-qemu")) {
			qemu = 0;
			continue;
		}
		if (!strcmp(a, "--no-vhost-user")) {
			vhost_user = false;
			continue;
		}
		if (!v) {
			fprintf(stderr, "fdvm bench net: %s needs a value\n", a);
			return 2;
		}
		i++;
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		bool num = *v && !*end;
		if (!strcmp(a, "--rounds") && num && n > 0 && n <= BENCH_MAX_ROUNDS)
			o.rounds = (unsigned)n;
		else if (!strcmp(a, "--count") && num && n > 0 && n <= 50000)
			o.count = (unsigned)n;
		else if (!strcmp(a, "--poll") && num && n <= 10000) {
			o.poll_us = (unsigned)n;
			o.poll_set = true;
		} else if (!strcmp(a, "--json"))
			json = v;
		else if (!strcmp(a, "--png"))
			png = v;
		else if (!strcmp(a, "--guest"))
			o.guest = v;
		else {
			fprintf(stderr, "fdvm bench net: bad option %s %s\n", a, v);
			return 2;
		}
	}
	if (!o.guest && !(o.guest = bench_default_guest())) {
		fprintf(stderr, "fdvm bench net: the bench guest was not found beside fdvm (use --guest)\n");
		return 2;
	}
	if (qemu < 0)
		qemu = bench_have_qemu();
	/* Every wait in the guest is bounded (ARP 10 s, each phase 30 s, each
	 * go 10 s): beyond that it hangs, and its VMM is killed. */
	o.timeout_s = 90 + 140;

	if (netns_setup())
		return 2;
	struct net_host host;
	if (host_start(&host)) {
		netns_teardown();
		return 2;
	}

	double hz = bench_tsc_hz();
	static struct net_fig fig[NR][NK];
	memset(fig, 0, sizeof(fig));
	bool failed[NR] = { false }, ran[NR] = { false };
	int status = 0;
	if (!qemu)
		printf("note: QEMU rows skipped (%s)\n", bench_have_qemu() ? "--no-qemu" : "not installed");
	if (!vhost_user)
		printf("note: fdvm serve net rows skipped (--no-vhost-user)\n");
	/* One boot per row and repetition, the rows taking turns: what the
	 * machine does meanwhile falls on every row alike. A row that fails
	 * is reported and left out; the others go on. */
	/* Per round, row and kind: the boot's a and b (NaN: none). */
	static double ra[NR][NK][BENCH_MAX_ROUNDS], rb[NR][NK][BENCH_MAX_ROUNDS];
	unsigned active[NR], na = 0;
	for (int r = 0; r < NR; r++) {
		for (int k = 0; k < NK; k++)
			for (unsigned i = 0; i < o.rounds; i++)
				ra[r][k][i] = rb[r][k][i] = NAN;
		if (!((row_on_qemu(r) && !qemu) || (row_vhost_user(r) && !vhost_user)))
			active[na++] = (unsigned)r;
	}
	for (unsigned rep = 0; rep < o.rounds; rep++) {
		unsigned order[NR];
		bench_order(rep, na, order); /* the order turns a place a round */
		for (unsigned i = 0; i < na; i++) {
			int r = (int)active[order[i]];
			if (failed[r])
				continue;
			fflush(stdout);
			int ret = run_row(r, &o, &host, hz, fig[r]);
			if (ret) {
				fprintf(stderr, "fdvm bench net: %s failed: %s\n", row_names[r], strerror(-ret));
				memset(fig[r], 0, sizeof(fig[r]));
				failed[r] = true;
				ran[r] = false;
				status = 6;
				continue;
			}
			for (int k = 0; k < NK; k++) { /* run_row added exactly one */
				ra[r][k][rep] = fig[r][k].a[fig[r][k].n - 1];
				rb[r][k][rep] = fig[r][k].b[fig[r][k].n - 1];
			}
			ran[r] = true;
		}
	}
	host_stop(&host);
	netns_teardown(); /* every child is gone: nothing has it open */

	/* Medians: m[r][k][0] = a, [1] = b. */
	double m[NR][NK][2];
	for (int r = 0; r < NR; r++)
		for (int k = 0; k < NK; k++) {
			m[r][k][0] = bench_spread(fig[r][k].a, fig[r][k].n).median;
			m[r][k][1] = bench_spread(fig[r][k].b, fig[r][k].n).median;
		}
	/* Ratios against QEMU tap and QEMU + fdvm serve net, taken within each
	 * round: rtt by p99 (the reference's over the row's: above 1, the
	 * row's tail is shorter), tx by the guest's rate (the row's over the
	 * reference's); ratio: their median over the rounds. */
	static const int refs[2] = { R_QEMU_TAP, R_QEMU_VU };
	static double per[NR][NK][2][BENCH_MAX_ROUNDS];
	double ratio[NR][NK][2];
	bool have[NR][NK][2];
	for (int r = 0; r < NR; r++)
		for (int k = 0; k < NK; k++)
			for (int i = 0; i < 2; i++) {
				int ref = refs[i];
				for (unsigned rep = 0; rep < o.rounds; rep++) {
					double x = k == K_RTT ? rb[ref][k][rep] : ra[r][k][rep];
					double y = k == K_RTT ? rb[r][k][rep] : ra[ref][k][rep];
					per[r][k][i][rep] = x > 0 && y > 0 ? x / y : NAN;
				}
				struct bench_spread sp = bench_spread(per[r][k][i], o.rounds);
				have[r][k][i] = r != ref && ran[r] && ran[ref] && sp.n;
				ratio[r][k][i] = have[r][k][i] ? sp.median : 0;
			}

	printf("fdvm bench net: %u round trips and %u frames per size a boot, %u rounds "
	       "(medians; ratios taken within each round, [lowest..highest]); tap %s in a namespace "
	       "of its own, fdvm poll %s\n",
	       o.count, o.count, o.rounds, TAP, o.poll_set ? "set" : "default");
	if (o.poll_set)
		printf("(poll %u us)\n", o.poll_us);
	printf("\n%-26s %10s %10s %8s  %-20s %-20s\n", "UDP round trip", "mean us", "p99 us", "lost",
	       "p99 x tap", "p99 x QEMU+s");
	for (int r = 0; r < NR; r++) {
		if (!ran[r])
			continue;
		printf("%-26s %10.1f %10.1f %8lu", row_names[r], m[r][K_RTT][0], m[r][K_RTT][1],
		       fig[r][K_RTT].lost);
		print_ratios(per[r][K_RTT], have[r][K_RTT], o.rounds);
	}
	static const char *const tx_titles[NK] = { "", "tx, 64-byte frames", "tx, 1500-byte packets" };
	for (int k = K_TX64; k < NK; k++) {
		printf("\n%-26s %10s %10s %8s  %-20s %-20s\n", tx_titles[k], "guest pps", "tap pps", "drops",
		       "pps x tap", "pps x QEMU+s");
		for (int r = 0; r < NR; r++) {
			if (!ran[r])
				continue;
			printf("%-26s %10.0f ", row_names[r], m[r][k][0]);
			if (m[r][k][1] > 0)
				printf("%10.0f", m[r][k][1]);
			else
				printf("%10s", "-");
			printf(" %8lu", fig[r][k].drops + fig[r][k].lost);
			print_ratios(per[r][k], have[r][k], o.rounds);
		}
	}
	printf("\nguest pps: frames over the time from the first send to the last completion;\n"
	       "tap pps: the tap's rx_packets over the time from the host's go to the last\n"
	       "change seen, sampled every ms (\"-\": under 5 ms); drops: frames completed that\n"
	       "the tap did not count (or it dropped), and frames not completed.\n"
	       "x tap / x QEMU+s: against QEMU tap and QEMU + fdvm serve net; pps: the row's over\n"
	       "the reference's, p99: the reference's over the row's (above 1: better).\n");

	FILE *j = fopen(json, "w");
	if (!j)
		fprintf(stderr, "fdvm bench net: %s: %s\n", json, strerror(errno));
	if (j) {
		fprintf(j, "{\n  \"count\": %u,\n  \"rounds\": %u,\n  \"poll_us\": ", o.count, o.rounds);
		if (o.poll_set)
			fprintf(j, "%u", o.poll_us);
		else
			fprintf(j, "null");
		fprintf(j, ",\n  \"rows\": [\n");
		bool first = true;
		for (int r = 0; r < NR; r++)
			for (int k = 0; ran[r] && k < NK; k++) {
				const struct net_fig *f = &fig[r][k];
				fprintf(j, "%s    {\"vmm\": \"%s\", \"test\": \"%s\", ", first ? "" : ",\n",
					row_names[r], kind_names[k]);
				if (k == K_RTT)
					fprintf(j, "\"mean_us\": %.2f, \"p99_us\": %.2f, \"lost\": %lu",
						m[r][k][0], m[r][k][1], f->lost);
				else
					fprintf(j, "\"frame_bytes\": %u, \"guest_pps\": %.0f, \"tap_pps\": %.0f, "
						   "\"completed\": %lu, \"tap_packets\": %lu, \"drops\": %lu",
						k == K_TX64 ? 64 : 1514, m[r][k][0], m[r][k][1], f->completed,
						f->tap, f->drops + f->lost);
				for (int i = 0; i < 2; i++)
					if (have[r][k][i]) {
						const char *key = i ? "x_qemu_vhost_user" : "x_qemu_tap";
						char rkey[40];
						snprintf(rkey, sizeof(rkey), "%s_rounds", key);
						fprintf(j, ", \"%s\": %.3f, ", key, ratio[r][k][i]);
						bench_json_spread(j, rkey, per[r][k][i], o.rounds, "%.4f");
					}
				fprintf(j, "}");
				first = false;
			}
		fprintf(j, "\n  ],\n  \"goals\": [");
	}
	/* The goal: each fdvm row against QEMU's own device. */
	bool gfirst = true;
	for (int r = R_FDVM; r <= R_FDVM_VU; r++) {
		const char *who = r == R_FDVM ? "fdvm" : "fdvm + fdvm serve net";
		if (!ran[r] || !ran[R_QEMU_TAP]) {
			if (r == R_FDVM)
				printf("goal: %s >= 2x QEMU's packet rate and a shorter p99 round trip: not "
				       "measured (%s)\n", who, ran[r] ? "no QEMU tap row" : "no fdvm row");
			continue;
		}
		double x64 = ratio[r][K_TX64][0], x1500 = ratio[r][K_TX1500][0], p99 = ratio[r][K_RTT][0];
		bool met = x64 >= 2 && x1500 >= 2 && p99 > 1;
		printf("goal: %s >= 2x QEMU's packet rate and a shorter p99 round trip: %s "
		       "(tx64 %.2fx, tx1500 %.2fx, p99 %.1f vs %.1f us)\n",
		       who, met ? "met" : "not met", x64, x1500, m[r][K_RTT][1], m[R_QEMU_TAP][K_RTT][1]);
		if (j)
			fprintf(j, "%s\n    {\"vmm\": \"%s\", \"goal\": \">= 2x QEMU tap pps at 64 and 1500, "
				   "shorter p99\", \"tx64_x\": %.3f, \"tx1500_x\": %.3f, \"p99_x\": %.3f, "
				   "\"met\": %s}",
				gfirst ? "" : ",", row_names[r], x64, x1500, p99, met ? "true" : "false");
		gfirst = false;
	}
	for (int r = 0; r < NR; r++)
		if (failed[r])
			printf("FAILED: %s (no figures; see the messages above)\n", row_names[r]);
	if (j) {
		fprintf(j, "%s],\n  \"failed\": [", gfirst ? "" : "\n  ");
		bool ffirst = true;
		for (int r = 0; r < NR; r++)
			if (failed[r]) {
				fprintf(j, "%s\"%s\"", ffirst ? "" : ", ", row_names[r]);
				ffirst = false;
			}
		fprintf(j, "]\n}\n");
		fclose(j);
		printf("figures: %s\n", json);
	}
	static const char *const rtt_groups[2] = { "mean", "p99" };
	static const char *const tx_groups[2] = { "64-byte frames", "1500-byte packets" };
	const struct bench_panel panels[2] = {
		{ "UDP round trip (lower is better)", "us", false, 2, rtt_groups },
		{ "packets the guest sent a second (higher is better)", "packets/s", false, 2, tx_groups },
	};
	struct net_chart c = { .ra = ra, .rb = rb, .rounds = o.rounds, .failed = failed };
	bench_chart(png, "fdvm bench net", o.rounds, NR, row_names, 2, panels, net_chart_value, &c);
	return status;
}
