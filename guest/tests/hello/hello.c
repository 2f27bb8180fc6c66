/* The smallest guest: console output, the PVH boot data, a clean power-off. */
#include "rt.h"

int guest_main(const char *cmdline)
{
	rt_tap_plan(4);
	rt_printf("# hello from the fdvm test guest (ABI %d)\n", FDVM_ABI_VERSION);
	rt_printf("# command line: \"%s\"\n", cmdline);
	rt_tap_ok(true, "console prints");
	rt_tap_ok(rt_cpl() == 0, "guest_main runs at CPL0");
	rt_tap_ok(rt_lapic_id() == 0, "boot vCPU has LAPIC id 0");

	/* The memory map covers this image; print it for the tests that check
	 * fdvm's layout (RAM split around the hole below 4 GiB). */
	uint64_t a, sz, ram = 0;
	uint32_t type;
	unsigned n = rt_memmap(0, &a, &sz, &type);
	bool covers = false;
	for (unsigned i = 0; i < n; i++) {
		rt_memmap(i, &a, &sz, &type);
		rt_printf("# memmap %u: 0x%lx-0x%lx type %u\n", i, (unsigned long)a,
			  (unsigned long)(a + sz), type);
		if (type == 1) {
			ram += sz;
			covers |= a <= 0x100000 && a + sz > 0x100000;
		}
	}
	rt_printf("# RAM %lu MiB\n", (unsigned long)(ram >> 20));
	rt_tap_ok(n > 0 && covers, "the PVH memory map has RAM under the image (%u entries)", n);
	return rt_tap_done();
}
