/* Exits with the code given as "code=N" on the command line (from CPL3
 * with "user"), or never returns with "hang". */
#include "rt.h"

static long exit_from_user(void *code)
{
	rt_exit((int)(long)code);
}

int guest_main(const char *cmdline)
{
	const char *p = cmdline;
	int code = 0;

	while (*p && strncmp(p, "code=", 5))
		p++;
	if (*p)
		for (p += 5; *p >= '0' && *p <= '9'; p++)
			code = code * 10 + (*p - '0');
	if (rt_cmdline_has("hang")) {
		rt_printf("exitcode: hanging\n");
		for (;;)
			rt_wait_for_interrupt();
	}
	rt_printf("exitcode: exiting with %d\n", code);
	if (rt_cmdline_has("user"))
		rt_user_call(exit_from_user, (void *)(long)code);
	return code;
}
