/* fdvm: the command line. One file per subcommand; this one dispatches. */
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "fdvm/version.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "run", fdvm_cmd_run, "boot a PVH ELF64 guest and exit with its status" },
	{ "serve", fdvm_cmd_serve, "serve a device to vhost-user frontends: 'fdvm serve blk'" },
	{ "stat", fdvm_cmd_stat, "a running fdvm's notification counters: 'fdvm stat SOCKET'" },
	{ "api", fdvm_cmd_api, "one command to a running fdvm: 'fdvm api SOCKET pause'" },
	{ "bench", fdvm_cmd_bench, "benchmarks: 'fdvm bench doorbell', 'fdvm bench blk', 'fdvm bench net'" },
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm COMMAND [OPTIONS] [ARGS]\n"
		"\n"
		"fdvm runs guests on KVM; every device notification is an eventfd.\n"
		"\n"
		"commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
		"\n"
		"options:\n"
		"  -h, --help     this text; 'fdvm COMMAND --help' for a command\n"
		"  --version      print the version\n"
		"\n"
		"exit status: 0 when the guest powers off, the guest's odd status from the\n"
		"exit port (QEMU isa-debug-exit: (value << 1) | 1), or one of fdvm's own\n"
		"even codes: 2 bad usage or setup, 4 guest fault, 6 host failure,\n"
		"8 stopped by a signal, 10 a system call outside a thread's seccomp\n"
		"filter (--seccomp). 155: a bundled test guest that lacks its device\n"
		"(its last line says which).\n");
}

int main(int argc, char **argv)
{
	/* jansson seeds its hash tables from /dev/urandom on first use: here,
	 * before any thread is confined (no role may open files). */
	json_object_seed(0);
	if (argc < 2) {
		usage(stderr);
		return FDVM_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("fdvm %s\n", fdvm_version());
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 2, argv + 2);
	if (argv[1][0] == '-')
		fprintf(stderr, "fdvm: unknown option %s: a command comes first (run, serve, stat, api, bench; "
			"fdvm --help)\n", argv[1]);
	else
		fprintf(stderr, "fdvm: unknown command '%s': expected run, serve, stat, api or bench (fdvm --help)\n",
			argv[1]);
	return FDVM_EXIT_USAGE;
}
