/* fdvm bench: shared by its files. */
#ifndef FDVM_BENCH_PRIV_H
#define FDVM_BENCH_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_MAX_REPS 64
#define BENCH_MAX_ROUNDS 64

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
	unsigned poll_us;	/* doorbell: the round-trip backends' polling */
	unsigned cpus;		/* vCPUs of fdvm's and QEMU's guests (0: 1); the
				 * bench guest runs on the first, the others wait */
};

/* One VMM's figures for one row: cycles (and doorbells rung, where the
 * guest says) per repetition. */
struct bench_result {
	unsigned n;
	uint64_t ops;
	uint64_t cycles[BENCH_MAX_REPS];
	uint64_t rung;	/* summed over the repetitions */
};

/*
 * The round-trip rows' polling (bench/poll.c): shm and mode are set from
 * the vCPU thread (the guest's writes to BENCH_REG_SHM and BENCH_REG_POLL),
 * read by the backend threads. bench_poll_serve, called by a backend that
 * a doorbell woke: with mode OFF (or no page) false, and the caller gives
 * its one answer; otherwise it answers every request in the page (answer
 * for LINE, the page's ack for SHM) until none came for poll_ns, and
 * returns true. seen: the caller's last request answered.
 */
struct bench_shm;
struct bench_poll {
	struct bench_shm *_Atomic shm;
	_Atomic unsigned mode;
	uint64_t poll_ns;
};
bool bench_poll_serve(struct bench_poll *p, uint64_t *seen, void (*answer)(void *), void *opaque);

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

/*
 * Rounds (bench/rounds.c). bench_spread: the median, lowest and highest of
 * v's finite values (NaN: no figure that round). bench_order: round's
 * order of n runs, turning one place a round. bench_json_spread writes
 * "key": {"median", "min", "max", "rounds": [...]} with fmt for each value.
 * bench_fmt_spread: "median [min..max]" (just the median for one round).
 */
struct bench_spread {
	unsigned n;
	double median, min, max;
};
struct bench_spread bench_spread(const double *v, unsigned n);
void bench_order(unsigned round, unsigned n, unsigned *order);
void bench_json_spread(FILE *f, const char *key, const double *v, unsigned n, const char *fmt);
const char *bench_fmt_spread(char *buf, size_t len, struct bench_spread s, const char *fmt);

/*
 * A PNG bar chart with error bars (gnuplot), a panel beside another: in
 * each panel, a group of bars along x for each of its groups, one bar per
 * series: value(ctx, panel, group, series)'s median, its bar from lowest
 * to highest round (n == 0: no bar); at most 4 panels and 64 series. The
 * title is what, then the median and bars over rounds. Prints "chart:
 * PATH"; 0, or -1 with a message when gnuplot is missing or fails.
 */
struct bench_panel {
	const char *title, *ylabel;
	bool logscale;
	unsigned ngroups;
	const char *const *groups;
};
int bench_chart(const char *path, const char *what, unsigned rounds, unsigned nseries,
		const char *const *series, unsigned npanels, const struct bench_panel *panels,
		struct bench_spread (*value)(void *ctx, unsigned panel, unsigned group, unsigned series),
		void *ctx);

/* Shared by the benchmarks (doorbell.c). */
double bench_tsc_hz(void);
const char *bench_default_guest(void);
bool bench_have_qemu(void);
int fdvm_cmd_bench_blk(int argc, char **argv);
int fdvm_cmd_bench_net(int argc, char **argv);

#endif
