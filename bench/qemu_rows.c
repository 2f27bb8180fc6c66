/* The bench guest on QEMU with its own pci-testdev, for the side-by-side rows;
 * with a disk: virtio-blk-pci on the image, or vhost-user-blk-pci on a socket. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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
		char drive[4200], chardev[4200];
		snprintf(drive, sizeof(drive), "file=%s,format=raw,if=none,id=d0",
			 o->blk_image ? o->blk_image : "");
		snprintf(chardev, sizeof(chardev), "socket,id=c0,path=%s",
			 o->vhost_user_sock ? o->vhost_user_sock : "");
		const char *argv[40] = {
			"qemu-system-x86_64", "-enable-kvm", "-cpu", "qemu64", "-m", "128",
			"-display", "none", "-no-reboot", "-nodefaults", "-serial", "stdio",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-device", "pci-testdev",
			"-kernel", o->guest, "-append", cmdline,
		};
		unsigned n = 0;
		while (argv[n])
			n++;
		if (o->vhost_user_sock) {
			/* A vhost-user backend maps guest RAM: it must be shareable. */
			const char *vu[] = { "-object", "memory-backend-memfd,id=mem,size=128M,share=on",
					     "-machine", "memory-backend=mem", "-chardev", chardev,
					     "-device", "vhost-user-blk-pci,chardev=c0" };
			for (unsigned i = 0; i < sizeof(vu) / sizeof(vu[0]); i++)
				argv[n++] = vu[i];
		} else if (o->blk_image) {
			argv[n++] = "-drive";
			argv[n++] = drive;
			argv[n++] = "-device";
			argv[n++] = "virtio-blk-pci,drive=d0";
		}
		argv[n] = NULL;
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool timed_out = false;
	while (buf) {
		int wait_ms = -1;
		if (o->qemu_timeout_s) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			long left = (long)o->qemu_timeout_s * 1000 - (now.tv_sec - t0.tv_sec) * 1000 -
				    (now.tv_nsec - t0.tv_nsec) / 1000000;
			if (left <= 0) {
				timed_out = true;
				kill(pid, SIGKILL);
				break;
			}
			wait_ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		int pr = poll(&pfd, 1, wait_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			break;
		if (pr == 0)
			continue;
		ssize_t r = read(pipefd[0], buf + n, cap - n - 1);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				kill(pid, SIGKILL);
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
	if (timed_out) {
		fprintf(stderr, "fdvm bench: QEMU killed after %u s (the guest hung):\n%.*s\n",
			o->qemu_timeout_s, (int)n, buf);
		free(buf);
		return -ETIMEDOUT;
	}
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
