/*
 * Guest RAM: one anonymous mapping, split around the MMIO hole below 4 GiB
 * into at most two KVM memory slots.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

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

	/*
	 * A memfd, so that another process (a vhost-user backend, a test's
	 * backend process) can map the same guest RAM.
	 */
	vm->mem_fd = memfd_create("fdvm-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (vm->mem_fd < 0)
		return fdvm_log_errno(vm, errno, "guest memory: memfd_create");
	if (ftruncate(vm->mem_fd, (off_t)size) < 0) {
		ret = fdvm_log_errno(vm, errno, "guest memory (%llu MiB): ftruncate",
				     (unsigned long long)(size >> 20));
		goto err_close;
	}
	/* Its size is fixed: a process it is shared with can trust it (a
	 * mapping past the end of a shrunk file would fault there). */
	if (fcntl(vm->mem_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		ret = fdvm_log_errno(vm, errno, "guest memory: sealing its size");
		goto err_close;
	}
	vm->mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
		       vm->mem_fd, 0);
	if (vm->mem == MAP_FAILED) {
		vm->mem = NULL;
		ret = fdvm_log_errno(vm, errno, "guest memory (%llu MiB): mmap",
				     (unsigned long long)(size >> 20));
		goto err_close;
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
			goto err_close;
		}
	}
	return 0;

err_close:
	close(vm->mem_fd);
	vm->mem_fd = -1;
	return ret;
}

void fdvm_memory_exit(struct fdvm_vm *vm)
{
	for (unsigned i = vm->nram; i--;)
		set_slot(vm, &vm->ram[i], 0);
	vm->nram = 0;
	if (vm->mem)
		munmap(vm->mem, vm->mem_size);
	vm->mem = NULL;
	if (vm->mem_fd >= 0)
		close(vm->mem_fd);
	vm->mem_fd = -1;
}

int fdvm_vm_mem_fd(const struct fdvm_vm *vm, uint64_t gpa, uint64_t *offset)
{
	for (unsigned i = 0; i < vm->nram; i++) {
		if (gpa >= vm->ram[i].gpa && gpa - vm->ram[i].gpa < vm->ram[i].size) {
			*offset = (uint64_t)(vm->ram[i].host - vm->mem) + (gpa - vm->ram[i].gpa);
			return vm->mem_fd;
		}
	}
	return -1;
}
