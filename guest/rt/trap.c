/* Exception and interrupt dispatch. */
#include "rt.h"
#include "rt_defs.h"

extern char rt_kcall_gate[];
long rt_kcall_dispatch(struct rt_frame *f);

static const char *const names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
	"#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

static rt_exception_handler exc_handlers[32];
static struct {
	rt_irq_handler fn;
	void *opaque;
} irq_handlers[256];

void rt_exception_set_handler(unsigned vector, rt_exception_handler fn)
{
	if (vector < 32)
		exc_handlers[vector] = fn;
}

void rt_irq_set_handler(unsigned vector, rt_irq_handler fn, void *opaque)
{
	if (vector >= 32 && vector < 255) {
		irq_handlers[vector].opaque = opaque;
		irq_handlers[vector].fn = fn;
	}
}

static uint64_t read_cr2(void)
{
	uint64_t v;
	__asm__ volatile("mov %%cr2, %0" : "=r"(v));
	return v;
}

__attribute__((noreturn)) static void report(struct rt_frame *f)
{
	rt_printf("exception: vector %lu (%s) error 0x%lx rip 0x%lx cs 0x%lx "
		  "rsp 0x%lx rflags 0x%lx cr2 0x%lx\n",
		  (unsigned long)f->vector, names[f->vector],
		  (unsigned long)f->error, (unsigned long)f->rip,
		  (unsigned long)f->cs, (unsigned long)f->rsp,
		  (unsigned long)f->rflags, (unsigned long)read_cr2());
	rt_exit(RT_EXIT_EXCEPTION_BASE + (int)f->vector);
}

void rt_trap(struct rt_frame *f)
{
	unsigned v = (unsigned)f->vector;

	if (v == 6 && f->rip == (uint64_t)rt_kcall_gate) {
		f->rax = (uint64_t)rt_kcall_dispatch(f);
		f->rip += 2;
		return;
	}
	if (v < 32) {
		if (exc_handlers[v] && exc_handlers[v](f))
			return;
		report(f);
	}
	if (v == 0xff)
		return; /* LAPIC spurious vector: no EOI by definition */
	if (!irq_handlers[v].fn) {
		rt_printf("interrupt: unexpected vector %u at rip 0x%lx\n", v,
			  (unsigned long)f->rip);
		rt_exit(3);
	}
	irq_handlers[v].fn(f, irq_handlers[v].opaque);
	rt_lapic_eoi();
}
