/*
 * One KVM VM for the fuzz targets that reach devices through the VM's I/O
 * bus (pci, virtio_pci, uart): made once per process, since a VM costs
 * milliseconds, while each input makes and destroys its own devices on it.
 * Without /dev/kvm the process exits 77 (the test is skipped).
 */
#ifndef FDVM_FUZZ_VM_H
#define FDVM_FUZZ_VM_H

#include <stdbool.h>
#include <stdint.h>

#include "fdvm/io.h"
#include "fdvm/vm.h"

#define FUZZ_VM_MEM (2ull << 20)

/* The process's VM; the first call makes it. */
struct fdvm_vm *fuzz_vm(void);

/*
 * Puts the PCI bus back as the VM made it (BAR windows, the host bridge's
 * configuration, 0xcf8), so that each input sees the same machine. The
 * input's own devices must be gone.
 */
void fuzz_vm_reset_pci(void);

/* A guest access as a vCPU exit dispatches it: userspace doorbells first,
 * then the bus; nothing claimed reads all-ones. */
uint64_t fuzz_vm_read(enum fdvm_space space, uint64_t addr, unsigned size);
void fuzz_vm_write(enum fdvm_space space, uint64_t addr, unsigned size, uint64_t val);

#endif
