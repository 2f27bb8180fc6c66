/*
 * The vCPU run loop and the dispatch of every KVM exit: a device handles
 * it, or it is reported with the registers and the VM stops. Nothing the
 * guest does here can crash fdvm.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../vm_priv.h"

static uint64_t load_le(const uint8_t *p, unsigned size)
{
	uint64_t v = 0;
	memcpy(&v, p, size);
	return v;
}

/* Applies the VM's policy for an access nothing claims; true = go on. */
static bool unhandled(struct fdvm_vcpu *vcpu, enum fdvm_space space, bool write,
		      uint64_t addr, unsigned size, uint64_t value)
{
	struct fdvm_vm *vm = vcpu->vm;
	enum fdvm_unhandled policy = space == FDVM_SPACE_PIO ? vm->cfg.unhandled_pio
							     : vm->cfg.unhandled_mmio;
	const char *what = space == FDVM_SPACE_PIO ? "port" : "mmio";

	if (policy == FDVM_UNHANDLED_IGNORE)
		return true;
	/* warn: the guest may repeat it forever; it must not fill the disk. */
	if (policy == FDVM_UNHANDLED_WARN) {
		if (write)
			fdvm_log_limited(vm, FDVM_LOG_SITE_UNHANDLED, FDVM_LOG_WARN,
					 "vcpu %d: unhandled %s write at 0x%llx (size %u, value 0x%llx)",
					 vcpu->id, what, (unsigned long long)addr, size,
					 (unsigned long long)value);
		else
			fdvm_log_limited(vm, FDVM_LOG_SITE_UNHANDLED, FDVM_LOG_WARN,
					 "vcpu %d: unhandled %s read at 0x%llx (size %u)",
					 vcpu->id, what, (unsigned long long)addr, size);
		return true;
	}
	/* stop: said once, never suppressed. */
	if (write)
		fdvm_log(vm, FDVM_LOG_ERROR,
			 "vcpu %d: unhandled %s write at 0x%llx (size %u, value 0x%llx)",
			 vcpu->id, what, (unsigned long long)addr, size,
			 (unsigned long long)value);
	else
		fdvm_log(vm, FDVM_LOG_ERROR,
			 "vcpu %d: unhandled %s read at 0x%llx (size %u)", vcpu->id,
			 what, (unsigned long long)addr, size);
	fdvm_vcpu_dump(vcpu, FDVM_LOG_ERROR);
	fdvm_vm_set_stop(vm, FDVM_STOP_GUEST_ERROR, 0);
	return false;
}

static bool dispatch(struct fdvm_vcpu *vcpu, enum fdvm_space space, bool write,
		   uint64_t addr, unsigned size, uint8_t *data)
{
	struct fdvm_iobus *bus = &vcpu->vm->bus[space];
	uint64_t v;

	if (write) {
		v = load_le(data, size);
		if (fdvm_doorbell_dispatch(vcpu->vm, space, addr, size, v))
			return true;
		if (!fdvm_iobus_write(bus, addr, size, v))
			return unhandled(vcpu, space, true, addr, size, v);
		return true;
	}
	if (!fdvm_iobus_read(bus, addr, size, &v)) {
		v = ~0ull;
		if (!unhandled(vcpu, space, false, addr, size, 0))
			return false;
	}
	memcpy(data, &v, size);
	return true;
}

static bool handle_io(struct fdvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	unsigned size = run->io.size;
	uint64_t off = run->io.data_offset;
	uint64_t total = (uint64_t)size * run->io.count;

	if ((size != 1 && size != 2 && size != 4) || off > vcpu->run_size ||
	    total > vcpu->run_size - off) {
		fdvm_log(vcpu->vm, FDVM_LOG_ERROR, "vcpu %d: malformed I/O exit", vcpu->id);
		fdvm_vm_set_stop(vcpu->vm, FDVM_STOP_HOST_ERROR, 0);
		return false;
	}
	for (uint32_t i = 0; i < run->io.count; i++) {
		uint8_t *data = (uint8_t *)run + off + (uint64_t)i * size;
		if (!dispatch(vcpu, FDVM_SPACE_PIO, run->io.direction == KVM_EXIT_IO_OUT,
			    run->io.port, size, data))
			return false;
	}
	return true;
}

static bool handle_mmio(struct fdvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	unsigned len = run->mmio.len;

	if (len != 1 && len != 2 && len != 4 && len != 8)
		return unhandled(vcpu, FDVM_SPACE_MMIO, run->mmio.is_write,
				 run->mmio.phys_addr, len, 0);
	return dispatch(vcpu, FDVM_SPACE_MMIO, run->mmio.is_write, run->mmio.phys_addr,
		      len, run->mmio.data);
}

__attribute__((format(printf, 2, 3)))
static void guest_error(struct fdvm_vcpu *vcpu, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fdvm_log(vcpu->vm, FDVM_LOG_ERROR, "vcpu %d: %s", vcpu->id, msg);
	fdvm_vcpu_dump(vcpu, FDVM_LOG_ERROR);
	fdvm_vm_set_stop(vcpu->vm, FDVM_STOP_GUEST_ERROR, 0);
}

static bool handle_exit(struct fdvm_vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct fdvm_vm *vm = vcpu->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		return handle_io(vcpu);
	case KVM_EXIT_MMIO:
		return handle_mmio(vcpu);
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		fdvm_log(vm, FDVM_LOG_ERROR, "vcpu %d: guest triple fault (shutdown)", vcpu->id);
		fdvm_vcpu_dump(vcpu, FDVM_LOG_ERROR);
		fdvm_vm_set_stop(vm, FDVM_STOP_SHUTDOWN, 0);
		return false;
	case KVM_EXIT_HLT:
		guest_error(vcpu, "halted with nothing to wake it");
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		guest_error(vcpu, "entry failed, hardware reason 0x%llx (cpu %u)",
			    run->fail_entry.hardware_entry_failure_reason,
			    run->fail_entry.cpu);
		return false;
	case KVM_EXIT_INTERNAL_ERROR: {
		static const char *const sub[] = { "?", "emulation failure",
			"simultaneous exceptions", "delivery event failure", "unexpected exit" };
		unsigned s = run->internal.suberror;
		fdvm_log(vm, FDVM_LOG_ERROR, "vcpu %d: KVM internal error %u (%s)", vcpu->id,
			 s, s < sizeof(sub) / sizeof(sub[0]) ? sub[s] : "unknown");
		for (unsigned i = 0; i < run->internal.ndata && i < 16; i++)
			fdvm_log(vm, FDVM_LOG_ERROR, "vcpu %d:   data[%u] = 0x%llx", vcpu->id,
				 i, run->internal.data[i]);
		fdvm_vcpu_dump(vcpu, FDVM_LOG_ERROR);
		fdvm_vm_set_stop(vm, FDVM_STOP_GUEST_ERROR, 0);
		return false;
	}
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
			fdvm_vm_set_stop(vm, FDVM_STOP_POWEROFF, 0);
			return false;
		}
		guest_error(vcpu, "system event %u (flags 0x%llx)",
			    run->system_event.type, run->system_event.flags);
		return false;
	default:
		guest_error(vcpu, "unexpected KVM exit reason %u", run->exit_reason);
		return false;
	}
}

void fdvm_vcpu_request_work(struct fdvm_vcpu *vcpu)
{
	/* Work flag, then immediate_exit, then the signal: the run loop clears
	 * immediate_exit before it looks at the flag, so one of the three
	 * always reaches it (see fdvm_vcpu_run). */
	atomic_store(&vcpu->work, true);
	fdvm_vcpu_leave_guest(vcpu);
}

void fdvm_vcpu_leave_guest(struct fdvm_vcpu *vcpu)
{
	/* The next (or a racing) KVM_RUN returns at once; one in progress
	 * (a guest in HLT, an application processor waiting for its SIPI)
	 * is interrupted by the kick. */
	if (vcpu->run)
		__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	fdvm_vcpu_kick(vcpu);
}

void fdvm_vcpu_kick(struct fdvm_vcpu *vcpu)
{
	/* The raw tgkill on the thread's id: a stop request may come from a
	 * signal handler. A thread that left fdvm_vcpu_run just now gets at
	 * most an empty handler's EINTR. */
	pid_t tid = atomic_load(&vcpu->tid);
	if (tid && atomic_load(&vcpu->vm->kick_ready))
		syscall(SYS_tgkill, getpid(), tid, vcpu->vm->cfg.kick_signal);
}

bool fdvm_vcpu_if_idle(struct fdvm_vcpu *vcpu, void (*fn)(void *), void *arg)
{
	/* kick_lock keeps fdvm_vcpu_run from starting while fn runs. */
	pthread_mutex_lock(&vcpu->kick_lock);
	bool idle = !vcpu->has_thread;
	if (idle)
		fn(arg);
	pthread_mutex_unlock(&vcpu->kick_lock);
	return idle;
}

/* Out of the guest until resumed or stopped (fdvm_vm_pause), or while a
 * hold lasts (fdvm_vm_hold). Work a userspace level line asks for
 * meanwhile waits: the guest runs nothing. */
static void park(struct fdvm_vcpu *vcpu)
{
	struct fdvm_vm *vm = vcpu->vm;
	uint64_t n;

	pthread_mutex_lock(&vm->pause_lock);
	vcpu->parked = true;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	while (fdvm_vm_parking(vm) && !atomic_load(&vm->stop_requested)) {
		struct pollfd p = { .fd = vcpu->wake_fd, .events = POLLIN };
		if (poll(&p, 1, -1) > 0)
			fdvm_eventfd_drain(vcpu->wake_fd, &n);
	}
	pthread_mutex_lock(&vm->pause_lock);
	vcpu->parked = false;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

int fdvm_vcpu_run(struct fdvm_vcpu *vcpu)
{
	struct fdvm_vm *vm = vcpu->vm;
	int ret = 0;

	pthread_mutex_lock(&vcpu->kick_lock);
	vcpu->has_thread = true;
	atomic_store(&vcpu->tid, gettid());
	pthread_mutex_unlock(&vcpu->kick_lock);
	pthread_mutex_lock(&vm->pause_lock);
	vcpu->in_run = true;
	pthread_mutex_unlock(&vm->pause_lock);
	for (;;) {
		/* Cleared first, then the flags read: a stop or a work request
		 * made after this point sets immediate_exit again, so KVM_RUN
		 * comes straight back instead of entering the guest. */
		__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
		if (atomic_load(&vm->stop_requested))
			break;
		if (fdvm_vm_parking(vm)) {
			park(vcpu);
			continue;
		}
		if (atomic_exchange(&vcpu->work, false))
			fdvm_irq_vcpu_work(vcpu);
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			ret = fdvm_log_errno(vm, errno, "vcpu %d: KVM_RUN", vcpu->id);
			break;
		}
		if (!handle_exit(vcpu))
			break;
	}
	pthread_mutex_lock(&vm->pause_lock);
	vcpu->in_run = false;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	pthread_mutex_lock(&vcpu->kick_lock);
	vcpu->has_thread = false;
	atomic_store(&vcpu->tid, 0);
	pthread_mutex_unlock(&vcpu->kick_lock);
	return ret;
}
