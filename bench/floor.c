/*
 * The floor: the bench guest on a bare KVM_RUN loop that answers MMIO and
 * port exits without looking them up (no device model, no dispatch), with
 * one wildcard ioeventfd per address space. What fdvm adds on top of KVM
 * is the distance from this. The VM itself (memory, irqchip, the loaded
 * guest) is made by libfdvm; only the run loop is bare.
 *
 * The bench device's registers are answered here too, each interrupt row
 * by the bare shape of fdvm's path: a kick writes an irqfd, or calls
 * KVM_SIGNAL_MSI, or writes an eventfd that a thread reads to call
 * KVM_SIGNAL_MSI (the userspace line); a doorbell wakes a thread blocked
 * in read(2) that answers the same way (the kernel doorbell is an
 * ioeventfd; the userspace one an exit whose handler writes an eventfd).
 * The irqfd is libfdvm's kernel line: past its set-up it is KVM's alone.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bench.h"
#include "fdvm/abi.h"
#include "fdvm/irq.h"
#include "bench_abi.h"
#include "vm_raw.h"
#include "fdvm/vm.h"

static int add_ioeventfd(int vmfd, int efd, uint64_t addr, unsigned len, bool pio)
{
	struct kvm_ioeventfd io = { .addr = addr, .len = len, .fd = efd,
				    .flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0 };
	return ioctl(vmfd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

static void kick(int fd)
{
	uint64_t one = 1;
	if (write(fd, &one, sizeof(one)) != sizeof(one))
		fprintf(stderr, "fdvm bench: floor: eventfd write: %s\n", strerror(errno));
}

/* The floor's threads and what they share. */
struct floor {
	int vmfd;
	int irqfd;		/* the kernel line's eventfd */
	int user_line;		/* eventfd read by the line thread */
	int db_kernel, db_user;	/* the doorbells' eventfds */
	struct kvm_msi msi;
	struct bench_poll poll;
	atomic_bool stop;
	pthread_t line_thread, backend_thread[2];
	struct backend {
		struct floor *f;
		int fd;
		void (*answer)(void *);
		uint64_t seen;
	} backend[2];
	unsigned threads;
};

static void signal_msi(struct floor *f)
{
	if (ioctl(f->vmfd, KVM_SIGNAL_MSI, &f->msi) < 0)
		fprintf(stderr, "fdvm bench: floor: KVM_SIGNAL_MSI: %s\n", strerror(errno));
}

/* Blocks in read(2) until fd is signalled (false: stop). */
static bool wait_fd(struct floor *f, int fd)
{
	uint64_t n;
	while (read(fd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	return !atomic_load(&f->stop);
}

/* The userspace line: a signal on its eventfd becomes KVM_SIGNAL_MSI. */
static void *line_main(void *arg)
{
	struct floor *f = arg;
	while (wait_fd(f, f->user_line))
		signal_msi(f);
	return NULL;
}

static void answer_kernel(void *opaque)
{
	kick(((struct floor *)opaque)->irqfd);
}

static void answer_user(void *opaque)
{
	kick(((struct floor *)opaque)->user_line);
}

/* A doorbell's backend: answer, or poll the page and answer each request. */
static void *backend_main(void *arg)
{
	struct backend *b = arg;
	while (wait_fd(b->f, b->fd))
		if (!bench_poll_serve(&b->f->poll, &b->seen, b->answer, b->f))
			b->answer(b->f);
	return NULL;
}

static void floor_stop(struct floor *f)
{
	atomic_store(&f->stop, true);
	atomic_store(&f->poll.mode, BENCH_POLL_OFF);
	kick(f->user_line);
	kick(f->db_kernel);
	kick(f->db_user);
	if (f->threads > 0)
		pthread_join(f->line_thread, NULL);
	for (unsigned i = 1; i < f->threads; i++)
		pthread_join(f->backend_thread[i - 1], NULL);
	f->threads = 0;
}

static int floor_start(struct floor *f, struct fdvm_vm *vm, unsigned poll_us)
{
	struct fdvm_irq_line_config lc;
	struct fdvm_irq_line *line;
	int ret;

	f->vmfd = fdvm_vm_fd(vm);
	f->msi = (struct kvm_msi){ .address_lo = 0xfee00000u, .data = BENCH_VECTOR };
	f->poll.poll_ns = (uint64_t)poll_us * 1000;
	fdvm_irq_line_config_init(&lc);
	lc.msi = (struct fdvm_msi){ 0xfee00000ull, BENCH_VECTOR };
	lc.mode = FDVM_IRQ_KERNEL;
	if ((ret = fdvm_irq_line_create(vm, &lc, &line))) /* the VM's, destroyed with it */
		return ret;
	f->irqfd = fdvm_irq_line_fd(line);
	if ((ret = add_ioeventfd(f->vmfd, f->db_kernel, FDVM_BENCH_MMIO + BENCH_DOORBELL_KERNEL, 4,
				 false)))
		return ret;
	if ((ret = -pthread_create(&f->line_thread, NULL, line_main, f)))
		return ret;
	f->threads = 1;
	int fds[2] = { f->db_kernel, f->db_user };
	void (*answers[2])(void *) = { answer_kernel, answer_user };
	for (unsigned i = 0; i < 2; i++) {
		f->backend[i] = (struct backend){ .f = f, .fd = fds[i], .answer = answers[i] };
		if ((ret = -pthread_create(&f->backend_thread[i], NULL, backend_main, &f->backend[i])))
			return ret;
		f->threads++;
	}
	return 0;
}

/* The bench device's registers, answered on the vCPU thread. */
static void bench_mmio(struct floor *f, struct fdvm_vm *vm, struct kvm_run *run)
{
	uint64_t off = run->mmio.phys_addr - FDVM_BENCH_MMIO, val = 0;
	if (!run->mmio.is_write) {
		uint32_t magic = off == BENCH_REG_MAGIC ? FDVM_BENCH_MAGIC : 0;
		memset(run->mmio.data, 0, sizeof(run->mmio.data));
		memcpy(run->mmio.data, &magic, run->mmio.len < 4 ? run->mmio.len : 4);
		return;
	}
	memcpy(&val, run->mmio.data, run->mmio.len <= 8 ? run->mmio.len : 8);
	switch (off) {
	case BENCH_KICK_IRQFD:
		kick(f->irqfd);
		break;
	case BENCH_KICK_MSI:
		signal_msi(f);
		break;
	case BENCH_KICK_USER:
		kick(f->user_line);
		break;
	case BENCH_DOORBELL_USER:
		kick(f->db_user);
		break;
	case BENCH_REG_SHM:
		atomic_store(&f->poll.shm, (struct bench_shm *)fdvm_gpa(vm, val, sizeof(struct bench_shm)));
		break;
	case BENCH_REG_POLL:
		atomic_store(&f->poll.mode, val <= BENCH_POLL_SHM ? (unsigned)val : BENCH_POLL_OFF);
		break;
	}
}

int bench_run_floor(const struct bench_opts *o, const char *cmdline, char **out, size_t *len)
{
	struct fdvm_vm_config cfg;
	struct fdvm_vm *vm;
	struct kvm_run *run;
	struct floor f = { .user_line = -1, .db_kernel = -1, .db_user = -1 };
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	int ret, efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	f.user_line = eventfd(0, EFD_CLOEXEC);
	f.db_kernel = eventfd(0, EFD_CLOEXEC);
	f.db_user = eventfd(0, EFD_CLOEXEC);
	if (!buf || efd < 0 || f.user_line < 0 || f.db_kernel < 0 || f.db_user < 0) {
		ret = buf ? -errno : -ENOMEM;
		goto out;
	}
	fdvm_vm_config_init(&cfg);
	if ((ret = fdvm_vm_create(&cfg, &vm)))
		goto out;
	if ((ret = fdvm_vm_load_pvh(vm, o->guest, cmdline)))
		goto out_vm;
	int vmfd = fdvm_vm_fd(vm), cpufd = fdvm_vm_vcpu_fd(vm, 0, (void **)&run);
	if ((ret = add_ioeventfd(vmfd, efd, FDVM_FLOOR_MMIO + 8, 1, false)) ||
	    (ret = add_ioeventfd(vmfd, efd, FDVM_FLOOR_PIO + 8, 1, true)) ||
	    (ret = floor_start(&f, vm, o->poll_us)))
		goto out_vm;

	for (bool done = false; !done;) {
		if (ioctl(cpufd, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (run->exit_reason == KVM_EXIT_MMIO) {
			if (run->mmio.phys_addr - FDVM_BENCH_MMIO < 0x1000)
				bench_mmio(&f, vm, run);
			continue;
		}
		if (run->exit_reason != KVM_EXIT_IO) {
			fprintf(stderr, "fdvm bench: floor: unexpected exit %u\n", run->exit_reason);
			ret = -EIO;
			break;
		}
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		uint16_t port = run->io.port;
		if (port == FDVM_PORT_COM1 && run->io.direction == KVM_EXIT_IO_OUT) {
			for (uint32_t i = 0; i < run->io.count; i++) {
				if (n + 1 >= cap) {
					char *nb = realloc(buf, cap *= 2);
					if (!nb) {
						ret = -ENOMEM;
						goto out_vm;
					}
					buf = nb;
				}
				if (data[i] != '\r')
					buf[n++] = (char)data[i];
			}
		} else if (port == FDVM_PORT_COM1 + 5 && run->io.direction == KVM_EXIT_IO_IN) {
			*data = 0x60; /* transmitter empty */
		} else if (port == FDVM_PORT_DEBUG_EXIT || port == FDVM_PORT_ACPI_PM1A_CNT) {
			done = true;
		}
	}
out_vm:
	floor_stop(&f); /* before the VM: a thread may be in KVM_SIGNAL_MSI */
	fdvm_vm_destroy(vm);
out:
	if (efd >= 0)
		close(efd);
	if (f.user_line >= 0)
		close(f.user_line);
	if (f.db_kernel >= 0)
		close(f.db_kernel);
	if (f.db_user >= 0)
		close(f.db_user);
	if (ret) {
		free(buf);
		return ret;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}
