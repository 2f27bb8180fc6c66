/*
 * Per-thread system call filters (seccomp-bpf, built with libseccomp).
 *
 * Every thread fdvm starts has a role, and each role has a list of the
 * system calls it needs, with argument checks where they matter (ioctl
 * numbers, socket families). A thread's filter is loaded by the thread
 * itself as it starts and cannot be removed. Filters stack: a thread made
 * by a confined thread carries its parent's filter too, so fdvm makes its
 * threads through one spawner thread whose filter is the union of the
 * roles'; a new thread then gets exactly its own role's list.
 *
 * The sandbox is off until the program calls fdvm_sandbox_init; the fdvm
 * CLI does (--seccomp, default kill). An embedder whose callbacks run on
 * fdvm's threads (device ops on vCPU threads, watch functions on loop
 * threads) must keep them within those roles' lists, or leave it off.
 */
#ifndef FDVM_SANDBOX_H
#define FDVM_SANDBOX_H

#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fdvm_seccomp_mode {
	FDVM_SECCOMP_OFF,
	/* A call outside the list is reported on stderr (once per role and
	 * system call) and then allowed: for finding a missing rule. */
	FDVM_SECCOMP_LOG,
	/* A call outside the list ends the process: one line on stderr naming
	 * the thread, its role and the call, then exit status
	 * FDVM_SANDBOX_EXIT_STATUS. */
	FDVM_SECCOMP_KILL,
};

#define FDVM_SANDBOX_EXIT_STATUS 10

enum fdvm_thread_role {
	FDVM_ROLE_VCPU,		/* runs KVM_RUN and the device handlers of exits */
	FDVM_ROLE_DEVICE,	/* a device backend: rings, image, tap, eventfds */
	FDVM_ROLE_SERVICE,	/* fdvm's own loops: userspace interrupt lines,
				 * the vhost-user frontend's connection */
	FDVM_ROLE_SERVE,	/* a vhost-user backend daemon's main thread */
	FDVM_ROLE_CONTROL,	/* the spawner: the union of the roles above */
	FDVM_ROLE_COUNT
};

/* "vcpu", "device", ...; NULL for a role that does not exist. */
const char *fdvm_thread_role_name(enum fdvm_thread_role role);

/*
 * Turns the sandbox on for this process (OFF: records that it stays off).
 * Call once, from a thread with no filter, before fdvm starts any thread:
 * it compiles every role's filter (a rule libseccomp refuses is reported
 * here, not later), installs the SIGSYS handler and starts the spawner
 * (and, for LOG, the thread that reports). A process that forks calls it
 * in the child. Returns 0 or -errno (-EALREADY when called twice).
 */
int fdvm_sandbox_init(enum fdvm_seccomp_mode mode);

/* The mode fdvm_sandbox_init was given (OFF before it). Any thread. */
enum fdvm_seccomp_mode fdvm_sandbox_mode(void);

/*
 * Confines the calling thread to role's list and names it (name: at most
 * 15 characters are kept; NULL keeps the current name). No-op with the
 * sandbox off; 0 again for the role the thread already has, -EBUSY for
 * another. Permanent: the program's vCPU thread calls it before
 * fdvm_vm_run, a daemon's main thread once its files are open.
 */
int fdvm_sandbox_enter(enum fdvm_thread_role role, const char *name);

/*
 * pthread_create for a thread of role, named name: with the sandbox on the
 * thread is made by the spawner (so it does not inherit the caller's
 * filter) and confines itself before fn runs. Joinable as usual. Returns 0
 * or -errno. Any thread.
 */
int fdvm_thread_create(pthread_t *thread, enum fdvm_thread_role role, const char *name,
		       void *(*fn)(void *), void *arg);

#ifdef __cplusplus
}
#endif

#endif
