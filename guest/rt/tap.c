/* TAP (Test Anything Protocol) over the console. */
#include "rt.h"
#include "pci.h"
#include "testctl_abi.h"

static int planned = -1, run, failed;

void rt_tap_plan(int n)
{
	planned = n;
	rt_printf("1..%d\n", n);
}

bool rt_tap_ok(bool cond, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	rt_vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	run++;
	if (!cond)
		failed++;
	rt_printf("%sok %d - %s\n", cond ? "" : "not ", run, buf);
	return cond;
}

void rt_needs(const char *what, const char *how)
{
	rt_printf("Bail out! this guest needs %s: %s\n", what, how);
	rt_exit(RT_EXIT_NEEDS);
}

void rt_need_harness(void)
{
	struct pci_dev dev;

	if (!pci_find(FDVM_TEST_PCI_VENDOR, FDVM_TEST_PCI_MSIX_DEVICE, &dev))
		rt_needs("fdvm's test harness and its devices",
			 "run it with tests/kvm/harness/test-harness GUEST.elf from the build "
			 "directory, not fdvm run");
}

int rt_tap_done(void)
{
	if (planned >= 0 && run != planned)
		rt_printf("# planned %d tests, ran %d\n", planned, run);
	return failed || (planned >= 0 && run != planned) ? 1 : 0;
}
