/*
 * fdvm serve: device servers in a process of their own. A vhost-user
 * frontend (QEMU, or fdvm run --vhost-user) connects to the socket and hands
 * over guest memory and the queues' eventfds; the device model behind it is
 * the one fdvm runs in-process (lib/dev/).
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "fdvm/loop.h"
#include "fdvm/vhost_user.h"
#include "fdvm/virtio.h"
#include "opts.h"

static void serve_usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm serve blk --socket PATH IMAGE[,ro][,queues=N][,poll=US][,lock=on|off]\n"
		"                      [,discard=on|off][,cache=writeback|none] [-q|-v]\n"
		"       fdvm serve net --socket PATH --tap NAME[,mac=MAC][,queues=N][,poll=US] [-q|-v]\n"
		"       either with [--user NAME|UID] [--group NAME|GID] [--seccomp MODE]\n"
		"\n"
		"Serves a device over vhost-user on the Unix socket PATH, to one frontend\n"
		"at a time (QEMU, or fdvm run --vhost-user); when one disconnects the next\n"
		"is served. PATH appears once the daemon accepts connections; a stale\n"
		"socket there is replaced. SIGINT or SIGTERM stop it cleanly: the device\n"
		"stops, PATH is removed, the exit status is 0.\n"
		"\n"
		"blk: IMAGE (a raw disk image or a block device; ,, for a comma in its name)\n"
		"  as a vhost-user-blk device.\n"
		"  ro              read-only disk\n"
		"  lock=on|off     lock the image as QEMU does (default on: a writer alone,\n"
		"                  readers together)\n"
		"  discard=on|off  offer discard and write-zeroes (default on, not with ro)\n"
		"  cache=none      O_DIRECT, around the host's page cache (default writeback)\n"
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
		"  --user NAME|UID once the image or tap and the socket are open, run as\n"
		"                  this user: its groups (none for a UID without a passwd\n"
		"                  entry), its primary group unless --group says otherwise;\n"
		"                  PATH is given to it, so that it can remove PATH at exit\n"
		"                  where the directory allows (a sticky /tmp does)\n"
		"  --group NAME|GID  the group to run as; with --group alone, no\n"
		"                  supplementary groups and the same user\n"
		"  --api-socket PATH  a control socket (JSON, as fdvm run's): status, and\n"
		"                  the rings' counters (fdvm stat PATH); removed at exit\n"
		"  --seccomp MODE  system call filters for the daemon's threads, on\n"
		"                  once the files are open: kill (default: a call outside\n"
		"                  a thread's list ends the daemon with a line naming the\n"
		"                  thread and the call, exit 10), log (report it once,\n"
		"                  allow it), or off\n"
		"A drop that does not take is an error exit, never a daemon left running\n"
		"as root. Always: file descriptors inherited above 2 are closed at start,\n"
		"and no_new_privs is set (nothing it could execute gains privileges).\n"
		"\n"
		"With QEMU (guest RAM must be shareable):\n"
		"  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on \\\n"
		"    -machine memory-backend=mem -chardev socket,id=c,path=PATH \\\n"
		"    -device vhost-user-blk-pci,chardev=c\n"
		"  or, for net: -netdev vhost-user,id=n,chardev=c -device virtio-net-pci,netdev=n\n"
		"Add ,reconnect=1 to -chardev to survive a restart of this daemon (blk:\n"
		"requests in flight at the crash are resubmitted from the inflight region).\n");
}

/* -q, -v: what serve_log prints (the backend library filters its own by
 * its config; the device models leave it to their log function). */
static enum fdvm_log_level serve_level = FDVM_LOG_INFO;

/* opaque: the device's name ("blk", "net"). */
static void serve_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	if (level > serve_level)
		return;
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

/* Who the daemon becomes once the model and the socket exist. */
struct serve_privs {
	bool set_uid, set_gid;
	uid_t uid;
	gid_t gid;
	gid_t groups[NGROUPS_MAX]; /* supplementary groups to take */
	int ngroups;
};

/* What the command line asked for. */
struct serve_args {
	const char *dev;	/* "blk", "net" */
	const char *socket_path;
	const char *spec;	/* blk: IMAGE[,...]; net: --tap NAME[,...] */
	enum fdvm_log_level level;
	const char *user, *group; /* --user, --group as given */
	struct serve_privs privs;
	enum fdvm_seccomp_mode seccomp;
	const char *api_socket;	/* --api-socket PATH, or NULL */
};

/* A whole decimal number below max, or false. */
static bool parse_id(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || errno || v >= max || s[0] == '-' || s[0] == '+' || s[0] == ' ')
		return false;
	*out = v;
	return true;
}

/* Turns --user and --group into IDs and groups; 0 or a usage error. */
static int resolve_privs(struct serve_args *a)
{
	struct serve_privs *p = &a->privs;
	const struct passwd *pw = NULL;
	unsigned long id;

	if (a->group) {
		const struct group *gr = getgrnam(a->group);
		if (gr)
			p->gid = gr->gr_gid;
		else if (parse_id(a->group, (gid_t)-1, &id))
			p->gid = (gid_t)id;
		else {
			fprintf(stderr, "fdvm serve %s: --group %s: no such group\n", a->dev, a->group);
			return FDVM_EXIT_USAGE;
		}
		p->set_gid = true;
	}
	if (!a->user)
		return 0; /* --group alone: no supplementary groups (ngroups 0) */
	pw = getpwnam(a->user);
	if (!pw && parse_id(a->user, (uid_t)-1, &id)) {
		pw = getpwuid((uid_t)id);
		p->uid = (uid_t)id;
	} else if (!pw) {
		fprintf(stderr, "fdvm serve %s: --user %s: no such user\n", a->dev, a->user);
		return FDVM_EXIT_USAGE;
	}
	p->set_uid = true;
	if (!pw) {
		if (!p->set_gid) {
			fprintf(stderr, "fdvm serve %s: --user %s has no passwd entry: give --group too\n",
				a->dev, a->user);
			return FDVM_EXIT_USAGE;
		}
		return 0;
	}
	p->uid = pw->pw_uid;
	if (!p->set_gid) {
		p->gid = pw->pw_gid;
		p->set_gid = true;
	}
	p->ngroups = NGROUPS_MAX;
	if (getgrouplist(pw->pw_name, p->gid, p->groups, &p->ngroups) < 0) {
		fprintf(stderr, "fdvm serve %s: --user %s: more than %d groups\n", a->dev, a->user,
			NGROUPS_MAX);
		return FDVM_EXIT_USAGE;
	}
	return 0;
}

/*
 * Becomes the user and group asked for, and checks that it took: any real,
 * effective or saved ID left behind, or a way back to root, is an error
 * (the caller exits: never running on with more than was asked for).
 * PATH goes to the new owner first, so that it can remove it at exit.
 */
static int drop_privs(const char *dev, const struct serve_privs *p, const char *path)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	gid_t now[NGROUPS_MAX];

	if (!p->set_uid && !p->set_gid)
		return 0;
	if (chown(path, p->set_uid ? p->uid : (uid_t)-1, p->gid) < 0) {
		fprintf(stderr, "fdvm serve %s: chown %s: %s\n", dev, path, strerror(errno));
		return -1;
	}
	if (setgroups((size_t)p->ngroups, p->groups) < 0 || setgid(p->gid) < 0 ||
	    (p->set_uid && setuid(p->uid) < 0)) {
		fprintf(stderr, "fdvm serve %s: dropping privileges: %s\n", dev, strerror(errno));
		return -1;
	}
	int n = getgroups(NGROUPS_MAX, now);
	bool ok = getresgid(&rg, &eg, &sg) == 0 && rg == p->gid && eg == p->gid && sg == p->gid &&
		  n == p->ngroups && !memcmp(now, p->groups, (size_t)n * sizeof(*now));
	if (p->set_uid)
		ok = ok && getresuid(&ru, &eu, &su) == 0 && ru == p->uid && eu == p->uid &&
		     su == p->uid && (p->uid == 0 || setuid(0) < 0);
	if (!ok) {
		fprintf(stderr, "fdvm serve %s: dropping privileges did not take\n", dev);
		return -1;
	}
	return 0;
}

/* Parses the arguments after DEVICE; 0, 1 (help printed), or an exit status. */
static int parse_args(int argc, char **argv, const char *dev, struct serve_args *a)
{
	bool net = !strcmp(dev, "net");
	*a = (struct serve_args){ .dev = dev, .level = FDVM_LOG_INFO, .seccomp = FDVM_SECCOMP_KILL };
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
		} else if (!strcmp(s, "--user") || !strncmp(s, "--user=", 7) ||
			   !strcmp(s, "--group") || !strncmp(s, "--group=", 8)) {
			bool user = s[2] == 'u';
			size_t n = user ? 6 : 7;
			const char *v = s[n] == '=' ? s + n + 1 : i + 1 < argc ? argv[++i] : NULL;
			if (!v || !*v) {
				fprintf(stderr, "fdvm serve %s: %s needs a value\n", dev, user ? "--user" : "--group");
				return FDVM_EXIT_USAGE;
			}
			*(user ? &a->user : &a->group) = v;
		} else if (!strcmp(s, "--api-socket") || !strncmp(s, "--api-socket=", 13)) {
			const char *v = s[12] == '=' ? s + 13 : i + 1 < argc ? argv[++i] : NULL;
			if (!v || !*v) {
				fprintf(stderr, "fdvm serve %s: --api-socket needs a path\n", dev);
				return FDVM_EXIT_USAGE;
			}
			if (a->api_socket) {
				fprintf(stderr, "fdvm serve %s: --api-socket given twice\n", dev);
				return FDVM_EXIT_USAGE;
			}
			a->api_socket = v;
		} else if (!strcmp(s, "--seccomp") || !strncmp(s, "--seccomp=", 10)) {
			const char *v = s[9] == '=' ? s + 10 : i + 1 < argc ? argv[++i] : NULL;
			if (!v) {
				fprintf(stderr, "fdvm serve %s: --seccomp needs a value\n", dev);
				return FDVM_EXIT_USAGE;
			}
			if (fdvm_parse_seccomp(v, &a->seccomp)) {
				fprintf(stderr, "fdvm serve %s: --seccomp %s: expected off, log or kill\n",
					dev, v);
				return FDVM_EXIT_USAGE;
			}
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
	return resolve_privs(a);
}

/* The control socket's view of the daemon (--api-socket). */
struct serve_ctl {
	const struct serve_args *a;
	struct fdvm_vu_backend *be;
	const char *name;	/* the model's ("virtio-blk") */
};

/* The commands of fdvm serve's control socket (api.h), on the loop. */
static json_t *serve_api(void *opaque, const char *cmd, json_t *args, const char **cls, char *err,
			 size_t errlen)
{
	struct serve_ctl *c = opaque;

	(void)args;
	if (!strcmp(cmd, "status"))
		return json_pack("{s:s,s:s,s:s,s:b}", "state", "serving", "device", c->name,
				 "socket", c->a->socket_path, "connected",
				 fdvm_vu_backend_connected(c->be));
	if (!strcmp(cmd, "counters")) {
		struct fdvm_virtio_queue_stats q[FDVM_VIRTIO_MAX_QUEUES];
		unsigned n = fdvm_vu_backend_stats(c->be, q, FDVM_VIRTIO_MAX_QUEUES);
		json_t *qs = json_array();
		for (unsigned i = 0; i < n && i < FDVM_VIRTIO_MAX_QUEUES; i++)
			json_array_append_new(qs, api_queue_json(&q[i]));
		return api_counters(json_pack("[{s:s,s:s,s:b,s:o,s:[]}]", "name", c->name, "backend",
					      "vhost-user", "connected",
					      fdvm_vu_backend_connected(c->be), "queues", qs,
					      "vectors"));
	}
	*cls = "CommandNotFound";
	snprintf(err, errlen, "unknown command '%s' (status, counters)", cmd);
	return NULL;
}

/* Serves model on the socket until SIGINT or SIGTERM; the exit status. */
static int serve_model(const struct serve_args *a, struct fdvm_virtio_model *model,
		       const char *what)
{
	const char *dev = a->dev;
	int status = 6, ret;

	struct api *api = NULL;
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
	struct serve_ctl ctl = { .a = a, .be = be, .name = model->ops->name };
	if (a->api_socket && api_create(a->api_socket, l, serve_api, &ctl, &api))
		goto out_listen;
	/* Everything that needs privilege is open: the image or tap, the socket. */
	if (drop_privs(dev, &a->privs, a->socket_path))
		goto out_listen;
	/* After the drop (glibc's setuid reaches every thread, and the
	 * spawner's filter has no setuid), before the first frontend: device
	 * threads start only when one connects. */
	if ((ret = fdvm_sandbox_init(a->seccomp)) ||
	    (ret = fdvm_sandbox_enter(FDVM_ROLE_SERVE, NULL))) {
		fprintf(stderr, "fdvm serve %s: --seccomp: cannot set up the filters: %s\n", dev,
			strerror(-ret));
		goto out_listen;
	}
	if (a->level >= FDVM_LOG_INFO)
		fprintf(stderr, "fdvm serve %s: serving %s on %s%s%s\n", dev, what, a->socket_path,
			a->user ? " as user " : a->group ? " as group " : "",
			a->user ? a->user : a->group ? a->group : "");
	ret = fdvm_epoll_loop_run(loop);
	if (ret)
		fprintf(stderr, "fdvm serve %s: event loop: %s\n", dev, strerror(-ret));
	else
		status = 0;
out_listen:
	api_destroy(api, true);
	/* After a drop, the directory may not let the new user remove it. */
	if (unlink(a->socket_path) < 0 && errno != ENOENT)
		fprintf(stderr, "fdvm serve %s: warning: cannot remove %s: %s\n", dev,
			a->socket_path, strerror(errno));
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
	serve_level = a.level;
	if (fdvm_parse_blk(a.spec, &b, "fdvm serve blk:", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return FDVM_EXIT_USAGE;
	}
	block_signals();
	struct fdvm_virtio_blk_config bc = fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO);
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
	serve_level = a.level;
	if (fdvm_parse_net(a.spec, &n, true, "fdvm serve net: --tap", err, sizeof(err))) {
		fprintf(stderr, "%s\n", err);
		return FDVM_EXIT_USAGE;
	}
	block_signals();
	struct fdvm_virtio_net_config nc = fdvm_net_opts_config(&n, FDVM_DOORBELL_AUTO);
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

/* Closes every fd above 2 the caller left open: the daemon holds only
 * what it opens itself. Falls back to /proc/self/fd without close_range. */
static void close_inherited(void)
{
	if (close_range(3, ~0u, 0) == 0)
		return;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (fd > 2 && fd != dirfd(d))
			close(fd);
	}
	closedir(d);
}

int fdvm_cmd_serve(int argc, char **argv)
{
	close_inherited();
	/* Nothing it might execute gains privileges; a drop below keeps it so. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		fprintf(stderr, "fdvm serve: prctl PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
		return 6;
	}
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
