/*
 * CPL3 bodies and the way back: rt_user_call, kernel calls from CPL3,
 * console output from CPL3, and an external interrupt (a LAPIC self-IPI)
 * taken while at CPL3.
 */
#include "io.h"
#include "rt.h"

#define ROUNDS 200
#define LAPIC_ICR_LO 0x300
#define SELF_IPI_VECTOR 0x40

static long seen_cpl(void *arg) { (void)arg; return rt_cpl(); }
static long add_one(void *arg) { return (long)arg + 1; }

static long body(void *arg)
{
	long r = 0;
	for (long i = 0; i < ROUNDS; i++)
		r += rt_kernel_call(add_one, (void *)i) - i;
	rt_printf("# printed from CPL%d\n", rt_cpl());
	return r + (long)arg;
}

static volatile int ipis;
static volatile uint64_t ipi_cs;

static void on_ipi(struct rt_frame *f, void *opaque)
{
	(void)opaque;
	ipi_cs = f->cs;
	ipis++;
}

static long send_self_ipi(void *arg)
{
	(void)arg;
	/* Fixed delivery, shorthand "self". */
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_ICR_LO, (1u << 18) | SELF_IPI_VECTOR);
	return 0;
}

static long ipi_body(void *arg)
{
	(void)arg;
	rt_irq_disable();
	rt_kernel_call(send_self_ipi, 0);
	int before = ipis;
	rt_irq_enable();
	for (int spin = 0; spin < 1000000 && ipis == before; spin++)
		__asm__ volatile("pause");
	return before;
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(5);
	rt_tap_ok(rt_user_call(seen_cpl, 0) == 3, "body runs at CPL3");
	rt_tap_ok(rt_user_call(body, (void *)1000) == 1000 + ROUNDS,
		  "%d kernel calls from CPL3 return their results", ROUNDS);
	rt_tap_ok(rt_kernel_call(seen_cpl, 0) == 0, "kernel call from CPL0 runs in place");

	rt_irq_set_handler(SELF_IPI_VECTOR, on_ipi, 0);
	long before = rt_user_call(ipi_body, 0);
	rt_tap_ok(before == 0 && ipis == 1, "self-IPI held while IF=0 at CPL3, delivered once after sti (%d)", ipis);
	rt_tap_ok((ipi_cs & 3) == 3, "interrupt arrived from CPL3 (cs 0x%lx)", (unsigned long)ipi_cs);
	return rt_tap_done();
}
