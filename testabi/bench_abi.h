/*
 * The benchmark's guest <-> host contract (guest/bench and bench/): the
 * bench device fdvm adds for `fdvm bench doorbell`, and the addresses the
 * bare-KVM floor loop answers on. Not installed.
 */
#ifndef FDVM_BENCH_ABI_H
#define FDVM_BENCH_ABI_H

/* The bench device: 4 KiB of MMIO. */
#define FDVM_BENCH_MMIO 0xfe100000ull
#define FDVM_BENCH_MAGIC 0x42564446u	/* "FDVB" at offset 0 */
#define BENCH_REG_MAGIC 0x00
#define BENCH_REG_MODE 0x08		/* how a KICK injects: BENCH_INJECT_* */
#define BENCH_REG_KICK 0x10		/* write: inject one interrupt now */
#define BENCH_DOORBELL_KERNEL 0x800	/* ioeventfd -> backend thread -> irqfd */
#define BENCH_DOORBELL_USER 0x808	/* userspace doorbell -> thread -> userspace line */
#define BENCH_VECTOR 0x50		/* every bench interrupt */

#define BENCH_INJECT_IRQFD 0		/* write the kernel line's eventfd */
#define BENCH_INJECT_SIGNAL_MSI 1	/* KVM_SIGNAL_MSI */
#define BENCH_INJECT_USERSPACE 2	/* write the userspace line's eventfd */

/* The floor loop: any write here exits to it, or hits its ioeventfd. */
#define FDVM_FLOOR_MMIO 0xd0000000ull	/* +0: exit, +8: ioeventfd (wildcard) */
#define FDVM_FLOOR_PIO 0x5000		/* +0: exit, +8: ioeventfd (wildcard) */

#endif
