/*
 * The GSI routing manager: the VM's whole KVM routing table (the irqchip
 * pins KVM starts with, plus MSI routes), allocated here and written to
 * KVM with one KVM_SET_GSI_ROUTING per batch. A batch that changed nothing
 * writes nothing. Thread-safe; the table belongs to the VM.
 */
#ifndef FDVM_GSI_H
#define FDVM_GSI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;

/* An MSI message as the guest programs it (x86: address 0xfeeXXXXX). */
struct fdvm_msi {
	uint64_t address;
	uint32_t data;
};

/* GSIs below this are the irqchip pins (IOAPIC 0-23, PIC 0-15). */
#define FDVM_GSI_IRQCHIP_PINS 24

/*
 * Starts a batch on the calling thread: its changes are kept until the
 * matching fdvm_gsi_end, which writes the table once. Batches nest; outside
 * one, and on other threads, each change is written at once (with whatever
 * open batches have staged). A thread has one VM's batch open at a time;
 * changes to another VM meanwhile are written at once.
 */
void fdvm_gsi_begin(struct fdvm_vm *vm);
/* Ends a batch; returns 0, or the -errno of a KVM_SET_GSI_ROUTING that
 * failed since the batch began, in which case every change of the batch was
 * rolled back. */
int fdvm_gsi_end(struct fdvm_vm *vm);

/* Allocates a GSI routed to msg. -ENOSPC when the table is full. */
int fdvm_gsi_alloc_msi(struct fdvm_vm *vm, const struct fdvm_msi *msg, uint32_t *gsi);
/* Points an allocated MSI GSI at a new message (no write if unchanged). */
int fdvm_gsi_set_msi(struct fdvm_vm *vm, uint32_t gsi, const struct fdvm_msi *msg);
/* Releases an MSI GSI. */
int fdvm_gsi_free(struct fdvm_vm *vm, uint32_t gsi);

/*
 * Claims an IOAPIC pin (its GSI is the pin number) for one user: -EINVAL
 * for a pin >= 24, -EBUSY if taken.
 */
int fdvm_gsi_claim_pin(struct fdvm_vm *vm, uint32_t pin);
void fdvm_gsi_release_pin(struct fdvm_vm *vm, uint32_t pin);

/* How many KVM_SET_GSI_ROUTING calls this VM has made (tests, stats). */
uint64_t fdvm_gsi_writes(struct fdvm_vm *vm);
/* How many MSI routes can still be allocated. */
uint32_t fdvm_gsi_msi_free(struct fdvm_vm *vm);

#ifdef __cplusplus
}
#endif

#endif
