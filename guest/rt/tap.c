/* TAP (Test Anything Protocol) over the console. */
#include "rt.h"

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

int rt_tap_done(void)
{
	if (planned >= 0 && run != planned)
		rt_printf("# planned %d tests, ran %d\n", planned, run);
	return failed || (planned >= 0 && run != planned) ? 1 : 0;
}
