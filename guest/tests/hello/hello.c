/* The smallest guest: console output, the PVH boot data, a clean power-off. */
#include "rt.h"

int guest_main(const char *cmdline)
{
	rt_tap_plan(3);
	rt_printf("# hello from the fdvm test guest (ABI %d)\n", FDVM_ABI_VERSION);
	rt_printf("# command line: \"%s\"\n", cmdline);
	rt_tap_ok(true, "console prints");
	rt_tap_ok(rt_cpl() == 0, "guest_main runs at CPL0");
	rt_tap_ok(rt_lapic_id() == 0, "boot vCPU has LAPIC id 0");
	return rt_tap_done();
}
