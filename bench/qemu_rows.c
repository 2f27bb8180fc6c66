/* The bench guest on QEMU with its own pci-testdev, for the side-by-side rows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

int bench_run_qemu(const struct bench_opts *o, const char *cmdline, char **out, size_t *len)
{
	int pipefd[2];
	if (pipe(pipefd) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -errno;
	}
	if (pid == 0) {
		/* Its warnings with the guest's output: shown if it fails. */
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		char drive[4200];
		snprintf(drive, sizeof(drive), "file=%s,format=raw,if=none,id=d0",
			 o->blk_image ? o->blk_image : "");
		const char *argv[] = {
			"qemu-system-x86_64", "-enable-kvm", "-cpu", "qemu64", "-m", "128",
			"-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pci-testdev",
			"-kernel", o->guest, "-append", cmdline,
			o->blk_image ? "-drive" : NULL, drive, "-device", "virtio-blk-pci,drive=d0",
			NULL,
		};
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	ssize_t r;
	while (buf && (r = read(pipefd[0], buf + n, cap - n - 1)) > 0) {
		n += (size_t)r;
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
		}
	}
	close(pipefd[0]);
	int status;
	waitpid(pid, &status, 0);
	if (!buf)
		return -ENOMEM;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "fdvm bench: QEMU exited with status %d:\n%.*s\n",
			WIFEXITED(status) ? WEXITSTATUS(status) : -1, (int)n, buf);
		free(buf);
		return -EIO;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}
