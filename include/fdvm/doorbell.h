/*
 * Doorbells: a guest write to a port or MMIO address that signals an
 * eventfd and nothing else. The kernel path is KVM_IOEVENTFD (the vCPU
 * never leaves the kernel); the userspace path, when KVM refuses the
 * registration or it is forced, is fdvm's exit dispatch matching the write
 * and signalling the same eventfd, so a backend cannot tell the two apart.
 * A write that matches no doorbell goes on to the device that claims the
 * address, or to the VM's unhandled-access policy.
 */
#ifndef FDVM_DOORBELL_H
#define FDVM_DOORBELL_H

#include <stdbool.h>
#include <stdint.h>

#include "fdvm/io.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_doorbell;

enum fdvm_doorbell_mode {
	FDVM_DOORBELL_AUTO,		/* KVM_IOEVENTFD, else userspace */
	FDVM_DOORBELL_KERNEL,		/* KVM_IOEVENTFD or fail */
	FDVM_DOORBELL_USERSPACE,	/* the exit dispatch, forced */
};

struct fdvm_doorbell_config {
	enum fdvm_space space;
	uint64_t addr;
	/* 1, 2, 4 or 8: writes of exactly this size at addr. 0: any size
	 * (KVM_CAP_IOEVENTFD_ANY_LENGTH); datamatch needs a size. */
	uint32_t len;
	bool datamatch;		/* only writes of this value */
	uint64_t data;
	enum fdvm_doorbell_mode mode;
	/*
	 * The device region the doorbell lies in, if any: a doorbell must lie
	 * wholly inside this region, or, when NULL, touch no region at all, so
	 * that it never steals writes from a device that did not ask for it.
	 */
	struct fdvm_io_region *region;
	int fd;			/* -1: the doorbell makes its eventfd; else dup'd */
};

void fdvm_doorbell_config_init(struct fdvm_doorbell_config *cfg);

/*
 * Registers a doorbell. Checked before anything is registered: -EINVAL for
 * a bad size, a datamatch value wider than the size, or a port above
 * 0xffff; -EBUSY for a doorbell that overlaps another one (several
 * datamatch doorbells with different values on the same address and size
 * are fine) or a device region it does not belong to; -EBADF/-EINVAL for
 * an fd that is not an open eventfd. On failure nothing is left behind.
 */
int fdvm_doorbell_create(struct fdvm_vm *vm, const struct fdvm_doorbell_config *cfg,
			 struct fdvm_doorbell **out);

/* Unregisters exactly what was registered, then closes the eventfd. When
 * it returns, no write signals this doorbell any more. */
void fdvm_doorbell_destroy(struct fdvm_doorbell *db);

int fdvm_doorbell_fd(const struct fdvm_doorbell *db);
bool fdvm_doorbell_in_kernel(const struct fdvm_doorbell *db);

#ifdef __cplusplus
}
#endif

#endif
