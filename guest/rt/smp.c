/*
 * Application processors: started one at a time with INIT and SIPI into
 * the trampoline (boot.S), each on its own stacks, then running the
 * caller's function at CPL0.
 */
#include "io.h"
#include "rt.h"
#include "rt_defs.h"

extern char rt_ap_trampoline[], rt_ap_trampoline_end[];

/* Read by rt_ap_start64 (boot.S) and rt_ap_main: the AP being started. */
uint64_t rt_ap_stack;
static volatile unsigned ap_index;
static volatile int ap_up;
static void (*ap_fn)(unsigned);

/* Each AP's stacks: boot (its C code at CPL0), trap (interrupts and kernel
 * calls from CPL3), user (rt_user_call). */
static uint8_t ap_stacks[RT_MAX_CPUS][3][RT_STACK_SIZE] __attribute__((aligned(4096)));

void rt_ap_main(void)
{
	unsigned index = ap_index;
	rt_cpu_init_ap(index, (uint64_t)ap_stacks[index][1] + RT_STACK_SIZE,
		       (uint64_t)ap_stacks[index][2] + RT_STACK_SIZE);
	void (*fn)(unsigned) = ap_fn;
	__atomic_store_n(&ap_up, 1, __ATOMIC_SEQ_CST);
	fn(index);
	for (;;)
		__asm__ volatile("cli; hlt");
}

unsigned rt_smp_start(void (*fn)(unsigned index), uint32_t *ids)
{
	uint32_t apic[RT_MAX_CPUS];
	unsigned listed = rt_acpi_cpus(apic, RT_MAX_CPUS), running = 1;
	uint32_t me = rt_lapic_id();

	if (ids)
		ids[0] = me;
	if (listed > RT_MAX_CPUS) {
		rt_printf("rt: the MADT lists %u CPUs; %u are started\n", listed, RT_MAX_CPUS);
		listed = RT_MAX_CPUS;
	}
	memcpy((void *)(uintptr_t)RT_AP_TRAMPOLINE, rt_ap_trampoline,
	       (size_t)(rt_ap_trampoline_end - rt_ap_trampoline));
	ap_fn = fn;
	for (unsigned i = 0; i < listed; i++) {
		if (apic[i] == me)
			continue;
		unsigned index = running;
		ap_index = index;
		ap_up = 0;
		rt_ap_stack = (uint64_t)ap_stacks[index][0] + RT_STACK_SIZE;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		rt_send_init_sipi(apic[i], RT_AP_TRAMPOLINE >> 12);
		/* Up to about 5 s (at 1 GHz or more): every AP instruction up
		 * to here is emulated on a host that emulates CPL0. */
		for (uint64_t t0 = rt_rdtsc(); !__atomic_load_n(&ap_up, __ATOMIC_SEQ_CST) &&
						rt_rdtsc() - t0 < 5000000000ull;)
			__asm__ volatile("pause");
		if (!ap_up) {
			rt_printf("rt: the CPU with APIC id %u did not come up\n", apic[i]);
			continue;
		}
		if (ids)
			ids[index] = apic[i];
		running++;
	}
	return running;
}
