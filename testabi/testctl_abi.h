/*
 * The test-control device: the guest<->host contract between the bundled
 * test guests and the test harnesses in tests/ (not part of a normal VM,
 * not installed).
 * The guest writes arguments, then a command; the harness acts on the host
 * side (creates an irq line, starts a backend thread, ...) and leaves a
 * result. All registers are 64-bit.
 */
#ifndef FDVM_TESTCTL_ABI_H
#define FDVM_TESTCTL_ABI_H

#include <stdint.h>

#define FDVM_TESTCTL_MMIO 0xfe000000ull	/* 4 KiB */
#define FDVM_TESTCTL_MMIO_SIZE 0x1000
#define FDVM_TESTCTL_PIO 0x6000		/* 256 ports: a doorbell area */
#define FDVM_TESTCTL_PIO_SIZE 0x100

#define TC_REG_CMD 0x00
#define TC_REG_ARG0 0x08
#define TC_REG_ARG1 0x10
#define TC_REG_ARG2 0x18
#define TC_REG_RESULT 0x28	/* >= 0, or -errno */
#define TC_REG_CONSUME 0x30	/* read: take one work item of the level line
				 * in ARG0's slot; 1 if there was one, else 0 */
#define TC_DOORBELL_AREA 0x800	/* [0x800, 0x1000): writes are counted */

enum {
	TC_MAILBOX = 1,		/* ARG0 = gpa of a struct tc_mailbox */
	TC_LINE_MSI,		/* ARG0 = vector, ARG1 = TC_F_* -> line id */
	TC_LINE_LEVEL,		/* ARG0 = IOAPIC pin -> line id */
	TC_LINE_PRESIGNALLED,	/* ARG0 = vector, ARG1 = signals made before assign */
	TC_LINE_DESTROY,	/* ARG0 = id */
	TC_LINE_CLOSE_BORROWED,	/* ARG0 = id: the backend closes its eventfd */
	TC_LINE_MASK,		/* ARG0 = id */
	TC_LINE_UNMASK,		/* ARG0 = id */
	TC_LINE_PENDING,	/* ARG0 = id -> 0/1 */
	TC_SIGNAL,		/* ARG0 = id, ARG1 = count, ARG2 = TC_BY_* */
	TC_WAIT,		/* waits for the backend -> signals it sent */
	TC_LEVEL_WORK,		/* ARG0 = id, ARG1 = work items: backend thread */
	TC_DOORBELL,		/* ARG0 = space | len << 8 | datamatch << 16,
				 * ARG1 = addr, ARG2 = data -> doorbell id */
	TC_DOORBELL_COUNT,	/* ARG0 = id -> writes signalled since last asked */
	TC_DOORBELL_DESTROY,	/* ARG0 = id */
	TC_DEVICE_WRITES,	/* -> writes that reached the doorbell areas (and reset) */
	TC_KERNEL_PATH,		/* -> 1 if lines and doorbells use the kernel path */
	TC_MSIX_MAILBOX,	/* ARG0 = gpa of a struct tc_msix_mailbox */
	TC_MSIX_ROUND,		/* ARG0 = signals, ARG1 = TC_BY_THREAD/PROCESS
				 * | TC_PACE(k), ARG2 = seed: a backend signals random
				 * vectors of the MSI-X test device, then sets done */
	TC_MSIX_SIGNAL,		/* ARG0 = vector, ARG1 = count: from the vCPU thread */
};

/*
 * The MSI-X test device the harness plugs in: FDVM_TEST_MSIX_VECTORS
 * vectors, BAR0 16 KiB MMIO with the table at 0 and the PBA at 0x2000. Its
 * vendor ID is not an assigned one: it exists only under the harness.
 */
#define FDVM_TEST_PCI_VENDOR 0xfdfd
#define FDVM_TEST_PCI_MSIX_DEVICE 0x0001
#define FDVM_TEST_MSIX_VECTORS 8
#define FDVM_TEST_MSIX_BAR_SIZE 0x4000
#define FDVM_TEST_MSIX_PBA 0x2000

/* Per-vector counts the MSI-X backend keeps: seq is bumped before a
 * vector's signal, written after it. With TC_PACE(k) in TC_MSIX_ROUND's
 * ARG1 the backend paces itself on the guest: the guest bumps guest_ops
 * just before each mask or unmask write, and the backend sends signal i
 * only once guest_ops * k >= i (if guest_ops stands still for 5 s it stops
 * pacing for the rest of the round and bumps pace_stalls). */
struct tc_msix_mailbox {
	volatile uint64_t seq[FDVM_TEST_MSIX_VECTORS];
	volatile uint64_t written[FDVM_TEST_MSIX_VECTORS];
	volatile uint64_t done;
	volatile uint64_t guest_ops;
	volatile uint64_t pace_stalls;
};
#define TC_PACE(k) ((uint64_t)(k) << 8)

#define TC_F_BORROW 1		/* the line borrows the backend's eventfd */

#define TC_BY_VCPU 0		/* signalled from the vCPU thread, before returning */
#define TC_BY_THREAD 1		/* a backend thread, asynchronously */
#define TC_BY_PROCESS 2		/* a backend process that got the eventfd over a socket */

#define TC_SPACE_PIO 0
#define TC_SPACE_MMIO 1

/* Written by the backend before each signal, read by the guest's ISR. */
struct tc_mailbox {
	volatile uint64_t seq;		/* number of the latest signal */
	volatile uint64_t done;		/* the backend has finished */
};

#endif
