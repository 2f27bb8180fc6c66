/*
 * The sandbox bites: a thread of each role that calls something outside its
 * list ends the process with one line naming the thread, its role and the
 * call (kill mode), or has the call reported once and allowed (log mode).
 *
 * Each case runs in a child process (a filter cannot be removed), with the
 * child's stderr on a pipe the parent reads. Every "forbidden" case has a
 * twin that calls something the same role is allowed, so a case passes only
 * when the filter tells the two apart.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdvm/sandbox.h"

/* What a child did: its wait status and what it wrote on stderr. */
struct outcome {
	int status;
	char err[8192];
};

/* Runs fn(arg) in a child process whose stderr the parent collects. The
 * child ends with _exit(fn's value): no atexit handlers, no leak check, as
 * its confined threads may still be running. */
static void run_child(int (*fn)(void *), void *arg, struct outcome *out)
{
	int p[2];
	size_t have = 0;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		if (dup2(p[1], 2) < 0)
			_exit(99);
		alarm(20); /* a hang is a failure, not a stuck suite */
		_exit(fn(arg));
	}
	close(p[1]);
	for (;;) {
		ssize_t n = read(p[0], out->err + have, sizeof(out->err) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(out->err) - 1)
			break;
	}
	out->err[have] = 0;
	close(p[0]);
	assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

static int count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *h = hay; (h = strstr(h, needle)); h += strlen(needle))
		n++;
	return n;
}

static void expect_exit(const struct outcome *o, int code)
{
	if (!WIFEXITED(o->status) || WEXITSTATUS(o->status) != code)
		fail_msg("child: status %#x (%s %d), expected exit %d; stderr:\n%s", o->status,
			 WIFEXITED(o->status) ? "exit" : "signal",
			 WIFEXITED(o->status) ? WEXITSTATUS(o->status) : WTERMSIG(o->status), code,
			 o->err);
}

static void expect_line(const struct outcome *o, const char *line, int times)
{
	int n = count(o->err, line);

	if (n != times)
		fail_msg("stderr holds \"%s\" %d times, expected %d:\n%s", line, n, times, o->err);
}

/* ---- what the threads call ---- */

/* Each returns 0 when the call came back (allowed), whatever its result. */
typedef int (*call_fn)(void);

static int call_socket_unix(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		close(fd);
	return 0;
}

static int call_socket_inet(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0)
		close(fd);
	return 0;
}

static int call_execve(void)
{
	char *argv[] = { "true", NULL };

	execve("/bin/true", argv, (char *[]){ NULL });
	return 0; /* execve failed, but it was allowed to try */
}

/* ioctl numbers are checked, not only the call: these go to fd 0, which is
 * no KVM fd, so an allowed one fails with ENOTTY and comes back. */
static int call_ioctl_kvm_run(void) { return ioctl(0, KVM_RUN, 0), 0; }
static int call_ioctl_create_vm(void) { return ioctl(0, KVM_CREATE_VM, 0), 0; }
static int call_ioctl_tunsetiff(void) { return ioctl(0, TUNSETIFF, 0), 0; }
static int call_ioctl_irqfd(void) { return ioctl(0, KVM_IRQFD, 0), 0; }
static int call_eventfd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	if (fd >= 0)
		close(fd);
	return 0;
}
static int call_getrandom(void)
{
	char b[8];
	return getrandom(b, sizeof(b), 0), 0;
}
static int call_two_ioctls(void)
{
	return call_ioctl_kvm_run() | call_ioctl_tunsetiff();
}
static int call_getsid(void) { return (pid_t)syscall(SYS_getsid, 0) != getsid(0); }

struct bite {
	enum fdvm_thread_role role;
	enum fdvm_seccomp_mode mode;
	bool enter;		/* the main thread enters the role, as fdvm serve does */
	call_fn call;
	int calls;		/* how many times */
	char name[16];
};

static void *bite_thread(void *arg)
{
	const struct bite *b = arg;
	int bad = 0;

	for (int i = 0; i < b->calls; i++)
		bad |= b->call();
	return (void *)(intptr_t)bad;
}

static int bite_child(void *arg)
{
	struct bite *b = arg;
	void *ret = NULL;
	pthread_t t;
	int r;

	if ((r = fdvm_sandbox_init(b->mode))) {
		fprintf(stderr, "fdvm_sandbox_init: %s\n", strerror(-r));
		return 98;
	}
	if (b->enter) {
		if ((r = fdvm_sandbox_enter(b->role, b->name))) {
			fprintf(stderr, "fdvm_sandbox_enter: %s\n", strerror(-r));
			return 98;
		}
		return (int)(intptr_t)bite_thread(b);
	}
	if ((r = fdvm_thread_create(&t, b->role, b->name, bite_thread, b))) {
		fprintf(stderr, "fdvm_thread_create: %s\n", strerror(-r));
		return 98;
	}
	pthread_join(t, &ret);
	return (int)(intptr_t)ret;
}

/* Kill mode: call ends the process with the line naming thread, role and
 * syscall; allowed, a sibling the role may make, comes back. */
static void expect_bites(enum fdvm_thread_role role, bool enter, call_fn call, const char *sys,
			 int nr, unsigned request, call_fn allowed)
{
	struct bite b = { .role = role, .mode = FDVM_SECCOMP_KILL, .enter = enter, .calls = 1 };
	struct outcome o;
	char line[240], req[32] = "";

	snprintf(b.name, sizeof(b.name), "bite-%s", fdvm_thread_role_name(role));
	b.call = allowed;
	run_child(bite_child, &b, &o);
	expect_exit(&o, 0);
	expect_line(&o, "fdvm: seccomp", 0);

	b.call = call;
	run_child(bite_child, &b, &o);
	expect_exit(&o, FDVM_SANDBOX_EXIT_STATUS);
	if (request) /* an ioctl: the request it was refused for */
		snprintf(req, sizeof(req), ", request %#x", request);
	snprintf(line, sizeof(line),
		 "fdvm: seccomp: thread \"%s\" (%s) called %s (system call %d%s), which its filter "
		 "does not allow; stopping",
		 b.name, fdvm_thread_role_name(role), sys, nr, req);
	expect_line(&o, line, 1);
	expect_line(&o, "\n", 1); /* one line, nothing else */
}

static void test_vcpu_bites(void **state)
{
	(void)state;
	/* No new sockets, no processes, no KVM objects in a vCPU thread. */
	expect_bites(FDVM_ROLE_VCPU, false, call_socket_unix, "socket", SYS_socket, 0, call_eventfd);
	expect_bites(FDVM_ROLE_VCPU, false, call_execve, "execve", SYS_execve, 0, call_ioctl_kvm_run);
	expect_bites(FDVM_ROLE_VCPU, false, call_ioctl_create_vm, "ioctl", SYS_ioctl, KVM_CREATE_VM,
		     call_ioctl_kvm_run);
}

static void test_device_bites(void **state)
{
	(void)state;
	/* KVM_RUN is a vCPU's, a new tap a setup step's. */
	expect_bites(FDVM_ROLE_DEVICE, false, call_ioctl_kvm_run, "ioctl", SYS_ioctl, KVM_RUN,
		     call_getrandom);
	expect_bites(FDVM_ROLE_DEVICE, false, call_ioctl_tunsetiff, "ioctl", SYS_ioctl, TUNSETIFF,
		     call_getrandom);
	expect_bites(FDVM_ROLE_DEVICE, false, call_socket_unix, "socket", SYS_socket, 0,
		     call_getrandom);
}

static void test_service_bites(void **state)
{
	(void)state;
	/* Unix sockets (the frontend reconnects), nothing else. */
	expect_bites(FDVM_ROLE_SERVICE, false, call_socket_inet, "socket", SYS_socket, 0,
		     call_socket_unix);
	expect_bites(FDVM_ROLE_SERVICE, false, call_ioctl_kvm_run, "ioctl", SYS_ioctl, KVM_RUN,
		     call_ioctl_irqfd);
}

static void test_serve_bites(void **state)
{
	(void)state;
	/* The daemon's main thread enters its role once its files are open. */
	expect_bites(FDVM_ROLE_SERVE, true, call_socket_unix, "socket", SYS_socket, 0, call_eventfd);
	expect_bites(FDVM_ROLE_SERVE, true, call_execve, "execve", SYS_execve, 0, call_eventfd);
}

static void test_control_bites(void **state)
{
	(void)state;
	/* The union of the roles: still no processes, no network sockets. */
	expect_bites(FDVM_ROLE_CONTROL, true, call_execve, "execve", SYS_execve, 0, call_ioctl_kvm_run);
	expect_bites(FDVM_ROLE_CONTROL, false, call_socket_inet, "socket", SYS_socket, 0,
		     call_socket_unix);
}

/* Log mode: reported once per role and call, and allowed (getsid, which
 * no role lists, returns the right answer). */
static void test_log_reports_once_and_allows(void **state)
{
	struct bite b = { .role = FDVM_ROLE_DEVICE, .mode = FDVM_SECCOMP_LOG, .calls = 3,
			  .call = call_getsid, .name = "log-device" };
	struct outcome o;

	(void)state;
	run_child(bite_child, &b, &o);
	expect_exit(&o, 0);
	expect_line(&o, "fdvm: seccomp: thread \"log-device\" (device, tid ", 1);
	expect_line(&o, ") called getsid (system call 124), which its filter does not allow; "
			"allowed in log mode (reported once per role)\n", 1);
	expect_line(&o, "fdvm: seccomp", 1);

	/* ioctls are told apart by request, in the reports as in the filters */
	b.call = call_two_ioctls;
	run_child(bite_child, &b, &o);
	expect_exit(&o, 0);
	char line[160];
	snprintf(line, sizeof(line), ") called ioctl (system call %d, request %#x), which", SYS_ioctl,
		 (unsigned)KVM_RUN);
	expect_line(&o, line, 1);
	snprintf(line, sizeof(line), ") called ioctl (system call %d, request %#x), which", SYS_ioctl,
		 (unsigned)TUNSETIFF);
	expect_line(&o, line, 1);
	expect_line(&o, "fdvm: seccomp", 2);
}

/* ---- the API's own rules ---- */

static void *spawn_vcpu_from_device(void *arg)
{
	pthread_t t;
	void *ret = (void *)1;

	(void)arg;
	/* Through the spawner: the vCPU thread does not inherit the device
	 * filter, so its KVM_RUN (ENOTTY on fd 0) comes back. */
	if (fdvm_thread_create(&t, FDVM_ROLE_VCPU, "nested-vcpu", bite_thread,
			       &(struct bite){ .call = call_ioctl_kvm_run, .calls = 1 }))
		return (void *)2;
	pthread_join(t, &ret);
	return ret;
}

static int api_child(void *arg)
{
	pthread_t t;
	void *ret = (void *)1;

	(void)arg;
	if (fdvm_sandbox_init(FDVM_SECCOMP_KILL))
		return 90;
	if (fdvm_sandbox_init(FDVM_SECCOMP_KILL) != -EALREADY)
		return 91;
	if (fdvm_sandbox_mode() != FDVM_SECCOMP_KILL)
		return 92;
	if (fdvm_thread_create(&t, FDVM_ROLE_COUNT, "x", bite_thread, NULL) != -EINVAL)
		return 93;
	if (fdvm_thread_create(&t, FDVM_ROLE_DEVICE, "dev", spawn_vcpu_from_device, NULL))
		return 94;
	pthread_join(t, &ret);
	if (ret)
		return 95;
	if (fdvm_sandbox_enter(FDVM_ROLE_CONTROL, "api-main"))
		return 96;
	if (fdvm_sandbox_enter(FDVM_ROLE_CONTROL, NULL))
		return 97; /* the same role again: 0 */
	if (fdvm_sandbox_enter(FDVM_ROLE_VCPU, NULL) != -EBUSY)
		return 98;
	return 0;
}

static void test_api(void **state)
{
	struct outcome o;

	(void)state;
	run_child(api_child, NULL, &o);
	expect_exit(&o, 0);
	expect_line(&o, "fdvm: seccomp", 0);
}

static int off_child(void *arg)
{
	(void)arg;
	if (fdvm_sandbox_init(FDVM_SECCOMP_OFF))
		return 90;
	if (fdvm_sandbox_mode() != FDVM_SECCOMP_OFF)
		return 91;
	if (fdvm_sandbox_enter(FDVM_ROLE_VCPU, "off-main"))
		return 92;
	return call_socket_inet(); /* nothing confines it */
}

static void test_off(void **state)
{
	struct outcome o;

	(void)state;
	run_child(off_child, NULL, &o);
	expect_exit(&o, 0);
	assert_string_equal(o.err, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vcpu_bites),
		cmocka_unit_test(test_device_bites),
		cmocka_unit_test(test_service_bites),
		cmocka_unit_test(test_serve_bites),
		cmocka_unit_test(test_control_bites),
		cmocka_unit_test(test_log_reports_once_and_allows),
		cmocka_unit_test(test_api),
		cmocka_unit_test(test_off),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
