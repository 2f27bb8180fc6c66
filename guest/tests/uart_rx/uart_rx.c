/*
 * COM1's receiver and IRQ 4: a line the host writes to fdvm's standard
 * input arrives through receive-data interrupts (IOAPIC pin 4); turning on
 * the transmitter-empty interrupt gives exactly one until THR is written;
 * loopback mode returns what is written and loops the modem lines back.
 * The guest says "# ready" when the host may write; the line must end in
 * a newline.
 */
#include "io.h"
#include "rt.h"

#define COM1 FDVM_PORT_COM1
#define VEC 0x41

static volatile uint64_t irqs, thre_irqs;
static volatile char got[256];
static volatile unsigned ngot;

static void isr(struct rt_frame *f, void *opaque)
{
	(void)f;
	(void)opaque;
	irqs++;
	for (int guard = 0; guard < 64; guard++) {
		uint8_t iir = inb(COM1 + 2);
		if (iir & 1)
			break;
		if ((iir & 0x0e) == 0x04) {
			while (inb(COM1 + 5) & 1) {
				uint8_t c = inb(COM1);
				got[ngot % sizeof(got)] = (char)c;
				ngot++;
			}
		} else if ((iir & 0x0e) == 0x02) {
			thre_irqs++;
		}
	}
}

struct wait {
	volatile uint64_t *u64;
	volatile unsigned *u32;
	uint64_t want;
	char until;
};

/* CPL3, interrupts on: until the condition, 10 s at most. */
static long wait_body(void *arg)
{
	struct wait *w = arg;
	for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 25000000000ull;) {
		if (w->u64 && *w->u64 >= w->want)
			return 1;
		if (w->until) {
			unsigned n = ngot;
			if (n && got[(n - 1) % sizeof(got)] == w->until)
				return 1;
		}
		__asm__ volatile("pause");
	}
	return 0;
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(4);
	rt_irq_set_handler(VEC, isr, 0);
	rt_ioapic_route(4, VEC, false, false);
	outb(COM1 + 1, 0x01); /* ERBFI */
	rt_printf("# ready\n");
	struct wait wl = { 0, 0, 0, '\n' };
	bool line = rt_user_call(wait_body, &wl) == 1;
	char text[64];
	unsigned n = ngot < sizeof(text) - 1 ? ngot : sizeof(text) - 1;
	for (unsigned i = 0; i < n; i++)
		text[i] = got[i] == '\n' ? '|' : got[i];
	text[n] = 0;
	rt_tap_ok(line && irqs > 0 && !memcmp((const void *)got, "hello fdvm\n", 11),
		  "received the host's line through IRQ 4 (%u bytes '%s', %lu interrupts)", ngot, text,
		  (unsigned long)irqs);

	/* Transmitter empty: one event when ETBEI goes on, none after. */
	uint64_t t0 = thre_irqs;
	outb(COM1 + 1, 0x03);
	struct wait wt = { &thre_irqs, 0, t0 + 1, 0 };
	bool one = rt_user_call(wait_body, &wt) == 1;
	for (volatile int i = 0; i < 20000; i++)
		;
	uint64_t t1 = thre_irqs;
	outb(COM1 + 1, 0x01);
	rt_tap_ok(one && t1 == t0 + 1, "ETBEI on: one transmitter-empty interrupt (%lu)", (unsigned long)(t1 - t0));

	/* Loopback: the modem lines, and a byte written comes back. */
	outb(COM1 + 4, 0x10 | 0x0a);
	uint8_t msr = inb(COM1 + 6) & 0xf0;
	unsigned before = ngot;
	outb(COM1, 'Z');
	struct wait wz = { 0, 0, 0, 'Z' };
	bool back = rt_user_call(wait_body, &wz) == 1;
	outb(COM1 + 4, 0x0b);
	rt_tap_ok(msr == 0x90 && back && ngot == before + 1, "loopback: MSR 0x%x, the byte written comes back", msr);
	rt_tap_ok(!(inb(COM1 + 5) & 1), "nothing else waiting in the receiver");
	return rt_tap_done();
}
