/* Shared by the fdvm subcommands. */
#ifndef FDVM_CLI_H
#define FDVM_CLI_H

/* fdvm's own exit codes are even; a guest's exit-port status is odd. The
 * codes for a guest that stopped come from fdvm_stop_exit_status (vm.h). */
#define FDVM_EXIT_USAGE 2

int fdvm_cmd_run(int argc, char **argv);
int fdvm_cmd_bench(int argc, char **argv); /* bench/doorbell.c */
int fdvm_cmd_serve(int argc, char **argv);
int fdvm_cmd_stat(int argc, char **argv); /* stat.c */
int fdvm_cmd_api(int argc, char **argv);  /* stat.c */

#endif
