/* fdvm bench: shared by its files. */
#ifndef FDVM_BENCH_PRIV_H
#define FDVM_BENCH_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_MAX_REPS 64

struct bench_opts {
	const char *guest;	/* the bench guest ELF */
	unsigned reps;
	uint64_t ops, fops, iops;
	const char *rows;	/* comma-separated row names */
	const char *json, *png;
	int qemu;		/* run the QEMU rows (default on if QEMU exists) */
	const char *blk_image;	/* set: give the guest this disk (virtio-blk) */
	unsigned blk_poll_us;	/* fdvm's virtio-blk backend polling */
	/* set: the disk is a vhost-user-blk device on this socket instead of
	 * the image (QEMU: vhost-user-blk-pci; fdvm: its vhost-user frontend) */
	const char *vhost_user_sock;
	/* QEMU (its process group) is killed, fdvm's guest stopped, after this
	 * long (0: never) */
	unsigned timeout_s;
	bool no_counters;	/* fdvm: the VM counts nothing (fdvm_vm_config) */
	bool blk_direct;	/* the disk with cache=none (QEMU: and aio=io_uring) */
};

/* One VMM's figures for one row: cycles per repetition. */
struct bench_result {
	unsigned n;
	uint64_t ops;
	uint64_t cycles[BENCH_MAX_REPS];
};

/* The guest's printed BENCH lines, parsed into results[row index]. */
int bench_parse(const char *out, size_t len, const char *const *rows, unsigned nrows,
		struct bench_result *results);

/* The three ways of running the bench guest; output is the guest's console. */
int bench_run_fdvm(const struct bench_opts *o, const char *cmdline, char **out, size_t *len);
int bench_run_floor(const struct bench_opts *o, const char *cmdline, char **out, size_t *len);
int bench_run_qemu(const struct bench_opts *o, const char *cmdline, char **out, size_t *len);

/*
 * Child processes (QEMU, vhost-user backends): in the child after fork,
 * bench_child_init puts it in a process group of its own and has it
 * killed if the benchmark dies (parent: the benchmark's pid before fork).
 * bench_reap waits up to timeout_ms for it to exit, then SIGKILLs the
 * group; the rest of the group is killed either way, then it is reaped.
 * 0 if it exited by itself within the time (*status its status), else
 * -ETIMEDOUT.
 */
void bench_child_init(pid_t parent);
int bench_reap(pid_t pid, unsigned timeout_ms, int *status);

/* Shared by the benchmarks (doorbell.c). */
double bench_tsc_hz(void);
const char *bench_default_guest(void);
bool bench_have_qemu(void);
int fdvm_cmd_bench_blk(int argc, char **argv);
int fdvm_cmd_bench_net(int argc, char **argv);

#endif
