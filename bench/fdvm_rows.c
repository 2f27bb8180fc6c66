/*
 * The bench guest on fdvm: pci-testdev for the doorbell rows, and the
 * bench device (testabi/bench_abi.h) for the interrupt rows, with a
 * backend thread that holds nothing but eventfds (and, for the polling
 * rows, the guest's shared page); for the blk rows a
 * virtio-blk disk, in-process or through fdvm's vhost-user frontend.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "bench_abi.h"
#include "fdvm/devices.h"
#include "fdvm/doorbell.h"
#include "fdvm/io.h"
#include "fdvm/irq.h"
#include "fdvm/loop.h"
#include "fdvm/sandbox.h"
#include "fdvm/vhost_user.h"
#include "fdvm/virtio.h"
#include "fdvm/vm.h"

struct benchdev {
	struct fdvm_vm *vm;
	struct fdvm_io_region *region;
	struct fdvm_irq_line *line_kernel, *line_user;
	struct fdvm_doorbell *db_kernel, *db_user;
	struct fdvm_epoll_loop *backend;
	struct fdvm_msi msi;
	struct bench_poll poll;
	/* The backend's side of each doorbell: its line, its last request
	 * answered (the backend thread's). */
	struct bench_db {
		struct benchdev *b;
		struct fdvm_irq_line *line;
		uint64_t seen;
	} kernel_db, user_db;
};

static int signal_fd(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

/* One interrupt on a doorbell's line (the backend's answer; a kick's). */
static void answer_db(void *opaque)
{
	struct bench_db *d = opaque;
	signal_fd(fdvm_irq_line_fd(d->line));
}

static uint64_t bd_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)size;
	return off == BENCH_REG_MAGIC ? FDVM_BENCH_MAGIC : 0;
}

static void bd_write(void *opaque, uint64_t off, uint64_t val, unsigned size)
{
	struct benchdev *b = opaque;
	(void)size;
	/* On the vCPU thread, before it re-enters the guest. */
	switch (off) {
	case BENCH_KICK_IRQFD:
		answer_db(&b->kernel_db);
		break;
	case BENCH_KICK_MSI:
		fdvm_vm_signal_msi(b->vm, &b->msi);
		break;
	case BENCH_KICK_USER:
		answer_db(&b->user_db);
		break;
	case BENCH_REG_SHM:
		/* The guest's page; NULL (polling off) if it is not RAM. */
		atomic_store(&b->poll.shm, (struct bench_shm *)fdvm_gpa(b->vm, val, sizeof(struct bench_shm)));
		break;
	case BENCH_REG_POLL:
		atomic_store(&b->poll.mode, val <= BENCH_POLL_SHM ? (unsigned)val : BENCH_POLL_OFF);
		break;
	}
	/* Writes to the doorbells that miss them land here: ignored. */
}

static const struct fdvm_io_ops bd_ops = { .read = bd_read, .write = bd_write };

/* The backend: a doorbell rang, answer (or poll, and answer each request). */
static void on_doorbell(void *opaque, int fd, uint32_t events)
{
	struct bench_db *d = opaque;
	uint64_t n;
	(void)events;
	if (read(fd, &n, sizeof(n)) == sizeof(n) && !bench_poll_serve(&d->b->poll, &d->seen, answer_db, d))
		answer_db(d);
}

static int benchdev_init(struct fdvm_vm *vm, struct benchdev *b, unsigned poll_us)
{
	struct fdvm_irq_line_config lc;
	struct fdvm_doorbell_config dc;
	int ret;

	b->vm = vm;
	b->poll.poll_ns = (uint64_t)poll_us * 1000;
	b->msi = (struct fdvm_msi){ 0xfee00000ull, BENCH_VECTOR };
	if ((ret = fdvm_io_register(vm, FDVM_SPACE_MMIO, FDVM_BENCH_MMIO, 0x1000, &bd_ops, b,
				    "bench", &b->region)))
		return ret;
	fdvm_irq_line_config_init(&lc);
	lc.msi = b->msi;
	lc.mode = FDVM_IRQ_KERNEL;
	if ((ret = fdvm_irq_line_create(vm, &lc, &b->line_kernel)))
		return ret;
	lc.mode = FDVM_IRQ_USERSPACE;
	if ((ret = fdvm_irq_line_create(vm, &lc, &b->line_user)))
		return ret;
	fdvm_doorbell_config_init(&dc);
	dc.space = FDVM_SPACE_MMIO;
	dc.len = 4;
	dc.region = b->region;
	dc.addr = FDVM_BENCH_MMIO + BENCH_DOORBELL_KERNEL;
	dc.mode = FDVM_DOORBELL_KERNEL;
	if ((ret = fdvm_doorbell_create(vm, &dc, &b->db_kernel)))
		return ret;
	dc.addr = FDVM_BENCH_MMIO + BENCH_DOORBELL_USER;
	dc.mode = FDVM_DOORBELL_USERSPACE;
	if ((ret = fdvm_doorbell_create(vm, &dc, &b->db_user)))
		return ret;
	if ((ret = fdvm_epoll_loop_create(&b->backend)))
		return ret;
	struct fdvm_loop *l = fdvm_epoll_loop_handle(b->backend);
	b->kernel_db = (struct bench_db){ b, b->line_kernel, 0 };
	b->user_db = (struct bench_db){ b, b->line_user, 0 };
	if ((ret = fdvm_loop_add(l, fdvm_doorbell_fd(b->db_kernel), EPOLLIN, on_doorbell, &b->kernel_db)) ||
	    (ret = fdvm_loop_add(l, fdvm_doorbell_fd(b->db_user), EPOLLIN, on_doorbell, &b->user_db)))
		return ret;
	return fdvm_epoll_loop_start(b->backend, "bench-backend");
}

/* Everything else (lines, doorbells, the region) is the VM's to tear down. */
static void benchdev_exit(struct benchdev *b)
{
	fdvm_epoll_loop_destroy(b->backend);
}

/* Reads a whole fd from the start. */
static int slurp(int fd, char **out, size_t *len)
{
	off_t size = lseek(fd, 0, SEEK_END);
	if (size < 0 || lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	char *buf = malloc((size_t)size + 1);
	if (!buf)
		return -ENOMEM;
	size_t done = 0;
	while (done < (size_t)size) {
		ssize_t n = read(fd, buf + done, (size_t)size - done);
		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		done += (size_t)n;
	}
	buf[done] = 0;
	*out = buf;
	*len = done;
	return 0;
}

/*
 * Stops the guest if it has not powered off after timeout_s (a backend
 * that stopped answering leaves it polling forever): a stop request (which
 * kicks the vCPU thread out of KVM_RUN), repeated every second until the
 * run returns.
 */
struct watchdog {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done, fired;
	struct fdvm_vm *vm;
	unsigned timeout_s;
};

static void *watchdog_main(void *arg)
{
	struct watchdog *w = arg;
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += w->timeout_s;
	pthread_mutex_lock(&w->lock);
	while (!w->done) {
		if (pthread_cond_timedwait(&w->cond, &w->lock, &dl) != ETIMEDOUT)
			continue;
		w->fired = true;
		fdvm_vm_request_stop(w->vm);
		dl.tv_sec += 1;
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int bench_run_fdvm(const struct bench_opts *o, const char *cmdline, char **out, size_t *len)
{
	struct fdvm_vm_config cfg;
	struct fdvm_vm *vm;
	struct fdvm_pci_testdev *td;
	struct benchdev b = { 0 };
	struct fdvm_stop stop;
	int ret, console = memfd_create("fdvm-bench-console", MFD_CLOEXEC);

	if (console < 0)
		return -errno;
	fdvm_vm_config_init(&cfg);
	cfg.console_fd = console;
	cfg.counters = !o->no_counters;
	cfg.cpus = o->cpus ? o->cpus : 1;
	if ((ret = fdvm_vm_create(&cfg, &vm)))
		goto out_close;
	struct fdvm_virtio_blk_config bc = { .path = o->blk_image, .poll_us = o->blk_poll_us,
					     .cache = o->blk_direct ? FDVM_BLK_CACHE_NONE
								    : FDVM_BLK_CACHE_WRITEBACK };
	struct fdvm_vu_frontend_config vc = { .socket = o->vhost_user_sock, .device_id = 2 };
	if ((ret = fdvm_pci_testdev_create(vm, FDVM_DOORBELL_AUTO, &td)) ||
	    (ret = benchdev_init(vm, &b, o->poll_us)) ||
	    (o->vhost_user_sock && (ret = fdvm_vhost_user_create(vm, &vc, NULL))) ||
	    (o->blk_image && !o->vhost_user_sock && (ret = fdvm_virtio_blk_create(vm, &bc, NULL))) ||
	    (ret = fdvm_vm_load_pvh(vm, o->guest, cmdline)))
		goto out_vm;

	/* The vCPU on a thread of the vCPU role, as fdvm run has it. */
	if ((ret = fdvm_vm_start(vm, "bench-vcpu")))
		goto out_vm;
	struct watchdog w = { .vm = vm, .timeout_s = o->timeout_s };
	pthread_t wt;
	bool watched = false;
	if (o->timeout_s && cfg.kick_signal) {
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&w.cond, &ca);
		pthread_condattr_destroy(&ca);
		pthread_mutex_init(&w.lock, NULL);
		if ((ret = -pthread_create(&wt, NULL, watchdog_main, &w))) {
			pthread_cond_destroy(&w.cond);
			pthread_mutex_destroy(&w.lock);
			goto out_vm; /* destroy stops and joins the vCPU */
		}
		watched = true;
	}
	fdvm_vm_join(vm, &stop);
	if (watched) {
		pthread_mutex_lock(&w.lock);
		w.done = true;
		pthread_cond_signal(&w.cond);
		pthread_mutex_unlock(&w.lock);
		pthread_join(wt, NULL);
		pthread_cond_destroy(&w.cond);
		pthread_mutex_destroy(&w.lock);
	}
	if (w.fired && stop.reason == FDVM_STOP_REQUESTED) {
		fprintf(stderr, "fdvm bench: the bench guest stopped after %u s (it hung)\n",
			o->timeout_s);
		ret = -ETIMEDOUT;
	} else if (stop.reason != FDVM_STOP_POWEROFF) {
		fprintf(stderr, "fdvm bench: the bench guest stopped: %s (status %d)\n",
			fdvm_stop_reason_name(stop.reason), stop.status);
		ret = -EIO;
	}
out_vm:
	benchdev_exit(&b);
	fdvm_vm_destroy(vm);
	if (!ret)
		ret = slurp(console, out, len);
out_close:
	close(console);
	return ret;
}
