/*
 * The freestanding guest runtime: what a guest test may call.
 *
 * A test provides `int guest_main(const char *cmdline)`; its return value is
 * the guest's exit code (0 powers off cleanly). guest_main runs at CPL0; a
 * body that must run natively on a nested hypervisor runs at CPL3 through
 * rt_user_call() and reaches back into CPL0 with rt_kernel_call().
 */
#ifndef RT_H
#define RT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fdvm/abi.h"

struct rt_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx,
		rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

int guest_main(const char *cmdline);

/* Console (COM1). Safe at CPL0 and CPL3. */
int rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int rt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int rt_snprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rt_console_write(const char *s, size_t len);

/* Ends the VM: 0 powers off (VMM exits 0), n > 0 exits with (n << 1) | 1. */
__attribute__((noreturn)) void rt_exit(int code);

/* Privilege. */
int rt_cpl(void);
long rt_user_call(long (*fn)(void *), void *arg);  /* CPL0 only */
long rt_kernel_call(long (*fn)(void *), void *arg); /* from CPL0 or CPL3 */
long rt_kcall(long nr, long a0, long a1, long a2);

/*
 * Interrupts. Handlers for vectors 32..254 run at CPL0 with interrupts off;
 * the runtime sends the LAPIC EOI after the handler returns. An interrupt
 * on a vector with no handler is reported and ends the guest: a test never
 * sees a spurious interrupt silently.
 */
typedef void (*rt_irq_handler)(struct rt_frame *frame, void *opaque);
void rt_irq_set_handler(unsigned vector, rt_irq_handler fn, void *opaque);
/*
 * Points vector's IDT gate straight at entry, bypassing the runtime's trap
 * path (no saved frame, no C dispatch, no EOI): entry does everything
 * itself and ends in iretq. For the benchmark's minimal ISR (CPL0 only).
 */
void rt_idt_set_raw(unsigned vector, void (*entry)(void));
void rt_lapic_eoi(void);
/* Routes an IOAPIC pin to vector on APIC 0 (CPL0 only). */
void rt_ioapic_route(unsigned pin, unsigned vector, bool level, bool masked);
/* The same to the CPU with APIC id dest. */
void rt_ioapic_route_dest(unsigned pin, unsigned vector, bool level, bool masked, uint32_t dest);
/* The same with a logical destination: a mask of the CPUs' LDR bits (flat
 * model, see rt_lapic_flat_logical). */
void rt_ioapic_route_logical(unsigned pin, unsigned vector, bool level, bool masked, uint8_t cpus);
/* This CPU's LAPIC in the flat logical model (DFR all ones), its LDR bit
 * 1 << its index (index < 8), as Linux sets it up with up to 8 CPUs. */
void rt_lapic_flat_logical(void);
uint32_t rt_lapic_id(void);

/*
 * Several CPUs (smp.c). rt_smp_start starts every application processor
 * the ACPI MADT lists (at most RT_MAX_CPUS in all), one after the other
 * through INIT and SIPI, each then calling fn(index) at CPL0 with its own
 * stacks, GDT and TSS (the IDT and the page tables are shared); it returns
 * how many CPUs run now, the bootstrap one included, and *ids their APIC
 * ids by index (when ids is not NULL). An AP whose fn returns halts.
 * rt_cpu_index: this CPU's index (0: the bootstrap CPU), at CPL0 or 3.
 */
unsigned rt_smp_start(void (*fn)(unsigned index), uint32_t *ids);
unsigned rt_cpu_index(void);
void rt_cpu_init_ap(unsigned index, uint64_t trap_stack, uint64_t user_stack);
/* A fixed interrupt at vector to APIC id dest; INIT then two SIPIs. */
void rt_send_ipi(uint32_t dest, uint8_t vector);
void rt_send_init_sipi(uint32_t dest, uint8_t page);

/*
 * ACPI (acpi.c): the RSDP the PVH start info gives (0 if none), a table
 * by signature through the XSDT (NULL if absent or its checksum is bad;
 * *len its length), and the enabled local APICs the MADT lists.
 */
uint64_t rt_rsdp_paddr(void);
const uint8_t *rt_acpi_table(const char *sig, uint32_t *len);
unsigned rt_acpi_cpus(uint32_t *apic_ids, unsigned max);
bool rt_acpi_checksum_ok(const void *p, uint32_t len);
/*
 * IF on/off from CPL0 or CPL3. At CPL3 this is a kernel call that edits the
 * caller's saved RFLAGS: some nested hypervisors fault cli/sti at CPL3 even
 * with IOPL=3, so user bodies never run with IOPL>0.
 */
void rt_irq_enable(void);
void rt_irq_disable(void);
/* sti; hlt as one step at CPL0: sleeps until an interrupt. */
void rt_wait_for_interrupt(void);

/*
 * Exceptions. A test that expects one installs a handler for it; returning
 * true resumes at frame->rip (the handler may change it). Without a handler,
 * or when it returns false, the runtime prints the vector, error code and
 * RIP and ends the guest with code RT_EXIT_EXCEPTION_BASE + vector.
 */
#define RT_EXIT_EXCEPTION_BASE 64
typedef bool (*rt_exception_handler)(struct rt_frame *frame);
void rt_exception_set_handler(unsigned vector, rt_exception_handler fn);

/* TAP over the console. rt_tap_done() returns the exit code guest_main
 * should return: 0 iff every planned test ran and passed. */
void rt_tap_plan(int n);
bool rt_tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rt_tap_done(void);

/*
 * For a bundled test guest run without what it tests: a TAP "Bail out!"
 * naming what it needs and how to give it, then rt_exit(RT_EXIT_NEEDS), so
 * fdvm run exits with RT_EXIT_NEEDS_STATUS (155).
 */
#define RT_EXIT_NEEDS 77
#define RT_EXIT_NEEDS_STATUS ((RT_EXIT_NEEDS << 1) | 1)
__attribute__((noreturn)) void rt_needs(const char *what, const char *how);
/* Bails out (rt_needs) unless the test harness runs this guest: the
 * harness's MSI-X test device is on its PCI bus. */
void rt_need_harness(void);

/* The PVH memory map: returns the number of entries and fills entry i
 * (if it exists). Type 1 is RAM. */
unsigned rt_memmap(unsigned i, uint64_t *addr, uint64_t *size, uint32_t *type);

/* The command line fdvm or QEMU passed (never NULL). */
const char *rt_cmdline(void);
/* Returns true if word appears as a whole space-separated word in cmdline. */
bool rt_cmdline_has(const char *word);
/* The number after "key=" on the command line (decimal), or def. */
uint64_t rt_cmdline_u64(const char *key, uint64_t def);

/* Tiny libc. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* The time-stamp counter and a 64-bit xorshift PRNG (tests, benchmarks). */
static inline uint64_t rt_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}
static inline uint64_t rt_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *state = x;
}

#endif
