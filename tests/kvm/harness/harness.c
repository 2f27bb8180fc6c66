/*
 * The test harness: boots a test guest with libfdvm and the test-control
 * device (testabi/testctl_abi.h), through which the guest asks for irq
 * lines, doorbells and backends on the host side. Every test runs on the
 * kernel paths (default) or with the userspace fallbacks forced
 * (--userspace). Exit status as `fdvm run`.
 *
 * Backends here behave like real ones: they hold nothing but eventfds
 * (and, for the process backend, guest RAM mapped from the memfd).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fdvm/doorbell.h"
#include "fdvm/io.h"
#include "fdvm/irq.h"
#include "fdvm/pci.h"
#include "testctl_abi.h"
#include "fdvm/sandbox.h"
#include "fdvm/vm.h"

#define MAX_LINES 64
#define MAX_DOORBELLS 64

static struct fdvm_vm *vm;
static bool userspace;
static uint64_t args[3], result;
static uint64_t mailbox_gpa;
static struct fdvm_io_region *mmio_region, *pio_region;
static atomic_ullong device_writes;

static struct line {
	struct fdvm_irq_line *line;
	int borrowed_fd; /* the backend's own eventfd when the line borrows it */
	atomic_long work; /* level test */
} lines[MAX_LINES];
static struct fdvm_doorbell *doorbells[MAX_DOORBELLS];
static struct fdvm_pci_dev *msix_dev;
static uint64_t msix_mailbox_gpa;

/* The backend: one at a time. */
static pthread_t backend;
static bool backend_running;
static atomic_ullong backend_sent;
static int child_sock = -1;
static bool child_busy;
static pid_t child_pid;

static uint64_t rand_state = 0x9e3779b97f4a7c15ull;
static uint64_t xrand(void)
{
	rand_state ^= rand_state << 13;
	rand_state ^= rand_state >> 7;
	rand_state ^= rand_state << 17;
	return rand_state;
}

static void short_pause(uint64_t r)
{
	/* Mostly back to back, sometimes a pause, so signals both pile up
	 * and arrive one at a time. */
	if (r % 8 == 0) {
		struct timespec ts = { 0, (long)(r % 50000) };
		nanosleep(&ts, NULL);
	}
}

static int signal_fd(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static struct tc_mailbox *mailbox(void)
{
	return mailbox_gpa ? fdvm_gpa(vm, mailbox_gpa, sizeof(struct tc_mailbox)) : NULL;
}

/*
 * The MSI-X backend's work, in a thread or the child: count signals to
 * random vectors, each bracketed by the mailbox counts the guest checks.
 */
static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * Pacing: signal i of the round waits until the guest has begun i / pace
 * mask or unmask writes since the round started, so the signals spread
 * over the whole storm and each burst races with the write the guest has
 * just announced. Bounded: if the guest makes no progress for PACE_STALL_NS
 * (longer than the guest's fence may wait for another vCPU, FENCE_CYCLES in
 * guest/tests/msix), pacing is off for the rest of the round.
 */
#define PACE_STALL_NS 5000000000ull
static bool pace_wait(struct tc_msix_mailbox *mb, uint64_t base, uint64_t i, uint64_t pace)
{
	uint64_t last = __atomic_load_n(&mb->guest_ops, __ATOMIC_ACQUIRE), t0 = now_ns();
	for (unsigned spin = 0;; spin++) {
		uint64_t ops = __atomic_load_n(&mb->guest_ops, __ATOMIC_ACQUIRE);
		if ((ops - base) * pace >= i)
			return true;
		if (ops != last) {
			last = ops;
			t0 = now_ns();
		} else if (now_ns() - t0 > PACE_STALL_NS) {
			__atomic_fetch_add(&mb->pace_stalls, 1, __ATOMIC_SEQ_CST);
			return false;
		}
		/* Spin briefly (the guest's next write is near), then give the
		 * CPU away: with two cores the vCPU and fdvm's service thread
		 * need it more than we do. */
		if (spin < 64)
			__builtin_ia32_pause();
		else
			sched_yield();
	}
}

static uint64_t msix_signals(struct tc_msix_mailbox *mb, const int *fds, unsigned n, uint64_t count,
			     uint64_t pace)
{
	uint64_t sent = 0, base = __atomic_load_n(&mb->guest_ops, __ATOMIC_ACQUIRE);
	for (uint64_t i = 0; i < count; i++) {
		if (pace && !pace_wait(mb, base, i, pace))
			pace = 0;
		uint64_t r = xrand();
		unsigned v = (unsigned)(r % n);
		uint64_t s = __atomic_load_n(&mb->seq[v], __ATOMIC_RELAXED) + 1;
		__atomic_store_n(&mb->seq[v], s, __ATOMIC_SEQ_CST);
		if (signal_fd(fds[v]) == 0)
			sent++;
		__atomic_store_n(&mb->written[v], s, __ATOMIC_SEQ_CST);
		short_pause(r >> 8);
	}
	__atomic_store_n(&mb->done, 1, __ATOMIC_SEQ_CST);
	return sent;
}

/* ---- the process backend: forked before the VM exists ---- */

struct child_req {
	uint64_t count, mailbox_off, mem_size, nfds, seed, pace;
	bool msix; /* signal random vectors; fds[0..nfds-2] are theirs */
};
#define CHILD_MAX_FDS (FDVM_TEST_MSIX_VECTORS + 1)

static void child_main(int sock)
{
	for (;;) {
		struct child_req req;
		char cbuf[CMSG_SPACE(CHILD_MAX_FDS * sizeof(int))];
		struct iovec iov = { &req, sizeof(req) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
				      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(sock, &msg, 0);
		if (n != sizeof(req))
			_exit(n == 0 ? 0 : 1);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		if (!c || c->cmsg_type != SCM_RIGHTS || req.nfds < 2 || req.nfds > CHILD_MAX_FDS ||
		    c->cmsg_len != CMSG_LEN(req.nfds * sizeof(int)))
			_exit(2);
		int fds[CHILD_MAX_FDS];
		memcpy(fds, CMSG_DATA(c), req.nfds * sizeof(int));
		int memfd = fds[req.nfds - 1];
		uint8_t *mem = mmap(NULL, req.mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
		if (mem == MAP_FAILED)
			_exit(3);
		uint64_t sent = 0;
		if (req.msix) {
			rand_state = req.seed | 1;
			sent = msix_signals((struct tc_msix_mailbox *)(mem + req.mailbox_off), fds,
					    (unsigned)req.nfds - 1, req.count, req.pace);
		} else {
			struct tc_mailbox *mb = (struct tc_mailbox *)(mem + req.mailbox_off);
			for (uint64_t i = 1; i <= req.count; i++) {
				__atomic_store_n(&mb->seq, i, __ATOMIC_RELEASE);
				if (signal_fd(fds[0]) == 0)
					sent++;
				short_pause(xrand());
			}
			__atomic_store_n(&mb->done, 1, __ATOMIC_RELEASE);
		}
		/* The backend goes away: its copies of the fds are closed. */
		for (unsigned k = 0; k < req.nfds; k++)
			close(fds[k]);
		munmap(mem, req.mem_size);
		if (write(sock, &sent, sizeof(sent)) != sizeof(sent))
			_exit(4);
	}
}

static int start_child(void)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	child_pid = fork();
	if (child_pid < 0)
		return -errno;
	if (child_pid == 0) {
		close(sv[0]);
		child_main(sv[1]);
		_exit(0);
	}
	close(sv[1]);
	child_sock = sv[0];
	return 0;
}

/* Hands the child backend its eventfds and guest RAM, as a vhost-user
 * frontend would. The last fd is the memfd. */
static int process_send(struct child_req *req, const int *fds, unsigned nfds)
{
	char cbuf[CMSG_SPACE(CHILD_MAX_FDS * sizeof(int))] = { 0 };
	struct iovec iov = { req, sizeof(*req) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = CMSG_SPACE(nfds * sizeof(int)) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	if (child_sock < 0 || nfds > CHILD_MAX_FDS)
		return -EINVAL;
	req->nfds = nfds;
	req->mem_size = fdvm_vm_mem_size(vm);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	return sendmsg(child_sock, &msg, 0) == sizeof(*req) ? 0 : -errno;
}

static int process_signal(int fd, uint64_t count)
{
	uint64_t off;
	int memfd = fdvm_vm_mem_fd(vm, mailbox_gpa, &off);
	struct child_req req = { .count = count, .mailbox_off = off };
	int fds[2] = { fd, memfd };

	if (memfd < 0)
		return -EINVAL;
	return process_send(&req, fds, 2);
}

/* ---- thread backends ---- */

struct thread_job {
	int fd;
	uint64_t count;
	struct line *level; /* level test, else NULL */
	uint64_t seed, pace;
};

static void *msix_thread(void *arg)
{
	struct thread_job *j = arg;
	int fds[FDVM_TEST_MSIX_VECTORS];
	for (unsigned v = 0; v < FDVM_TEST_MSIX_VECTORS; v++)
		fds[v] = fdvm_pci_msix_fd(msix_dev, v);
	rand_state = j->seed | 1;
	atomic_store(&backend_sent,
		     msix_signals(fdvm_gpa(vm, msix_mailbox_gpa, sizeof(struct tc_msix_mailbox)),
				  fds, FDVM_TEST_MSIX_VECTORS, j->count, j->pace));
	return NULL;
}
static struct thread_job job;

static void *signal_thread(void *arg)
{
	struct thread_job *j = arg;
	struct tc_mailbox *mb = mailbox();

	for (uint64_t i = 1; i <= j->count; i++) {
		if (mb)
			__atomic_store_n(&mb->seq, i, __ATOMIC_RELEASE);
		if (signal_fd(j->fd) == 0)
			atomic_fetch_add(&backend_sent, 1);
		short_pause(xrand());
	}
	if (mb)
		__atomic_store_n(&mb->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * The level backend, as a device would be: raise the line while it has
 * work; after each EOI (resample), raise it again if work is left.
 */
static void *level_thread(void *arg)
{
	struct thread_job *j = arg;
	struct line *l = j->level;
	int rfd = fdvm_irq_line_resample_fd(l->line);
	struct tc_mailbox *mb = mailbox();

	if (atomic_load(&l->work) > 0 && signal_fd(j->fd) == 0)
		atomic_fetch_add(&backend_sent, 1);
	while (atomic_load(&l->work) > 0) {
		struct pollfd p = { rfd, POLLIN, 0 };
		int n = poll(&p, 1, 10000);
		if (n <= 0)
			break; /* the guest will time out and report it */
		uint64_t v;
		if (read(rfd, &v, sizeof(v)) != sizeof(v))
			continue;
		if (atomic_load(&l->work) > 0 && signal_fd(j->fd) == 0)
			atomic_fetch_add(&backend_sent, 1);
	}
	if (mb)
		__atomic_store_n(&mb->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void wait_backend(void)
{
	if (backend_running) {
		pthread_join(backend, NULL);
		backend_running = false;
	}
	if (child_busy) {
		uint64_t sent = 0;
		if (read(child_sock, &sent, sizeof(sent)) != sizeof(sent))
			fprintf(stderr, "harness: backend process did not report\n");
		atomic_store(&backend_sent, sent);
		child_busy = false;
	}
}

/* ---- commands ---- */

static struct line *get_line(uint64_t id)
{
	return id < MAX_LINES && lines[id].line ? &lines[id] : NULL;
}

static int64_t new_line(struct fdvm_irq_line_config *cfg, int borrowed_fd)
{
	for (int i = 0; i < MAX_LINES; i++) {
		if (lines[i].line)
			continue;
		cfg->mode = userspace ? FDVM_IRQ_USERSPACE : FDVM_IRQ_KERNEL;
		int ret = fdvm_irq_line_create(vm, cfg, &lines[i].line);
		if (ret)
			return ret;
		lines[i].borrowed_fd = borrowed_fd;
		atomic_store(&lines[i].work, 0);
		return i;
	}
	return -ENOSPC;
}

static struct fdvm_msi msi_for(uint64_t vector)
{
	/* Fixed delivery, physical destination APIC 0, edge. */
	return (struct fdvm_msi){ 0xfee00000ull, (uint32_t)(vector & 0xff) };
}

static int64_t run_command(uint64_t cmd)
{
	struct fdvm_irq_line_config cfg;
	struct line *l;
	int64_t ret;

	fdvm_irq_line_config_init(&cfg);
	switch (cmd) {
	case TC_MAILBOX:
		if (!fdvm_gpa(vm, args[0], sizeof(struct tc_mailbox)))
			return -EFAULT;
		mailbox_gpa = args[0];
		return 0;
	case TC_LINE_MSI: {
		int fd = -1;
		cfg.msi = msi_for(args[0]);
		if (args[1] & TC_F_BORROW) {
			fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			if (fd < 0)
				return -errno;
			cfg.fd = fd;
			cfg.borrow_fd = true;
		}
		ret = new_line(&cfg, fd);
		if (ret < 0 && fd >= 0)
			close(fd);
		if (ret >= 0 && fd >= 0 && !cfg.borrow_fd)
			close(fd);
		return ret;
	}
	case TC_LINE_PRESIGNALLED: {
		int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fd < 0)
			return -errno;
		for (uint64_t i = 0; i < args[1]; i++)
			signal_fd(fd);
		cfg.msi = msi_for(args[0]);
		cfg.fd = fd;
		ret = new_line(&cfg, -1);
		close(fd); /* the line keeps its own duplicate */
		return ret;
	}
	case TC_LINE_LEVEL:
		cfg.kind = FDVM_IRQ_LEVEL;
		cfg.pin = (uint32_t)args[0];
		return new_line(&cfg, -1);
	case TC_LINE_DESTROY:
		if (!(l = get_line(args[0])))
			return -ENOENT;
		wait_backend();
		fdvm_irq_line_destroy(l->line);
		l->line = NULL;
		if (l->borrowed_fd >= 0)
			close(l->borrowed_fd);
		l->borrowed_fd = -1;
		return 0;
	case TC_LINE_CLOSE_BORROWED:
		if (!(l = get_line(args[0])) || l->borrowed_fd < 0)
			return -ENOENT;
		/* The backend side closes: KVM sees POLLHUP and releases the irqfd. */
		close(l->borrowed_fd);
		l->borrowed_fd = -1;
		return 0;
	case TC_LINE_MASK:
		return (l = get_line(args[0])) ? fdvm_irq_line_mask(l->line) : -ENOENT;
	case TC_LINE_UNMASK:
		return (l = get_line(args[0])) ? fdvm_irq_line_unmask(l->line) : -ENOENT;
	case TC_LINE_PENDING:
		return (l = get_line(args[0])) ? fdvm_irq_line_pending(l->line) : -ENOENT;
	case TC_SIGNAL: {
		if (!(l = get_line(args[0])))
			return -ENOENT;
		int fd = l->borrowed_fd >= 0 ? l->borrowed_fd : fdvm_irq_line_fd(l->line);
		wait_backend();
		atomic_store(&backend_sent, 0);
		if (mailbox())
			mailbox()->done = 0;
		if (args[2] == TC_BY_VCPU) {
			for (uint64_t i = 0; i < args[1]; i++)
				if (signal_fd(fd) == 0)
					atomic_fetch_add(&backend_sent, 1);
			return 0;
		}
		if (args[2] == TC_BY_PROCESS) {
			/* Returns once the child has the fds; it reports at TC_WAIT. */
			ret = process_signal(fd, args[1]);
			child_busy = ret == 0;
			return ret;
		}
		job = (struct thread_job){ .fd = fd, .count = args[1] };
		if (fdvm_thread_create(&backend, FDVM_ROLE_DEVICE, "harness-backend", signal_thread, &job))
			return -EAGAIN;
		backend_running = true;
		return 0;
	}
	case TC_WAIT:
		wait_backend();
		return (int64_t)atomic_load(&backend_sent);
	case TC_LEVEL_WORK:
		if (!(l = get_line(args[0])))
			return -ENOENT;
		wait_backend();
		atomic_store(&backend_sent, 0);
		atomic_store(&l->work, (long)args[1]);
		if (mailbox())
			mailbox()->done = 0;
		job = (struct thread_job){ .fd = fdvm_irq_line_fd(l->line), .level = l };
		if (fdvm_thread_create(&backend, FDVM_ROLE_DEVICE, "harness-backend", level_thread, &job))
			return -EAGAIN;
		backend_running = true;
		return 0;
	case TC_DOORBELL: {
		struct fdvm_doorbell_config dc;
		fdvm_doorbell_config_init(&dc);
		dc.space = (args[0] & 0xff) == TC_SPACE_PIO ? FDVM_SPACE_PIO : FDVM_SPACE_MMIO;
		dc.len = (uint32_t)((args[0] >> 8) & 0xff);
		dc.datamatch = (args[0] >> 16) & 1;
		dc.addr = args[1];
		dc.data = args[2];
		dc.mode = userspace ? FDVM_DOORBELL_USERSPACE : FDVM_DOORBELL_KERNEL;
		dc.region = dc.space == FDVM_SPACE_PIO ? pio_region : mmio_region;
		for (int i = 0; i < MAX_DOORBELLS; i++)
			if (!doorbells[i])
				return (ret = fdvm_doorbell_create(vm, &dc, &doorbells[i])) ? ret : i;
		return -ENOSPC;
	}
	case TC_DOORBELL_COUNT: {
		uint64_t v = 0;
		if (args[0] >= MAX_DOORBELLS || !doorbells[args[0]])
			return -ENOENT;
		if (read(fdvm_doorbell_fd(doorbells[args[0]]), &v, sizeof(v)) < 0 && errno != EAGAIN)
			return -errno;
		return (int64_t)v;
	}
	case TC_DOORBELL_DESTROY:
		if (args[0] >= MAX_DOORBELLS || !doorbells[args[0]])
			return -ENOENT;
		fdvm_doorbell_destroy(doorbells[args[0]]);
		doorbells[args[0]] = NULL;
		return 0;
	case TC_DEVICE_WRITES:
		return (int64_t)atomic_exchange(&device_writes, 0);
	case TC_KERNEL_PATH:
		return !userspace;
	case TC_MSIX_MAILBOX:
		if (!fdvm_gpa(vm, args[0], sizeof(struct tc_msix_mailbox)))
			return -EFAULT;
		msix_mailbox_gpa = args[0];
		return 0;
	case TC_MSIX_SIGNAL:
		if (args[0] >= FDVM_TEST_MSIX_VECTORS)
			return -EINVAL;
		for (uint64_t i = 0; i < args[1]; i++)
			signal_fd(fdvm_pci_msix_fd(msix_dev, (unsigned)args[0]));
		return 0;
	case TC_MSIX_ROUND: {
		struct tc_msix_mailbox *mb = msix_mailbox_gpa
			? fdvm_gpa(vm, msix_mailbox_gpa, sizeof(*mb)) : NULL;
		if (!mb)
			return -EINVAL;
		wait_backend();
		mb->done = 0;
		atomic_store(&backend_sent, 0);
		uint64_t by = args[1] & 0xff, pace = args[1] >> 8;
		if (by == TC_BY_PROCESS) {
			uint64_t off;
			int fds[FDVM_TEST_MSIX_VECTORS + 1];
			for (unsigned v = 0; v < FDVM_TEST_MSIX_VECTORS; v++)
				fds[v] = fdvm_pci_msix_fd(msix_dev, v);
			fds[FDVM_TEST_MSIX_VECTORS] = fdvm_vm_mem_fd(vm, msix_mailbox_gpa, &off);
			struct child_req req = { .count = args[0], .mailbox_off = off,
						 .seed = args[2], .pace = pace, .msix = true };
			ret = process_send(&req, fds, FDVM_TEST_MSIX_VECTORS + 1);
			child_busy = ret == 0;
			return ret;
		}
		job = (struct thread_job){ .count = args[0], .seed = args[2], .pace = pace };
		if (fdvm_thread_create(&backend, FDVM_ROLE_DEVICE, "harness-backend", msix_thread, &job))
			return -EAGAIN;
		backend_running = true;
		return 0;
	}
	}
	return -EINVAL;
}

/* ---- the device ---- */

static uint64_t tc_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)size;
	switch (off) {
	case TC_REG_RESULT:
		return result;
	case TC_REG_ARG0:
	case TC_REG_ARG1:
	case TC_REG_ARG2:
		return args[(off - TC_REG_ARG0) / 8];
	case TC_REG_CONSUME: {
		struct line *l = get_line(args[0]);
		if (!l)
			return 0;
		long w = atomic_load(&l->work);
		while (w > 0 && !atomic_compare_exchange_weak(&l->work, &w, w - 1))
			;
		return w > 0;
	}
	}
	return ~0ull;
}

static void tc_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	(void)opaque;
	(void)size;
	if (off >= TC_DOORBELL_AREA) {
		atomic_fetch_add(&device_writes, 1);
		return;
	}
	switch (off) {
	case TC_REG_ARG0:
	case TC_REG_ARG1:
	case TC_REG_ARG2:
		args[(off - TC_REG_ARG0) / 8] = value;
		break;
	case TC_REG_CMD:
		result = (uint64_t)run_command(value);
		break;
	}
}

static uint64_t pio_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)size;
	return ~0ull;
}

static void pio_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)value;
	(void)size;
	atomic_fetch_add(&device_writes, 1);
}

static const struct fdvm_io_ops tc_ops = { .read = tc_read, .write = tc_write };
static const struct fdvm_io_ops pio_ops = { .read = pio_read, .write = pio_write };

int main(int argc, char **argv)
{
	struct fdvm_vm_config cfg;
	struct fdvm_stop stop;
	char cmdline[1024] = "";
	int i = 1, status;

	enum fdvm_unhandled unhandled = FDVM_UNHANDLED_STOP;
	unsigned cpus = 1;
	enum fdvm_seccomp_mode seccomp = FDVM_SECCOMP_KILL;
	for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--"); i++) {
		if (!strcmp(argv[i], "--userspace"))
			userspace = true;
		else if (!strcmp(argv[i], "--seccomp-log"))
			seccomp = FDVM_SECCOMP_LOG;
		else if (!strcmp(argv[i], "--seccomp-off"))
			seccomp = FDVM_SECCOMP_OFF;
		else if (!strcmp(argv[i], "--ignore-unhandled"))
			unhandled = FDVM_UNHANDLED_IGNORE;
		else if (!strcmp(argv[i], "--warn-unhandled"))
			unhandled = FDVM_UNHANDLED_WARN;
		else if (!strncmp(argv[i], "--cpus=", 7) && atoi(argv[i] + 7) > 0)
			cpus = (unsigned)atoi(argv[i] + 7);
		else
			break;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: %s [--userspace] [--ignore-unhandled|--warn-unhandled] [--seccomp-log|--seccomp-off] [--cpus=N] GUEST.elf [--] [ARGS...]\n",
			argv[0]);
		return 2;
	}
	const char *guest = argv[i++];
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	for (; i < argc; i++) {
		strncat(cmdline, argv[i], sizeof(cmdline) - strlen(cmdline) - 2);
		strcat(cmdline, " ");
	}
	for (int k = 0; k < MAX_LINES; k++)
		lines[k].borrowed_fd = -1;
	if (start_child()) {
		perror("harness: fork");
		return 6;
	}

	/* After the fork: the backend process is not fdvm's to confine. */
	if ((status = fdvm_sandbox_init(seccomp))) {
		fprintf(stderr, "harness: seccomp: %s\n", strerror(-status));
		return 6;
	}

	fdvm_vm_config_init(&cfg);
	cfg.mem_size = 64ull << 20;
	cfg.unhandled_pio = cfg.unhandled_mmio = unhandled;
	cfg.cpus = cpus;
	if (fdvm_vm_create(&cfg, &vm))
		return 2;
	struct fdvm_pci_dev_config mc = {
		.name = "msix-testdev",
		.vendor_id = FDVM_TEST_PCI_VENDOR,
		.device_id = FDVM_TEST_PCI_MSIX_DEVICE,
		.class_code = 0xff0000,
		.bars = { { FDVM_PCI_BAR_MMIO32, FDVM_TEST_MSIX_BAR_SIZE } },
		.msix_vectors = FDVM_TEST_MSIX_VECTORS,
		.msix_bar = 0,
		.msix_table_offset = 0,
		.msix_pba_offset = FDVM_TEST_MSIX_PBA,
		.irq_mode = userspace ? FDVM_IRQ_USERSPACE : FDVM_IRQ_KERNEL,
	};
	if (fdvm_pci_dev_create(vm, &mc, &msix_dev)) {
		fdvm_vm_destroy(vm);
		return 2;
	}
	if (fdvm_io_register(vm, FDVM_SPACE_MMIO, FDVM_TESTCTL_MMIO, FDVM_TESTCTL_MMIO_SIZE,
			     &tc_ops, NULL, "testctl", &mmio_region) ||
	    fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_TESTCTL_PIO, FDVM_TESTCTL_PIO_SIZE,
			     &pio_ops, NULL, "testctl-pio", &pio_region) ||
	    fdvm_vm_load_pvh(vm, guest, cmdline)) {
		fdvm_vm_destroy(vm);
		return 2;
	}
	/* The vCPU and its handlers (the test-control device above) run on a
	 * vCPU thread, confined as fdvm run's is. */
	if (fdvm_vm_start(vm, "harness-vcpu")) {
		fdvm_vm_destroy(vm);
		return 6;
	}
	fdvm_vm_join(vm, &stop);
	wait_backend();
	/* Lines and doorbells left behind are the VM's to tear down. */
	fdvm_io_unregister(vm, pio_region);
	fdvm_io_unregister(vm, mmio_region);
	fdvm_vm_destroy(vm);
	for (int k = 0; k < MAX_LINES; k++)
		if (lines[k].borrowed_fd >= 0)
			close(lines[k].borrowed_fd);
	close(child_sock);
	waitpid(child_pid, NULL, 0);

	status = fdvm_stop_exit_status(&stop);
	return status;
}
