/*
 * fdvm serve: device servers in a process of their own. A vhost-user
 * frontend (QEMU, or fdvm run --vhost-user) connects to the socket and hands
 * over guest memory and the queues' eventfds; the device model behind it is
 * the one fdvm runs in-process (lib/dev/).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"
#include "fdvm/loop.h"
#include "fdvm/vhost_user.h"
#include "fdvm/virtio.h"
#include "opts.h"

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm serve blk --socket PATH IMAGE[,ro][,queues=N][,poll=US] [-q|-v]\n"
		"       fdvm serve net --socket PATH --tap NAME[,mac=MAC][,queues=N][,poll=US] [-q|-v]\n"
		"\n"
		"Serves a device over vhost-user on the Unix socket PATH, to one frontend\n"
		"at a time (QEMU, or fdvm run --vhost-user); when one disconnects the next\n"
		"is served. PATH appears once the daemon accepts connections; a stale\n"
		"socket there is replaced. SIGINT or SIGTERM stop it cleanly: the device\n"
		"stops, PATH is removed, the exit status is 0.\n"
		"\n"
		"blk: IMAGE (a raw disk image) as a vhost-user-blk device.\n"
		"  ro              read-only disk\n"
		"  queues=N        request queues, 1..16 (default 1)\n"
		"net: the tap NAME as a vhost-user-net device (opened by name; created,\n"
		"  down and without an address, if missing, and gone when the daemon exits).\n"
		"  mac=MAC         the MAC in the device's config space (QEMU uses its own)\n"
		"  queues=N        queue pairs, 1..16, one tap queue each (default 1;\n"
		"                  N > 1 needs a multi_queue tap)\n"
		"both:\n"
		"  --socket PATH   the socket to listen on\n"
		"  poll=US         after a queue runs dry, watch it this many microseconds\n"
		"                  before sleeping on its kick eventfd (default 50; 0: never)\n"
		"  -q, --quiet     errors and warnings only (not connects and disconnects)\n"
		"  -v, --verbose   also every message from the frontend\n"
		"\n"
		"With QEMU (guest RAM must be shareable):\n"
		"  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on \\\n"
		"    -machine memory-backend=mem -chardev socket,id=c,path=PATH \\\n"
		"    -device vhost-user-blk-pci,chardev=c\n"
		"  or, for net: -netdev vhost-user,id=n,chardev=c -device virtio-net-pci,netdev=n\n"
		"Add ,reconnect=1 to -chardev to survive a restart of this daemon (blk:\n"
		"requests in flight at the crash are resubmitted from the inflight region).\n");
}

/* opaque: the device's name ("blk", "net"). */
static void serve_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	fprintf(stderr, "fdvm serve %s: %s%s\n", (const char *)opaque,
		level == FDVM_LOG_WARN ? "warning: " : "", msg);
}

/* A frontend that shrinks a file it shared faults us (SIGBUS) at the next
 * access: the library patches the hole and drops that frontend. */
static struct fdvm_vu_backend *served;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	/* Only a fault the kernel raised has an address to look at. */
	if (si->si_code > 0 && served && fdvm_vu_backend_fault(served, si->si_addr))
		return;
	signal(sig, SIG_DFL); /* not ours: the fault repeats, and kills */
}

static void on_signal(void *opaque, int fd, uint32_t events)
{
	struct signalfd_siginfo si;
	(void)events;
	if (read(fd, &si, sizeof(si)) == sizeof(si))
		fdvm_epoll_loop_stop(opaque);
}

/* What the command line asked for. */
struct serve_args {
	const char *dev;	/* "blk", "net" */
	const char *socket_path;
	const char *spec;	/* blk: IMAGE[,...]; net: --tap NAME[,...] */
	enum fdvm_log_level level;
};

/* Parses the arguments after DEVICE; 0, 1 (help printed), or an exit status. */
static int parse_args(int argc, char **argv, const char *dev, struct serve_args *a)
{
	bool net = !strcmp(dev, "net");
	*a = (struct serve_args){ .dev = dev, .level = FDVM_LOG_INFO };
	for (int i = 0; i < argc; i++) {
		const char *s = argv[i];
		if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
			serve_usage(stdout);
			return 1;
		} else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
			a->level = FDVM_LOG_WARN;
		} else if (!strcmp(s, "-v") || !strcmp(s, "--verbose")) {
			a->level = FDVM_LOG_DEBUG;
		} else if (!strcmp(s, "--socket") || !strncmp(s, "--socket=", 9) ||
			   (net && (!strcmp(s, "--tap") || !strncmp(s, "--tap=", 6)))) {
			bool sock = s[2] == 's';
			size_t n = sock ? 8 : 5;
			const char *v = s[n] == '=' ? s + n + 1 : i + 1 < argc ? argv[++i] : NULL;
			if (!v || !*v) {
				fprintf(stderr, "fdvm serve %s: %s needs a value\n", dev, sock ? "--socket" : "--tap");
				return FDVM_EXIT_USAGE;
			}
			if (!sock && a->spec) {
				fprintf(stderr, "fdvm serve net: one tap only (%s, then %s)\n", a->spec, v);
				return FDVM_EXIT_USAGE;
			}
			*(sock ? &a->socket_path : &a->spec) = v;
		} else if (s[0] == '-' && s[1]) {
			fprintf(stderr, "fdvm serve %s: unknown option %s (try --help)\n", dev, s);
			return FDVM_EXIT_USAGE;
		} else if (net) {
			fprintf(stderr, "fdvm serve net: unexpected argument %s (the tap is --tap NAME)\n", s);
			return FDVM_EXIT_USAGE;
		} else if (a->spec) {
			fprintf(stderr, "fdvm serve blk: one image only (%s, then %s)\n", a->spec, s);
			return FDVM_EXIT_USAGE;
		} else {
			a->spec = s;
		}
	}
	if (!a->socket_path || !a->spec) {
		fprintf(stderr, "fdvm serve %s: %s is missing (try --help)\n", dev,
			!a->socket_path ? "--socket PATH" : net ? "--tap NAME" : "IMAGE");
		return FDVM_EXIT_USAGE;
	}
	return 0;
}

/* Serves model on the socket until SIGINT or SIGTERM; the exit status. */
static int serve_model(const struct serve_args *a, struct fdvm_virtio_model *model,
		       const char *what)
{
	const char *dev = a->dev;
	int status = 6, ret;

	struct fdvm_epoll_loop *loop;
	if ((ret = fdvm_epoll_loop_create(&loop))) {
		fprintf(stderr, "fdvm serve %s: event loop: %s\n", dev, strerror(-ret));
		return status;
	}
	sigset_t sigs;
	pthread_sigmask(SIG_BLOCK, NULL, &sigs);
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "fdvm serve %s: signalfd: %s\n", dev, strerror(errno));
		goto out_loop;
	}
	struct fdvm_loop *l = fdvm_epoll_loop_handle(loop);
	if ((ret = fdvm_loop_add(l, sfd, EPOLLIN, on_signal, loop))) {
		fprintf(stderr, "fdvm serve %s: watching signals: %s\n", dev, strerror(-ret));
		goto out_sfd;
	}
	struct fdvm_vu_backend *be;
	struct fdvm_vu_backend_config vc = { .model = model, .loop = l, .name = a->socket_path,
					     .log = serve_log, .log_opaque = (void *)dev,
					     .log_level = a->level };
	if ((ret = fdvm_vu_backend_create(&vc, &be))) {
		fprintf(stderr, "fdvm serve %s: vhost-user backend: %s\n", dev, strerror(-ret));
		goto out_sfd;
	}
	served = be;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	int lfd;
	if (fdvm_vu_listen_unix(a->socket_path, serve_log, (void *)dev, &lfd))
		goto out_be;
	if ((ret = fdvm_vu_backend_listen(be, lfd))) {
		fprintf(stderr, "fdvm serve %s: %s: %s\n", dev, a->socket_path, strerror(-ret));
		goto out_listen;
	}
	if (a->level >= FDVM_LOG_INFO)
		fprintf(stderr, "fdvm serve %s: serving %s on %s\n", dev, what, a->socket_path);
	ret = fdvm_epoll_loop_run(loop);
	if (ret)
		fprintf(stderr, "fdvm serve %s: event loop: %s\n", dev, strerror(-ret));
	else
		status = 0;
out_listen:
	unlink(a->socket_path);
	close(lfd);
out_be:
	signal(SIGBUS, SIG_DFL);
	served = NULL;
	fdvm_vu_backend_destroy(be);
out_sfd:
	close(sfd);
out_loop:
	fdvm_epoll_loop_destroy(loop);
	return status;
}

/* Signals arrive through the loop's signalfd; every thread made later
 * (device threads) inherits the mask, so none takes a shutdown signal. */
static void block_signals(void)
{
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int serve_blk(int argc, char **argv)
{
	struct serve_args a;
	struct fdvm_blk_opts b;
	struct fdvm_virtio_model *model;
	char err[256];
	int r = parse_args(argc, argv, "blk", &a);

	if (r)
		return r == 1 ? 0 : r;
	if (fdvm_parse_blk(a.spec, &b, "fdvm serve blk:", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return FDVM_EXIT_USAGE;
	}
	block_signals();
	struct fdvm_virtio_blk_config bc = { .path = b.path, .read_only = b.ro,
					     .num_queues = b.queues, .poll_us = b.poll_us };
	int status = FDVM_EXIT_USAGE;
	if (!fdvm_virtio_blk_model_create(&bc, serve_log, (void *)"blk", &model)) {
		status = serve_model(&a, model, b.path);
		model->destroy(model);
	}
	free(b.path);
	return status;
}

static int serve_net(int argc, char **argv)
{
	struct serve_args a;
	struct fdvm_net_opts n;
	struct fdvm_virtio_model *model;
	char err[256];
	int r = parse_args(argc, argv, "net", &a);

	if (r)
		return r == 1 ? 0 : r;
	if (fdvm_parse_net(a.spec, &n, true, "fdvm serve net: --tap", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return FDVM_EXIT_USAGE;
	}
	block_signals();
	struct fdvm_virtio_net_config nc = { .tap = n.tap, .mac_set = n.mac_set,
					     .num_pairs = n.queues, .poll_us = n.poll_us };
	memcpy(nc.mac, n.mac, 6);
	int status = FDVM_EXIT_USAGE;
	if (!fdvm_virtio_net_model_create(&nc, serve_log, (void *)"net", &model)) {
		char what[64];
		snprintf(what, sizeof(what), "tap %s", n.tap);
		status = serve_model(&a, model, what);
		model->destroy(model);
	}
	free(n.tap);
	return status;
}

int fdvm_cmd_serve(int argc, char **argv)
{
	if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
		serve_usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? FDVM_EXIT_USAGE : 0;
	}
	if (!strcmp(argv[0], "blk"))
		return serve_blk(argc - 1, argv + 1);
	if (!strcmp(argv[0], "net"))
		return serve_net(argc - 1, argv + 1);
	fprintf(stderr, "fdvm serve: unknown device '%s' (devices: blk, net)\n", argv[0]);
	return FDVM_EXIT_USAGE;
}
