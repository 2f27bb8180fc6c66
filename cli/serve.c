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
		"\n"
		"Serves IMAGE (a raw disk image) as a vhost-user-blk device on the Unix\n"
		"socket PATH, to one frontend at a time (QEMU's vhost-user-blk-pci, or\n"
		"any vhost-user frontend); when one disconnects the next is served.\n"
		"PATH appears once the daemon accepts connections; a stale socket there is\n"
		"replaced. SIGINT or SIGTERM stop it cleanly: the device stops, PATH is\n"
		"removed, the exit status is 0.\n"
		"\n"
		"  --socket PATH   the socket to listen on\n"
		"  ro              read-only disk\n"
		"  queues=N        request queues, 1..16 (default 1)\n"
		"  poll=US         after a queue runs dry, watch it this many microseconds\n"
		"                  before sleeping on its kick eventfd (default 50; 0: never)\n"
		"  -q, --quiet     errors and warnings only (not connects and disconnects)\n"
		"  -v, --verbose   also every message from the frontend\n"
		"\n"
		"With QEMU (guest RAM must be shareable):\n"
		"  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on \\\n"
		"    -machine memory-backend=mem -chardev socket,id=c,path=PATH \\\n"
		"    -device vhost-user-blk-pci,chardev=c\n"
		"Add ,reconnect=1 to -chardev to survive a restart of this daemon: requests\n"
		"in flight at the crash are resubmitted from the inflight region.\n");
}

static void serve_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "fdvm serve blk: %s%s\n", level == FDVM_LOG_WARN ? "warning: " : "", msg);
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

static int serve_blk(int argc, char **argv)
{
	const char *socket_path = NULL, *spec = NULL;
	struct fdvm_blk_opts b = { 0 };
	enum fdvm_log_level level = FDVM_LOG_INFO;
	char err[256];
	int status = FDVM_EXIT_USAGE, ret;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			serve_usage(stdout);
			return 0;
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			level = FDVM_LOG_WARN;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			level = FDVM_LOG_DEBUG;
		} else if (!strcmp(a, "--socket") || !strncmp(a, "--socket=", 9)) {
			socket_path = a[8] == '=' ? a + 9 : i + 1 < argc ? argv[++i] : NULL;
			if (!socket_path || !*socket_path) {
				fprintf(stderr, "fdvm serve blk: --socket needs a path\n");
				return FDVM_EXIT_USAGE;
			}
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "fdvm serve blk: unknown option %s (try --help)\n", a);
			return FDVM_EXIT_USAGE;
		} else if (spec) {
			fprintf(stderr, "fdvm serve blk: one image only (%s, then %s)\n", spec, a);
			return FDVM_EXIT_USAGE;
		} else {
			spec = a;
		}
	}
	if (!socket_path || !spec) {
		fprintf(stderr, "fdvm serve blk: %s is missing (try --help)\n",
			!socket_path ? "--socket PATH" : "IMAGE");
		return FDVM_EXIT_USAGE;
	}
	if (fdvm_parse_blk(spec, &b, "fdvm serve blk:", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return FDVM_EXIT_USAGE;
	}

	/* Signals arrive through the loop; every thread made later inherits
	 * the mask, so none of them takes a signal meant for shutdown. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct fdvm_virtio_model *model;
	struct fdvm_virtio_blk_config bc = { .path = b.path, .read_only = b.ro,
					     .num_queues = b.queues, .poll_us = b.poll_us };
	if (fdvm_virtio_blk_model_create(&bc, serve_log, NULL, &model))
		goto out_opts;
	struct fdvm_epoll_loop *loop;
	if ((ret = fdvm_epoll_loop_create(&loop))) {
		fprintf(stderr, "fdvm serve blk: event loop: %s\n", strerror(-ret));
		goto out_model;
	}
	status = 6;
	int sfd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, "fdvm serve blk: signalfd: %s\n", strerror(errno));
		goto out_loop;
	}
	struct fdvm_loop *l = fdvm_epoll_loop_handle(loop);
	if ((ret = fdvm_loop_add(l, sfd, EPOLLIN, on_signal, loop))) {
		fprintf(stderr, "fdvm serve blk: watching signals: %s\n", strerror(-ret));
		goto out_sfd;
	}
	struct fdvm_vu_backend *be;
	struct fdvm_vu_backend_config vc = { .model = model, .loop = l, .name = socket_path,
					     .log = serve_log, .log_level = level };
	if ((ret = fdvm_vu_backend_create(&vc, &be))) {
		fprintf(stderr, "fdvm serve blk: vhost-user backend: %s\n", strerror(-ret));
		goto out_sfd;
	}
	served = be;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	int lfd;
	if (fdvm_vu_listen_unix(socket_path, serve_log, NULL, &lfd))
		goto out_be;
	if ((ret = fdvm_vu_backend_listen(be, lfd))) {
		fprintf(stderr, "fdvm serve blk: %s: %s\n", socket_path, strerror(-ret));
		goto out_listen;
	}
	if (level >= FDVM_LOG_INFO)
		fprintf(stderr, "fdvm serve blk: serving %s on %s\n", b.path, socket_path);
	ret = fdvm_epoll_loop_run(loop);
	if (ret)
		fprintf(stderr, "fdvm serve blk: event loop: %s\n", strerror(-ret));
	else
		status = 0;
out_listen:
	unlink(socket_path);
	close(lfd);
out_be:
	signal(SIGBUS, SIG_DFL);
	served = NULL;
	fdvm_vu_backend_destroy(be);
out_sfd:
	close(sfd);
out_loop:
	fdvm_epoll_loop_destroy(loop);
out_model:
	model->destroy(model);
out_opts:
	free(b.path);
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
	fprintf(stderr, "fdvm serve: unknown device '%s' (devices: blk)\n", argv[0]);
	return FDVM_EXIT_USAGE;
}
