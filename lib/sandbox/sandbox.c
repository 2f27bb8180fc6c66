/*
 * The sandbox: compiled filters per role, the spawner that makes fdvm's
 * threads, the SIGSYS report of kill mode and the reporter of log mode.
 *
 * kill: a call outside a thread's list traps (SECCOMP_RET_TRAP); the SIGSYS
 * handler writes one line and ends the process. log: it goes to a listener
 * (SECCOMP_RET_USER_NOTIF) that a reporter thread answers with "continue"
 * after writing a line, once per role and call. The kernel allows one
 * listener per chain of stacked filters, so the spawner's own filter (the
 * union, inherited by every thread it makes) logs to the kernel instead.
 */
#include <errno.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "sandbox_priv.h"

#define NAME_LEN 16
#define SYSNAMES 512

static const char *const role_names[FDVM_ROLE_COUNT] = {
	[FDVM_ROLE_VCPU] = "vcpu", [FDVM_ROLE_DEVICE] = "device",
	[FDVM_ROLE_SERVICE] = "service", [FDVM_ROLE_SERVE] = "serve",
	[FDVM_ROLE_CONTROL] = "control",
};

const char *fdvm_thread_role_name(enum fdvm_thread_role role)
{
	return (unsigned)role < FDVM_ROLE_COUNT ? role_names[role] : NULL;
}

/* Set once by fdvm_sandbox_init, read-only after. */
static _Atomic int sb_mode = FDVM_SECCOMP_OFF;
static atomic_bool sb_inited;
static struct sock_fprog progs[FDVM_ROLE_COUNT];
static struct sock_fprog spawner_prog;	/* log mode: no listener of its own */
static char *sysnames[SYSNAMES];		/* resolved up front: SIGSYS cannot malloc */

/* The calling thread's role (-1: none) and name, for the reports. */
static __thread int tl_role = -1;
static __thread char tl_name[NAME_LEN];

enum fdvm_seccomp_mode fdvm_sandbox_mode(void) { return atomic_load(&sb_mode); }

/* ---- kill mode: the SIGSYS report ---- */

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, long v)
{
	char d[24];
	int n = 0;
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;

	do
		d[n++] = (char)('0' + u % 10);
	while ((u /= 10) && n < 23);
	if (v < 0 && at + 1 < cap)
		buf[at++] = '-';
	while (n && at + 1 < cap)
		buf[at++] = d[--n];
	return at;
}

static size_t put_hex(char *buf, size_t at, size_t cap, uint32_t v)
{
	int shift = 28;

	at = put(buf, at, cap, "0x");
	while (shift > 0 && !(v >> shift))
		shift -= 4;
	for (; shift >= 0 && at + 1 < cap; shift -= 4)
		buf[at++] = "0123456789abcdef"[(v >> shift) & 15];
	return at;
}

/* Async-signal-safe: the thread may have been in malloc when it trapped. */
static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	char buf[320];
	size_t at = 0, cap = sizeof(buf);
	int nr = si->si_syscall;

	(void)sig;
	at = put(buf, at, cap, "fdvm: seccomp: thread \"");
	at = put(buf, at, cap, tl_name);
	at = put(buf, at, cap, "\" (");
	at = put(buf, at, cap, tl_role >= 0 ? role_names[tl_role] : "no role: inherited");
	at = put(buf, at, cap, ") called ");
	at = put(buf, at, cap, nr >= 0 && nr < SYSNAMES && sysnames[nr] ? sysnames[nr] : "?");
	at = put(buf, at, cap, " (system call ");
	at = put_num(buf, at, cap, nr);
	if (nr == SYS_ioctl) {
		/* Allowed ioctls are told apart by request: say which. */
		const ucontext_t *u = uc;
		at = put(buf, at, cap, ", request ");
		at = put_hex(buf, at, cap, (uint32_t)u->uc_mcontext.gregs[REG_RSI]);
	}
	at = put(buf, at, cap, "), which its filter does not allow; stopping "
			       "(--seccomp=log reports and allows)\n");
	if (write(2, buf, at) < 0) {
		/* nothing left to tell it with */
	}
	syscall(SYS_exit_group, FDVM_SANDBOX_EXIT_STATUS);
}

/* ---- log mode: the reporter ---- */

struct listener {
	int fd;
	int role;
	char name[NAME_LEN];
};

static pthread_mutex_t rep_lock = PTHREAD_MUTEX_INITIALIZER;
static struct listener *listeners;	/* rep_lock */
static size_t nlisteners, caplisteners;	/* rep_lock */
static int rep_wake = -1;
/* What was reported, per role: the reporter thread's only. ioctls by
 * request, as the filters tell them apart. */
#define IOCTLS_SEEN 64
static uint8_t reported[FDVM_ROLE_COUNT][SYSNAMES / 8];
static uint32_t ioctls_seen[FDVM_ROLE_COUNT][IOCTLS_SEEN];
static unsigned nioctls_seen[FDVM_ROLE_COUNT];

/* Whether (role, nr, ioctl request) is new; notes it. */
static bool first_report(int role, int nr, uint32_t request)
{
	if (nr == SYS_ioctl) {
		unsigned *n = &nioctls_seen[role];
		for (unsigned i = 0; i < *n; i++)
			if (ioctls_seen[role][i] == request)
				return false;
		if (*n < IOCTLS_SEEN)
			ioctls_seen[role][(*n)++] = request;
		return true;
	}
	if (nr < 0 || nr >= SYSNAMES)
		return true;
	if (reported[role][nr / 8] & (1u << (nr % 8)))
		return false;
	reported[role][nr / 8] |= (uint8_t)(1u << (nr % 8));
	return true;
}

static int add_listener(int fd, int role, const char *name)
{
	uint64_t one = 1;

	pthread_mutex_lock(&rep_lock);
	if (nlisteners == caplisteners) {
		size_t cap = caplisteners ? caplisteners * 2 : 16;
		struct listener *l = realloc(listeners, cap * sizeof(*l));
		if (!l) {
			pthread_mutex_unlock(&rep_lock);
			return -ENOMEM;
		}
		listeners = l;
		caplisteners = cap;
	}
	struct listener *l = &listeners[nlisteners++];
	l->fd = fd;
	l->role = role;
	snprintf(l->name, sizeof(l->name), "%s", name);
	pthread_mutex_unlock(&rep_lock);
	if (write(rep_wake, &one, sizeof(one)) < 0) {
		/* a full counter: a wake is pending anyway */
	}
	return 0;
}

static size_t req_size;	/* the kernel's struct seccomp_notif */

static void answer(const struct listener *l, struct seccomp_notif *req, struct seccomp_notif_resp *resp)
{
	memset(req, 0, req_size); /* the kernel refuses a buffer that is not zeroed */
	if (seccomp_notify_receive(l->fd, req) < 0)
		return; /* the thread is gone, or its call was interrupted */
	int nr = req->data.nr;
	char what[48] = "";
	if (nr == SYS_ioctl)
		snprintf(what, sizeof(what), ", request %#x", (uint32_t)req->data.args[1]);
	if (first_report(l->role, nr, (uint32_t)req->data.args[1]))
		fprintf(stderr,
			"fdvm: seccomp: thread \"%s\" (%s, tid %u) called %s (system call %d%s), "
			"which its filter does not allow; allowed in log mode (reported once per role)\n",
			l->name, role_names[l->role], req->pid,
			nr >= 0 && nr < SYSNAMES && sysnames[nr] ? sysnames[nr] : "?", nr, what);
	memset(resp, 0, sizeof(*resp));
	resp->id = req->id;
	resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
	/* ENOENT: the thread stopped waiting (a signal, or it exited). */
	seccomp_notify_respond(l->fd, resp);
}

static void *reporter_main(void *arg)
{
	struct seccomp_notif *req;
	struct seccomp_notif_resp *resp;
	struct pollfd *pfd = NULL;
	struct listener *snap = NULL;
	size_t cap = 0;

	(void)arg;
	prctl(PR_SET_NAME, "fdvm-seccomp", 0, 0, 0);
	struct seccomp_notif_sizes sz;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz) < 0 ||
	    seccomp_notify_alloc(&req, &resp) < 0) {
		fprintf(stderr, "fdvm: seccomp: log mode reporter: cannot allocate its buffers\n");
		return NULL;
	}
	req_size = sz.seccomp_notif;
	for (;;) {
		pthread_mutex_lock(&rep_lock);
		size_t n = nlisteners;
		if (n + 1 > cap) {
			size_t c = (n + 1) * 2;
			struct pollfd *p = realloc(pfd, c * sizeof(*p));
			struct listener *s = p ? realloc(snap, c * sizeof(*s)) : NULL;
			if (p)
				pfd = p;
			if (s)
				snap = s;
			if (!p || !s) {
				pthread_mutex_unlock(&rep_lock);
				fprintf(stderr, "fdvm: seccomp: log mode reporter: out of memory\n");
				usleep(100000);
				continue;
			}
			cap = c;
		}
		if (n)
			memcpy(snap, listeners, n * sizeof(*snap));
		pthread_mutex_unlock(&rep_lock);
		pfd[0] = (struct pollfd){ .fd = rep_wake, .events = POLLIN };
		for (size_t i = 0; i < n; i++)
			pfd[i + 1] = (struct pollfd){ .fd = snap[i].fd, .events = POLLIN };
		if (poll(pfd, n + 1, -1) < 0)
			continue; /* EINTR */
		if (pfd[0].revents) {
			uint64_t v;
			if (read(rep_wake, &v, sizeof(v)) < 0) {
				/* EAGAIN: drained by an earlier pass */
			}
		}
		for (size_t i = 0; i < n; i++) {
			if (pfd[i + 1].revents & POLLIN)
				answer(&snap[i], req, resp);
			else if (pfd[i + 1].revents & (POLLHUP | POLLERR | POLLNVAL)) {
				/* Every thread of that filter is gone. */
				pthread_mutex_lock(&rep_lock);
				for (size_t k = 0; k < nlisteners; k++)
					if (listeners[k].fd == snap[i].fd) {
						close(listeners[k].fd);
						listeners[k] = listeners[--nlisteners];
						break;
					}
				pthread_mutex_unlock(&rep_lock);
			}
		}
	}
	return NULL;
}

/* ---- confining a thread ---- */

static void unblock_sigsys(void)
{
	sigset_t s;

	sigemptyset(&s);
	sigaddset(&s, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
}

/* Loads prog on the calling thread as role; listener: log mode's. */
static int confine(int role, const struct sock_fprog *prog, bool listener)
{
	if (tl_role == role)
		return 0;
	if (tl_role >= 0)
		return -EBUSY;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (prctl(PR_GET_NAME, tl_name, 0, 0, 0) < 0)
		tl_name[0] = 0;
	unblock_sigsys();
	long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			  listener ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0, prog);
	if (fd < 0)
		return -errno;
	tl_role = role;
	/* From here on, only what the role allows. */
	if (listener && add_listener((int)fd, role, tl_name)) {
		/* No one will answer: its calls outside the list get ENOSYS. */
		close((int)fd);
	}
	return 0;
}

int fdvm_sandbox_enter(enum fdvm_thread_role role, const char *name)
{
	if ((unsigned)role >= FDVM_ROLE_COUNT)
		return -EINVAL;
	if (name && prctl(PR_SET_NAME, name, 0, 0, 0) < 0)
		return -errno;
	int mode = atomic_load(&sb_mode);
	if (mode == FDVM_SECCOMP_OFF)
		return 0;
	return confine(role, &progs[role], mode == FDVM_SECCOMP_LOG);
}

/* ---- making threads ---- */

struct spawn {
	pthread_t *thread;
	int role;
	char name[NAME_LEN];
	void *(*fn)(void *);
	void *arg;
	sigset_t mask;		/* the requester's, which the thread takes */
	int state;		/* 1 running, -errno failed, 0 not yet: sp_lock */
	bool done;		/* sp_lock */
	struct spawn *next;	/* sp_lock */
};

static pthread_mutex_t sp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sp_cond = PTHREAD_COND_INITIALIZER;
static struct spawn *sp_queue;	/* sp_lock */

static void *trampoline(void *p)
{
	struct spawn *s = p;
	void *(*fn)(void *) = s->fn;
	void *arg = s->arg;

	pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
	int ret = s->name[0] && prctl(PR_SET_NAME, s->name, 0, 0, 0) < 0 ? -errno : 0;
	if (!ret)
		ret = fdvm_sandbox_enter(s->role, NULL);
	pthread_mutex_lock(&sp_lock);
	s->state = ret ? ret : 1;
	pthread_cond_broadcast(&sp_cond);
	pthread_mutex_unlock(&sp_lock);
	/* s belongs to the requester again. */
	return ret ? NULL : fn(arg);
}

/* Makes s's thread and waits until it is confined (or failed to be). */
static int start(struct spawn *s)
{
	int ret = pthread_create(s->thread, NULL, trampoline, s);
	if (ret)
		return -ret;
	pthread_mutex_lock(&sp_lock);
	while (!s->state)
		pthread_cond_wait(&sp_cond, &sp_lock);
	ret = s->state < 0 ? s->state : 0;
	pthread_mutex_unlock(&sp_lock);
	if (ret)
		pthread_join(*s->thread, NULL);
	return ret;
}

static void *spawner_main(void *arg)
{
	struct spawn *ready = arg;

	/* Its name first: confine() takes it for the reports. */
	prctl(PR_SET_NAME, "fdvm-spawn", 0, 0, 0);
	int ret = confine(FDVM_ROLE_CONTROL, &spawner_prog, false);
	pthread_mutex_lock(&sp_lock);
	ready->state = ret ? ret : 1;
	pthread_cond_broadcast(&sp_cond);
	pthread_mutex_unlock(&sp_lock);
	if (ret)
		return NULL;
	for (;;) {
		pthread_mutex_lock(&sp_lock);
		while (!sp_queue)
			pthread_cond_wait(&sp_cond, &sp_lock);
		struct spawn *s = sp_queue;
		sp_queue = s->next;
		pthread_mutex_unlock(&sp_lock);
		ret = start(s);
		pthread_mutex_lock(&sp_lock);
		s->state = ret ? ret : 1;
		s->done = true;
		pthread_cond_broadcast(&sp_cond);
		pthread_mutex_unlock(&sp_lock);
	}
	return NULL;
}

int fdvm_thread_create(pthread_t *thread, enum fdvm_thread_role role, const char *name,
		       void *(*fn)(void *), void *arg)
{
	struct spawn s = { .thread = thread, .role = role, .fn = fn, .arg = arg };

	if ((unsigned)role >= FDVM_ROLE_COUNT || !fn)
		return -EINVAL;
	if (name)
		snprintf(s.name, sizeof(s.name), "%s", name);
	pthread_sigmask(SIG_BLOCK, NULL, &s.mask);
	if (atomic_load(&sb_mode) == FDVM_SECCOMP_OFF)
		return start(&s);
	pthread_mutex_lock(&sp_lock);
	struct spawn **tail = &sp_queue;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &s;
	pthread_cond_broadcast(&sp_cond);
	while (!s.done)
		pthread_cond_wait(&sp_cond, &sp_lock);
	pthread_mutex_unlock(&sp_lock);
	return s.state < 0 ? s.state : 0;
}

/* ---- turning it on ---- */

/* A helper thread of the sandbox (it names itself): no signals but the
 * faults. */
static int helper_thread(void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	pthread_t t;

	sigfillset(&all);
	sigdelset(&all, SIGSYS);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	sigdelset(&all, SIGFPE);
	sigdelset(&all, SIGILL);
	sigdelset(&all, SIGABRT);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int ret = -pthread_create(&t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		return ret;
	pthread_detach(t);
	return 0;
}

static void free_progs(void)
{
	for (int r = 0; r < FDVM_ROLE_COUNT; r++) {
		free(progs[r].filter);
		progs[r].filter = NULL;
	}
	free(spawner_prog.filter);
	spawner_prog.filter = NULL;
}

int fdvm_sandbox_init(enum fdvm_seccomp_mode mode)
{
	int ret;

	if (atomic_exchange(&sb_inited, true))
		return -EALREADY;
	if (mode == FDVM_SECCOMP_OFF)
		return 0;
	if (mode != FDVM_SECCOMP_LOG && mode != FDVM_SECCOMP_KILL) {
		ret = -EINVAL;
		goto err;
	}
	for (int nr = 0; nr < SYSNAMES; nr++)
		if (!sysnames[nr])
			sysnames[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	uint32_t deny = mode == FDVM_SECCOMP_KILL ? SCMP_ACT_TRAP : SCMP_ACT_NOTIFY;
	for (int r = 0; r < FDVM_ROLE_COUNT; r++)
		if ((ret = fdvm_sandbox_compile(r, deny, &progs[r])))
			goto err_progs;
	ret = fdvm_sandbox_compile(FDVM_ROLE_CONTROL,
				   mode == FDVM_SECCOMP_KILL ? SCMP_ACT_TRAP : SCMP_ACT_LOG,
				   &spawner_prog);
	if (ret)
		goto err_progs;
	struct sigaction sa = { .sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0) {
		ret = -errno;
		goto err_progs;
	}
	if (mode == FDVM_SECCOMP_LOG) {
		rep_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (rep_wake < 0) {
			ret = -errno;
			goto err_sig;
		}
		if ((ret = helper_thread(reporter_main, NULL)))
			goto err_wake;
	}
	/* From here the mode is on: the spawner confines itself first. */
	atomic_store(&sb_mode, mode);
	struct spawn ready = { 0 };
	if ((ret = helper_thread(spawner_main, &ready)))
		goto err_mode;
	pthread_mutex_lock(&sp_lock);
	while (!ready.state)
		pthread_cond_wait(&sp_cond, &sp_lock);
	pthread_mutex_unlock(&sp_lock);
	if (ready.state < 0) {
		ret = ready.state;
		goto err_mode;
	}
	return 0;

err_mode:
	/* A reporter already running stays (it has nothing to watch). */
	atomic_store(&sb_mode, FDVM_SECCOMP_OFF);
	if (mode == FDVM_SECCOMP_LOG)
		goto err_sig;
err_wake:
	close(rep_wake);
	rep_wake = -1;
err_sig:
	signal(SIGSYS, SIG_DFL);
err_progs:
	free_progs();
err:
	atomic_store(&sb_inited, false);
	return ret;
}
