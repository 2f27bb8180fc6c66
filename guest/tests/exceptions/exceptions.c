/*
 * Exceptions. With one of ud, gp, pf (at CPL0) or user-ud, user-gp, user-pf
 * (at CPL3) on the command line, raises that exception with no handler, so
 * the runtime must report it and end the guest with a non-zero code. With
 * "triple", loads an empty IDT and faults: the VMM must report a triple
 * fault. With no argument, checks that installed handlers see the right vector, error
 * code and address and can resume.
 */
#include "rt.h"

#define UNMAPPED 0x100000000000ull	/* above the 4 GiB identity map */
#define NONCANONICAL 0x8000000000000000ull

static long raise_ud(void *arg) { (void)arg; __asm__ volatile("ud2"); return 0; }
static long raise_gp(void *arg) { (void)arg; return *(volatile long *)NONCANONICAL; }
static long raise_pf(void *arg) { (void)arg; return *(volatile long *)UNMAPPED; }

static struct rt_frame last;
static int hits;
uint64_t resume_rip, resume_rsp;

/* Resumes where raise_and_resume() left off, as if the call had returned. */
static bool resume(struct rt_frame *f)
{
	last = *f;
	hits++;
	f->rip = resume_rip;
	f->rsp = resume_rsp;
	return true;
}

static void raise_and_resume(long (*fn)(void *))
{
	__asm__ volatile("lea 1f(%%rip), %%rax\n\t"
			 "mov %%rax, resume_rip(%%rip)\n\t"
			 "mov %%rsp, resume_rsp(%%rip)\n\t"
			 "call *%0\n\t"
			 "1:"
			 :
			 : "r"(fn)
			 : "rax", "rdi", "rsi", "rdx", "rcx", "r8", "r9", "r10",
			   "r11", "memory");
}

static long user_raise_pf(void *arg) { (void)arg; raise_and_resume(raise_pf); return rt_cpl(); }

int guest_main(const char *cmdline)
{
	static const struct {
		const char *arg;
		long (*fn)(void *);
		bool user;
	} raise[] = {
		{ "ud", raise_ud, false },	{ "gp", raise_gp, false },
		{ "pf", raise_pf, false },	{ "user-ud", raise_ud, true },
		{ "user-gp", raise_gp, true },	{ "user-pf", raise_pf, true },
	};
	(void)cmdline;

	if (rt_cmdline_has("triple")) {
		/* No IDT at all: the #UD becomes #DF, then a triple fault. */
		struct {
			uint16_t limit;
			uint64_t base;
		} __attribute__((packed)) empty = { 0, 0 };
		rt_printf("exceptions: raising a triple fault\n");
		__asm__ volatile("lidt %0; ud2" ::"m"(empty));
		return 1;
	}
	for (unsigned i = 0; i < sizeof(raise) / sizeof(raise[0]); i++) {
		if (!rt_cmdline_has(raise[i].arg))
			continue;
		rt_printf("exceptions: raising %s\n", raise[i].arg);
		if (raise[i].user)
			rt_user_call(raise[i].fn, 0);
		else
			raise[i].fn(0);
		rt_printf("exceptions: %s did not fault\n", raise[i].arg);
		return 1;
	}

	rt_tap_plan(7);
	rt_exception_set_handler(6, resume);
	rt_exception_set_handler(13, resume);
	rt_exception_set_handler(14, resume);

	raise_and_resume(raise_ud);
	rt_tap_ok(hits == 1 && last.vector == 6, "#UD handled (vector %lu)",
		  (unsigned long)last.vector);
	raise_and_resume(raise_gp);
	rt_tap_ok(hits == 2 && last.vector == 13 && last.error == 0,
		  "#GP(0) on a non-canonical load (vector %lu error %lu)",
		  (unsigned long)last.vector, (unsigned long)last.error);
	raise_and_resume(raise_pf);
	uint64_t cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	rt_tap_ok(hits == 3 && last.vector == 14 && cr2 == UNMAPPED &&
			  (last.error & 1) == 0,
		  "#PF not-present at 0x%lx (error 0x%lx)", (unsigned long)cr2,
		  (unsigned long)last.error);
	long cpl = rt_user_call(user_raise_pf, 0);
	rt_tap_ok(hits == 4 && last.vector == 14 && (last.cs & 3) == 3 &&
			  (last.error & 4),
		  "#PF from CPL3 reaches the CPL0 handler (cs 0x%lx error 0x%lx)",
		  (unsigned long)last.cs, (unsigned long)last.error);
	rt_tap_ok(cpl == 3, "CPL3 body resumes after its fault (cpl %ld)", cpl);
	rt_tap_ok(rt_cpl() == 0, "back at CPL0");
	rt_exception_set_handler(6, 0);
	rt_tap_ok(true, "handlers removed");
	return rt_tap_done();
}
