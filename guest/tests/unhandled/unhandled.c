/*
 * Accesses that nothing claims: a port read and write, an MMIO read and
 * write (from CPL0 and from CPL3). Run with fdvm's default policy the first
 * access must stop the VM with a report; with "ignore", reads return
 * all-ones and the guest goes on. The command line says which access to
 * make: pio, mmio, user-mmio, or all (expects the ignore policy).
 */
#include "io.h"
#include "rt.h"

#define NOTHING_PORT 0x2e0
#define NOTHING_MMIO 0xd0000000ull

static long user_mmio(void *arg)
{
	(void)arg;
	mmio_write32(NOTHING_MMIO, 0x12345678);
	return mmio_read32(NOTHING_MMIO + 4);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	if (rt_cmdline_has("pio")) {
		outb(NOTHING_PORT, 0x5a);
		return 1;
	}
	if (rt_cmdline_has("mmio")) {
		mmio_write32(NOTHING_MMIO, 0x5a);
		return 1;
	}
	if (rt_cmdline_has("user-mmio")) {
		rt_user_call(user_mmio, 0);
		return 1;
	}
	rt_tap_plan(4);
	outb(NOTHING_PORT, 0x5a);
	rt_tap_ok(inb(NOTHING_PORT) == 0xff, "unclaimed port reads 0xff");
	rt_tap_ok(inl(NOTHING_PORT) == 0xffffffffu, "unclaimed 32-bit port read is all-ones");
	mmio_write64(NOTHING_MMIO, 1);
	rt_tap_ok(mmio_read64(NOTHING_MMIO) == ~0ull, "unclaimed MMIO reads all-ones");
	rt_tap_ok((uint32_t)rt_user_call(user_mmio, 0) == 0xffffffffu,
		  "unclaimed MMIO from CPL3 reads all-ones");
	return rt_tap_done();
}
