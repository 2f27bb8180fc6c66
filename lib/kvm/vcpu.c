/* vCPUs: creation, the PVH entry state, register dumps (CPUID: cpuid.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../vm_priv.h"

int fdvm_vcpu_init(struct fdvm_vm *vm, struct fdvm_vcpu *vcpu, int id, struct kvm_cpuid2 *cpuid)
{
	int ret, size;

	memset(vcpu, 0, sizeof(*vcpu));
	vcpu->vm = vm;
	vcpu->id = id;
	vcpu->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vcpu->wake_fd < 0)
		return fdvm_log_errno(vm, errno, "vcpu %d: eventfd (wake)", id);
	pthread_mutex_init(&vcpu->kick_lock, NULL);
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (vcpu->fd < 0) {
		ret = fdvm_log_errno(vm, errno, "vcpu %d: KVM_CREATE_VCPU", id);
		pthread_mutex_destroy(&vcpu->kick_lock);
		close(vcpu->wake_fd);
		vcpu->wake_fd = -1;
		return ret;
	}
	size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < (int)sizeof(struct kvm_run)) {
		ret = fdvm_log_errno(vm, size < 0 ? errno : EINVAL,
				     "vcpu %d: KVM_GET_VCPU_MMAP_SIZE", id);
		goto err_close;
	}
	vcpu->run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		ret = fdvm_log_errno(vm, errno, "vcpu %d: mmap kvm_run", id);
		goto err_close;
	}
	vcpu->run_size = size;
	ret = fdvm_vcpu_set_cpuid(vcpu, cpuid);
	if (ret)
		goto err_unmap;
	return 0;

err_unmap:
	munmap(vcpu->run, vcpu->run_size);
	vcpu->run = NULL;
err_close:
	close(vcpu->fd);
	vcpu->fd = -1;
	pthread_mutex_destroy(&vcpu->kick_lock);
	close(vcpu->wake_fd);
	vcpu->wake_fd = -1;
	return ret;
}

void fdvm_vcpu_exit(struct fdvm_vcpu *vcpu)
{
	if (vcpu->run)
		munmap(vcpu->run, vcpu->run_size);
	vcpu->run = NULL;
	if (vcpu->fd >= 0) {
		close(vcpu->fd);
		pthread_mutex_destroy(&vcpu->kick_lock);
	}
	vcpu->fd = -1;
	if (vcpu->wake_fd >= 0)
		close(vcpu->wake_fd);
	vcpu->wake_fd = -1;
}

/*
 * The PVH boot ABI's entry state: 32-bit protected mode, paging off, flat
 * 4 GiB code and data segments, %ebx = start info.
 */
int fdvm_vcpu_set_pvh_entry(struct fdvm_vcpu *vcpu, uint32_t entry, uint32_t start_info)
{
	struct fdvm_vm *vm = vcpu->vm;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	const struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 0xb,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment data = code;

	data.selector = 0x18;
	data.type = 0x3;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return fdvm_log_errno(vm, errno, "vcpu %d: KVM_GET_SREGS", vcpu->id);
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr3 = 0;
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return fdvm_log_errno(vm, errno, "vcpu %d: KVM_SET_SREGS", vcpu->id);
	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rbx = start_info;
	regs.rflags = 0x2;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return fdvm_log_errno(vm, errno, "vcpu %d: KVM_SET_REGS", vcpu->id);
	return 0;
}

void fdvm_vcpu_dump(struct fdvm_vcpu *vcpu, enum fdvm_log_level level)
{
	struct fdvm_vm *vm = vcpu->vm;
	struct kvm_regs r;
	struct kvm_sregs s;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0) {
		fdvm_log_errno(vm, errno, "vcpu %d: reading registers", vcpu->id);
		return;
	}
	fdvm_log(vm, level,
		 "vcpu %d: rip %016llx rsp %016llx rflags %08llx cs %04x (cpl %u)",
		 vcpu->id, r.rip, r.rsp, r.rflags, s.cs.selector, s.cs.selector & 3);
	fdvm_log(vm, level, "vcpu %d: rax %016llx rbx %016llx rcx %016llx rdx %016llx",
		 vcpu->id, r.rax, r.rbx, r.rcx, r.rdx);
	fdvm_log(vm, level, "vcpu %d: rsi %016llx rdi %016llx rbp %016llx r8  %016llx",
		 vcpu->id, r.rsi, r.rdi, r.rbp, r.r8);
	fdvm_log(vm, level, "vcpu %d: r9  %016llx r10 %016llx r11 %016llx r12 %016llx",
		 vcpu->id, r.r9, r.r10, r.r11, r.r12);
	fdvm_log(vm, level, "vcpu %d: r13 %016llx r14 %016llx r15 %016llx",
		 vcpu->id, r.r13, r.r14, r.r15);
	fdvm_log(vm, level, "vcpu %d: cr0 %08llx cr2 %016llx cr3 %016llx cr4 %08llx efer %llx",
		 vcpu->id, s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
}
