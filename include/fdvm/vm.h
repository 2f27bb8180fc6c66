/*
 * The VM object: guest memory, vCPUs, the I/O bus and the exit dispatch.
 *
 * Everything fdvm registers with KVM (memory slots, devices, later irqfds,
 * doorbells and routes) is owned by one struct fdvm_vm, so a process may
 * hold several VMs. Functions return 0 or -errno and never exit the process;
 * what went wrong is also reported, once, through the configured log
 * callback, naming the object, the operation and strerror.
 */
#ifndef FDVM_VM_H
#define FDVM_VM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_loop;

/* What to do with a guest access nothing claims. */
enum fdvm_unhandled {
	FDVM_UNHANDLED_STOP,   /* report with the registers and stop the VM */
	FDVM_UNHANDLED_WARN,   /* report, then behave as IGNORE */
	FDVM_UNHANDLED_IGNORE, /* reads return all-ones, writes are dropped */
};

enum fdvm_log_level { FDVM_LOG_ERROR, FDVM_LOG_WARN, FDVM_LOG_INFO, FDVM_LOG_DEBUG };

typedef void (*fdvm_log_fn)(void *opaque, enum fdvm_log_level level, const char *msg);

struct fdvm_vm_config {
	uint64_t mem_size;	/* bytes of guest RAM (default 64 MiB) */
	enum fdvm_unhandled unhandled_pio, unhandled_mmio; /* default STOP */
	int console_fd;		/* the UART's output (default 1; -1 drops it) */
	/* The UART's input (received bytes; IRQ 4): -1 (the default) none.
	 * Read on the VM's service loop, at most 64 bytes ahead of the guest;
	 * at end of file nothing more comes. */
	int console_in_fd;
	const char *kvm_path;	/* default "/dev/kvm" */
	fdvm_log_fn log;	/* default: "fdvm: MSG" on stderr */
	void *log_opaque;
	enum fdvm_log_level log_level; /* default FDVM_LOG_WARN */
	/*
	 * Where the userspace interrupt path waits on eventfds. NULL (the
	 * default): the VM starts a thread of its own on first need.
	 */
	struct fdvm_loop *loop;
	/*
	 * The signal fdvm sends a vCPU thread to make it leave the guest when
	 * work must be done there (a userspace level line pulses its pin from
	 * the vCPU thread, where no EOI can race with it). Default SIGUSR2;
	 * fdvm installs an empty handler for it if it has none. 0: no kicks
	 * (userspace level lines are then refused).
	 */
	int kick_signal;
	/*
	 * Per-queue notification counters (fdvm/stats.h, read with
	 * fdvm_virtio_pci_stats). Default true; false leaves them at 0, for
	 * measuring what counting costs.
	 */
	bool counters;
	/*
	 * vCPUs (default 1, at most FDVM_MAX_CPUS and what KVM allows). vCPU i
	 * has APIC id i; vCPU 0 boots the guest, the others wait for the
	 * guest's INIT and SIPI as on a PC. More than one needs kick_signal.
	 */
	unsigned cpus;
	/*
	 * CPUID features taken out of what KVM supports: bit i removes feature
	 * i (fdvm_cpu_feature), and with it every feature that needs it (no
	 * AVX without XSAVE). Default 0: everything KVM supports.
	 */
	uint64_t cpu_remove;
};

#define FDVM_MAX_CPUS 64

/*
 * The CPUID features that can be removed, by the names QEMU and Linux use
 * (cx16, xsave, avx, x2apic, ...): the index of name, or -ENOENT; the name
 * of index (NULL past the last); and remove with everything that needs
 * what it removes.
 */
int fdvm_cpu_feature(const char *name);
const char *fdvm_cpu_feature_name(unsigned index);
uint64_t fdvm_cpu_remove_closure(uint64_t remove);

/* Fills cfg with the defaults above. */
void fdvm_vm_config_init(struct fdvm_vm_config *cfg);

/*
 * Checks a RAM size against fdvm's limits and this host's memory; 0 or
 * -EINVAL with a message in err. Used by fdvm_vm_create and by front ends
 * that want to validate an option early.
 */
#define FDVM_MEM_MIN (2ull << 20)
int fdvm_mem_size_check(uint64_t size, char *err, size_t errlen);

/*
 * Creates a VM: opens KVM, creates the in-kernel irqchip, guest RAM, vCPU 0
 * and the always-present devices (COM1, the exit port, ACPI power-off).
 * On success *vmp is owned by the caller and released by fdvm_vm_destroy.
 */
int fdvm_vm_create(const struct fdvm_vm_config *cfg, struct fdvm_vm **vmp);

/*
 * Tears down everything the VM owns, in reverse order of creation. The
 * caller must have stopped every thread that uses the VM. NULL is a no-op.
 */
void fdvm_vm_destroy(struct fdvm_vm *vm);

/*
 * Loads a PVH ELF64 guest (see lib/boot/) with a command line (may be NULL)
 * and points vCPU 0 at its 32-bit entry. Errors: -ENOENT/-EACCES/... for the
 * file, -ENOEXEC for a file that is not a bootable PVH ELF64 image, -ERANGE
 * for segments that do not fit guest RAM, -E2BIG for a too-long cmdline.
 */
int fdvm_vm_load_pvh(struct fdvm_vm *vm, const char *path, const char *cmdline);
/*
 * The same with an initial RAM disk (NULL: none), given to the guest as the
 * PVH start info's one module (modlist_paddr, nr_modules 1): placed at the
 * top of the RAM below 4 GiB, page-aligned, above the image (-ENOSPC with
 * a message when it does not fit).
 */
int fdvm_vm_load_pvh_initrd(struct fdvm_vm *vm, const char *path, const char *cmdline,
			    const char *initrd);

/* Why fdvm_vm_run returned. */
enum fdvm_stop_reason {
	FDVM_STOP_POWEROFF,	/* ACPI power-off: status 0 */
	FDVM_STOP_EXIT_PORT,	/* isa-debug-exit: status (value << 1) | 1 */
	FDVM_STOP_SHUTDOWN,	/* triple fault */
	FDVM_STOP_GUEST_ERROR,	/* unhandled access, emulation failure, ... */
	FDVM_STOP_HOST_ERROR,	/* a KVM or host call failed */
	FDVM_STOP_REQUESTED,	/* fdvm_vm_request_stop() */
	FDVM_STOP_RESET,	/* the guest asked for a reset (i8042, the ACPI reset register) */
};

struct fdvm_stop {
	enum fdvm_stop_reason reason;
	int status; /* the guest's exit status for POWEROFF and EXIT_PORT */
};

const char *fdvm_stop_reason_name(enum fdvm_stop_reason reason);

/*
 * The process exit status `fdvm run` uses for a stop: the guest's own for
 * power-off (0) and the exit port (odd); fdvm's even codes otherwise:
 * 4 guest fault, 6 host failure, 8 stop requested, 12 the guest asked for
 * a reset (fdvm does not restart a guest; a supervisor may).
 */
int fdvm_stop_exit_status(const struct fdvm_stop *stop);

/*
 * Runs the VM until the guest stops or a stop is requested: vCPU 0 on the
 * calling thread, every other vCPU on a thread of its own of the vcpu role
 * (fdvm/sandbox.h), named fdvm-vcpuN, all joined before it returns.
 * Returns 0 and fills *stop; a host-side failure is reported as
 * FDVM_STOP_HOST_ERROR, not as a return value, so the caller always learns
 * what state the guest was left in.
 */
int fdvm_vm_run(struct fdvm_vm *vm, struct fdvm_stop *stop);

/* The number of vCPUs (the config's cpus). */
unsigned fdvm_vm_cpus(const struct fdvm_vm *vm);

/*
 * fdvm_vm_run on a thread of its own, of the vcpu role (fdvm/sandbox.h:
 * confined when the sandbox is on), named name. fdvm_vm_join waits for
 * it and fills *stop; fdvm_vm_destroy stops and joins one left running.
 * Returns 0 or -errno (-EBUSY when one was started and not joined).
 */
int fdvm_vm_start(struct fdvm_vm *vm, const char *name);
int fdvm_vm_join(struct fdvm_vm *vm, struct fdvm_stop *stop);

/*
 * Asks fdvm_vm_run to return with FDVM_STOP_REQUESTED as soon as the vCPU
 * leaves the guest, and makes it leave now: the thread in fdvm_vm_run gets
 * the config's kick_signal once that signal has a handler (fdvm_vm_start
 * installs an empty one if there is none), so a guest idling in HLT stops
 * too. Async-signal-safe and callable from any thread.
 */
void fdvm_vm_request_stop(struct fdvm_vm *vm);

/*
 * Pause: every vCPU leaves the guest and waits outside it; fdvm_vm_pause
 * returns once they all do (or at once for one that is not running: it
 * will not enter the guest until resumed). Devices go on answering requests the
 * guest made before; nothing new comes, time in the guest stands still
 * but for its clocks. A stop request ends a pause. -ESHUTDOWN if the VM
 * is stopping. Any thread but the vCPU's own; not from signal handlers.
 */
int fdvm_vm_pause(struct fdvm_vm *vm);
/* Stops the VM as the guest's own ACPI power-off would (FDVM_STOP_POWEROFF,
 * status 0), without asking the guest. Any thread; not from signal
 * handlers (fdvm_vm_request_stop is the one for those). */
void fdvm_vm_power_off(struct fdvm_vm *vm);
int fdvm_vm_resume(struct fdvm_vm *vm);

enum fdvm_vm_state {
	FDVM_VM_CREATED,	/* not run yet */
	FDVM_VM_RUNNING,
	FDVM_VM_PAUSED,
	FDVM_VM_STOPPED,	/* stopped, or a stop requested */
};
/* Any thread. */
enum fdvm_vm_state fdvm_vm_state(struct fdvm_vm *vm);
const char *fdvm_vm_state_name(enum fdvm_vm_state st);

/*
 * The one bounds-checked way to reach guest memory: a host pointer to
 * [gpa, gpa + len) if that range lies wholly inside one RAM region, else
 * NULL. Valid until fdvm_vm_destroy. Guest-controlled gpa and len are safe.
 */
void *fdvm_gpa(struct fdvm_vm *vm, uint64_t gpa, uint64_t len);

/*
 * The memfd behind guest RAM and the offset in it of gpa, for sharing RAM
 * with another process (mmap it MAP_SHARED). -1 if gpa is not RAM. The fd
 * stays the VM's; dup it to keep it.
 */
int fdvm_vm_mem_fd(const struct fdvm_vm *vm, uint64_t gpa, uint64_t *offset);

/* The KVM VM fd, for ioctls fdvm does not wrap. It stays the VM's. */
int fdvm_vm_fd(const struct fdvm_vm *vm);

/* The guest RAM size. */
uint64_t fdvm_vm_mem_size(const struct fdvm_vm *vm);

/* Logs through the VM's callback (printf-style). */
void fdvm_log(const struct fdvm_vm *vm, enum fdvm_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif

#endif
