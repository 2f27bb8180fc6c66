/* fdvm bench: shared by its files. */
#ifndef FDVM_BENCH_PRIV_H
#define FDVM_BENCH_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	const char *vhost_user_sock; /* set: QEMU gets vhost-user-blk-pci on it (instead of the image) */
	unsigned qemu_timeout_s;	/* QEMU is killed after this long (0: never) */
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

/* Shared by the benchmarks (doorbell.c). */
double bench_tsc_hz(void);
const char *bench_default_guest(void);
bool bench_have_qemu(void);
int fdvm_cmd_bench_blk(int argc, char **argv);

#endif
