/*
 * What each thread role may call, and the filter compiled from it.
 *
 * The lists were found by running the test suite and the benchmarks in
 * log mode (fdvm run --seccomp=log) and then cut back to what the code
 * below each role needs; a call missing here fails a test in the default
 * kill mode. Argument checks: ioctl by request number (the KVM and tun
 * numbers each role issues), socket by family, clone only for threads
 * (and clone3, whose flags a filter cannot read, answered ENOSYS so that
 * glibc falls back to clone).
 */
#include <errno.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sandbox_priv.h"

struct rule {
	int nr;
	int arg;		/* -1: any arguments */
	uint64_t mask, val;	/* (argument & mask) == val */
};

#define ANY(name) { SCMP_SYS(name), -1, 0, 0 }
#define IOCTL(req) { SCMP_SYS(ioctl), 1, 0xffffffffu, (uint32_t)(req) }
#define END { -1, -1, 0, 0 }

/* Every thread: memory, locks, its own signals, time, stdio on open fds,
 * the fd-watch loop, exit. */
static const struct rule common[] = {
	ANY(read), ANY(write), ANY(readv), ANY(writev), ANY(close),
	ANY(futex), ANY(mmap), ANY(munmap), ANY(mremap), ANY(madvise), ANY(mprotect), ANY(brk),
	ANY(rt_sigreturn), ANY(rt_sigprocmask), ANY(sigaltstack), ANY(restart_syscall),
	ANY(exit), ANY(exit_group), ANY(gettid), ANY(getpid), ANY(tgkill), ANY(sched_yield),
	ANY(clock_gettime), ANY(clock_nanosleep), ANY(nanosleep),
	ANY(fstat), ANY(newfstatat), ANY(lseek), ANY(fcntl),
	ANY(poll), ANY(ppoll), ANY(epoll_wait), ANY(epoll_pwait), ANY(epoll_ctl),
	IOCTL(TCGETS), /* stdio asks whether stdout is a terminal */
	END
};

/* KVM_RUN and what exit handlers do: registers for reports, doorbells and
 * interrupt lines a driver sets up (ioeventfd, irqfd, routes, eventfds),
 * BAR moves. No files, sockets, processes or KVM objects. */
static const struct rule vcpu[] = {
	IOCTL(KVM_RUN), IOCTL(KVM_GET_REGS), IOCTL(KVM_SET_REGS), IOCTL(KVM_GET_SREGS),
	IOCTL(KVM_SET_SREGS), IOCTL(KVM_IOEVENTFD), IOCTL(KVM_IRQFD),
	IOCTL(KVM_SET_GSI_ROUTING), IOCTL(KVM_SIGNAL_MSI), IOCTL(KVM_IRQ_LINE),
	IOCTL(KVM_IRQ_LINE_STATUS), IOCTL(KVM_SET_USER_MEMORY_REGION),
	ANY(timerfd_settime),
	/* Behind fdvm's vhost-user frontend a driver's steps become messages
	 * on the open connection; the kick handler a userspace level line
	 * installs when the first is made. */
	ANY(sendmsg), ANY(recvmsg), ANY(rt_sigaction),
	END
};

/* Starting and stopping a device model, which happens on the thread that
 * delivers the step (a vCPU's DRIVER_OK, a daemon's SET_VRING_KICK): its
 * loop's epoll set, the tap's queues and offloads, eventfds made or
 * checked (an fd's /proc/self/fd link says whether it is an eventfd). */
static const struct rule model_ctl[] = {
	ANY(epoll_create1), ANY(eventfd2), ANY(readlink),
	/* virtio-blk's io_uring: made at start, drained at stop. */
	ANY(io_uring_setup), ANY(io_uring_register), ANY(io_uring_enter),
	IOCTL(TUNSETQUEUE), IOCTL(TUNSETVNETHDRSZ), IOCTL(TUNSETOFFLOAD),
	END
};

/* Rings and what backs them: the image (positioned I/O, flush, punching),
 * the tap (its queue switch and offloads), entropy. */
static const struct rule device[] = {
	ANY(pread64), ANY(pwrite64), ANY(preadv), ANY(pwritev), ANY(preadv2), ANY(pwritev2),
	ANY(fsync), ANY(fdatasync), ANY(fallocate), ANY(getrandom),
	ANY(io_uring_enter), /* virtio-blk's io_uring: submissions and completions */
	IOCTL(TUNSETQUEUE), IOCTL(TUNSETVNETHDRSZ), IOCTL(TUNSETOFFLOAD),
	END
};

/* fdvm's loops: the userspace interrupt fallbacks (inject, pulse timer) and
 * the vhost-user frontend, which reconnects over a Unix socket. */
static const struct rule service[] = {
	IOCTL(KVM_SIGNAL_MSI), IOCTL(KVM_IRQ_LINE), IOCTL(KVM_IRQ_LINE_STATUS),
	IOCTL(KVM_IRQFD), IOCTL(KVM_SET_GSI_ROUTING),
	IOCTL(KVM_GET_IRQCHIP), /* a level line's Remote IRR, read by the pulse timer */
	ANY(timerfd_settime), ANY(timerfd_gettime), ANY(eventfd2),
	{ SCMP_SYS(socket), 0, 0xffffffffu, AF_UNIX }, ANY(connect),
	ANY(sendmsg), ANY(recvmsg), ANY(setsockopt), ANY(getsockopt), ANY(shutdown),
	END
};

/* A backend daemon after its socket, image or tap are open: connections
 * on the listening socket, guest memory and ring eventfds passed over
 * them, the inflight region it makes, removing its socket at the end. */
static const struct rule serve[] = {
	ANY(accept4), ANY(sendmsg), ANY(recvmsg), ANY(setsockopt), ANY(getsockopt),
	ANY(shutdown), ANY(memfd_create), ANY(ftruncate), ANY(fallocate), ANY(unlink),
	ANY(unlinkat), ANY(rt_sigaction),
	END
};

/* The spawner's own needs beyond the union: starting threads. */
static const struct rule control[] = {
	{ SCMP_SYS(clone), 0, CLONE_THREAD, CLONE_THREAD },
	ANY(set_robust_list), ANY(rseq), ANY(prctl), ANY(seccomp), ANY(sched_getaffinity),
	ANY(prlimit64), ANY(getrlimit),
	IOCTL(TCSETS), /* fdvm run puts the terminal's settings back */
	END
};

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

#ifdef SANITIZED
/* An AddressSanitizer build only: the runtime is part of the process.
 * LeakSanitizer's check at exit runs a tracer (a clone without
 * CLONE_THREAD, which inherits the exiting thread's filter) that
 * ptrace-stops the threads and lists /proc/self/task; a report reads
 * the binaries to symbolize its stacks. A release build has none of it. */
static const struct rule sanitizer[] = {
	ANY(clone), ANY(ptrace), ANY(wait4), ANY(prctl), ANY(getppid), ANY(kill),
	ANY(open), ANY(openat), ANY(getdents), ANY(getdents64), ANY(readlink), ANY(rt_sigaction),
	ANY(sched_getaffinity),
	END
};
#else
static const struct rule sanitizer[] = { END };
#endif

static const struct rule *const lists[FDVM_ROLE_COUNT][4] = {
	[FDVM_ROLE_VCPU] = { common, sanitizer, vcpu, model_ctl },
	[FDVM_ROLE_DEVICE] = { common, sanitizer, device },
	[FDVM_ROLE_SERVICE] = { common, sanitizer, service },
	[FDVM_ROLE_SERVE] = { common, sanitizer, serve, model_ctl },
	[FDVM_ROLE_CONTROL] = { control },
};

static bool same(const struct rule *a, const struct rule *b)
{
	return a->nr == b->nr && a->arg == b->arg && a->mask == b->mask && a->val == b->val;
}

/* The roles whose rules role's filter holds: itself, or all for control. */
static bool includes(enum fdvm_thread_role role, enum fdvm_thread_role r)
{
	return role == r || role == FDVM_ROLE_CONTROL;
}

/* Whether a rule with no argument check for nr is in role's filter. */
static bool any_args(enum fdvm_thread_role role, int nr)
{
	for (int r = 0; r < FDVM_ROLE_COUNT; r++)
		for (int l = 0; includes(role, r) && l < 4 && lists[r][l]; l++)
			for (const struct rule *x = lists[r][l]; x->nr >= 0; x++)
				if (x->nr == nr && x->arg < 0)
					return true;
	return false;
}

/* Whether an identical rule was added before (r, l, x) in the same walk. */
static bool seen(enum fdvm_thread_role role, const struct rule *rule, int rr, int ll,
		 const struct rule *at)
{
	for (int r = 0; r <= rr; r++)
		for (int l = 0; includes(role, r) && l < 4 && lists[r][l]; l++)
			for (const struct rule *x = lists[r][l]; x->nr >= 0; x++) {
				if (r == rr && l == ll && x == at)
					return false;
				if (same(x, rule))
					return true;
			}
	return false;
}

static int add_rules(scmp_filter_ctx ctx, enum fdvm_thread_role role)
{
	for (int r = 0; r < FDVM_ROLE_COUNT; r++)
		for (int l = 0; includes(role, r) && l < 4 && lists[r][l]; l++)
			for (const struct rule *x = lists[r][l]; x->nr >= 0; x++) {
				int ret;
				if (seen(role, x, r, l, x))
					continue;
				if (x->arg < 0)
					ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, x->nr, 0);
				else if (any_args(role, x->nr))
					continue; /* allowed whole by another list */
				else
					ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, x->nr, 1,
							       SCMP_CMP64((unsigned)x->arg, SCMP_CMP_MASKED_EQ,
									  x->mask, x->val));
				if (ret < 0)
					return ret;
			}
	/* clone3 takes its flags in memory, out of a filter's reach. */
	return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
}

int fdvm_sandbox_compile(enum fdvm_thread_role role, uint32_t deny, struct sock_fprog *out)
{
	scmp_filter_ctx ctx = seccomp_init(deny);
	int ret, fd = -1;

	if (!ctx)
		return -EINVAL;
	if ((ret = add_rules(ctx, role)))
		goto out;
	/* libseccomp writes the program to an fd: a memfd, read back whole. */
	fd = memfd_create("fdvm-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if ((ret = seccomp_export_bpf(ctx, fd)) < 0)
		goto out;
	off_t len = lseek(fd, 0, SEEK_END);
	if (len <= 0 || len % sizeof(struct sock_filter) || len / sizeof(struct sock_filter) > 0xffff) {
		ret = len < 0 ? -errno : -EINVAL;
		goto out;
	}
	struct sock_filter *prog = malloc((size_t)len);
	if (!prog) {
		ret = -ENOMEM;
		goto out;
	}
	if (pread(fd, prog, (size_t)len, 0) != len) {
		free(prog);
		ret = -EIO;
		goto out;
	}
	out->filter = prog;
	out->len = (unsigned short)(len / sizeof(struct sock_filter));
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return ret;
}
