/*
 * A vCPU's raw KVM handles, for fdvm's own tools that drive KVM themselves
 * (the benchmark's bare floor loop, the API tests): vCPU index's fd and
 * kvm_run mapping (-EINVAL for no such vCPU). They stay the VM's; using
 * them while fdvm_vm_run runs is undefined. Exported by libfdvm, declared
 * here only: not installed.
 */
#ifndef FDVM_VM_RAW_H
#define FDVM_VM_RAW_H

struct fdvm_vm;

int fdvm_vm_vcpu_fd(const struct fdvm_vm *vm, unsigned index, void **kvm_run);

#endif
