/*
 * Guest RAM: one anonymous mapping, split around the MMIO hole below 4 GiB
 * into at most two KVM memory slots.
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

static int set_slot(struct fdvm_vm *vm, const struct fdvm_ram *r, uint64_t size)
{
	struct kvm_userspace_memory_region region = {
		.slot = r->slot,
		.guest_phys_addr = r->gpa,
		.memory_size = size,
		.userspace_addr = (uintptr_t)r->host,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fdvm_log_errno(vm, errno,
				      "memory slot %u [0x%llx, +0x%llx): KVM_SET_USER_MEMORY_REGION",
				      r->slot, (unsigned long long)r->gpa,
				      (unsigned long long)size);
	return 0;
}

int fdvm_memory_init(struct fdvm_vm *vm)
{
	uint64_t size = vm->cfg.mem_size;
	uint64_t low = size < FDVM_MMIO_HOLE_START ? size : FDVM_MMIO_HOLE_START;
	int ret;

	vm->mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->mem == MAP_FAILED) {
		vm->mem = NULL;
		return fdvm_log_errno(vm, errno, "guest memory (%llu MiB): mmap",
				      (unsigned long long)(size >> 20));
	}
	vm->mem_size = size;
	vm->ram[0] = (struct fdvm_ram){ 0, low, vm->mem, 0 };
	vm->nram = 1;
	if (size > low)
		vm->ram[vm->nram++] = (struct fdvm_ram){ FDVM_HIGH_RAM_START, size - low,
							 vm->mem + low, 1 };
	for (unsigned i = 0; i < vm->nram; i++) {
		ret = set_slot(vm, &vm->ram[i], vm->ram[i].size);
		if (ret) {
			while (i--)
				set_slot(vm, &vm->ram[i], 0);
			munmap(vm->mem, size);
			vm->mem = NULL;
			vm->nram = 0;
			return ret;
		}
	}
	return 0;
}

void fdvm_memory_exit(struct fdvm_vm *vm)
{
	for (unsigned i = vm->nram; i--;)
		set_slot(vm, &vm->ram[i], 0);
	vm->nram = 0;
	if (vm->mem)
		munmap(vm->mem, vm->mem_size);
	vm->mem = NULL;
}
