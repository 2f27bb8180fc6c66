/*
 * The machine fdvm_vm_create assembles, one layer above the KVM VM
 * (lib/kvm/vm.c): COM1 (lib/dev/uart.c), the exit and ACPI power ports
 * (lib/dev/power.c), the CMOS RTC (lib/dev/rtc.c), the i8042's reset
 * (lib/dev/i8042.c) and the PCI host (lib/pci/host.c); and running the
 * vCPUs: vCPU 0 on the caller's thread or one of the vcpu role, every other
 * one on a thread of its own. lib/kvm/ imports nothing
 * from here or above.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "fdvm/abi.h"
#include "fdvm/sandbox.h"

#include "vm_priv.h"
#include "pci/pci_priv.h"

int fdvm_vm_create(const struct fdvm_vm_config *cfg, struct fdvm_vm **vmp)
{
	struct fdvm_vm *vm;
	int ret = fdvm_kvm_vm_create(cfg, &vm);

	if (ret)
		return ret;
	ret = fdvm_uart_init(vm, FDVM_PORT_COM1, cfg->console_fd, cfg->console_in_fd, &vm->uart);
	if (ret)
		goto err_vm;
	ret = fdvm_power_init(vm, &vm->power);
	if (ret)
		goto err_uart;
	ret = fdvm_rtc_init(vm, &vm->rtc);
	if (ret)
		goto err_power;
	ret = fdvm_i8042_init(vm, &vm->i8042);
	if (ret)
		goto err_rtc;
	ret = fdvm_pci_init(vm);
	if (ret)
		goto err_i8042;
	*vmp = vm;
	return 0;

err_i8042:
	fdvm_i8042_exit(vm, vm->i8042);
err_rtc:
	fdvm_rtc_exit(vm, vm->rtc);
err_power:
	fdvm_power_exit(vm, vm->power);
err_uart:
	fdvm_uart_exit(vm, vm->uart);
err_vm:
	fdvm_kvm_vm_destroy(vm);
	return ret;
}

void fdvm_vm_destroy(struct fdvm_vm *vm)
{
	if (!vm)
		return;
	if (vm->run_started) {
		struct fdvm_stop stop;
		fdvm_vm_request_stop(vm);
		fdvm_vm_join(vm, &stop);
	}
	/* What users created first (devices, newest first), then the machine
	 * in reverse, then the KVM VM. */
	while (vm->owned)
		vm->owned->destroy(vm->owned->obj); /* each disowns itself */
	fdvm_pci_exit(vm);
	fdvm_i8042_exit(vm, vm->i8042);
	fdvm_rtc_exit(vm, vm->rtc);
	fdvm_power_exit(vm, vm->power);
	fdvm_uart_exit(vm, vm->uart);
	fdvm_kvm_vm_destroy(vm);
}

struct ap {
	struct fdvm_vm *vm;
	unsigned index;
	pthread_t thread;
};

static void *ap_main(void *arg)
{
	struct ap *ap = arg;
	fdvm_kvm_vcpu_run(ap->vm, ap->index);
	return NULL;
}

int fdvm_vm_run(struct fdvm_vm *vm, struct fdvm_stop *stop)
{
	unsigned n = fdvm_vm_cpus(vm), started = 1;
	struct ap *aps = NULL;
	int ret = 0;

	/* The application processors, each on its own thread: they wait in
	 * KVM for the guest's SIPI, so a stop must be able to kick them. */
	if (n > 1) {
		aps = calloc(n, sizeof(*aps));
		ret = aps ? fdvm_vcpu_kick_handler(vm) : -ENOMEM;
		for (unsigned i = 1; !ret && i < n; i++) {
			char name[24];
			snprintf(name, sizeof(name), "fdvm-vcpu%u", i);
			aps[i] = (struct ap){ .vm = vm, .index = i };
			ret = fdvm_thread_create(&aps[i].thread, FDVM_ROLE_VCPU, name, ap_main, &aps[i]);
			if (ret)
				fdvm_log_errno(vm, -ret, "vm: vCPU thread %s", name);
			else
				started++;
		}
		if (ret)
			fdvm_vm_set_stop(vm, FDVM_STOP_HOST_ERROR, 0);
	}
	ret = fdvm_kvm_vm_run(vm, stop);
	if (started > 1) {
		fdvm_vm_request_stop(vm); /* vCPU 0 is out: so are the others */
		for (unsigned i = 1; i < started; i++)
			pthread_join(aps[i].thread, NULL);
	}
	free(aps);
	fdvm_uart_flush(vm->uart);
	return ret;
}

static void *run_main(void *arg)
{
	struct fdvm_vm *vm = arg;

	fdvm_vm_run(vm, &vm->run_stop);
	return NULL;
}

int fdvm_vm_start(struct fdvm_vm *vm, const char *name)
{
	if (vm->run_started)
		return -EBUSY;
	/* So that a stop request can kick a guest that idles in HLT. */
	int ret = vm->cfg.kick_signal ? fdvm_vcpu_kick_handler(vm) : 0;
	if (ret)
		return ret;
	ret = fdvm_thread_create(&vm->run_thread, FDVM_ROLE_VCPU, name, run_main, vm);
	if (ret)
		return fdvm_log_errno(vm, -ret, "vm: vCPU thread %s", name ? name : "");
	vm->run_started = true;
	return 0;
}

int fdvm_vm_join(struct fdvm_vm *vm, struct fdvm_stop *stop)
{
	if (!vm->run_started)
		return -EINVAL;
	pthread_join(vm->run_thread, NULL);
	vm->run_started = false;
	*stop = vm->run_stop;
	return 0;
}
