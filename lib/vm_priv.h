/*
 * The VM object's inside, shared by lib/ only. Ownership and locking of
 * each field is written beside it.
 */
#ifndef FDVM_VM_PRIV_H
#define FDVM_VM_PRIV_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>

#include "fdvm/io.h"
#include "fdvm/loop.h"
#include "fdvm/vm.h"

#define FDVM_MAX_RAM_REGIONS 2

struct fdvm_io_region {
	enum fdvm_space space;
	uint64_t base, len;
	const struct fdvm_io_ops *ops;
	void *opaque;
	char name[32];
	atomic_int inflight;	/* handler calls running now */
};

/*
 * Regions of one address space, sorted by base, never overlapping. Dispatch
 * finds a region under the read lock, pins it (inflight) and calls the
 * handler unlocked, so a handler may register and unregister other regions
 * (a BAR move does); unregister waits for the pins to go.
 */
struct fdvm_iobus {
	pthread_rwlock_t lock; /* read: lookup; write: (un)register */
	struct fdvm_io_region **regions;
	size_t n, cap;
	pthread_mutex_t wait_lock;
	pthread_cond_t drained;
};

struct fdvm_ram {
	uint64_t gpa, size;
	uint8_t *host;
	uint32_t slot;
};

struct fdvm_vcpu {
	struct fdvm_vm *vm;
	int id;
	int fd;			/* owned; closed by fdvm_vcpu_exit */
	struct kvm_run *run;	/* mmap of fd, run_size bytes */
	size_t run_size;
	pthread_mutex_t kick_lock; /* guards has_thread, orders tid with it */
	bool has_thread;	/* a thread is in fdvm_vcpu_run */
	_Atomic pid_t tid;	/* that thread's id, 0: none (fdvm_vcpu_kick) */
	/* Pausing: written to wake a parked vCPU (resume, stop: the write is
	 * async-signal-safe where a condition variable is not). */
	int wake_fd;
	bool in_run, parked;	/* vm->pause_lock */
	atomic_bool work;	/* fdvm_vcpu_request_work() was called for it */
};

/*
 * One budget for messages a guest can cause at will (lib/log.c): zero is
 * a full bucket, so a calloc'd VM needs no setup. Guarded by a lock in
 * lib/log.c.
 */
struct fdvm_ratelimit {
	uint64_t refilled_ns;	/* CLOCK_MONOTONIC of the last refill; 0: unused */
	unsigned spent;		/* lines of the burst used up */
	unsigned long suppressed; /* dropped since the last line let through */
};

/* The places whose messages the guest controls, a budget each per VM. */
enum fdvm_log_site {
	FDVM_LOG_SITE_UNHANDLED,	/* --unhandled-pio/-mmio=warn */
	FDVM_LOG_SITE_BAR_OVERLAP,	/* a BAR the guest moved onto something */
	FDVM_LOG_SITE_MSIX,		/* a vector the guest (un)masks that fails to */
	FDVM_LOG_SITES
};

struct fdvm_uart;
struct fdvm_power;
struct fdvm_rtc;
struct fdvm_i8042;
struct fdvm_gsi;
struct fdvm_pci;
struct fdvm_irq_line;
struct fdvm_doorbell;

/* What this KVM offers, read once at create. */
struct fdvm_caps {
	bool irqfd, irqfd_resample, signal_msi, ioeventfd, ioeventfd_any_length;
};

struct fdvm_vm {
	struct fdvm_vm_config cfg;	/* immutable after create */
	int kvm_fd, vm_fd;		/* owned */
	int mem_fd;			/* owned: the memfd behind mem */
	uint8_t *mem;			/* one mapping for all RAM regions */
	uint64_t mem_size;
	struct fdvm_ram ram[FDVM_MAX_RAM_REGIONS];
	unsigned nram;
	struct fdvm_iobus bus[2];	/* indexed by enum fdvm_space */
	struct fdvm_vcpu *vcpus;		/* cfg.cpus of them; vcpus[i].id == i == APIC id */
	unsigned ncpus;
	struct fdvm_uart *uart;
	struct fdvm_power *power;
	struct fdvm_rtc *rtc;
	struct fdvm_i8042 *i8042;
	struct fdvm_caps caps;		/* immutable after create */

	/* Interrupts: lib/kvm/gsi.c, lib/kvm/irqfd.c */
	struct fdvm_gsi *gsi;
	bool gsi_routes;		/* KVM has GSI routing (immutable) */
	pthread_mutex_t irq_lock;	/* guards lines, loop setup, level timer */
	struct fdvm_irq_line *lines;
	struct fdvm_loop *loop;		/* the service loop, started on first need */
	struct fdvm_epoll_loop *own_loop; /* when fdvm made the loop */
	int level_timer_fd;
	bool level_timer_armed;

	struct fdvm_pci *pci;		/* lib/pci/ */
	struct fdvm_owned *owned;	/* in-process devices, newest first (irq_lock) */

	/* Doorbells: lib/kvm/ioeventfd.c */
	pthread_rwlock_t doorbell_lock;	/* read: dispatch; write: create/destroy */
	struct fdvm_doorbell *doorbells;
	atomic_uint user_doorbells;	/* how many take the userspace path */

	/* Stop state: set once by the first device or caller that stops. */
	pthread_mutex_t stop_lock;
	bool stopped;
	struct fdvm_stop stop;
	atomic_bool stop_requested;
	atomic_bool kick_ready;		/* the kick signal has a handler */

	/* Pause (fdvm_vm_pause): vCPUs park outside the guest while set. */
	atomic_bool pause_requested;
	/* fdvm_vm_hold: how many holds keep them parked too, apart from a
	 * caller's pause, which a hold neither ends nor extends. */
	atomic_uint holds;
	pthread_mutex_t pause_lock;	/* vcpu in_run, parked; pause_cond */
	pthread_cond_t pause_cond;	/* a vCPU parked, woke or left its run */

	/* fdvm_vm_start's thread, until fdvm_vm_join */
	pthread_t run_thread;
	bool run_started;
	struct fdvm_stop run_stop;

	struct fdvm_ratelimit ratelimit[FDVM_LOG_SITES]; /* lib/log.c's lock */
};

/*
 * Objects the VM destroys at fdvm_vm_destroy, newest first (devices made
 * by lib/dev/). An object that is destroyed earlier disowns itself.
 */
struct fdvm_owned {
	struct fdvm_owned *next;
	void (*destroy)(void *obj);
	void *obj;
};
int fdvm_vm_own(struct fdvm_vm *vm, void (*destroy)(void *), void *obj, struct fdvm_owned **out);
void fdvm_vm_disown(struct fdvm_vm *vm, struct fdvm_owned *o);

/* The KVM VM alone (lib/kvm/vm.c), which fdvm_vm_create (lib/machine.c)
 * builds the machine on: create, destroy (doorbells and lines left, the
 * vCPU, buses, memory, routes, fds), run vCPU 0 on this thread. */
int fdvm_kvm_vm_create(const struct fdvm_vm_config *cfg, struct fdvm_vm **vmp);
void fdvm_kvm_vm_destroy(struct fdvm_vm *vm);
int fdvm_kvm_vm_run(struct fdvm_vm *vm, struct fdvm_stop *stop);
/* Runs application processor vcpus[index] (index > 0) on this thread until
 * the VM stops; a host failure stops the VM as FDVM_STOP_HOST_ERROR. */
void fdvm_kvm_vcpu_run(struct fdvm_vm *vm, unsigned index);

/* Records why the VM stops (first caller wins) and kicks the vCPUs out. */
void fdvm_vm_set_stop(struct fdvm_vm *vm, enum fdvm_stop_reason reason, int status);

/* Logging with errno: "OBJECT: OPERATION: strerror(err)". Returns -err. */
int fdvm_log_errno(const struct fdvm_vm *vm, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void fdvm_vlog(const struct fdvm_vm *vm, enum fdvm_log_level level,
	       const char *fmt, va_list ap);
/* For objects that live without a VM (device models, vhost-user): fn NULL
 * logs to stderr. Every level is passed on; fn filters. */
void fdvm_log_to(fdvm_log_fn fn, void *opaque, enum fdvm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int fdvm_log_to_errno(fdvm_log_fn fn, void *opaque, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void fdvm_log_cfg(const struct fdvm_vm_config *cfg, enum fdvm_log_level level,
		  const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/*
 * For messages the guest can repeat at will: like fdvm_log, but each site
 * of each VM lets FDVM_LOG_BURST lines through, then one a second; the
 * next line let through says how many were dropped. Any thread.
 */
#define FDVM_LOG_BURST 10
void fdvm_log_limited(struct fdvm_vm *vm, enum fdvm_log_site site, enum fdvm_log_level level,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* lib/kvm/memory.c */
int fdvm_memory_init(struct fdvm_vm *vm);
void fdvm_memory_exit(struct fdvm_vm *vm);

/* lib/kvm/vcpu.c */
/* cpuid: the VM's table (fdvm_cpuid_build); the vCPU gets it with its id. */
int fdvm_vcpu_init(struct fdvm_vm *vm, struct fdvm_vcpu *vcpu, int id, struct kvm_cpuid2 *cpuid);
/* lib/kvm/cpuid.c */
int fdvm_cpuid_build(struct fdvm_vm *vm, struct kvm_cpuid2 **out);
int fdvm_vcpu_set_cpuid(struct fdvm_vcpu *vcpu, struct kvm_cpuid2 *cpuid);
void fdvm_vcpu_exit(struct fdvm_vcpu *vcpu);
int fdvm_vcpu_set_pvh_entry(struct fdvm_vcpu *vcpu, uint32_t entry, uint32_t start_info);
int fdvm_vcpu_run(struct fdvm_vcpu *vcpu);
void fdvm_vcpu_dump(struct fdvm_vcpu *vcpu, enum fdvm_log_level level);
/*
 * Has vcpu's thread call fdvm_irq_vcpu_work() before it next enters the
 * guest, kicking it out of the guest now if it is in. Any thread.
 */
void fdvm_vcpu_request_work(struct fdvm_vcpu *vcpu);
/* Signals the thread in fdvm_vcpu_run (if any) with the kick signal, so
 * that KVM_RUN returns; only once the signal has a handler (kick_ready).
 * Async-signal-safe, any thread. */
void fdvm_vcpu_kick(struct fdvm_vcpu *vcpu);
/* Makes vcpu's thread leave the guest now and not enter it again before it
 * looks at its flags (immediate_exit, then the kick). Async-signal-safe. */
void fdvm_vcpu_leave_guest(struct fdvm_vcpu *vcpu);
/* Installs an empty handler for the kick signal if it has none (then
 * kick_ready is set); -ENOTSUP for a config without one. irqfd.c. */
int fdvm_vcpu_kick_handler(struct fdvm_vm *vm);
/* Runs fn(arg) and returns true if no thread runs the vCPU (so it cannot
 * run guest code until fn returns); else returns false without calling it. */
bool fdvm_vcpu_if_idle(struct fdvm_vcpu *vcpu, void (*fn)(void *), void *arg);
/*
 * Runs fn(arg) with every vCPU out of the guest (parked as for a pause, or
 * not running), then lets them go on; a pause requested meanwhile stays.
 * Not from a vCPU thread, nor with a lock a vCPU thread takes on its way
 * out of the guest held (vm.c).
 */
void fdvm_vm_hold(struct fdvm_vm *vm, void (*fn)(void *), void *arg);
/* Whether vCPUs are to park now: a pause or a hold. */
static inline bool fdvm_vm_parking(struct fdvm_vm *vm)
{
	return atomic_load(&vm->pause_requested) || atomic_load(&vm->holds);
}
/* lib/kvm/irqfd.c: an IOAPIC/PIC pin driven to level (KVM_IRQ_LINE), for
 * devices with a wire of their own (the UART); the VM's service loop,
 * started on first need. */
int fdvm_irq_pin_set(struct fdvm_vm *vm, uint32_t pin, bool level);
int fdvm_vm_service_loop(struct fdvm_vm *vm, struct fdvm_loop **out);
/* lib/kvm/irqfd.c: work that must run while this vCPU is out of the guest. */
void fdvm_irq_vcpu_work(struct fdvm_vcpu *vcpu);

/* lib/kvm/iobus.c */
int fdvm_iobus_init(struct fdvm_iobus *bus);
void fdvm_iobus_exit(struct fdvm_iobus *bus);
/* Returns false if no region claims [addr, addr + size). */
bool fdvm_iobus_read(struct fdvm_iobus *bus, uint64_t addr, unsigned size, uint64_t *value);
bool fdvm_iobus_write(struct fdvm_iobus *bus, uint64_t addr, unsigned size, uint64_t value);

/* fdvm_io_register for a mapping the guest asked for (a BAR it moved): an
 * overlap is the guest's doing, so it is a rate-limited warning. */
int fdvm_io_register_for_guest(struct fdvm_vm *vm, enum fdvm_space space, uint64_t base,
			       uint64_t len, const struct fdvm_io_ops *ops, void *opaque,
			       const char *name, struct fdvm_io_region **out);

/* The name of a region overlapping [base, base + len), or NULL. */
const char *fdvm_iobus_overlap(struct fdvm_iobus *bus, uint64_t base, uint64_t len);

/* lib/kvm/eventfd.c */
int fdvm_eventfd_get(struct fdvm_vm *vm, int fd, bool borrow, const char *what, int *out);
bool fdvm_fd_is_eventfd(int fd);
int fdvm_eventfd_drain(int fd, uint64_t *count);
int fdvm_eventfd_signal(int fd);

/* lib/kvm/gsi.c, irqfd.c, ioeventfd.c */
int fdvm_gsi_init(struct fdvm_vm *vm);
/* Writes staged routes now, even inside a batch (before an irqfd assign). */
int fdvm_gsi_sync(struct fdvm_vm *vm);
/* Whether gsi is (still) an allocated MSI route. */
bool fdvm_gsi_is_msi(struct fdvm_vm *vm, uint32_t gsi);
void fdvm_gsi_exit(struct fdvm_vm *vm);
void fdvm_irq_lines_exit(struct fdvm_vm *vm);
void fdvm_doorbells_exit(struct fdvm_vm *vm);
/* Signals the userspace doorbell matching a guest write; false if none. */
bool fdvm_doorbell_dispatch(struct fdvm_vm *vm, enum fdvm_space space, uint64_t addr,
			    unsigned size, uint64_t value);

/* lib/dev/ */
int fdvm_uart_init(struct fdvm_vm *vm, uint16_t base, int out_fd, int in_fd, struct fdvm_uart **out);
void fdvm_uart_exit(struct fdvm_vm *vm, struct fdvm_uart *uart);
void fdvm_uart_flush(struct fdvm_uart *uart);
int fdvm_power_init(struct fdvm_vm *vm, struct fdvm_power **out);
/* lib/dev/rtc.c, lib/dev/i8042.c: the legacy devices Linux touches early. */
int fdvm_rtc_init(struct fdvm_vm *vm, struct fdvm_rtc **out);
void fdvm_rtc_exit(struct fdvm_vm *vm, struct fdvm_rtc *rtc);
int fdvm_i8042_init(struct fdvm_vm *vm, struct fdvm_i8042 **out);
void fdvm_i8042_exit(struct fdvm_vm *vm, struct fdvm_i8042 *k);
/* lib/boot/acpi.c: the tables in the boot area, for vm->ncpus vCPUs. */
int fdvm_acpi_build(struct fdvm_vm *vm, uint64_t *rsdp_gpa);
void fdvm_power_exit(struct fdvm_vm *vm, struct fdvm_power *power);

#endif
