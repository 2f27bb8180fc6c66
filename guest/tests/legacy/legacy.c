/*
 * The legacy devices fdvm gives for Linux guests, and the PVH module:
 *  - the CMOS RTC: the date and time (printed for the host to compare with
 *    its clock), BCD and 24-hour as status B says, a valid clock (status
 *    D), no update in progress, the century byte the FADT names, a valid
 *    checksum over 0x10-0x2d, and the memory sizes a BIOS stores;
 *  - the PIT: channel 0 counting down once programmed;
 *  - the initrd: the start info's one module, page-aligned, with the
 *    contents the host gave ("initrd=TEXT" on the command line: the module
 *    starts with TEXT);
 *  - "reset=kbd" / "reset=cf9" at the end: the i8042's reset command, or
 *    the reset register the FADT names (fdvm exits 12).
 */
#include "io.h"
#include "rt.h"

struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};

static uint8_t cmos(uint8_t i)
{
	outb(FDVM_PORT_CMOS_INDEX, i);
	return inb(FDVM_PORT_CMOS_DATA);
}

static unsigned from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 15); }
static bool is_bcd(uint8_t v) { return (v & 15) < 10 && (v >> 4) < 10; }

static const char *arg(const char *key)
{
	size_t n = strlen(key);
	for (const char *p = rt_cmdline(); *p; p++)
		if ((p == rt_cmdline() || p[-1] == ' ') && !strncmp(p, key, n) && p[n] == '=')
			return p + n + 1;
	return 0;
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(7);

	uint8_t sec = cmos(0), min = cmos(2), hour = cmos(4), day = cmos(7), mon = cmos(8), year = cmos(9),
		cent = cmos(FDVM_CMOS_CENTURY), b = cmos(0x0b), a = cmos(0x0a), d = cmos(0x0d);
	bool bcd = is_bcd(sec) && is_bcd(min) && is_bcd(hour) && is_bcd(day) && is_bcd(mon) && is_bcd(year) &&
		   is_bcd(cent);
	rt_printf("# rtc %02u%02u-%02u-%02u %02u:%02u:%02u\n", from_bcd(cent), from_bcd(year), from_bcd(mon),
		  from_bcd(day), from_bcd(hour), from_bcd(min), from_bcd(sec));
	rt_tap_ok(bcd && (b & 0x06) == 0x02 && !(a & 0x80) && (d & 0x80) && from_bcd(hour) < 24 &&
		  from_bcd(mon) >= 1 && from_bcd(mon) <= 12 && from_bcd(cent) >= 20,
		  "RTC: BCD, 24-hour, valid, no update in progress (A 0x%x B 0x%x D 0x%x)", a, b, d);
	unsigned sum = 0;
	for (uint8_t i = 0x10; i <= 0x2d; i++)
		sum += cmos(i);
	unsigned stored = (unsigned)cmos(0x2e) << 8 | cmos(0x2f);
	unsigned base = cmos(0x15) | (unsigned)cmos(0x16) << 8;
	rt_tap_ok(sum == stored && base == 640, "CMOS checksum 0x%x (stored 0x%x), base memory %u KiB", sum,
		  stored, base);
	/* A byte written to CMOS is kept, and the checksum follows. */
	outb(FDVM_PORT_CMOS_INDEX, 0x2d);
	outb(FDVM_PORT_CMOS_DATA, (uint8_t)(cmos(0x2d) + 1));
	sum = 0;
	for (uint8_t i = 0x10; i <= 0x2d; i++)
		sum += cmos(i);
	rt_tap_ok(sum == ((unsigned)cmos(0x2e) << 8 | cmos(0x2f)), "a CMOS write is kept, the checksum follows");

	/* PIT channel 0, mode 2, count 0xffff: its count goes down. */
	outb(0x43, 0x34);
	outb(0x40, 0xff);
	outb(0x40, 0xff);
	outb(0x43, 0x00); /* latch */
	unsigned c1 = inb(0x40) | (unsigned)inb(0x40) << 8;
	for (volatile int i = 0; i < 2000; i++)
		;
	outb(0x43, 0x00);
	unsigned c2 = inb(0x40) | (unsigned)inb(0x40) << 8;
	rt_tap_ok(c1 != c2 && c1 <= 0xffff, "PIT channel 0 counts (0x%x, then 0x%x)", c1, c2);

	/* The PVH module. */
	const struct hvm_start_info *si = (const void *)(uintptr_t)0x1000; /* fdvm's start info */
	const char *want = arg("initrd");
	if (want) {
		size_t n = 0;
		while (want[n] && want[n] != ' ')
			n++;
		const struct hvm_modlist_entry *m = si->nr_modules == 1 && si->modlist_paddr
						    ? (const void *)(uintptr_t)si->modlist_paddr : 0;
		rt_tap_ok(m && m->paddr % 4096 == 0 && m->size >= n && m->paddr + m->size <= FDVM_MMIO_HOLE_START &&
			  !memcmp((const void *)(uintptr_t)m->paddr, want, n),
			  "the initrd: one module at 0x%lx, %lu bytes, with the host's contents",
			  m ? (unsigned long)m->paddr : 0, m ? (unsigned long)m->size : 0);
	} else {
		rt_tap_ok(si->nr_modules == 0, "no initrd: no module (%u)", si->nr_modules);
	}
	/* The start info's RSDP and the FADT's reset register and century. */
	uint32_t len;
	const uint8_t *f = rt_acpi_table("FACP", &len);
	rt_tap_ok(f && f[108] == FDVM_CMOS_CENTURY && (f[112 + 1] & 0x04) && f[116] == 1 &&
		  f[120] == (FDVM_PORT_RESET & 0xff) && f[121] == FDVM_PORT_RESET >> 8 && f[128] == FDVM_RESET_VALUE,
		  "FADT: the century byte, the reset register at 0x%x (value %u)", FDVM_PORT_RESET,
		  FDVM_RESET_VALUE);
	rt_tap_ok(true, "still running before any reset");
	const char *r = arg("reset");
	if (r && !strncmp(r, "kbd", 3)) {
		rt_printf("# resetting through the i8042\n");
		outb(FDVM_PORT_I8042_CMD, 0xfe);
	} else if (r && !strncmp(r, "cf9", 3)) {
		rt_printf("# resetting through the reset register\n");
		outb(FDVM_PORT_RESET, FDVM_RESET_VALUE);
	}
	if (r) {
		for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < 4000000000ull;)
			__asm__ volatile("pause");
		rt_printf("# no reset happened\n");
		return 1;
	}
	return rt_tap_done();
}
