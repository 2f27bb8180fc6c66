/*
 * The benchmark's guest <-> host contract (guest/bench and bench/): the
 * bench device fdvm adds for `fdvm bench doorbell`, which the bare-KVM
 * floor loop answers too (same addresses, same registers), and the
 * addresses of the floor's doorbell rows. Not installed.
 */
#ifndef FDVM_BENCH_ABI_H
#define FDVM_BENCH_ABI_H

#include <stdint.h>

/* The bench device: 4 KiB of MMIO. */
#define FDVM_BENCH_MMIO 0xfe100000ull
#define FDVM_BENCH_MAGIC 0x42564446u	/* "FDVB" at offset 0 */
#define BENCH_REG_MAGIC 0x00
/* Writes that inject one interrupt at once, on the vCPU thread: */
#define BENCH_KICK_IRQFD 0x10		/* write the kernel line's eventfd (irqfd) */
#define BENCH_KICK_MSI 0x18		/* KVM_SIGNAL_MSI */
#define BENCH_KICK_USER 0x20		/* write the userspace line's eventfd */
#define BENCH_REG_SHM 0x28		/* 8 bytes: the guest address of a struct bench_shm (0: none) */
#define BENCH_REG_POLL 0x30		/* how the backend answers a doorbell: BENCH_POLL_* */
#define BENCH_DOORBELL_KERNEL 0x800	/* ioeventfd -> backend thread -> kernel line (irqfd) */
#define BENCH_DOORBELL_USER 0x808	/* userspace doorbell -> backend thread -> userspace line */
#define BENCH_VECTOR 0x50		/* every bench interrupt */

/*
 * The backend's answer to a doorbell. OFF: one interrupt on the doorbell's
 * line. LINE: the same, then it polls the shared page for further requests
 * (answering each on the line) until none came for its poll time, with
 * polling set while it does, so the guest rings only when it is clear.
 * SHM: polls likewise, and answers in ack instead of an interrupt.
 */
#define BENCH_POLL_OFF 0
#define BENCH_POLL_LINE 1
#define BENCH_POLL_SHM 2

/* The shared page's layout. The guest bumps req, then (after a full
 * fence) rings a doorbell only if polling is 0; the backend clears
 * polling, then (after a full fence) looks at req once more before it
 * sleeps: a request is never left unseen. */
struct bench_shm {
	volatile uint64_t req;		/* guest: the last request's number */
	volatile uint64_t ack;		/* backend (SHM): the last one answered */
	volatile uint32_t polling;	/* backend: 1 while it polls req */
	uint32_t pad;
};

/* The floor loop: any write here exits to it, or hits its ioeventfd. */
#define FDVM_FLOOR_MMIO 0xd0000000ull	/* +0: exit, +8: ioeventfd (wildcard) */
#define FDVM_FLOOR_PIO 0x5000		/* +0: exit, +8: ioeventfd (wildcard) */

/* QEMU's edu device (hw/misc/edu.c): a 4-byte write of a nonzero value
 * to BAR0 + 0x60 raises its MSI at once, on the vCPU thread. */
#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_REG_RAISE 0x60

#endif
