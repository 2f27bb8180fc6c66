/* The KVM VM: its fds, memory, buses, vCPU, interrupt routing; stop
 * requests and the guest-memory accessor. The machine around it (COM1,
 * power, PCI) is lib/machine.c's. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "fdvm/abi.h"
#include "fdvm/gsi.h"

#include "../vm_priv.h"

/* Where KVM on Intel keeps its real-mode TSS and identity map: in the
 * MMIO hole, below the IOAPIC, never RAM. */
#define KVM_TSS_ADDR 0xfffbd000ull
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ull

void fdvm_vm_config_init(struct fdvm_vm_config *cfg)
{
	*cfg = (struct fdvm_vm_config){
		.mem_size = 64ull << 20,
		.unhandled_pio = FDVM_UNHANDLED_STOP,
		.unhandled_mmio = FDVM_UNHANDLED_STOP,
		.console_fd = 1,
		.console_in_fd = -1,
		.kvm_path = "/dev/kvm",
		.log_level = FDVM_LOG_WARN,
		.kick_signal = SIGUSR2,
		.counters = true,
		.cpus = 1,
	};
}

int fdvm_mem_size_check(uint64_t size, char *err, size_t errlen)
{
	struct sysinfo si;

	if (size < FDVM_MEM_MIN) {
		snprintf(err, errlen, "%llu bytes of guest memory is too small (at least %llu MiB)",
			 (unsigned long long)size, FDVM_MEM_MIN >> 20);
		return -EINVAL;
	}
	if (size & 0xfff) {
		snprintf(err, errlen, "guest memory size %llu is not a multiple of 4 KiB",
			 (unsigned long long)size);
		return -EINVAL;
	}
	if (sysinfo(&si) == 0) {
		uint64_t host = (uint64_t)si.totalram * si.mem_unit;
		if (size > host) {
			snprintf(err, errlen,
				 "%llu MiB of guest memory is more than this host has (%llu MiB)",
				 (unsigned long long)(size >> 20),
				 (unsigned long long)(host >> 20));
			return -EINVAL;
		}
	}
	return 0;
}

static int kvm_open(struct fdvm_vm *vm)
{
	const char *path = vm->cfg.kvm_path;
	int ret;

	vm->kvm_fd = open(path, O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int e = errno;
		if (e == EACCES)
			fdvm_log(vm, FDVM_LOG_ERROR, "%s: open: %s (add the user to the group that "
				 "owns it, usually kvm: usermod -aG kvm USER, then log in again)",
				 path, strerror(e));
		else if (e == ENOENT)
			fdvm_log(vm, FDVM_LOG_ERROR, "%s: open: %s (is the kvm module loaded, and is "
				 "virtualization on in the firmware?)", path, strerror(e));
		else
			fdvm_log(vm, FDVM_LOG_ERROR, "%s: open: %s", path, strerror(e));
		return -e;
	}
	ret = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (ret < 0) {
		ret = -errno;
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: not a KVM device (KVM_GET_API_VERSION: %s)", path,
			 strerror(-ret));
		goto err_close_kvm;
	}
	if (ret != KVM_API_VERSION) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: KVM API version %d, fdvm needs %d",
			 path, ret, KVM_API_VERSION);
		ret = -ENOTSUP;
		goto err_close_kvm;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		ret = fdvm_log_errno(vm, errno, "%s: KVM_CREATE_VM", path);
		goto err_close_kvm;
	}
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0) {
		ret = fdvm_log_errno(vm, errno, "vm: KVM_SET_TSS_ADDR");
		goto err_close_vm;
	}
	uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) {
		ret = fdvm_log_errno(vm, errno, "vm: KVM_SET_IDENTITY_MAP_ADDR");
		goto err_close_vm;
	}
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		ret = fdvm_log_errno(vm, errno, "vm: KVM_CREATE_IRQCHIP");
		goto err_close_vm;
	}
	/* The PIT (ports 0x40-0x43, and 0x61's timer gate) in KVM, on IRQ 0
	 * (IOAPIC pin 2, as the MADT's override says): Linux calibrates with
	 * it early. */
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
		ret = fdvm_log_errno(vm, errno, "vm: KVM_CREATE_PIT2");
		goto err_close_vm;
	}
	return 0;

err_close_vm:
	close(vm->vm_fd);
err_close_kvm:
	close(vm->kvm_fd);
	return ret;
}

static void read_caps(struct fdvm_vm *vm)
{
	struct fdvm_caps *c = &vm->caps;
#define HAS(cap) (ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, cap) > 0)
	c->irqfd = HAS(KVM_CAP_IRQFD);
	c->irqfd_resample = HAS(KVM_CAP_IRQFD_RESAMPLE);
	c->signal_msi = HAS(KVM_CAP_SIGNAL_MSI);
	c->ioeventfd = HAS(KVM_CAP_IOEVENTFD);
	c->ioeventfd_any_length = HAS(KVM_CAP_IOEVENTFD_ANY_LENGTH);
#undef HAS
}

static void vcpus_exit(struct fdvm_vm *vm, unsigned n)
{
	while (n--)
		fdvm_vcpu_exit(&vm->vcpus[n]);
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->ncpus = 0;
}

/* cfg.cpus vCPUs, id = index = APIC id; vCPU 0 is the bootstrap processor,
 * the others wait (in KVM) for the guest's INIT and SIPI. */
static int vcpus_init(struct fdvm_vm *vm)
{
	unsigned n = vm->cfg.cpus ? vm->cfg.cpus : 1;
	int max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);

	if (max <= 0)
		max = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max <= 0)
		max = 4; /* what KVM guarantees without either */
	if (n > FDVM_MAX_CPUS || (int)n > max) {
		fdvm_log(vm, FDVM_LOG_ERROR, "vm: %u vCPUs: at most %d here (KVM allows %d, fdvm %d)",
			 n, max < FDVM_MAX_CPUS ? max : FDVM_MAX_CPUS, max, FDVM_MAX_CPUS);
		return -EINVAL;
	}
	if (n > 1 && !vm->cfg.kick_signal) {
		/* An application processor waits for its SIPI inside KVM_RUN;
		 * only a signal gets it out to stop. */
		fdvm_log(vm, FDVM_LOG_ERROR, "vm: %u vCPUs need a kick signal (config kick_signal is 0)", n);
		return -EINVAL;
	}
	vm->vcpus = calloc(n, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	vm->ncpus = n; /* the CPUID tells the topology */
	struct kvm_cpuid2 *cpuid;
	int ret = fdvm_cpuid_build(vm, &cpuid);
	if (ret) {
		vcpus_exit(vm, 0);
		return ret;
	}
	for (unsigned i = 0; i < n; i++) {
		if ((ret = fdvm_vcpu_init(vm, &vm->vcpus[i], (int)i, cpuid))) {
			vcpus_exit(vm, i);
			break;
		}
	}
	free(cpuid);
	return ret;
}

static void kvm_close(struct fdvm_vm *vm)
{
	close(vm->vm_fd);
	close(vm->kvm_fd);
}

int fdvm_kvm_vm_create(const struct fdvm_vm_config *cfg, struct fdvm_vm **vmp)
{
	struct fdvm_vm *vm;
	char err[256];
	int ret;

	*vmp = NULL;
	ret = fdvm_mem_size_check(cfg->mem_size, err, sizeof(err));
	if (ret) {
		fdvm_log_cfg(cfg, FDVM_LOG_ERROR, "%s", err);
		return ret;
	}
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	vm->cfg = *cfg;
	if (!vm->cfg.kvm_path)
		vm->cfg.kvm_path = "/dev/kvm";
	pthread_mutex_init(&vm->stop_lock, NULL);
	pthread_mutex_init(&vm->irq_lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	pthread_rwlock_init(&vm->doorbell_lock, NULL);
	atomic_init(&vm->stop_requested, false);
	atomic_init(&vm->user_doorbells, 0);
	vm->level_timer_fd = -1;
	vm->mem_fd = -1;

	ret = kvm_open(vm);
	if (ret)
		goto err_free;
	read_caps(vm);
	ret = fdvm_gsi_init(vm);
	if (ret)
		goto err_kvm;
	vm->gsi_routes = fdvm_gsi_msi_free(vm) > 0;
	ret = fdvm_memory_init(vm);
	if (ret)
		goto err_gsi;
	ret = fdvm_iobus_init(&vm->bus[FDVM_SPACE_PIO]);
	if (ret)
		goto err_memory;
	ret = fdvm_iobus_init(&vm->bus[FDVM_SPACE_MMIO]);
	if (ret)
		goto err_pio_bus;
	ret = vcpus_init(vm);
	if (ret)
		goto err_mmio_bus;
	*vmp = vm;
	return 0;

err_mmio_bus:
	fdvm_iobus_exit(&vm->bus[FDVM_SPACE_MMIO]);
err_pio_bus:
	fdvm_iobus_exit(&vm->bus[FDVM_SPACE_PIO]);
err_memory:
	fdvm_memory_exit(vm);
err_gsi:
	fdvm_gsi_exit(vm);
err_kvm:
	kvm_close(vm);
err_free:
	pthread_rwlock_destroy(&vm->doorbell_lock);
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_mutex_destroy(&vm->irq_lock);
	pthread_mutex_destroy(&vm->stop_lock);
	free(vm);
	return ret;
}

void fdvm_kvm_vm_destroy(struct fdvm_vm *vm)
{
	/* Lines and doorbells left by their owners, then what create made. */
	fdvm_doorbells_exit(vm);
	fdvm_irq_lines_exit(vm);
	vcpus_exit(vm, vm->ncpus);
	fdvm_iobus_exit(&vm->bus[FDVM_SPACE_MMIO]);
	fdvm_iobus_exit(&vm->bus[FDVM_SPACE_PIO]);
	fdvm_memory_exit(vm);
	fdvm_gsi_exit(vm);
	kvm_close(vm);
	pthread_rwlock_destroy(&vm->doorbell_lock);
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_mutex_destroy(&vm->irq_lock);
	pthread_mutex_destroy(&vm->stop_lock);
	free(vm);
}

int fdvm_vm_own(struct fdvm_vm *vm, void (*destroy)(void *), void *obj, struct fdvm_owned **out)
{
	struct fdvm_owned *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->destroy = destroy;
	o->obj = obj;
	pthread_mutex_lock(&vm->irq_lock);
	o->next = vm->owned;
	vm->owned = o;
	pthread_mutex_unlock(&vm->irq_lock);
	*out = o;
	return 0;
}

void fdvm_vm_disown(struct fdvm_vm *vm, struct fdvm_owned *o)
{
	pthread_mutex_lock(&vm->irq_lock);
	for (struct fdvm_owned **p = &vm->owned; *p; p = &(*p)->next) {
		if (*p == o) {
			*p = o->next;
			break;
		}
	}
	pthread_mutex_unlock(&vm->irq_lock);
	free(o);
}

const char *fdvm_stop_reason_name(enum fdvm_stop_reason reason)
{
	static const char *const names[] = {
		[FDVM_STOP_POWEROFF] = "power-off",
		[FDVM_STOP_EXIT_PORT] = "exit port",
		[FDVM_STOP_SHUTDOWN] = "triple fault",
		[FDVM_STOP_GUEST_ERROR] = "guest error",
		[FDVM_STOP_HOST_ERROR] = "host error",
		[FDVM_STOP_REQUESTED] = "stop requested",
		[FDVM_STOP_RESET] = "reset",
	};
	if ((unsigned)reason < sizeof(names) / sizeof(names[0]))
		return names[reason];
	return "unknown";
}

int fdvm_stop_exit_status(const struct fdvm_stop *stop)
{
	switch (stop->reason) {
	case FDVM_STOP_POWEROFF:
	case FDVM_STOP_EXIT_PORT:
		return stop->status;
	case FDVM_STOP_SHUTDOWN:
	case FDVM_STOP_GUEST_ERROR:
		return 4;
	case FDVM_STOP_REQUESTED:
		return 8;
	case FDVM_STOP_RESET:
		return 12;
	default:
		return 6;
	}
}

void fdvm_vm_set_stop(struct fdvm_vm *vm, enum fdvm_stop_reason reason, int status)
{
	pthread_mutex_lock(&vm->stop_lock);
	if (!vm->stopped) {
		vm->stopped = true;
		vm->stop = (struct fdvm_stop){ reason, status };
	}
	pthread_mutex_unlock(&vm->stop_lock);
	fdvm_vm_request_stop(vm);
}

void fdvm_vm_request_stop(struct fdvm_vm *vm)
{
	atomic_store(&vm->stop_requested, true);
	for (unsigned i = 0; i < vm->ncpus; i++) {
		struct fdvm_vcpu *vcpu = &vm->vcpus[i];
		fdvm_vcpu_leave_guest(vcpu);
		/* And a parked one. */
		if (vcpu->wake_fd >= 0)
			fdvm_eventfd_signal(vcpu->wake_fd);
	}
}

void fdvm_vm_power_off(struct fdvm_vm *vm)
{
	fdvm_vm_set_stop(vm, FDVM_STOP_POWEROFF, 0);
}

/* pause_lock held: a vCPU is running guest code (in its run loop, not
 * parked). */
static bool any_unparked(struct fdvm_vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vm->vcpus[i].in_run && !vm->vcpus[i].parked)
			return true;
	return false;
}

/* pause_lock held: kicks every vCPU out of the guest and waits until each
 * is parked or not running (one that starts parks before it enters). */
static void wait_parked(struct fdvm_vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		fdvm_vcpu_leave_guest(&vm->vcpus[i]);
	while (any_unparked(vm) && !atomic_load(&vm->stop_requested))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
}

/* Parked vCPUs look at the flags again. */
static void wake_parked(struct fdvm_vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		fdvm_eventfd_signal(vm->vcpus[i].wake_fd);
}

int fdvm_vm_pause(struct fdvm_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, true);
	wait_parked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
	return atomic_load(&vm->stop_requested) ? -ESHUTDOWN : 0;
}

int fdvm_vm_resume(struct fdvm_vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, false);
	pthread_mutex_unlock(&vm->pause_lock);
	wake_parked(vm);
	return atomic_load(&vm->stop_requested) ? -ESHUTDOWN : 0;
}

void fdvm_vm_hold(struct fdvm_vm *vm, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_fetch_add(&vm->holds, 1);
	wait_parked(vm);
	pthread_mutex_unlock(&vm->pause_lock);
	fn(arg);
	atomic_fetch_sub(&vm->holds, 1);
	wake_parked(vm);
}

enum fdvm_vm_state fdvm_vm_state(struct fdvm_vm *vm)
{
	enum fdvm_vm_state st;

	pthread_mutex_lock(&vm->stop_lock);
	bool stopped = vm->stopped || atomic_load(&vm->stop_requested);
	pthread_mutex_unlock(&vm->stop_lock);
	if (stopped)
		return FDVM_VM_STOPPED;
	pthread_mutex_lock(&vm->pause_lock);
	if (atomic_load(&vm->pause_requested))
		st = FDVM_VM_PAUSED;
	else
		st = vm->vcpus[0].in_run ? FDVM_VM_RUNNING : FDVM_VM_CREATED;
	pthread_mutex_unlock(&vm->pause_lock);
	return st;
}

const char *fdvm_vm_state_name(enum fdvm_vm_state st)
{
	switch (st) {
	case FDVM_VM_CREATED: return "created";
	case FDVM_VM_RUNNING: return "running";
	case FDVM_VM_PAUSED: return "paused";
	case FDVM_VM_STOPPED: return "stopped";
	}
	return "?";
}

void fdvm_kvm_vcpu_run(struct fdvm_vm *vm, unsigned index)
{
	if (index < vm->ncpus && fdvm_vcpu_run(&vm->vcpus[index]))
		fdvm_vm_set_stop(vm, FDVM_STOP_HOST_ERROR, 0);
}

int fdvm_kvm_vm_run(struct fdvm_vm *vm, struct fdvm_stop *stop)
{
	int ret = fdvm_vcpu_run(&vm->vcpus[0]);

	if (ret)
		fdvm_vm_set_stop(vm, FDVM_STOP_HOST_ERROR, 0);
	pthread_mutex_lock(&vm->stop_lock);
	if (!vm->stopped) {
		vm->stopped = true;
		vm->stop = (struct fdvm_stop){ FDVM_STOP_REQUESTED, 0 };
	}
	*stop = vm->stop;
	pthread_mutex_unlock(&vm->stop_lock);
	return 0;
}

uint64_t fdvm_vm_mem_size(const struct fdvm_vm *vm) { return vm->cfg.mem_size; }

int fdvm_vm_fd(const struct fdvm_vm *vm) { return vm->vm_fd; }

int fdvm_vm_vcpu_fd(const struct fdvm_vm *vm, unsigned index, void **kvm_run)
{
	if (index >= vm->ncpus)
		return -EINVAL;
	*kvm_run = vm->vcpus[index].run;
	return vm->vcpus[index].fd;
}

unsigned fdvm_vm_cpus(const struct fdvm_vm *vm) { return vm->ncpus; }

void *fdvm_gpa(struct fdvm_vm *vm, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < vm->nram; i++) {
		const struct fdvm_ram *r = &vm->ram[i];
		/* Written so that no sum can overflow. */
		if (gpa >= r->gpa && gpa - r->gpa <= r->size &&
		    len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}
