/*
 * Descriptor tables, TSS, LAPIC, privilege switches and the VM exit; the
 * per-CPU state (struct rt_cpu, reached through %gs, which nothing else
 * touches: the runtime never uses swapgs, so it holds at CPL3 too).
 */
#include "io.h"
#include "rt.h"
#include "rt_defs.h"

extern uint64_t rt_gdt[], rt_gdt_end[];
extern char rt_trap_stubs[], rt_trap_stack_top[], rt_user_stack_top[];

struct tss {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3, iomap_base;
} __attribute__((packed));

struct idt_entry {
	uint16_t off_lo, sel;
	uint8_t ist, attr;
	uint16_t off_mid;
	uint32_t off_hi, zero;
} __attribute__((packed));

struct rt_kctx {
	uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rflags;
};

#define GDT_QUADS 8

struct rt_cpu {
	struct rt_cpu *self;		/* %gs:0 */
	unsigned index;
	struct tss tss;
	uint64_t gdt[GDT_QUADS] __attribute__((aligned(16))); /* APs' own */
	struct rt_kctx user_ctx;
	bool in_user;
	uint64_t user_stack_top;
};

_Static_assert(sizeof(uint64_t) * GDT_QUADS >= SEL_KCODE32 + 8, "GDT size");

static struct rt_cpu cpus[RT_MAX_CPUS];
static struct idt_entry idt[256] __attribute__((aligned(16)));

long rt_user_enter(long (*fn)(void *), void *arg, uint64_t user_rsp,
		   struct rt_kctx *ctx);
__attribute__((noreturn)) void rt_user_resume(struct rt_kctx *ctx, long value);

#define LAPIC_ID 0x20
#define LAPIC_TPR 0x80
#define LAPIC_EOI 0xb0
#define LAPIC_LDR 0xd0
#define LAPIC_DFR 0xe0
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_SVR_ENABLE 0x100
#define SPURIOUS_VECTOR 0xff

static void set_gate(unsigned v, uint64_t off)
{
	idt[v] = (struct idt_entry){
		.off_lo = off & 0xffff,
		.sel = SEL_KCODE,
		.attr = 0x8e, /* present, DPL0, interrupt gate */
		.off_mid = (off >> 16) & 0xffff,
		.off_hi = off >> 32,
	};
}

void rt_idt_set_raw(unsigned vector, void (*entry)(void))
{
	if (vector < 32 || vector > 255) {
		rt_printf("rt: rt_idt_set_raw: vector %u is not an interrupt\n", vector);
		rt_exit(2);
	}
	set_gate(vector, (uint64_t)entry);
}

static void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

static struct rt_cpu *this_cpu(void)
{
	struct rt_cpu *c;
	__asm__ volatile("mov %%gs:0, %0" : "=r"(c));
	return c;
}

unsigned rt_cpu_index(void) { return this_cpu()->index; }

static void load_idt(void)
{
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) idtr = { sizeof(idt) - 1, (uint64_t)idt };
	__asm__ volatile("lidt %0" ::"m"(idtr));
}

/* This CPU's LAPIC: accepting every priority, software-enabled. */
static void lapic_enable(void)
{
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_TPR, 0);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_SVR, LAPIC_SVR_ENABLE | SPURIOUS_VECTOR);
}

/* CPU index's per-CPU state: %gs, its TSS (trap stack) in gdt, ltr. */
static void cpu_setup(unsigned index, uint64_t *gdt, uint64_t trap_stack, uint64_t user_stack)
{
	struct rt_cpu *c = &cpus[index];
	uint64_t base = (uint64_t)&c->tss;
	uint64_t limit = sizeof(c->tss) - 1;

	c->self = c;
	c->index = index;
	c->user_stack_top = user_stack;
	wrmsr(MSR_GS_BASE, (uint64_t)c);
	c->tss.rsp[0] = trap_stack;
	c->tss.iomap_base = sizeof(c->tss);
	gdt[SEL_TSS / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) |
			   (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
			   (((base >> 24) & 0xff) << 56);
	gdt[SEL_TSS / 8 + 1] = base >> 32;
	__asm__ volatile("ltr %w0" ::"r"(SEL_TSS));
}

void rt_cpu_init(void)
{
	cpu_setup(0, rt_gdt, (uint64_t)rt_trap_stack_top, (uint64_t)rt_user_stack_top);
	for (int v = 0; v < 256; v++)
		set_gate(v, (uint64_t)rt_trap_stubs + 16 * v);
	load_idt();

	/*
	 * Firmware (SeaBIOS under QEMU) leaves the 8259s delivering the PIT
	 * at vector 8, where it would pass for a #DF. Move them to 0x20-0x2f
	 * and mask every line: this runtime uses the LAPIC only.
	 */
	static const uint8_t pic_init[][2] = {
		{ 0x20, 0x11 }, { 0x21, 0x20 }, { 0x21, 0x04 }, { 0x21, 0x01 },
		{ 0xa0, 0x11 }, { 0xa1, 0x28 }, { 0xa1, 0x02 }, { 0xa1, 0x01 },
		{ 0x21, 0xff }, { 0xa1, 0xff },
	};
	for (unsigned i = 0; i < sizeof(pic_init) / sizeof(pic_init[0]); i++)
		outb(pic_init[i][0], pic_init[i][1]);
	lapic_enable();
}

#define IOAPIC_BASE 0xfec00000ull

void rt_ioapic_route(unsigned pin, unsigned vector, bool level, bool masked)
{
	rt_ioapic_route_dest(pin, vector, level, masked, 0);
}

static void ioapic_route(unsigned pin, unsigned vector, bool level, bool masked, bool logical,
			 uint32_t dest)
{
	uint32_t lo = vector | (logical ? 1u << 11 : 0) | (level ? 1u << 15 : 0) |
		      (masked ? 1u << 16 : 0);
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
	mmio_write32(IOAPIC_BASE + 0x10, dest << 24);
	mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
	mmio_write32(IOAPIC_BASE + 0x10, lo);
}

void rt_ioapic_route_dest(unsigned pin, unsigned vector, bool level, bool masked, uint32_t dest)
{
	ioapic_route(pin, vector, level, masked, false, dest);
}

void rt_ioapic_route_logical(unsigned pin, unsigned vector, bool level, bool masked, uint8_t cpus)
{
	ioapic_route(pin, vector, level, masked, true, cpus);
}

void rt_lapic_flat_logical(void)
{
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_DFR, 0xffffffffu);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_LDR, (1u << rt_cpu_index()) << 24);
}

void rt_lapic_eoi(void) { mmio_write32(FDVM_LAPIC_BASE + LAPIC_EOI, 0); }
uint32_t rt_lapic_id(void) { return mmio_read32(FDVM_LAPIC_BASE + LAPIC_ID) >> 24; }

#define RFLAGS_IF 0x200

void rt_irq_enable(void)
{
	if (rt_cpl() == 0)
		__asm__ volatile("sti" ::: "memory");
	else
		rt_kcall(KCALL_SET_IF, 1, 0, 0);
}

void rt_irq_disable(void)
{
	if (rt_cpl() == 0)
		__asm__ volatile("cli" ::: "memory");
	else
		rt_kcall(KCALL_SET_IF, 0, 0, 0);
}

void rt_wait_for_interrupt(void) { __asm__ volatile("sti; hlt; cli" ::: "memory"); }

int rt_cpl(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3;
}

long rt_user_call(long (*fn)(void *), void *arg)
{
	struct rt_cpu *c = this_cpu();
	if (rt_cpl() != 0 || c->in_user) {
		rt_printf("rt: rt_user_call nested or not at CPL0\n");
		rt_exit(2);
	}
	c->in_user = true;
	long r = rt_user_enter(fn, arg, c->user_stack_top, &c->user_ctx);
	c->in_user = false;
	return r;
}

/*
 * An application processor's own state (smp.c calls it first thing): a GDT
 * copy with its TSS, the shared IDT, its LAPIC on. Its stacks: trap_stack
 * for interrupts and kernel calls at CPL3, user_stack for rt_user_call.
 */
void rt_cpu_init_ap(unsigned index, uint64_t trap_stack, uint64_t user_stack)
{
	struct rt_cpu *c = &cpus[index];
	for (unsigned i = 0; i < GDT_QUADS; i++)
		c->gdt[i] = rt_gdt[i];
	c->gdt[SEL_TSS / 8 + 1] = 0;
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) gdtr = { (uint16_t)((rt_gdt_end - rt_gdt) * 8 - 1), (uint64_t)c->gdt };
	__asm__ volatile("lgdt %0\n\t"
			 "pushq %1\n\t"
			 "lea 1f(%%rip), %%rax\n\t"
			 "pushq %%rax\n\t"
			 "lretq\n"
			 "1:" ::"m"(gdtr), "i"(SEL_KCODE) : "rax", "memory");
	cpu_setup(index, c->gdt, trap_stack, user_stack);
	load_idt();
	lapic_enable();
}

/* An IPI: the destination APIC id, then the low word (which sends it). */
static void send_icr(uint32_t dest, uint32_t lo)
{
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_ICR_HI, dest << 24);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_ICR_LO, lo);
}

/* A fixed interrupt at vector to the CPU with APIC id dest (CPL0 or 3). */
void rt_send_ipi(uint32_t dest, uint8_t vector)
{
	send_icr(dest, vector | 1u << 14);
}

void rt_send_init_sipi(uint32_t dest, uint8_t page)
{
	send_icr(dest, 0x4500); /* INIT, assert */
	for (int i = 0; i < 2; i++)
		send_icr(dest, 0x4600u | page); /* SIPI */
}

long rt_kernel_call(long (*fn)(void *), void *arg)
{
	if (rt_cpl() == 0)
		return fn(arg);
	return rt_kcall(KCALL_CALL, (long)fn, (long)arg, 0);
}

/* Runs at CPL0 on the trap stack, from the #UD of rt_kcall_gate. */
long rt_kcall_dispatch(struct rt_frame *f)
{
	struct rt_cpu *c = this_cpu();
	switch (f->rdi) {
	case KCALL_RETURN:
		if (!c->in_user)
			break;
		rt_user_resume(&c->user_ctx, (long)f->rsi);
	case KCALL_WRITE:
		/* The buffer is the guest's own memory: trusted here. */
		rt_console_write((const char *)f->rsi, f->rdx);
		return 0;
	case KCALL_EXIT:
		rt_exit((int)f->rsi);
	case KCALL_SET_IF:
		if (f->rsi)
			f->rflags |= RFLAGS_IF;
		else
			f->rflags &= ~(uint64_t)RFLAGS_IF;
		return 0;
	case KCALL_CALL:
		return ((long (*)(void *))f->rsi)((void *)f->rdx);
	}
	rt_printf("rt: unknown kernel call %lu\n", (unsigned long)f->rdi);
	rt_exit(2);
}

void rt_exit(int code)
{
	if (rt_cpl() != 0)
		rt_kcall(KCALL_EXIT, code, 0, 0);
	if (code == 0) {
		outw(FDVM_PORT_ACPI_PM1A_CNT, FDVM_ACPI_PM1_SLP_EN);
		/*
		 * QEMU acts on the request asynchronously: give it about a
		 * second (at >= 1 GHz) before falling back to the exit port.
		 */
		for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 2000000000ull;)
			__asm__ volatile("pause");
	}
	/* Not powered off (no ACPI PM) or non-zero: the exit port. */
	outl(FDVM_PORT_DEBUG_EXIT, (uint32_t)code);
	for (;;)
		__asm__ volatile("cli; hlt");
}
