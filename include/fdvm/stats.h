/*
 * Notification counters: what each queue's doorbells and interrupts did,
 * kept on the hot paths at the cost of a plain add.
 *
 * A queue's counters have one writer, the thread that serves the queue (a
 * device's backend thread), and sit in cache lines of their own: counting
 * takes no lock and no locked instruction and shares no line with another
 * writer. Any thread may read them at any time with fdvm_queue_stats_read;
 * each counter is read whole, the set is not one instant's (a request may
 * be counted and its bytes not yet).
 *
 * An interrupt line's masked-signal counters are kept under the line's own
 * lock, which mask and unmask already take (fdvm_irq_line_stats).
 */
#ifndef FDVM_STATS_H
#define FDVM_STATS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_queue_stats {
	/* Doorbells the backend read from the queue's kick eventfd: every
	 * guest notification of the queue, whichever path carried it (the
	 * path is the transport's to tell: fdvm_virtio_pci_stats). */
	uint64_t kicks;
	/* Requests the backend took while it had told the driver not to
	 * kick (event index or NO_NOTIFY, while it worked or polled): each
	 * came without a doorbell of its own. */
	uint64_t kicks_suppressed;
	uint64_t requests;	/* requests (buffers) taken from the ring */
	uint64_t out_bytes;	/* bytes the device read (driver to device) */
	uint64_t in_bytes;	/* bytes the device wrote (device to driver) */
	/* Each time the backend had pushed completions, what became of their
	 * interrupt: written to the call eventfd, or not wanted by the driver
	 * (event index, VRING_AVAIL_F_NO_INTERRUPT). */
	uint64_t irqs;
	uint64_t irqs_suppressed;
	/* Polling after the queue ran dry (the poll_us of the device): rounds
	 * that found work before the deadline, and rounds that did not (the
	 * backend then slept on the kick eventfd). */
	uint64_t poll_hits, poll_misses;
} __attribute__((aligned(64)));

/* The writer's add: a relaxed load and store, no locked instruction (one
 * writer per counter). s may be NULL: counting is off. */
#define FDVM_STAT_ADD(s, field, n)                                                       \
	do {                                                                             \
		struct fdvm_queue_stats *s_ = (s);                                       \
		if (s_)                                                                  \
			__atomic_store_n(&s_->field,                                     \
					 __atomic_load_n(&s_->field, __ATOMIC_RELAXED) + (n), \
					 __ATOMIC_RELAXED);                              \
	} while (0)

/* Copies s, counter by counter, from any thread. */
void fdvm_queue_stats_read(const struct fdvm_queue_stats *s, struct fdvm_queue_stats *out);

/* An MSI line's masking, as the guest drove it (MSI-X). */
struct fdvm_irq_stats {
	bool kernel;		/* KVM_IRQFD; false: the userspace fallback */
	bool masked, pending;	/* now */
	/* Signals that arrived while the vector was masked (each set the
	 * pending bit, or found it set), and unmasks that found the bit set
	 * and delivered the one interrupt it stands for. */
	uint64_t masked_signals;
	uint64_t unmask_deliveries;
};

#ifdef __cplusplus
}
#endif

#endif
