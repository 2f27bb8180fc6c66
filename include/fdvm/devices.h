/* In-process devices a VM can be given (lib/dev/). */
#ifndef FDVM_DEVICES_H
#define FDVM_DEVICES_H

#include "fdvm/doorbell.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_pci_testdev;

/*
 * QEMU's pci-testdev, guest-visibly identical (1b36:0005; BAR0 4 KiB MMIO,
 * BAR1 256 ports; tests "no-eventfd", "wildcard-eventfd",
 * "datamatch-eventfd" for mmio and portio), with fdvm doorbells behind
 * its eventfd tests. mode picks the doorbells' path.
 */
int fdvm_pci_testdev_create(struct fdvm_vm *vm, enum fdvm_doorbell_mode mode,
			    struct fdvm_pci_testdev **out);
void fdvm_pci_testdev_destroy(struct fdvm_pci_testdev *td);

#ifdef __cplusplus
}
#endif

#endif
