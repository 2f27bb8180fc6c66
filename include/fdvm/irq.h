/*
 * Interrupt lines. A line owns an eventfd, its GSI route and its KVM
 * registration: whoever holds the eventfd — a thread, another process, the
 * kernel — raises the interrupt by writing to it and needs nothing else.
 *
 * The kernel path is KVM_IRQFD. The userspace fallback (when KVM lacks
 * irqfd, or when forced for tests and benchmarks) is a thread of the VM
 * that reads the eventfd and injects with KVM_SIGNAL_MSI or KVM_IRQ_LINE;
 * a backend cannot tell the two apart.
 *
 * The contract on both paths: an interrupt may be delayed and identical
 * ones coalesced, but it is never lost and never spurious (none while
 * masked, never more deliveries than signals).
 */
#ifndef FDVM_IRQ_H
#define FDVM_IRQ_H

#include <stdbool.h>
#include <stdint.h>

#include "fdvm/gsi.h"
#include "fdvm/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_irq_line;

enum fdvm_irq_kind {
	FDVM_IRQ_MSI,	/* edge: each signal is one MSI */
	FDVM_IRQ_LEVEL,	/* an IOAPIC pin, level-triggered, with resample */
};

enum fdvm_irq_mode {
	FDVM_IRQ_AUTO,		/* KVM_IRQFD if the kernel has it, else userspace */
	FDVM_IRQ_KERNEL,	/* KVM_IRQFD or fail */
	FDVM_IRQ_USERSPACE,	/* the fallback, forced */
};

struct fdvm_irq_line_config {
	enum fdvm_irq_kind kind;
	enum fdvm_irq_mode mode;
	struct fdvm_msi msi;	/* MSI: the message */
	uint32_t pin;		/* LEVEL: the IOAPIC pin (0-23) */
	bool masked;		/* start masked (MSI only) */
	/*
	 * -1: the line creates its eventfd(s). Otherwise an eventfd of the
	 * caller's that the line duplicates (the caller may close its copy),
	 * or, with borrow_fd on the kernel path, uses as is: then closing it
	 * while the line is registered tears the registration down through
	 * KVM's POLLHUP path. The userspace path always duplicates: its
	 * service thread must not watch a number the caller may close.
	 */
	int fd;
	bool borrow_fd;
};

/* Fills cfg with an MSI line on the automatic path, fd -1. */
void fdvm_irq_line_config_init(struct fdvm_irq_line_config *cfg);

/*
 * Creates a line: eventfd, route, then registration. On failure nothing is
 * left behind. -EBUSY if the eventfd is already bound to another irqfd,
 * -EBADF/-EINVAL if fd is not an open eventfd, -ENOSPC when no GSI is left.
 * The line belongs to the VM; fdvm_vm_destroy destroys lines still alive.
 */
int fdvm_irq_line_create(struct fdvm_vm *vm, const struct fdvm_irq_line_config *cfg,
			 struct fdvm_irq_line **out);

/*
 * Unregisters (deassign), then drops the route, then closes the eventfds.
 * When it returns, no interrupt from this line is injected any more.
 */
void fdvm_irq_line_destroy(struct fdvm_irq_line *line);

/* The eventfd to write to raise the interrupt. Owned by the line. */
int fdvm_irq_line_fd(const struct fdvm_irq_line *line);
/* LEVEL: the eventfd the line writes when the guest's EOI lowers the line
 * (the backend re-raises if it still has work). -1 for MSI. */
int fdvm_irq_line_resample_fd(const struct fdvm_irq_line *line);
/* True on the KVM_IRQFD path, false on the userspace fallback. */
bool fdvm_irq_line_in_kernel(const struct fdvm_irq_line *line);
uint32_t fdvm_irq_line_gsi(const struct fdvm_irq_line *line);

/* MSI: re-routes to a new message; the guest sees old or new, never a mix. */
int fdvm_irq_line_set_msi(struct fdvm_irq_line *line, const struct fdvm_msi *msg);

/*
 * MSI masking, for MSI-X. Mask: after it returns nothing is injected; a
 * signal that arrives while masked sets the pending bit. Unmask: if the
 * pending bit is set, the interrupt is delivered exactly once and the bit
 * cleared. The backend never learns of it.
 */
int fdvm_irq_line_mask(struct fdvm_irq_line *line);
int fdvm_irq_line_unmask(struct fdvm_irq_line *line);
/* The pending bit, first folding in signals that arrived while masked. */
bool fdvm_irq_line_pending(struct fdvm_irq_line *line);
bool fdvm_irq_line_masked(const struct fdvm_irq_line *line);
/* MSI: its masking counters and state now, first folding in signals that
 * arrived while masked, as fdvm_irq_line_pending does. Any thread. */
void fdvm_irq_line_stats(struct fdvm_irq_line *line, struct fdvm_irq_stats *out);

/*
 * Injects one MSI now with KVM_SIGNAL_MSI, from any thread (no line, no
 * eventfd): what a device model on a vCPU thread can do without irqfd.
 */
int fdvm_vm_signal_msi(struct fdvm_vm *vm, const struct fdvm_msi *msg);

#ifdef __cplusplus
}
#endif

#endif
