/*
 * Interrupt lines: an eventfd, its route and its registration, owned
 * together and torn down in the opposite order (route before assign,
 * deassign before close).
 *
 * Kernel path: KVM_IRQFD. Masking an MSI line deassigns it; KVM's deassign
 * consumes the eventfd's count as it unhooks (every signal before that was
 * injected), so any count read afterwards is a signal that arrived while
 * masked: the pending bit. Unmasking with the bit set writes one count
 * before re-assigning, and KVM's check for an event pending at assign
 * injects it, coalesced with any signal that came meanwhile.
 *
 * Userspace path: the VM's service loop reads the eventfd and injects with
 * KVM_SIGNAL_MSI, or pulses an IOAPIC pin with KVM_IRQ_LINE_STATUS. KVM
 * does not tell userspace about EOIs with an in-kernel irqchip, so a level
 * line watches the pin's Remote IRR bit (KVM_GET_IRQCHIP) every
 * LEVEL_POLL_NS while it waits for one, and then writes the resample fd.
 * The pin is pulsed, never left high, so the IOAPIC cannot re-deliver on
 * its own; while the guest keeps the pin masked, the line stays pending and
 * is pulsed once the pin is unmasked. The pulse is made on the thread of
 * the vCPU the pin's entry names, while its guest code is out
 * (fdvm_vcpu_request_work kicks it): pulsed from another thread, a guest
 * quick enough to take the interrupt and EOI it between the raise and the
 * lower would see it delivered again. A destination that may reach several
 * vCPUs (logical, broadcast) is pulsed with all of them held out. The cost
 * against the kernel path is a vCPU kick per pulse and up to one poll
 * period of added latency at each EOI.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "fdvm/irq.h"
#include "fdvm/loop.h"
#include "../vm_priv.h"

#define LEVEL_POLL_NS 50000

enum level_state {
	LEVEL_IDLE,
	LEVEL_PULSE,	/* raised: the vCPU thread pulses the pin next */
	LEVEL_PENDING,	/* pulsed while the guest had the pin masked */
	LEVEL_WAIT_EOI,	/* delivered: waiting for Remote IRR to clear */
};

struct fdvm_irq_line {
	struct fdvm_vm *vm;
	struct fdvm_irq_line *next;	/* vm->lines, under vm->irq_lock */
	enum fdvm_irq_kind kind;
	bool kernel;
	bool borrowed;
	int fd, resample_fd;
	uint32_t gsi;			/* MSI: allocated; LEVEL: the pin */
	bool watched;			/* userspace: fd is on the service loop */

	pthread_mutex_t lock;		/* guards everything below */
	struct fdvm_msi msi;
	bool masked, pending, assigned;
	enum level_state level;		/* userspace LEVEL only */
	unsigned target;		/* LEVEL_PULSE: the vCPU that pulses it, or TARGET_ALL */
	uint64_t masked_signals;	/* MSI: counts drained while masked */
	uint64_t unmask_deliveries;	/* MSI: unmasks that found pending set */
};

void fdvm_irq_line_config_init(struct fdvm_irq_line_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->kind = FDVM_IRQ_MSI;
	cfg->mode = FDVM_IRQ_AUTO;
	cfg->fd = -1;
}

int fdvm_irq_line_fd(const struct fdvm_irq_line *l) { return l->fd; }
int fdvm_irq_line_resample_fd(const struct fdvm_irq_line *l) { return l->resample_fd; }
bool fdvm_irq_line_in_kernel(const struct fdvm_irq_line *l) { return l->kernel; }
uint32_t fdvm_irq_line_gsi(const struct fdvm_irq_line *l) { return l->gsi; }

/* ---- kernel path ---- */

/* Line lock held (or line not yet visible). */
static int irqfd_assign(struct fdvm_irq_line *l)
{
	struct kvm_irqfd a = { .fd = (uint32_t)l->fd, .gsi = l->gsi };

	if (l->kind == FDVM_IRQ_LEVEL) {
		a.flags = KVM_IRQFD_FLAG_RESAMPLE;
		a.resamplefd = (uint32_t)l->resample_fd;
	} else {
		int ret = fdvm_gsi_sync(l->vm);
		if (ret)
			return ret; /* route before assign: no route, no assign */
	}
	if (ioctl(l->vm->vm_fd, KVM_IRQFD, &a) < 0) {
		int err = errno;
		if (err == EBUSY)
			fdvm_log(l->vm, FDVM_LOG_ERROR,
				 "irq line gsi %u: KVM_IRQFD assign: eventfd %d is already bound to another irqfd: %s",
				 l->gsi, l->fd, strerror(err));
		else
			fdvm_log_errno(l->vm, err, "irq line gsi %u: KVM_IRQFD assign (fd %d)",
				       l->gsi, l->fd);
		return -err;
	}
	l->assigned = true;
	return 0;
}

static void irqfd_deassign(struct fdvm_irq_line *l)
{
	struct kvm_irqfd a = { .fd = (uint32_t)l->fd, .gsi = l->gsi,
			       .flags = KVM_IRQFD_FLAG_DEASSIGN };

	if (!l->assigned)
		return;
	l->assigned = false;
	if (ioctl(l->vm->vm_fd, KVM_IRQFD, &a) == 0)
		return;
	/* A borrowed fd closed by its owner: KVM's POLLHUP already did it. */
	if (l->borrowed && (errno == EBADF || errno == ENOENT || errno == EINVAL))
		fdvm_log(l->vm, FDVM_LOG_DEBUG, "irq line gsi %u: already released by its eventfd's close",
			 l->gsi);
	else
		fdvm_log_errno(l->vm, errno, "irq line gsi %u: KVM_IRQFD deassign", l->gsi);
}

/* ---- userspace path ---- */

int fdvm_vm_signal_msi(struct fdvm_vm *vm, const struct fdvm_msi *msg)
{
	struct kvm_msi m = { .address_lo = (uint32_t)msg->address,
			     .address_hi = (uint32_t)(msg->address >> 32),
			     .data = msg->data };
	if (ioctl(vm->vm_fd, KVM_SIGNAL_MSI, &m) < 0)
		return fdvm_log_errno(vm, errno, "msi 0x%llx/0x%x: KVM_SIGNAL_MSI",
				      (unsigned long long)msg->address, msg->data);
	return 0;
}

static void inject_msi(struct fdvm_irq_line *l)
{
	fdvm_vm_signal_msi(l->vm, &l->msi);
}

static int irq_line(struct fdvm_vm *vm, uint32_t pin, uint32_t level, bool want_status)
{
	struct kvm_irq_level a = { .irq = pin, .level = level };

	if (ioctl(vm->vm_fd, want_status ? KVM_IRQ_LINE_STATUS : KVM_IRQ_LINE, &a) < 0)
		return fdvm_log_errno(vm, errno, "ioapic pin %u: KVM_IRQ_LINE", pin);
	return want_status ? a.status : 0;
}

/* Line lock held. One edge on the pin; true if it reached a CPU. */
static bool level_pulse(struct fdvm_irq_line *l)
{
	int delivered = irq_line(l->vm, l->gsi, 1, true);
	irq_line(l->vm, l->gsi, 0, false);
	return delivered > 0;
}

static void pulse_now(void *arg)
{
	struct fdvm_irq_line *l = arg;
	l->level = level_pulse(l) ? LEVEL_WAIT_EOI : LEVEL_PENDING;
}

#define TARGET_ALL UINT_MAX

/*
 * The vCPU a pin's interrupt goes to: its IOAPIC entry's destination in
 * physical mode (APIC id = vCPU index). A logical or broadcast destination
 * may reach several: TARGET_ALL, pulsed with every vCPU out (pulse_held).
 */
static unsigned pin_target(struct fdvm_vm *vm, uint32_t pin)
{
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };

	if (vm->ncpus == 1 || pin >= KVM_IOAPIC_NUM_PINS)
		return 0;
	if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0) {
		fdvm_log_errno(vm, errno, "irq: KVM_GET_IRQCHIP (ioapic)");
		return TARGET_ALL;
	}
	const __typeof__(chip.chip.ioapic.redirtbl[0]) *e = &chip.chip.ioapic.redirtbl[pin];
	if (e->fields.dest_mode == 0 && e->fields.dest_id < vm->ncpus)
		return e->fields.dest_id;
	return TARGET_ALL;
}

/* Line lock held: a pulse where no EOI can race with it: now if no thread
 * runs the vCPU the pin delivers to, else on that vCPU's thread with its
 * guest code out; for TARGET_ALL, by the level poll timer (level_poll),
 * which holds every vCPU out for it. */
static void request_pulse(struct fdvm_irq_line *l)
{
	unsigned target = pin_target(l->vm, l->gsi);

	if (target == TARGET_ALL) {
		l->level = LEVEL_PULSE;
		l->target = TARGET_ALL;
		return;
	}
	struct fdvm_vcpu *vcpu = &l->vm->vcpus[target];
	if (fdvm_vcpu_if_idle(vcpu, pulse_now, l))
		return;
	l->level = LEVEL_PULSE;
	l->target = target;
	fdvm_vcpu_request_work(vcpu);
}

/* Line lock held: a pulse asked of target (a vCPU's id, or TARGET_ALL). */
static bool pulse_asked(const struct fdvm_irq_line *l, unsigned target)
{
	return l->level == LEVEL_PULSE && l->target == target;
}

/* The pulses asked of target, made now: on that vCPU's thread with its
 * guest out, or for TARGET_ALL with every vCPU held out. */
static void pulse_asked_of(struct fdvm_vm *vm, unsigned target)
{
	pthread_mutex_lock(&vm->irq_lock);
	for (struct fdvm_irq_line *l = vm->lines; l; l = l->next) {
		if (l->kernel || l->kind != FDVM_IRQ_LEVEL)
			continue;
		pthread_mutex_lock(&l->lock);
		if (pulse_asked(l, target))
			pulse_now(l);
		pthread_mutex_unlock(&l->lock);
	}
	pthread_mutex_unlock(&vm->irq_lock);
}

/* fdvm_vm_hold's work: every vCPU is out of the guest. */
static void pulse_held(void *arg)
{
	pulse_asked_of(arg, TARGET_ALL);
}

static void level_poll_arm(struct fdvm_vm *vm, bool on)
{
	struct itimerspec t = { 0 };
	if (on)
		t.it_interval.tv_nsec = t.it_value.tv_nsec = LEVEL_POLL_NS;
	if (timerfd_settime(vm->level_timer_fd, 0, &t, NULL) < 0)
		fdvm_log_errno(vm, errno, "irq: level poll timer: timerfd_settime");
}

/* The service loop's timer: looks at the IOAPIC for EOIs and unmasks. */
static void level_poll(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vm *vm = opaque;
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };
	uint64_t ticks;
	bool busy = false, hold = false;

	(void)events;
	fdvm_eventfd_drain(fd, &ticks);
	if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chip) < 0) {
		fdvm_log_errno(vm, errno, "irq: KVM_GET_IRQCHIP (ioapic)");
		return;
	}
	pthread_mutex_lock(&vm->irq_lock);
	for (struct fdvm_irq_line *l = vm->lines; l; l = l->next) {
		if (l->kernel || l->kind != FDVM_IRQ_LEVEL)
			continue;
		pthread_mutex_lock(&l->lock);
		const __typeof__(chip.chip.ioapic.redirtbl[0]) *e = &chip.chip.ioapic.redirtbl[l->gsi];
		if (l->level == LEVEL_WAIT_EOI && !e->fields.remote_irr) {
			l->level = LEVEL_IDLE;
			fdvm_eventfd_signal(l->resample_fd);
		} else if (l->level == LEVEL_PENDING && !e->fields.mask) {
			request_pulse(l);
		}
		busy |= l->level != LEVEL_IDLE;
		hold |= pulse_asked(l, TARGET_ALL);
		pthread_mutex_unlock(&l->lock);
	}
	if (!busy && vm->level_timer_armed) {
		vm->level_timer_armed = false;
		level_poll_arm(vm, false);
	}
	pthread_mutex_unlock(&vm->irq_lock);
	/* Here, not on a line's own watch: a vCPU thread may be deleting
	 * that watch (fdvm_loop_del waits for its callback), never this one. */
	if (hold)
		fdvm_vm_hold(vm, pulse_held, vm);
}

/* On a vCPU's thread, its guest code stopped: the pulses asked of it. */
void fdvm_irq_vcpu_work(struct fdvm_vcpu *vcpu)
{
	pulse_asked_of(vcpu->vm, (unsigned)vcpu->id);
}

/* The service loop: a signal on a userspace line's eventfd. */
static void line_signalled(void *opaque, int fd, uint32_t events)
{
	struct fdvm_irq_line *l = opaque;
	struct fdvm_vm *vm = l->vm;
	uint64_t count;

	(void)events;
	if (l->kind == FDVM_IRQ_MSI) {
		/* Drained under the lock, so mask() sees each signal either
		 * before (and injects it) or after (and makes it pending). */
		pthread_mutex_lock(&l->lock);
		if (!fdvm_eventfd_drain(fd, &count) && count) {
			if (l->masked) {
				l->pending = true;
				l->masked_signals += count;
			} else
				inject_msi(l);
		}
		pthread_mutex_unlock(&l->lock);
		return;
	}
	if (fdvm_eventfd_drain(fd, &count) || !count)
		return;
	/* Level: signals while pending or before the EOI are absorbed, as the
	 * kernel absorbs them on a line that is already high. */
	pthread_mutex_lock(&vm->irq_lock);
	pthread_mutex_lock(&l->lock);
	if (l->level == LEVEL_IDLE)
		request_pulse(l);
	bool arm = l->level != LEVEL_IDLE && !vm->level_timer_armed;
	pthread_mutex_unlock(&l->lock);
	if (arm) {
		vm->level_timer_armed = true;
		level_poll_arm(vm, true);
	}
	pthread_mutex_unlock(&vm->irq_lock);
}

static void kick_noop(int sig) { (void)sig; }

/* The vCPU's kick (a userspace level line's pulse, a stop) must interrupt
 * KVM_RUN: its signal needs a handler. */
int fdvm_vcpu_kick_handler(struct fdvm_vm *vm)
{
	struct sigaction old, sa = { .sa_handler = kick_noop };
	int sig = vm->cfg.kick_signal;

	if (!sig) {
		fdvm_log(vm, FDVM_LOG_ERROR,
			 "irq line: a userspace level line needs a kick signal (config kick_signal is 0)");
		return -ENOTSUP;
	}
	if (sigaction(sig, NULL, &old) < 0)
		return fdvm_log_errno(vm, errno, "vcpu: kick signal %d: sigaction", sig);
	/* A handler of the embedder's interrupts KVM_RUN as well as ours. */
	if (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN) {
		sigemptyset(&sa.sa_mask);
		if (sigaction(sig, &sa, NULL) < 0)
			return fdvm_log_errno(vm, errno, "vcpu: kick signal %d: sigaction", sig);
	}
	atomic_store(&vm->kick_ready, true);
	return 0;
}

int fdvm_irq_pin_set(struct fdvm_vm *vm, uint32_t pin, bool level)
{
	return irq_line(vm, pin, level, false);
}

/* Starts the VM's service loop (once) and the level poll timer on it. */
int fdvm_vm_service_loop(struct fdvm_vm *vm, struct fdvm_loop **out)
{
	int ret = 0;

	pthread_mutex_lock(&vm->irq_lock);
	if (vm->loop)
		goto out;
	if (vm->cfg.loop) {
		vm->loop = vm->cfg.loop;
	} else {
		ret = fdvm_epoll_loop_create(&vm->own_loop);
		if (ret) {
			fdvm_log_errno(vm, -ret, "irq: service loop: create");
			goto out;
		}
		ret = fdvm_epoll_loop_start_as(vm->own_loop, "fdvm-irq", FDVM_ROLE_SERVICE);
		if (ret) {
			fdvm_log_errno(vm, -ret, "irq: service loop: start thread");
			goto err_loop;
		}
		vm->loop = fdvm_epoll_loop_handle(vm->own_loop);
	}
	vm->level_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (vm->level_timer_fd < 0) {
		ret = fdvm_log_errno(vm, errno, "irq: level poll timer: timerfd_create");
		goto err_loop;
	}
	ret = fdvm_loop_add(vm->loop, vm->level_timer_fd, EPOLLIN, level_poll, vm);
	if (ret) {
		fdvm_log_errno(vm, -ret, "irq: level poll timer: watch");
		goto err_timer;
	}
	goto out;

err_timer:
	close(vm->level_timer_fd);
	vm->level_timer_fd = -1;
err_loop:
	vm->loop = NULL;
	fdvm_epoll_loop_destroy(vm->own_loop);
	vm->own_loop = NULL;
out:
	if (!ret)
		*out = vm->loop;
	pthread_mutex_unlock(&vm->irq_lock);
	return ret;
}

void fdvm_irq_service_exit(struct fdvm_vm *vm)
{
	if (!vm->loop)
		return;
	fdvm_loop_del(vm->loop, vm->level_timer_fd);
	close(vm->level_timer_fd);
	vm->level_timer_fd = -1;
	fdvm_epoll_loop_destroy(vm->own_loop); /* joins the thread */
	vm->own_loop = NULL;
	vm->loop = NULL;
}

/* ---- lines ---- */

static bool want_kernel(struct fdvm_vm *vm, const struct fdvm_irq_line_config *cfg, int *err)
{
	bool can = vm->caps.irqfd && (cfg->kind == FDVM_IRQ_MSI ? vm->gsi_routes
							     : vm->caps.irqfd_resample);
	*err = 0;
	if (cfg->mode == FDVM_IRQ_USERSPACE)
		return false;
	if (cfg->mode == FDVM_IRQ_KERNEL && !can)
		*err = -ENOTSUP;
	return can;
}

int fdvm_irq_line_create(struct fdvm_vm *vm, const struct fdvm_irq_line_config *cfg,
			 struct fdvm_irq_line **out)
{
	struct fdvm_irq_line *l;
	struct fdvm_loop *loop = NULL;
	int ret;

	*out = NULL;
	if (cfg->kind != FDVM_IRQ_MSI && cfg->kind != FDVM_IRQ_LEVEL) {
		fdvm_log(vm, FDVM_LOG_ERROR, "irq line: unknown kind %d", (int)cfg->kind);
		return -EINVAL;
	}
	if (cfg->kind == FDVM_IRQ_LEVEL && cfg->masked) {
		fdvm_log(vm, FDVM_LOG_ERROR, "irq line pin %u: a level line is masked in the IOAPIC, not here",
			 cfg->pin);
		return -EINVAL;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->vm = vm;
	l->kind = cfg->kind;
	l->kernel = want_kernel(vm, cfg, &ret);
	if (ret) {
		fdvm_log(vm, FDVM_LOG_ERROR, "irq line: the kernel path was asked for, but KVM lacks %s",
			 cfg->kind == FDVM_IRQ_MSI ? "irqfd with GSI routing" : "irqfd resample");
		goto err_free;
	}
	l->borrowed = cfg->borrow_fd && cfg->fd >= 0 && l->kernel;
	l->fd = l->resample_fd = -1;
	l->msi = cfg->msi;
	l->masked = cfg->masked;
	pthread_mutex_init(&l->lock, NULL);

	/* Claim the interrupt before anything else: bad pins fail first. */
	if (cfg->kind == FDVM_IRQ_LEVEL) {
		ret = fdvm_gsi_claim_pin(vm, cfg->pin);
		if (ret)
			goto err_mutex;
		l->gsi = cfg->pin;
	}
	ret = fdvm_eventfd_get(vm, cfg->fd, l->borrowed, "irq line", &l->fd);
	if (ret)
		goto err_pin;
	if (cfg->kind == FDVM_IRQ_LEVEL) {
		ret = fdvm_eventfd_get(vm, -1, false, "irq line resample", &l->resample_fd);
		if (ret)
			goto err_fd;
	}

	if (l->kernel) {
		/* Route before assign. */
		if (cfg->kind == FDVM_IRQ_MSI) {
			ret = fdvm_gsi_alloc_msi(vm, &cfg->msi, &l->gsi);
			if (ret)
				goto err_resample;
		}
		if (!l->masked) {
			ret = irqfd_assign(l);
			if (ret)
				goto err_route;
		}
	} else {
		if (cfg->kind == FDVM_IRQ_MSI && !vm->caps.signal_msi) {
			fdvm_log(vm, FDVM_LOG_ERROR, "irq line: KVM lacks KVM_SIGNAL_MSI");
			ret = -ENOTSUP;
			goto err_resample;
		}
		if (cfg->kind == FDVM_IRQ_LEVEL) {
			ret = fdvm_vcpu_kick_handler(vm);
			if (ret)
				goto err_resample;
		}
		ret = fdvm_vm_service_loop(vm, &loop);
		if (ret)
			goto err_resample;
		ret = fdvm_loop_add(loop, l->fd, EPOLLIN, line_signalled, l);
		if (ret) {
			fdvm_log_errno(vm, -ret, "irq line: watching eventfd %d", l->fd);
			goto err_resample;
		}
		l->watched = true;
	}

	pthread_mutex_lock(&vm->irq_lock);
	l->next = vm->lines;
	vm->lines = l;
	pthread_mutex_unlock(&vm->irq_lock);
	*out = l;
	return 0;

err_route:
	/* A failed route write may have rolled the allocation back already. */
	if (cfg->kind == FDVM_IRQ_MSI && fdvm_gsi_is_msi(vm, l->gsi))
		fdvm_gsi_free(vm, l->gsi);
err_resample:
	if (l->resample_fd >= 0)
		close(l->resample_fd);
err_fd:
	if (!l->borrowed)
		close(l->fd);
err_pin:
	if (cfg->kind == FDVM_IRQ_LEVEL)
		fdvm_gsi_release_pin(vm, cfg->pin);
err_mutex:
	pthread_mutex_destroy(&l->lock);
err_free:
	free(l);
	return ret;
}

void fdvm_irq_line_destroy(struct fdvm_irq_line *l)
{
	struct fdvm_vm *vm;

	if (!l)
		return;
	vm = l->vm;
	pthread_mutex_lock(&vm->irq_lock);
	for (struct fdvm_irq_line **p = &vm->lines; *p; p = &(*p)->next) {
		if (*p == l) {
			*p = l->next;
			break;
		}
	}
	pthread_mutex_unlock(&vm->irq_lock);

	if (l->watched)
		fdvm_loop_del(vm->loop, l->fd); /* waits for a callback in flight */
	if (l->kernel) {
		irqfd_deassign(l);
		if (l->kind == FDVM_IRQ_MSI)
			fdvm_gsi_free(vm, l->gsi);
	}
	/* A userspace level line leaves nothing to lower: it only pulses. */
	if (l->kind == FDVM_IRQ_LEVEL)
		fdvm_gsi_release_pin(vm, l->gsi);
	if (l->resample_fd >= 0)
		close(l->resample_fd);
	if (!l->borrowed)
		close(l->fd);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

void fdvm_irq_lines_exit(struct fdvm_vm *vm)
{
	while (vm->lines)
		fdvm_irq_line_destroy(vm->lines);
	fdvm_irq_service_exit(vm);
}

/* Masking and re-routing are for MSI lines: a level line is the IOAPIC's. */
static int not_msi(struct fdvm_irq_line *l, const char *op)
{
	fdvm_log(l->vm, FDVM_LOG_ERROR, "irq line pin %u: %s: not an MSI line", l->gsi, op);
	return -EINVAL;
}

int fdvm_irq_line_set_msi(struct fdvm_irq_line *l, const struct fdvm_msi *msg)
{
	int ret = 0;

	if (l->kind != FDVM_IRQ_MSI)
		return not_msi(l, "set_msi");
	pthread_mutex_lock(&l->lock);
	if (l->kernel)
		ret = fdvm_gsi_set_msi(l->vm, l->gsi, msg);
	if (!ret)
		l->msi = *msg;
	pthread_mutex_unlock(&l->lock);
	return ret;
}

/* Line lock held: folds signals that arrived while masked into pending. */
static void fold_pending(struct fdvm_irq_line *l)
{
	uint64_t count;

	if (l->masked && !fdvm_eventfd_drain(l->fd, &count) && count) {
		l->pending = true;
		l->masked_signals += count;
	}
}

int fdvm_irq_line_mask(struct fdvm_irq_line *l)
{
	if (l->kind != FDVM_IRQ_MSI)
		return not_msi(l, "mask");
	pthread_mutex_lock(&l->lock);
	if (!l->masked) {
		uint64_t count;
		if (l->kernel) {
			/* KVM consumes the count as it unhooks: every signal
			 * before this point has been injected. */
			irqfd_deassign(l);
		} else if (!fdvm_eventfd_drain(l->fd, &count) && count) {
			/* The same guarantee on the userspace path: a signal
			 * written before the mask is injected now. */
			inject_msi(l);
		}
		l->masked = true;
		if (l->kernel)
			fold_pending(l);
	}
	pthread_mutex_unlock(&l->lock);
	return 0;
}

int fdvm_irq_line_unmask(struct fdvm_irq_line *l)
{
	int ret = 0;

	if (l->kind != FDVM_IRQ_MSI)
		return not_msi(l, "unmask");
	pthread_mutex_lock(&l->lock);
	if (l->masked) {
		/* Signals since the last look become the pending bit (and are
		 * counted) before it is delivered. */
		fold_pending(l);
		if (l->kernel) {
			/* One count for the pending bit: KVM injects it at assign,
			 * coalesced with whatever the backend wrote meanwhile. */
			if (l->pending)
				fdvm_eventfd_signal(l->fd);
			ret = irqfd_assign(l);
		} else if (l->pending) {
			inject_msi(l);
		}
		if (!ret) {
			l->unmask_deliveries += l->pending;
			l->masked = false;
			l->pending = false;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return ret;
}

bool fdvm_irq_line_pending(struct fdvm_irq_line *l)
{
	pthread_mutex_lock(&l->lock);
	fold_pending(l);
	bool p = l->pending;
	pthread_mutex_unlock(&l->lock);
	return p;
}

void fdvm_irq_line_stats(struct fdvm_irq_line *l, struct fdvm_irq_stats *out)
{
	pthread_mutex_lock(&l->lock);
	fold_pending(l);
	*out = (struct fdvm_irq_stats){ .kernel = l->kernel, .masked = l->masked,
					.pending = l->pending, .masked_signals = l->masked_signals,
					.unmask_deliveries = l->unmask_deliveries };
	pthread_mutex_unlock(&l->lock);
}

bool fdvm_irq_line_masked(const struct fdvm_irq_line *l)
{
	struct fdvm_irq_line *ml = (struct fdvm_irq_line *)l;
	pthread_mutex_lock(&ml->lock);
	bool m = l->masked;
	pthread_mutex_unlock(&ml->lock);
	return m;
}
