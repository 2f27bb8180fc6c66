/* The bench guest on QEMU with its own pci-testdev, for the side-by-side rows,
 * and its edu device (an MSI raised on the vCPU thread); with a disk instead:
 * virtio-blk-pci on the image, or vhost-user-blk-pci on a socket. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

void bench_child_init(pid_t parent)
{
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) /* it died before the line above */
		_exit(127);
}

static long ms_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

int bench_reap(pid_t pid, unsigned timeout_ms, int *status)
{
	struct timespec t0, ts = { 0, 10 * 1000000 };
	siginfo_t si;
	int ret = -ETIMEDOUT;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* WNOWAIT: a zombie keeps its pid, so the group's id is not reused
	 * before the group is killed below. */
	for (;;) {
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid) {
			ret = 0;
			break;
		}
		if (ms_since(&t0) >= (long)timeout_ms)
			break;
		nanosleep(&ts, NULL);
	}
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (status)
		*status = st;
	return ret;
}

int bench_run_qemu(const struct bench_opts *o, const char *cmdline, char **out, size_t *len)
{
	int pipefd[2];
	if (pipe(pipefd) < 0)
		return -errno;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -errno;
	}
	if (pid == 0) {
		bench_child_init(parent);
		/* Its warnings with the guest's output: shown if it fails. */
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		close(pipefd[1]);
		char drive[4200], chardev[4200];
		snprintf(drive, sizeof(drive), "file=%s,format=raw,if=none,id=d0%s",
			 o->blk_image ? o->blk_image : "",
			 o->blk_direct ? ",cache=none,aio=io_uring" : "");
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
		char smp[16];
		snprintf(smp, sizeof(smp), "%u", o->cpus ? o->cpus : 1);
		argv[n++] = "-smp";
		argv[n++] = smp;
		if (o->vhost_user_sock) {
			/* A vhost-user backend maps guest RAM: it must be shareable. */
			const char *vu[] = { "-object", "memory-backend-memfd,id=mem,size=128M,share=on",
					     "-machine", "memory-backend=mem", "-chardev", chardev,
					     "-device", "vhost-user-blk-pci,chardev=c0,num-queues=1" };
			for (unsigned i = 0; i < sizeof(vu) / sizeof(vu[0]); i++)
				argv[n++] = vu[i];
		} else if (o->blk_image) {
			argv[n++] = "-drive";
			argv[n++] = drive;
			argv[n++] = "-device";
			/* One queue, as fdvm's disk has: QEMU would give one per
			 * vCPU with -smp. */
			argv[n++] = "virtio-blk-pci,drive=d0,num-queues=1";
		} else {
			/* irq-signal-msi's twin: the guest raises edu's MSI. */
			argv[n++] = "-device";
			argv[n++] = "edu";
		}
		argv[n] = NULL;
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	setpgid(pid, pid); /* as the child does: no window without its group */
	close(pipefd[1]);
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bool timed_out = false;
	while (buf) {
		int wait_ms = -1;
		if (o->timeout_s) {
			long left = (long)o->timeout_s * 1000 - ms_since(&t0);
			if (left <= 0) {
				timed_out = true;
				break;
			}
			wait_ms = left > INT_MAX ? INT_MAX : (int)left;
		}
		struct pollfd pfd = { .fd = pipefd[0], .events = POLLIN };
		int pr = poll(&pfd, 1, wait_ms);
		if (pr < 0 && errno != EINTR)
			break;
		if (pr <= 0)
			continue; /* EINTR, or the deadline: checked above */
		ssize_t r = read(pipefd[0], buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb) {
				free(buf);
				buf = NULL;
			} else {
				buf = nb;
			}
		}
	}
	close(pipefd[0]);
	/* Output closed: QEMU is exiting; give it 10 s (none if it timed out
	 * or the buffer failed), then kill its whole group. */
	int status;
	if (bench_reap(pid, timed_out || !buf ? 0 : 10000, &status) && !timed_out && buf) {
		fprintf(stderr, "fdvm bench: QEMU closed its output but did not exit: killed\n");
		free(buf);
		return -ETIMEDOUT;
	}
	if (!buf)
		return -ENOMEM;
	if (timed_out) {
		fprintf(stderr, "fdvm bench: QEMU killed after %u s (the guest hung):\n%.*s\n",
			o->timeout_s, (int)n, buf);
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
