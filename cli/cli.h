/* Shared by the fdvm subcommands. */
#ifndef FDVM_CLI_H
#define FDVM_CLI_H

/* fdvm's own exit codes are even; a guest's exit-port status is odd. */
#define FDVM_EXIT_USAGE 2
#define FDVM_EXIT_GUEST_FAULT 4
#define FDVM_EXIT_HOST_FAILURE 6
#define FDVM_EXIT_STOPPED 8

int fdvm_cmd_run(int argc, char **argv);
int fdvm_cmd_bench(int argc, char **argv); /* bench/doorbell.c */

#endif
