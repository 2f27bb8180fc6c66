/*
 * The notification API against real KVM, no guest running: the GSI routing
 * manager (include/fdvm/gsi.h), interrupt lines (irq.h), doorbells
 * (doorbell.h) and the default event loop (loop.h).
 *
 * Lines and doorbells are tested on both paths (kernel: KVM_IRQFD and
 * KVM_IOEVENTFD; userspace: the service loop and the exit dispatch). Every
 * VM's log goes to a capture buffer, so that each error can be checked to
 * be reported exactly once, naming the object, and nothing is printed.
 * Every test's VM is destroyed by the fixture, which then checks that the
 * process holds exactly the fds it held before the VM was created.
 *
 * Delivery is observed without running the guest: vCPU 0's local APIC is
 * software-enabled through the raw vCPU fd, and an injected fixed MSI shows
 * up as its vector's bit in the IRR (KVM_GET_LAPIC), where it stays since
 * the vCPU never runs. The tests clear the IRR between steps.
 *
 * KVM failures that cannot be provoked through the API are injected: this
 * program defines ioctl() (libfdvm is linked statically, so its calls come
 * here), which fails one armed request once and passes everything else to
 * the system call.
 *
 * Exits 77 (skip) when /dev/kvm cannot be opened read-write.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kvm.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fdvm/doorbell.h"
#include "fdvm/gsi.h"
#include "fdvm/io.h"
#include "fdvm/irq.h"
#include "fdvm/loop.h"
#include "fdvm/virtio.h"
#include "fdvm/vm.h"
#include "vm_raw.h"

/* ---- helpers --------------------------------------------------------------- */

#define MSI_ADDR 0xfee00000ull
/* MMIO and port ranges no device of a fresh VM claims. */
#define DB_MMIO 0xd8000000ull
#define DB_PIO 0x2000ull
#define REGION_BASE 0xd0000000ull
#define REGION_LEN 0x1000ull

#define assert_contains(hay, needle)                                          \
	do {                                                                  \
		const char *h_ = (hay), *n_ = (needle);                       \
		if (!strstr(h_, n_))                                          \
			fail_msg("\"%s\" does not contain \"%s\"", h_, n_);   \
	} while (0)

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

static int count_threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int n = -1;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

static bool is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	if (fd < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strcmp(target, "anon_inode:[eventfd]");
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* An fd number that is certainly closed. */
static int closed_fd(void)
{
	int fd = eventfd(0, EFD_CLOEXEC);
	assert_true(fd >= 0);
	close(fd);
	assert_false(fd_open(fd));
	return fd;
}

static void efd_write(int fd, uint64_t v)
{
	assert_int_equal(write(fd, &v, sizeof(v)), sizeof(v));
}

/* Nonblocking read of an eventfd's count (0 if none). */
static uint64_t efd_take(int fd)
{
	uint64_t v = 0;
	ssize_t n = read(fd, &v, sizeof(v));
	if (n < 0) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	assert_int_equal(n, sizeof(v));
	return v;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t xrand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static void shuffle(void **a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = xrand() % i;
		void *t = a[i - 1];
		a[i - 1] = a[j];
		a[j] = t;
	}
}

/* ---- fault injection -------------------------------------------------------- */

static atomic_ulong fail_request; /* 0: none armed */
static atomic_int fail_errno;

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	va_start(ap, request);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	unsigned long want = request;
	if (request && atomic_compare_exchange_strong(&fail_request, &want, 0)) {
		errno = atomic_load(&fail_errno);
		return -1;
	}
	return (int)syscall(SYS_ioctl, fd, request, arg);
}

/* The next ioctl(request) fails with err. */
static void fail_next(unsigned long request, int err)
{
	atomic_store(&fail_errno, err);
	atomic_store(&fail_request, request);
}

/* Whether the armed failure happened (and disarms it). */
static bool failed(void)
{
	return atomic_exchange(&fail_request, 0) == 0;
}

/* ---- observing delivery: vCPU 0's local APIC -------------------------------- */

#define APIC_TPR 0x80
#define APIC_SVR 0xf0
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200

static int vcpu_fd(struct fdvm_vm *vm)
{
	void *run;
	int fd = fdvm_vm_vcpu_fd(vm, 0, &run);
	assert_true(fd >= 0);
	return fd;
}

static uint32_t apic_reg(const struct kvm_lapic_state *s, unsigned off)
{
	uint32_t v;
	memcpy(&v, s->regs + off, sizeof(v));
	return v;
}

static void apic_set_reg(struct kvm_lapic_state *s, unsigned off, uint32_t v)
{
	memcpy(s->regs + off, &v, sizeof(v));
}

/* Software-enables the APIC (it starts disabled and drops fixed
 * interrupts) and clears IRR, ISR and TMR. */
static void apic_reset(struct fdvm_vm *vm)
{
	struct kvm_lapic_state s;
	assert_int_equal(ioctl(vcpu_fd(vm), KVM_GET_LAPIC, &s), 0);
	apic_set_reg(&s, APIC_SVR, 0x1ff);
	apic_set_reg(&s, APIC_TPR, 0);
	for (unsigned i = 0; i < 8; i++) {
		apic_set_reg(&s, APIC_IRR + 0x10 * i, 0);
		apic_set_reg(&s, APIC_ISR + 0x10 * i, 0);
		apic_set_reg(&s, APIC_TMR + 0x10 * i, 0);
	}
	assert_int_equal(ioctl(vcpu_fd(vm), KVM_SET_LAPIC, &s), 0);
}

/* The vectors requested now, as a bitmap (vectors 32-255). */
static bool apic_irr(struct fdvm_vm *vm, unsigned vec)
{
	struct kvm_lapic_state s;
	assert_int_equal(ioctl(vcpu_fd(vm), KVM_GET_LAPIC, &s), 0);
	return apic_reg(&s, APIC_IRR + 0x10 * (vec / 32)) >> (vec % 32) & 1;
}

static unsigned apic_irr_count(struct fdvm_vm *vm)
{
	struct kvm_lapic_state s;
	unsigned n = 0;
	assert_int_equal(ioctl(vcpu_fd(vm), KVM_GET_LAPIC, &s), 0);
	for (unsigned i = 1; i < 8; i++)
		n += (unsigned)__builtin_popcount(apic_reg(&s, APIC_IRR + 0x10 * i));
	return n;
}

/* Waits up to 2 s for vec to be requested. */
static bool apic_wait(struct fdvm_vm *vm, unsigned vec)
{
	for (int i = 0; i < 2000; i++) {
		if (apic_irr(vm, vec))
			return true;
		sleep_ms(1);
	}
	return false;
}

/* Nothing is requested, and nothing arrives within 30 ms. */
static void assert_apic_quiet(struct fdvm_vm *vm)
{
	assert_int_equal(apic_irr_count(vm), 0);
	sleep_ms(30);
	assert_int_equal(apic_irr_count(vm), 0);
}

#define assert_delivered(vm, vec)                                              \
	do {                                                                   \
		if (!apic_wait((vm), (vec)))                                   \
			fail_msg("vector 0x%x was not delivered", (vec));      \
		assert_int_equal(apic_irr_count(vm), 1);                       \
	} while (0)

/* ---- the log capture and the VM fixture ------------------------------------ */

struct logcap {
	pthread_mutex_t lock;
	unsigned count; /* messages at or above the VM's log level */
	char last[1024];
};

static void log_capture(void *opaque, enum fdvm_log_level level, const char *msg)
{
	struct logcap *c = opaque;
	(void)level;
	pthread_mutex_lock(&c->lock);
	c->count++;
	snprintf(c->last, sizeof(c->last), "%s", msg ? msg : "");
	pthread_mutex_unlock(&c->lock);
}

struct ctx {
	struct fdvm_vm *vm;
	struct logcap log;
	int fds_before;
	struct fdvm_loop *loop; /* cfg.loop, or NULL */
};

static unsigned log_count(struct ctx *c)
{
	pthread_mutex_lock(&c->log.lock);
	unsigned n = c->log.count;
	pthread_mutex_unlock(&c->log.lock);
	return n;
}

static const char *log_last(struct ctx *c)
{
	static char copy[1024];
	pthread_mutex_lock(&c->log.lock);
	memcpy(copy, c->log.last, sizeof(copy));
	pthread_mutex_unlock(&c->log.lock);
	return copy;
}

/*
 * expr must fail with err, logging exactly one non-empty message that
 * contains needle (the object's name).
 */
#define assert_fails_logged(c, expr, err, needle)                              \
	do {                                                                   \
		unsigned n0_ = log_count(c);                                   \
		int r_ = (expr);                                               \
		assert_int_equal(r_, (err));                                   \
		assert_int_equal(log_count(c), n0_ + 1);                       \
		assert_true(log_last(c)[0] != '\0');                           \
		assert_contains(log_last(c), (needle));                        \
	} while (0)

/* expr must succeed and log nothing. */
#define assert_ok_quiet(c, expr)                                               \
	do {                                                                   \
		unsigned n0_ = log_count(c);                                   \
		int r_ = (expr);                                               \
		if (r_)                                                        \
			fail_msg("%s: %d (%s), log: %s", #expr, r_,           \
				 strerror(-r_), log_last(c));                  \
		assert_int_equal(log_count(c), n0_);                           \
	} while (0)

static int ctx_create_vm(struct ctx *c)
{
	struct fdvm_vm_config cfg;

	fdvm_vm_config_init(&cfg);
	cfg.mem_size = 16 << 20;
	cfg.console_fd = -1;
	cfg.log = log_capture;
	cfg.log_opaque = &c->log;
	cfg.loop = c->loop;
	return fdvm_vm_create(&cfg, &c->vm);
}

static int vm_setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	pthread_mutex_init(&c->log.lock, NULL);
	c->fds_before = count_fds();
	int ret = ctx_create_vm(c);
	if (ret) {
		print_error("fdvm_vm_create: %s (log: %s)\n", strerror(-ret), c->log.last);
		free(c);
		return -1;
	}
	assert_int_equal(c->log.count, 0);
	*state = c;
	return 0;
}

/* Destroys the VM with whatever the test left alive and checks no fd leaked. */
static int vm_teardown(void **state)
{
	struct ctx *c = *state;
	int leaked;

	fdvm_vm_destroy(c->vm);
	leaked = count_fds() - c->fds_before;
	pthread_mutex_destroy(&c->log.lock);
	free(c);
	if (leaked) {
		print_error("%d fd(s) leaked by the VM\n", leaked);
		return -1;
	}
	return 0;
}

static struct fdvm_msi msi(uint32_t data)
{
	return (struct fdvm_msi){ MSI_ADDR, data };
}

/* ---- 1. the GSI manager ---------------------------------------------------- */

static void test_gsi_batch(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	uint32_t gsi[10], extra[3];
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint64_t w;

	assert_true(free0 >= 10 + 3);

	/* Ten allocations in a batch: no write until the end, then one. */
	w = fdvm_gsi_writes(vm);
	fdvm_gsi_begin(vm);
	for (int i = 0; i < 10; i++) {
		struct fdvm_msi m = msi(0x20 + i);
		assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &gsi[i]));
		assert_true(gsi[i] >= FDVM_GSI_IRQCHIP_PINS);
		for (int j = 0; j < i; j++)
			assert_int_not_equal(gsi[i], gsi[j]);
	}
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0 - 10);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);

	/* The same message again writes nothing; a new one writes once. */
	w = fdvm_gsi_writes(vm);
	struct fdvm_msi same = msi(0x23), other = msi(0x99);
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, gsi[3], &same));
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, gsi[3], &other));
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);
	/* The address alone differing is a change too. */
	struct fdvm_msi other_addr = { MSI_ADDR | 0x1000, 0x99 };
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, gsi[3], &other_addr));
	assert_int_equal(fdvm_gsi_writes(vm), w + 2);
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, gsi[3], &other_addr));
	assert_int_equal(fdvm_gsi_writes(vm), w + 2);

	/* Outside a batch, each change is a write of its own. */
	for (int i = 0; i < 3; i++) {
		struct fdvm_msi m = msi(0x40 + i);
		w = fdvm_gsi_writes(vm);
		assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &extra[i]));
		assert_int_equal(fdvm_gsi_writes(vm), w + 1);
		for (int j = 0; j < 10; j++)
			assert_int_not_equal(extra[i], gsi[j]);
	}
	for (int i = 0; i < 3; i++) {
		w = fdvm_gsi_writes(vm);
		assert_ok_quiet(c, fdvm_gsi_free(vm, extra[i]));
		assert_int_equal(fdvm_gsi_writes(vm), w + 1);
	}

	/* Freeing the ten in a batch: one write. */
	w = fdvm_gsi_writes(vm);
	fdvm_gsi_begin(vm);
	for (int i = 0; i < 10; i++)
		assert_ok_quiet(c, fdvm_gsi_free(vm, gsi[i]));
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);

	/* A batch that changes nothing writes nothing. */
	fdvm_gsi_begin(vm);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);
}

static void test_gsi_nested(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_msi m = msi(0x30);
	uint32_t a, b;
	uint64_t w = fdvm_gsi_writes(vm);

	fdvm_gsi_begin(vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &a));
	fdvm_gsi_begin(vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &b));
	assert_int_not_equal(a, b);
	assert_int_equal(fdvm_gsi_end(vm), 0); /* inner: nothing yet */
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, a, &(struct fdvm_msi){ MSI_ADDR, 0x31 }));
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_end(vm), 0); /* outer: one write */
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);

	/* Back outside: a change writes at once again. */
	assert_ok_quiet(c, fdvm_gsi_free(vm, a));
	assert_int_equal(fdvm_gsi_writes(vm), w + 2);
	assert_ok_quiet(c, fdvm_gsi_free(vm, b));
	assert_int_equal(fdvm_gsi_writes(vm), w + 3);
}

static void test_gsi_exhaustion(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint32_t *gsi, n = 0;
	uint64_t w;
	int ret;

	assert_true(free0 > 0);
	gsi = calloc(free0 + 1, sizeof(*gsi));
	assert_non_null(gsi);

	w = fdvm_gsi_writes(vm);
	fdvm_gsi_begin(vm);
	for (;;) {
		struct fdvm_msi m = msi(0x20 + (n & 0xff));
		unsigned n0 = log_count(c);
		uint32_t g = UINT32_MAX;
		ret = fdvm_gsi_alloc_msi(vm, &m, &g);
		if (ret) {
			assert_int_equal(ret, -ENOSPC);
			assert_int_equal(log_count(c), n0 + 1);
			assert_contains(log_last(c), "gsi");
			break;
		}
		assert_int_equal(log_count(c), n0);
		assert_true(n < free0); /* more GSIs than msi_free promised */
		assert_true(g >= FDVM_GSI_IRQCHIP_PINS);
		gsi[n++] = g;
	}
	assert_int_equal(n, free0);
	assert_int_equal(fdvm_gsi_msi_free(vm), 0);
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_end(vm), 0); /* KVM takes the full table */
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);

	/* All distinct. */
	uint32_t max = 0;
	for (uint32_t i = 0; i < n; i++)
		max = gsi[i] > max ? gsi[i] : max;
	uint8_t *seen = calloc(max + 1, 1);
	assert_non_null(seen);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(seen[gsi[i]], 0);
		seen[gsi[i]] = 1;
	}
	free(seen);

	/* Full outside a batch too, and a failed alloc writes nothing. */
	uint32_t g;
	assert_fails_logged(c, fdvm_gsi_alloc_msi(vm, &(struct fdvm_msi){ MSI_ADDR, 1 }, &g),
			    -ENOSPC, "gsi");
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);

	/* Free all in one batch. */
	fdvm_gsi_begin(vm);
	for (uint32_t i = 0; i < n; i++)
		assert_ok_quiet(c, fdvm_gsi_free(vm, gsi[i]));
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_writes(vm), w + 2);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);

	/* And the table is usable again. */
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &(struct fdvm_msi){ MSI_ADDR, 1 }, &g));
	assert_ok_quiet(c, fdvm_gsi_free(vm, g));
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	free(gsi);
}

struct other_thread_alloc {
	struct fdvm_vm *vm;
	uint32_t gsi;
	int ret;
	uint64_t writes_before, writes_after;
};

static void *alloc_on_other_thread(void *arg)
{
	struct other_thread_alloc *a = arg;
	a->writes_before = fdvm_gsi_writes(a->vm);
	a->ret = fdvm_gsi_alloc_msi(a->vm, &(struct fdvm_msi){ MSI_ADDR, 0x60 }, &a->gsi);
	a->writes_after = fdvm_gsi_writes(a->vm);
	return NULL;
}

/* A batch is its thread's: another thread's change is written at once. */
static void test_gsi_batch_thread(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct other_thread_alloc a = { .vm = vm };
	uint32_t mine;
	pthread_t t;

	fdvm_gsi_begin(vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &(struct fdvm_msi){ MSI_ADDR, 0x61 }, &mine));
	uint64_t w = fdvm_gsi_writes(vm);
	assert_int_equal(pthread_create(&t, NULL, alloc_on_other_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(a.ret, 0);
	assert_int_not_equal(a.gsi, mine);
	assert_int_equal(a.writes_after, a.writes_before + 1);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_true(fdvm_gsi_writes(vm) >= w + 1 && fdvm_gsi_writes(vm) <= w + 2);
	assert_ok_quiet(c, fdvm_gsi_free(vm, mine));
	assert_ok_quiet(c, fdvm_gsi_free(vm, a.gsi));
}

/* A batch on one VM does not hold back another VM's changes. */
static void test_gsi_batch_two_vms(void **state)
{
	struct ctx *c = *state;
	struct ctx c2 = { 0 };
	uint32_t g1, g2;

	pthread_mutex_init(&c2.log.lock, NULL);
	assert_int_equal(ctx_create_vm(&c2), 0);
	uint64_t w1 = fdvm_gsi_writes(c->vm), w2 = fdvm_gsi_writes(c2.vm);
	fdvm_gsi_begin(c->vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(c->vm, &(struct fdvm_msi){ MSI_ADDR, 0x62 }, &g1));
	assert_ok_quiet(&c2, fdvm_gsi_alloc_msi(c2.vm, &(struct fdvm_msi){ MSI_ADDR, 0x63 }, &g2));
	assert_int_equal(fdvm_gsi_writes(c2.vm), w2 + 1);
	assert_int_equal(fdvm_gsi_end(c2.vm), 0); /* not c2's batch: nothing */
	assert_int_equal(fdvm_gsi_writes(c->vm), w1);
	assert_int_equal(fdvm_gsi_end(c->vm), 0);
	assert_int_equal(fdvm_gsi_writes(c->vm), w1 + 1);
	assert_int_equal(fdvm_gsi_writes(c2.vm), w2 + 1);
	fdvm_vm_destroy(c2.vm);
	pthread_mutex_destroy(&c2.log.lock);
}

/* A failed KVM_SET_GSI_ROUTING: -errno, logged once, the batch rolled back
 * (allocations, re-routes and frees alike), and the table still usable. */
static void test_gsi_write_failure(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_msi m1 = msi(0x70), m2 = msi(0x71);
	uint32_t keep, gone, a, b;

	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m1, &keep));
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m1, &gone));
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint64_t w = fdvm_gsi_writes(vm);

	fdvm_gsi_begin(vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m1, &a));
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m1, &b));
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, keep, &m2));
	assert_ok_quiet(c, fdvm_gsi_free(vm, gone));
	fail_next(KVM_SET_GSI_ROUTING, ENOMEM);
	assert_fails_logged(c, fdvm_gsi_end(vm), -ENOMEM, "KVM_SET_GSI_ROUTING");
	assert_true(failed());
	assert_contains(log_last(c), strerror(ENOMEM));
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	/* a and b were never made, gone was never freed, keep kept m1. */
	char name[32];
	snprintf(name, sizeof(name), "gsi %u", a);
	assert_fails_logged(c, fdvm_gsi_free(vm, a), -EINVAL, name);
	snprintf(name, sizeof(name), "gsi %u", b);
	assert_fails_logged(c, fdvm_gsi_free(vm, b), -EINVAL, name);
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, keep, &m1));
	assert_int_equal(fdvm_gsi_writes(vm), w); /* already m1: no write */
	assert_ok_quiet(c, fdvm_gsi_free(vm, gone));
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);

	/* Outside a batch: the one change is rolled back. */
	free0 = fdvm_gsi_msi_free(vm);
	fail_next(KVM_SET_GSI_ROUTING, ENOMEM);
	assert_fails_logged(c, fdvm_gsi_alloc_msi(vm, &m1, &a), -ENOMEM, "KVM_SET_GSI_ROUTING");
	assert_true(failed());
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	fail_next(KVM_SET_GSI_ROUTING, ENOMEM);
	assert_fails_logged(c, fdvm_gsi_set_msi(vm, keep, &m2), -ENOMEM, "KVM_SET_GSI_ROUTING");
	assert_true(failed());
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, keep, &m1)); /* still m1 */
	assert_int_equal(fdvm_gsi_writes(vm), w + 1);
	fail_next(KVM_SET_GSI_ROUTING, ENOMEM);
	assert_fails_logged(c, fdvm_gsi_free(vm, keep), -ENOMEM, "KVM_SET_GSI_ROUTING");
	assert_true(failed());
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_ok_quiet(c, fdvm_gsi_free(vm, keep)); /* still allocated */
	assert_int_equal(fdvm_gsi_writes(vm), w + 2);
}

static void test_gsi_invalid(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_msi m = msi(0x50);
	uint32_t g;
	uint32_t free0 = fdvm_gsi_msi_free(vm);

	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &g));
	uint64_t w = fdvm_gsi_writes(vm);
	uint32_t bad[] = { 0, 5, FDVM_GSI_IRQCHIP_PINS - 1, g + 1, g + 100, 1u << 20, UINT32_MAX };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "gsi %u", bad[i]);
		assert_fails_logged(c, fdvm_gsi_set_msi(vm, bad[i], &m), -EINVAL, name);
		assert_fails_logged(c, fdvm_gsi_free(vm, bad[i]), -EINVAL, name);
	}
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0 - 1);

	/* Freed: then it is an unallocated GSI like any other. */
	assert_ok_quiet(c, fdvm_gsi_free(vm, g));
	w = fdvm_gsi_writes(vm);
	char name[32];
	snprintf(name, sizeof(name), "gsi %u", g);
	assert_fails_logged(c, fdvm_gsi_free(vm, g), -EINVAL, name);
	assert_fails_logged(c, fdvm_gsi_set_msi(vm, g, &m), -EINVAL, name);
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);

	/* Inside a batch the same checks hold (against the staged table). */
	fdvm_gsi_begin(vm);
	assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &m, &g));
	assert_ok_quiet(c, fdvm_gsi_set_msi(vm, g, &(struct fdvm_msi){ MSI_ADDR, 0x51 }));
	assert_ok_quiet(c, fdvm_gsi_free(vm, g));
	snprintf(name, sizeof(name), "gsi %u", g);
	assert_fails_logged(c, fdvm_gsi_free(vm, g), -EINVAL, name);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
}

/* ---- 2. interrupt lines ---------------------------------------------------- */

static enum fdvm_irq_mode irq_modes[] = { FDVM_IRQ_KERNEL, FDVM_IRQ_USERSPACE };
#define FOR_EACH_IRQ_MODE(m)                                                   \
	for (size_t mi_ = 0; mi_ < 2 && ((m) = irq_modes[mi_], 1); mi_++)

static const char *irq_mode_name(enum fdvm_irq_mode m)
{
	return m == FDVM_IRQ_KERNEL ? "kernel" : "userspace";
}

static struct fdvm_irq_line_config msi_cfg(enum fdvm_irq_mode mode, uint32_t data)
{
	struct fdvm_irq_line_config cfg;
	fdvm_irq_line_config_init(&cfg);
	cfg.kind = FDVM_IRQ_MSI;
	cfg.mode = mode;
	cfg.msi = msi(data);
	return cfg;
}

static struct fdvm_irq_line_config level_cfg(enum fdvm_irq_mode mode, uint32_t pin)
{
	struct fdvm_irq_line_config cfg;
	fdvm_irq_line_config_init(&cfg);
	cfg.kind = FDVM_IRQ_LEVEL;
	cfg.mode = mode;
	cfg.pin = pin;
	return cfg;
}

static struct fdvm_irq_line *const SENTINEL_LINE = (struct fdvm_irq_line *)&irq_modes;

static void line_config_init_defaults(void **state)
{
	(void)state;
	struct fdvm_irq_line_config cfg;
	memset(&cfg, 0x5a, sizeof(cfg));
	fdvm_irq_line_config_init(&cfg);
	assert_int_equal(cfg.kind, FDVM_IRQ_MSI);
	assert_int_equal(cfg.mode, FDVM_IRQ_AUTO);
	assert_int_equal(cfg.fd, -1);
	assert_false(cfg.masked);
	assert_false(cfg.borrow_fd);
}

static void lines_level_pins(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line_config cfg;
	struct fdvm_irq_line *a, *b = SENTINEL_LINE;
	uint64_t w = fdvm_gsi_writes(vm);
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	int fds0 = count_fds();

	cfg = level_cfg(mode, 24);
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EINVAL, "pin 24");
	assert_null(b);
	cfg = level_cfg(mode, 1000);
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EINVAL, "pin 1000");
	assert_null(b);
	/* Level lines are masked in the IOAPIC, not here. */
	cfg = level_cfg(mode, 20);
	cfg.masked = true;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EINVAL, "pin 20");
	assert_null(b);
	assert_int_equal(count_fds(), fds0);

	cfg = level_cfg(mode, 20);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &a));
	assert_non_null(a);
	assert_true(is_eventfd(fdvm_irq_line_fd(a)));
	assert_true(is_eventfd(fdvm_irq_line_resample_fd(a)));
	assert_int_not_equal(fdvm_irq_line_fd(a), fdvm_irq_line_resample_fd(a));
	assert_int_equal(fdvm_irq_line_in_kernel(a), mode == FDVM_IRQ_KERNEL);
	assert_int_equal(fdvm_irq_line_gsi(a), 20);
	assert_false(fdvm_irq_line_masked(a));

	/* Mask, unmask and re-routing are for MSI lines only. (Unlike other
	 * errors these are not logged, so no message is checked.) */
	assert_int_equal(fdvm_irq_line_mask(a), -EINVAL);
	assert_int_equal(fdvm_irq_line_unmask(a), -EINVAL);
	assert_int_equal(fdvm_irq_line_set_msi(a, &(struct fdvm_msi){ MSI_ADDR, 1 }), -EINVAL);
	assert_false(fdvm_irq_line_masked(a));

	/* The pin is taken, and the failure leaves nothing behind. */
	int fds1 = count_fds();
	b = SENTINEL_LINE;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EBUSY, "pin 20");
	assert_null(b);
	assert_int_equal(count_fds(), fds1);
	/* Another pin is free. */
	cfg = level_cfg(mode, 21);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &b));
	assert_int_equal(fdvm_irq_line_gsi(b), 21);
	/* Pins are a VM's: the other mode sees pin 20 as taken as well. */
	struct fdvm_irq_line *x = SENTINEL_LINE;
	cfg = level_cfg(mode == FDVM_IRQ_KERNEL ? FDVM_IRQ_USERSPACE : FDVM_IRQ_KERNEL, 20);
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &x), -EBUSY, "pin 20");
	assert_null(x);

	fdvm_irq_line_destroy(a);
	cfg = level_cfg(mode, 20);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &a));
	assert_int_equal(fdvm_irq_line_gsi(a), 20);
	fdvm_irq_line_destroy(a);
	fdvm_irq_line_destroy(b);

	/* Level lines use the irqchip routes KVM already has. */
	assert_int_equal(fdvm_gsi_writes(vm), w);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
}

static void test_lines_level_pins(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_level_pins(*state, mode);
	}
}

static void lines_bad_fd(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l = SENTINEL_LINE;
	struct fdvm_irq_line_config cfg;
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint64_t w = fdvm_gsi_writes(vm);
	int p[2];
	char name[64];

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	assert_true(null >= 0);
	int fds0 = count_fds();

	for (int borrow = 0; borrow < 2; borrow++) {
		for (int kind = 0; kind < 2; kind++) {
			cfg = kind ? level_cfg(mode, 7) : msi_cfg(mode, 0x20);
			cfg.borrow_fd = borrow;

			cfg.fd = closed_fd();
			snprintf(name, sizeof(name), "fd %d", cfg.fd);
			l = SENTINEL_LINE;
			assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -EBADF, name);
			assert_contains(log_last(c), "irq line");
			assert_contains(log_last(c), strerror(EBADF));
			assert_null(l);

			cfg.fd = p[0];
			snprintf(name, sizeof(name), "fd %d", cfg.fd);
			assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -EINVAL, name);
			assert_contains(log_last(c), "irq line");
			assert_null(l);

			cfg.fd = null;
			assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -EINVAL, "irq line");
			assert_null(l);
		}
	}
	/* The caller's fds are untouched and nothing was made or kept. */
	assert_true(fd_open(p[0]) && fd_open(p[1]) && fd_open(null));
	assert_int_equal(count_fds(), fds0);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(fdvm_gsi_writes(vm), w);
	/* Pin 7 was released by each failure. */
	cfg = level_cfg(mode, 7);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	fdvm_irq_line_destroy(l);
	close(p[0]);
	close(p[1]);
	close(null);
}

static void test_lines_bad_fd(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_bad_fd(*state, mode);
	}
}

/* Kernel path: an eventfd can be bound to one irqfd only. */
static void test_lines_borrow_busy_kernel(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *a, *b = SENTINEL_LINE, *x;
	struct fdvm_irq_line_config cfg = msi_cfg(FDVM_IRQ_KERNEL, 0x21);
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0);
	cfg.fd = efd;
	cfg.borrow_fd = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &a));
	assert_true(fdvm_irq_line_in_kernel(a));
	assert_int_equal(fdvm_irq_line_fd(a), efd); /* borrowed: used as is */

	uint32_t free0 = fdvm_gsi_msi_free(vm);
	int fds0 = count_fds();
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EBUSY, "irq line");
	assert_contains(log_last(c), strerror(EBUSY));
	assert_null(b);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0); /* the route was rolled back */
	assert_int_equal(count_fds(), fds0);
	assert_true(fd_open(efd)); /* a borrowed fd is not closed on failure */

	/* A dup of the same eventfd is the same eventfd to KVM. */
	cfg.borrow_fd = false;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EBUSY, "irq line");
	assert_null(b);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(count_fds(), fds0);
	cfg.borrow_fd = true;

	/* Masking unbinds the eventfd in KVM, unmasking binds it again. */
	assert_int_equal(fdvm_irq_line_mask(a), 0);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &x));
	assert_fails_logged(c, fdvm_irq_line_unmask(a), -EBUSY, "irq line");
	assert_true(fdvm_irq_line_masked(a));
	fdvm_irq_line_destroy(x);
	assert_ok_quiet(c, fdvm_irq_line_unmask(a));
	assert_false(fdvm_irq_line_masked(a));
	b = SENTINEL_LINE;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &b), -EBUSY, "irq line");
	assert_null(b);

	fdvm_irq_line_destroy(a);
	assert_true(fd_open(efd)); /* destroy does not close a borrowed fd */
	assert_int_equal(fdvm_gsi_msi_free(vm), free0 + 1);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &b));
	assert_int_equal(fdvm_irq_line_fd(b), efd);
	fdvm_irq_line_destroy(b);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0 + 1);

	/* Closing a borrowed fd while registered is allowed: KVM drops the
	 * irqfd itself, and the line's destroy still succeeds quietly. */
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &b));
	close(efd);
	unsigned n0 = log_count(c);
	fdvm_irq_line_destroy(b);
	assert_int_equal(log_count(c), n0);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0 + 1);
}

static void lines_fds(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l;
	struct fdvm_irq_line_config cfg = msi_cfg(mode, 0x22);
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint64_t w = fdvm_gsi_writes(vm);

	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	assert_true(is_eventfd(fdvm_irq_line_fd(l)));
	assert_int_equal(fdvm_irq_line_resample_fd(l), -1);
	assert_int_equal(fdvm_irq_line_in_kernel(l), mode == FDVM_IRQ_KERNEL);
	assert_false(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));
	if (mode == FDVM_IRQ_KERNEL) {
		assert_true(fdvm_irq_line_gsi(l) >= FDVM_GSI_IRQCHIP_PINS);
		assert_int_equal(fdvm_gsi_msi_free(vm), free0 - 1);
		assert_int_equal(fdvm_gsi_writes(vm), w + 1);
		/* Re-routing: same message writes nothing, a new one once. */
		assert_ok_quiet(c, fdvm_irq_line_set_msi(l, &cfg.msi));
		assert_int_equal(fdvm_gsi_writes(vm), w + 1);
		assert_ok_quiet(c, fdvm_irq_line_set_msi(l, &(struct fdvm_msi){ MSI_ADDR, 0x23 }));
		assert_int_equal(fdvm_gsi_writes(vm), w + 2);
	} else {
		/* The userspace path needs no route. */
		assert_int_equal(fdvm_gsi_msi_free(vm), free0);
		assert_int_equal(fdvm_gsi_writes(vm), w);
		assert_ok_quiet(c, fdvm_irq_line_set_msi(l, &(struct fdvm_msi){ MSI_ADDR, 0x23 }));
		assert_int_equal(fdvm_gsi_writes(vm), w);
	}
	fdvm_irq_line_destroy(l);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);

	/* A caller's eventfd (not borrowed) is duplicated: another number, the
	 * same eventfd, and the caller may close its copy. Created masked, so
	 * that a signal stays visible as the pending bit. */
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(efd >= 0);
	cfg.fd = efd;
	cfg.masked = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	assert_true(fdvm_irq_line_masked(l));
	int lfd = fdvm_irq_line_fd(l);
	assert_int_not_equal(lfd, efd);
	assert_true(is_eventfd(lfd));
	assert_false(fdvm_irq_line_pending(l));
	efd_write(efd, 1);
	close(efd);
	assert_true(fd_open(lfd));
	assert_true(fdvm_irq_line_pending(l));
	fdvm_irq_line_destroy(l);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);

	/* Out of GSIs: the kernel path fails with -ENOSPC and leaves nothing;
	 * the userspace path does not need one. */
	uint32_t n = fdvm_gsi_msi_free(vm);
	uint32_t *gsi = calloc(n, sizeof(*gsi));
	assert_non_null(gsi);
	fdvm_gsi_begin(vm);
	for (uint32_t i = 0; i < n; i++)
		assert_ok_quiet(c, fdvm_gsi_alloc_msi(vm, &cfg.msi, &gsi[i]));
	assert_int_equal(fdvm_gsi_end(vm), 0);
	assert_int_equal(fdvm_gsi_msi_free(vm), 0);
	cfg = msi_cfg(mode, 0x24);
	int fds0 = count_fds();
	if (mode == FDVM_IRQ_KERNEL) {
		l = SENTINEL_LINE;
		assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -ENOSPC, "gsi");
		assert_null(l);
		assert_int_equal(count_fds(), fds0);
	} else {
		assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
		fdvm_irq_line_destroy(l);
	}
	fdvm_gsi_begin(vm);
	for (uint32_t i = 0; i < n; i++)
		assert_ok_quiet(c, fdvm_gsi_free(vm, gsi[i]));
	assert_int_equal(fdvm_gsi_end(vm), 0);
	free(gsi);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
}

static void test_lines_fds(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_fds(*state, mode);
	}
}

static void lines_mask(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l;
	struct fdvm_irq_line_config cfg = msi_cfg(mode, 0x25);

	cfg.masked = false;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	int fd = fdvm_irq_line_fd(l);
	assert_false(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));

	/* Masked: a signal becomes the pending bit. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_true(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));
	efd_write(fd, 1);
	assert_true(fdvm_irq_line_pending(l));
	assert_true(fdvm_irq_line_pending(l)); /* reading it does not clear it */
	/* Mask while masked changes nothing. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_true(fdvm_irq_line_pending(l));

	/* Unmask delivers it and clears the bit. */
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_false(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_unmask(l)); /* unmask while unmasked */
	assert_false(fdvm_irq_line_pending(l));

	/* Masked again with no signal since: nothing pending, whatever count
	 * the eventfd was left with by the delivery at unmask. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_true(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));

	/* Signals before the mask are delivered, not pending. */
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	efd_write(fd, 3);
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_false(fdvm_irq_line_pending(l));
	/* Several signals while masked: one pending bit, one delivery. */
	efd_write(fd, 1);
	efd_write(fd, 1);
	assert_true(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_false(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_false(fdvm_irq_line_pending(l));
	fdvm_irq_line_destroy(l);

	/* Created masked: the same, from the start. */
	cfg.masked = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	fd = fdvm_irq_line_fd(l);
	assert_true(fdvm_irq_line_masked(l));
	assert_false(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_false(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_false(fdvm_irq_line_pending(l));
	efd_write(fd, 1);
	assert_true(fdvm_irq_line_pending(l));
	/* Destroyed while masked and pending (teardown handles it). */
	fdvm_irq_line_destroy(l);
}

static void test_lines_mask(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_mask(*state, mode);
	}
}

/*
 * What the guest would see, on both paths: a signal is delivered; none
 * while masked; the pending one exactly at unmask; signals before a mask
 * are delivered by the time mask returns; re-routing takes effect.
 */
static void lines_delivery(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l;
	struct fdvm_irq_line_config cfg = msi_cfg(mode, 0x41);

	apic_reset(vm);
	assert_int_equal(apic_irr_count(vm), 0);
	/* The observation itself works. */
	assert_int_equal(fdvm_vm_signal_msi(vm, &(struct fdvm_msi){ MSI_ADDR, 0x40 }), 0);
	assert_delivered(vm, 0x40);
	apic_reset(vm);

	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	int fd = fdvm_irq_line_fd(l);
	assert_apic_quiet(vm); /* creating injects nothing */
	efd_write(fd, 1);
	assert_delivered(vm, 0x41);
	apic_reset(vm);
	assert_apic_quiet(vm); /* one signal, one delivery */

	/* Masked: nothing is injected, the signal is pending. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	efd_write(fd, 1);
	assert_apic_quiet(vm);
	assert_true(fdvm_irq_line_pending(l));
	assert_apic_quiet(vm); /* reading the pending bit injects nothing */
	/* Unmask delivers it. */
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_delivered(vm, 0x41);
	apic_reset(vm);
	assert_apic_quiet(vm); /* once */
	assert_false(fdvm_irq_line_pending(l));

	/* Mask and unmask with nothing signalled since: nothing delivered,
	 * whatever count the delivery at unmask left in the eventfd. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_false(fdvm_irq_line_pending(l));
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_apic_quiet(vm);

	/* A signal written before mask is delivered by the time it returns. */
	efd_write(fd, 1);
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	assert_true(apic_irr(vm, 0x41));
	assert_false(fdvm_irq_line_pending(l));
	apic_reset(vm);
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_apic_quiet(vm); /* not a second time */

	/* Re-routing: the next signal goes to the new vector only. */
	assert_ok_quiet(c, fdvm_irq_line_set_msi(l, &(struct fdvm_msi){ MSI_ADDR, 0x42 }));
	efd_write(fd, 1);
	assert_delivered(vm, 0x42);
	assert_false(apic_irr(vm, 0x41));
	apic_reset(vm);

	/* Destroyed: its eventfd is gone, and nothing was left to inject. */
	fdvm_irq_line_destroy(l);
	assert_apic_quiet(vm);

	/* A line created masked delivers its pending signal at unmask. */
	cfg = msi_cfg(mode, 0x43);
	cfg.masked = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	efd_write(fdvm_irq_line_fd(l), 1);
	assert_apic_quiet(vm);
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_delivered(vm, 0x43);
	fdvm_irq_line_destroy(l);
}

static void test_lines_delivery(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_delivery(*state, mode);
	}
}

/* Route before assign, also inside a GSI batch: a line made (or unmasked)
 * in a batch delivers before the batch ends. */
static void test_lines_in_batch(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *a, *b;
	struct fdvm_irq_line_config cfg;

	apic_reset(vm);
	fdvm_gsi_begin(vm);
	cfg = msi_cfg(FDVM_IRQ_KERNEL, 0x44);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &a));
	efd_write(fdvm_irq_line_fd(a), 1);
	assert_delivered(vm, 0x44);
	apic_reset(vm);
	cfg = msi_cfg(FDVM_IRQ_KERNEL, 0x45);
	cfg.masked = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &b));
	efd_write(fdvm_irq_line_fd(b), 1);
	assert_ok_quiet(c, fdvm_irq_line_unmask(b));
	assert_delivered(vm, 0x45);
	apic_reset(vm);
	assert_int_equal(fdvm_gsi_end(vm), 0);
	/* After the batch, both still deliver. */
	efd_write(fdvm_irq_line_fd(a), 1);
	assert_delivered(vm, 0x44);
	apic_reset(vm);
	efd_write(fdvm_irq_line_fd(b), 1);
	assert_delivered(vm, 0x45);
	fdvm_irq_line_destroy(a);
	fdvm_irq_line_destroy(b);
}

/* A level line raises its IOAPIC pin (programmed here: vector, unmasked,
 * level-triggered, to APIC 0). */
static void lines_level_delivery(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct kvm_irqchip chip = { .chip_id = KVM_IRQCHIP_IOAPIC };
	struct fdvm_irq_line *l;
	struct fdvm_irq_line_config cfg = level_cfg(mode, 19);
	const unsigned vec = 0x51;

	apic_reset(vm);
	assert_int_equal(ioctl(fdvm_vm_fd(vm), KVM_GET_IRQCHIP, &chip), 0);
	chip.chip.ioapic.redirtbl[19].bits = 0;
	chip.chip.ioapic.redirtbl[19].fields.vector = vec;
	chip.chip.ioapic.redirtbl[19].fields.trig_mode = 1;
	chip.chip.ioapic.redirtbl[19].fields.mask = 0;
	chip.chip.ioapic.redirtbl[19].fields.dest_id = 0;
	assert_int_equal(ioctl(fdvm_vm_fd(vm), KVM_SET_IRQCHIP, &chip), 0);

	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	assert_apic_quiet(vm);
	efd_write(fdvm_irq_line_fd(l), 1);
	assert_delivered(vm, vec);
	fdvm_irq_line_destroy(l);
	apic_reset(vm);

	/* Re-mask the pin for the next mode. */
	assert_int_equal(ioctl(fdvm_vm_fd(vm), KVM_GET_IRQCHIP, &chip), 0);
	chip.chip.ioapic.redirtbl[19].bits = 0;
	chip.chip.ioapic.redirtbl[19].fields.mask = 1;
	assert_int_equal(ioctl(fdvm_vm_fd(vm), KVM_SET_IRQCHIP, &chip), 0);
}

static void test_lines_level_delivery(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_level_delivery(*state, mode);
	}
}

#define MANY_LINES 200

static void lines_many(struct ctx *c, enum fdvm_irq_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l[MANY_LINES];
	struct fdvm_irq_line_config cfg;

	/* First line of the mode once, so that the service loop (userspace
	 * path) exists before fds are counted. */
	cfg = msi_cfg(mode, 0x20);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l[0]));
	fdvm_irq_line_destroy(l[0]);

	uint32_t free0 = fdvm_gsi_msi_free(vm);
	uint64_t w = fdvm_gsi_writes(vm);
	int fds0 = count_fds();

	for (int i = 0; i < MANY_LINES; i++) {
		cfg = msi_cfg(mode, 0x20 + (i & 0x7f));
		cfg.masked = i % 3 == 0; /* some registered, some not */
		assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l[i]));
		if (mode == FDVM_IRQ_KERNEL)
			for (int j = 0; j < i; j++)
				assert_int_not_equal(fdvm_irq_line_gsi(l[i]), fdvm_irq_line_gsi(l[j]));
	}
	assert_int_equal(count_fds(), fds0 + MANY_LINES);
	if (mode == FDVM_IRQ_KERNEL) {
		assert_int_equal(fdvm_gsi_msi_free(vm), free0 - MANY_LINES);
		assert_int_equal(fdvm_gsi_writes(vm), w + MANY_LINES);
	} else {
		assert_int_equal(fdvm_gsi_msi_free(vm), free0);
		assert_int_equal(fdvm_gsi_writes(vm), w);
	}

	shuffle((void **)l, MANY_LINES);
	for (int i = 0; i < MANY_LINES; i++) {
		fdvm_irq_line_destroy(l[i]);
		if (mode == FDVM_IRQ_KERNEL)
			assert_int_equal(fdvm_gsi_msi_free(vm), free0 - MANY_LINES + i + 1);
	}
	assert_int_equal(log_count(c), 0);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(count_fds(), fds0);
	if (mode == FDVM_IRQ_KERNEL)
		assert_int_equal(fdvm_gsi_writes(vm), w + 2 * MANY_LINES);
	else
		assert_int_equal(fdvm_gsi_writes(vm), w);
}

static void test_lines_many(void **state)
{
	enum fdvm_irq_mode mode;
	FOR_EACH_IRQ_MODE(mode) {
		print_message("    mode %s\n", irq_mode_name(mode));
		lines_many(*state, mode);
	}
}

/* KVM failures while creating a kernel line leave nothing behind. */
static void test_lines_kvm_failure(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l = SENTINEL_LINE;
	struct fdvm_irq_line_config cfg = msi_cfg(FDVM_IRQ_KERNEL, 0x46);
	uint32_t free0 = fdvm_gsi_msi_free(vm);
	int fds0 = count_fds();

	/* The route cannot be written. */
	fail_next(KVM_SET_GSI_ROUTING, ENOMEM);
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -ENOMEM, "KVM_SET_GSI_ROUTING");
	assert_true(failed());
	assert_null(l);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(count_fds(), fds0);

	/* The irqfd cannot be assigned: the route is dropped again. */
	fail_next(KVM_IRQFD, ENOMEM);
	l = SENTINEL_LINE;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -ENOMEM, "irq line");
	assert_true(failed());
	assert_contains(log_last(c), "KVM_IRQFD");
	assert_null(l);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(count_fds(), fds0);
	cfg = level_cfg(FDVM_IRQ_KERNEL, 9);
	fail_next(KVM_IRQFD, ENOMEM);
	l = SENTINEL_LINE;
	assert_fails_logged(c, fdvm_irq_line_create(vm, &cfg, &l), -ENOMEM, "KVM_IRQFD");
	assert_true(failed());
	assert_null(l);
	assert_int_equal(count_fds(), fds0);

	/* And all of it works once KVM does. */
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l)); /* pin 9 was released */
	fdvm_irq_line_destroy(l);
	cfg = msi_cfg(FDVM_IRQ_KERNEL, 0x46);
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &cfg, &l));
	/* A failed unmask leaves the line masked, and a later one works. */
	assert_ok_quiet(c, fdvm_irq_line_mask(l));
	fail_next(KVM_IRQFD, ENOMEM);
	assert_fails_logged(c, fdvm_irq_line_unmask(l), -ENOMEM, "KVM_IRQFD");
	assert_true(failed());
	assert_true(fdvm_irq_line_masked(l));
	assert_ok_quiet(c, fdvm_irq_line_unmask(l));
	assert_false(fdvm_irq_line_masked(l));
	fdvm_irq_line_destroy(l);
	assert_int_equal(fdvm_gsi_msi_free(vm), free0);
	assert_int_equal(count_fds(), fds0);
}

/* ---- 3. doorbells ---------------------------------------------------------- */

static enum fdvm_doorbell_mode db_modes[] = { FDVM_DOORBELL_KERNEL, FDVM_DOORBELL_USERSPACE };
#define FOR_EACH_DB_MODE(m)                                                    \
	for (size_t mi_ = 0; mi_ < 2 && ((m) = db_modes[mi_], 1); mi_++)

static const char *db_mode_name(enum fdvm_doorbell_mode m)
{
	return m == FDVM_DOORBELL_KERNEL ? "kernel" : "userspace";
}

static struct fdvm_doorbell *const SENTINEL_DB = (struct fdvm_doorbell *)&db_modes;

static struct fdvm_doorbell_config db_cfg(enum fdvm_doorbell_mode mode, enum fdvm_space space,
					  uint64_t addr, uint32_t len)
{
	struct fdvm_doorbell_config cfg;
	fdvm_doorbell_config_init(&cfg);
	cfg.mode = mode;
	cfg.space = space;
	cfg.addr = addr;
	cfg.len = len;
	return cfg;
}

static struct fdvm_doorbell_config db_match(enum fdvm_doorbell_mode mode, uint64_t addr,
					    uint32_t len, uint64_t data)
{
	struct fdvm_doorbell_config cfg = db_cfg(mode, FDVM_SPACE_MMIO, addr, len);
	cfg.datamatch = true;
	cfg.data = data;
	return cfg;
}

static struct fdvm_doorbell *db_ok(struct ctx *c, const struct fdvm_doorbell_config *cfg)
{
	struct fdvm_doorbell *db = SENTINEL_DB;
	assert_ok_quiet(c, fdvm_doorbell_create(c->vm, cfg, &db));
	assert_non_null(db);
	assert_ptr_not_equal(db, SENTINEL_DB);
	assert_int_equal(fdvm_doorbell_in_kernel(db), cfg->mode == FDVM_DOORBELL_KERNEL);
	assert_true(is_eventfd(fdvm_doorbell_fd(db)));
	return db;
}

static struct fdvm_doorbell *db_ok_any(struct ctx *c, const struct fdvm_doorbell_config *cfg)
{
	struct fdvm_doorbell *db = SENTINEL_DB;
	assert_ok_quiet(c, fdvm_doorbell_create(c->vm, cfg, &db));
	assert_non_null(db);
	assert_ptr_not_equal(db, SENTINEL_DB);
	return db;
}

static void db_fails(struct ctx *c, const struct fdvm_doorbell_config *cfg, int err)
{
	struct fdvm_doorbell *db = SENTINEL_DB;
	int fds0 = count_fds();
	assert_fails_logged(c, fdvm_doorbell_create(c->vm, cfg, &db), err, "doorbell");
	assert_null(db);
	assert_int_equal(count_fds(), fds0);
}

static void db_config_defaults(void **state)
{
	(void)state;
	struct fdvm_doorbell_config cfg;
	memset(&cfg, 0x5a, sizeof(cfg));
	fdvm_doorbell_config_init(&cfg);
	assert_int_equal(cfg.fd, -1);
	assert_false(cfg.datamatch);
	assert_null(cfg.region);
	assert_int_equal(cfg.mode, FDVM_DOORBELL_AUTO);
}

static void doorbells_config(struct ctx *c, enum fdvm_doorbell_mode mode)
{
	struct fdvm_doorbell_config cfg;
	struct fdvm_doorbell *db;

	cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO, 3);
	db_fails(c, &cfg, -EINVAL);
	cfg.len = 16;
	db_fails(c, &cfg, -EINVAL);
	cfg = db_match(mode, DB_MMIO, 0, 0);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_match(mode, DB_MMIO, 1, 0x1ff);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_match(mode, DB_MMIO, 2, 0x10000);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_match(mode, DB_MMIO, 4, 0x100000000ull);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0xffff, 2);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0x10000, 1);
	db_fails(c, &cfg, -EINVAL);
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, UINT64_MAX - 1, 4); /* wraps */
	db_fails(c, &cfg, -EINVAL);

	/* The limits themselves are fine. */
	cfg = db_match(mode, DB_MMIO, 1, 0xff);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	cfg = db_match(mode, DB_MMIO, 4, 0xffffffffull);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	cfg = db_match(mode, DB_MMIO, 8, UINT64_MAX);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0xfffe, 2);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0xffff, 1);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	for (uint32_t len = 1; len <= 8; len *= 2) {
		cfg = db_cfg(mode, FDVM_SPACE_PIO, DB_PIO, len);
		fdvm_doorbell_destroy(db_ok(c, &cfg));
	}
	/* Any length (KVM_CAP_IOEVENTFD_ANY_LENGTH here), in both spaces. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO, 0);
	db = db_ok(c, &cfg);
	cfg = db_cfg(mode, FDVM_SPACE_PIO, DB_PIO, 0);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	fdvm_doorbell_destroy(db);
	/* And again: the any-length registrations were removed exactly. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO, 0);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	cfg = db_cfg(mode, FDVM_SPACE_PIO, DB_PIO, 0);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
	/* A device already claims COM1. */
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0x3f8, 1);
	db_fails(c, &cfg, -EBUSY);
	assert_contains(log_last(c), "uart");
}

static void test_doorbells_config(void **state)
{
	enum fdvm_doorbell_mode mode;
	FOR_EACH_DB_MODE(mode) {
		print_message("    mode %s\n", db_mode_name(mode));
		doorbells_config(*state, mode);
	}
}

/*
 * first is created, second must fail with -EBUSY; then first is destroyed
 * and second must succeed (nothing of the failed attempt stayed registered,
 * in KVM a leftover would make it fail with EEXIST).
 */
static void overlap_case(struct ctx *c, const struct fdvm_doorbell_config *first,
			 const struct fdvm_doorbell_config *second)
{
	struct fdvm_doorbell *a = db_ok(c, first);
	db_fails(c, second, -EBUSY);
	fdvm_doorbell_destroy(a);
	struct fdvm_doorbell *b = db_ok(c, second);
	/* The other way round, too. */
	db_fails(c, first, -EBUSY);
	fdvm_doorbell_destroy(b);
}

static void doorbells_overlap(struct ctx *c, enum fdvm_doorbell_mode mode,
			      enum fdvm_doorbell_mode other)
{
	const uint64_t A = DB_MMIO + 0x100;
	struct fdvm_doorbell_config x, y;

	x = db_cfg(mode, FDVM_SPACE_MMIO, A, 4);
	y = db_cfg(other, FDVM_SPACE_MMIO, A, 4);
	overlap_case(c, &x, &y);			/* same, wildcard */
	y = db_cfg(other, FDVM_SPACE_MMIO, A + 2, 2);
	overlap_case(c, &x, &y);			/* inside */
	y = db_cfg(other, FDVM_SPACE_MMIO, A - 2, 4);
	overlap_case(c, &x, &y);			/* straddling the start */
	y = db_cfg(other, FDVM_SPACE_MMIO, A + 3, 8);
	overlap_case(c, &x, &y);			/* straddling the end */
	y = db_cfg(other, FDVM_SPACE_MMIO, A, 2);
	overlap_case(c, &x, &y);			/* same address, other size */
	y = db_match(other, A, 4, 7);
	overlap_case(c, &x, &y);			/* wildcard vs datamatch */
	y = db_cfg(other, FDVM_SPACE_MMIO, A, 0);
	overlap_case(c, &x, &y);			/* any length at the same address */
	y = db_cfg(other, FDVM_SPACE_MMIO, A + 1, 0);
	overlap_case(c, &x, &y);			/* any length inside */
	x = db_match(mode, A, 4, 1);
	y = db_match(other, A, 4, 1);
	overlap_case(c, &x, &y);			/* same datamatch */
	y = db_match(other, A, 2, 2);
	overlap_case(c, &x, &y);			/* datamatch, other size */
	x = db_cfg(mode, FDVM_SPACE_PIO, DB_PIO, 2);
	y = db_cfg(other, FDVM_SPACE_PIO, DB_PIO + 1, 1);
	overlap_case(c, &x, &y);			/* ports */

	/* Not overlapping: adjacent, other space, different datamatch values. */
	struct fdvm_doorbell *d[8];
	x = db_cfg(mode, FDVM_SPACE_MMIO, A, 4);
	d[0] = db_ok(c, &x);
	y = db_cfg(other, FDVM_SPACE_MMIO, A + 4, 4);
	d[1] = db_ok(c, &y);
	y = db_cfg(other, FDVM_SPACE_MMIO, A - 8, 8);
	d[2] = db_ok(c, &y);
	y = db_cfg(other, FDVM_SPACE_PIO, A & 0xffff, 4);
	d[3] = db_ok(c, &y);
	x = db_match(mode, A + 0x40, 4, 1);
	d[4] = db_ok(c, &x);
	y = db_match(other, A + 0x40, 4, 2);
	d[5] = db_ok(c, &y);
	y = db_match(mode, A + 0x40, 4, 3);
	d[6] = db_ok(c, &y);
	/* ... but a wildcard there collides with all of them. */
	y = db_cfg(other, FDVM_SPACE_MMIO, A + 0x40, 4);
	db_fails(c, &y, -EBUSY);
	/* Destroying one of the datamatch ones leaves the others. */
	fdvm_doorbell_destroy(d[5]);
	y = db_match(other, A + 0x40, 4, 1);
	db_fails(c, &y, -EBUSY);
	y = db_match(other, A + 0x40, 4, 2);
	d[5] = db_ok(c, &y);
	for (int i = 0; i < 7; i++)
		fdvm_doorbell_destroy(d[i]);
}

static void test_doorbells_overlap(void **state)
{
	enum fdvm_doorbell_mode mode;
	FOR_EACH_DB_MODE(mode) {
		print_message("    mode %s\n", db_mode_name(mode));
		doorbells_overlap(*state, mode, mode);
	}
	/* Overlap checks see doorbells of both paths. */
	print_message("    mode kernel vs userspace\n");
	doorbells_overlap(*state, FDVM_DOORBELL_KERNEL, FDVM_DOORBELL_USERSPACE);
	doorbells_overlap(*state, FDVM_DOORBELL_USERSPACE, FDVM_DOORBELL_KERNEL);
}

static uint64_t stub_read(void *opaque, uint64_t offset, unsigned size)
{
	(void)opaque;
	(void)offset;
	(void)size;
	return 0;
}

static void stub_write(void *opaque, uint64_t offset, uint64_t value, unsigned size)
{
	(void)opaque;
	(void)offset;
	(void)value;
	(void)size;
}

static const struct fdvm_io_ops stub_ops = { .read = stub_read, .write = stub_write };

static void doorbells_region(struct ctx *c, enum fdvm_doorbell_mode mode)
{
	struct fdvm_vm *vm = c->vm;
	struct fdvm_io_region *r = NULL, *pr = NULL;
	struct fdvm_doorbell_config cfg;
	struct fdvm_doorbell *d[4];

	assert_ok_quiet(c, fdvm_io_register(vm, FDVM_SPACE_MMIO, REGION_BASE, REGION_LEN,
					    &stub_ops, NULL, "testdev", &r));
	assert_non_null(r);
	assert_ok_quiet(c, fdvm_io_register(vm, FDVM_SPACE_PIO, DB_PIO + 0x100, 0x10,
					    &stub_ops, NULL, "testpio", &pr));

	/* Not the region's: a doorbell must not steal its writes. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, REGION_BASE + 0x10, 4);
	db_fails(c, &cfg, -EBUSY);
	assert_contains(log_last(c), "testdev");
	cfg.addr = REGION_BASE - 2; /* straddles the start */
	db_fails(c, &cfg, -EBUSY);
	cfg.addr = REGION_BASE + REGION_LEN - 2; /* straddles the end */
	db_fails(c, &cfg, -EBUSY);
	cfg.addr = REGION_BASE + REGION_LEN - 1;
	cfg.len = 0; /* any length touches its first byte */
	db_fails(c, &cfg, -EBUSY);
	/* Just outside is fine. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, REGION_BASE - 4, 4);
	d[0] = db_ok(c, &cfg);
	cfg.addr = REGION_BASE + REGION_LEN;
	d[1] = db_ok(c, &cfg);
	fdvm_doorbell_destroy(d[0]);
	fdvm_doorbell_destroy(d[1]);

	/* The region's own doorbells. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, REGION_BASE + 0x10, 4);
	cfg.region = r;
	d[0] = db_ok(c, &cfg);
	cfg.addr = REGION_BASE;
	d[1] = db_ok(c, &cfg);
	cfg.addr = REGION_BASE + REGION_LEN - 4; /* the last four bytes */
	d[2] = db_ok(c, &cfg);

	/* Outside the region it names. */
	cfg.addr = REGION_BASE + REGION_LEN - 2;
	db_fails(c, &cfg, -EINVAL);
	assert_contains(log_last(c), "testdev");
	cfg.addr = REGION_BASE + REGION_LEN;
	db_fails(c, &cfg, -EINVAL);
	cfg.addr = REGION_BASE - 4;
	db_fails(c, &cfg, -EINVAL);
	cfg.addr = 0x10; /* far away */
	db_fails(c, &cfg, -EINVAL);
	/* The region is MMIO; a port doorbell is not in it. */
	cfg = db_cfg(mode, FDVM_SPACE_PIO, 0x10, 1);
	cfg.region = r;
	db_fails(c, &cfg, -EINVAL);
	/* Inside the region, doorbells still may not overlap. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, REGION_BASE + 0x12, 2);
	cfg.region = r;
	db_fails(c, &cfg, -EBUSY);

	/* Port regions too. */
	cfg = db_cfg(mode, FDVM_SPACE_PIO, DB_PIO + 0x104, 2);
	db_fails(c, &cfg, -EBUSY);
	assert_contains(log_last(c), "testpio");
	cfg.region = pr;
	d[3] = db_ok(c, &cfg);
	cfg.addr = DB_PIO + 0x10f;
	db_fails(c, &cfg, -EINVAL);
	/* An MMIO doorbell at the port region's numbers is not in it. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_PIO + 0x108, 2);
	cfg.region = pr;
	db_fails(c, &cfg, -EINVAL);

	for (int i = 0; i < 4; i++)
		fdvm_doorbell_destroy(d[i]);
	fdvm_io_unregister(vm, r);
	fdvm_io_unregister(vm, pr);
	/* Without the region, the address is free. */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, REGION_BASE + 0x10, 4);
	fdvm_doorbell_destroy(db_ok(c, &cfg));
}

static void test_doorbells_region(void **state)
{
	enum fdvm_doorbell_mode mode;
	FOR_EACH_DB_MODE(mode) {
		print_message("    mode %s\n", db_mode_name(mode));
		doorbells_region(*state, mode);
	}
}

static void doorbells_fd(struct ctx *c, enum fdvm_doorbell_mode mode)
{
	struct fdvm_doorbell_config cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO, 4);
	struct fdvm_doorbell *db, *db2;
	char name[32];
	int p[2];

	cfg.fd = closed_fd();
	db_fails(c, &cfg, -EBADF);
	snprintf(name, sizeof(name), "fd %d", cfg.fd);
	assert_contains(log_last(c), name);
	assert_contains(log_last(c), strerror(EBADF));

	assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	cfg.fd = p[1];
	db_fails(c, &cfg, -EINVAL);
	snprintf(name, sizeof(name), "fd %d", cfg.fd);
	assert_contains(log_last(c), name);
	assert_true(fd_open(p[0]) && fd_open(p[1]));
	close(p[0]);
	close(p[1]);

	/* The doorbell makes its own eventfd by default. */
	cfg.fd = -1;
	db = db_ok(c, &cfg);
	assert_true(is_eventfd(fdvm_doorbell_fd(db)));
	fdvm_doorbell_destroy(db);

	/* A caller's eventfd: duplicated, the same eventfd behind it. */
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(efd >= 0);
	cfg.fd = efd;
	int fds0 = count_fds();
	db = db_ok(c, &cfg);
	int dfd = fdvm_doorbell_fd(db);
	assert_int_not_equal(dfd, efd);
	assert_int_equal(count_fds(), fds0 + 1);
	efd_write(efd, 5);
	assert_int_equal(efd_take(dfd), 5);
	/* The caller may close its copy; the doorbell keeps its own. */
	close(efd);
	assert_true(is_eventfd(dfd));
	efd_write(dfd, 1);
	assert_int_equal(efd_take(dfd), 1);

	/* Two doorbells may share one eventfd (a backend watching both). */
	cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO + 0x10, 4);
	cfg.fd = dfd;
	db2 = db_ok(c, &cfg);
	assert_int_not_equal(fdvm_doorbell_fd(db2), dfd);
	fdvm_doorbell_destroy(db);
	assert_true(is_eventfd(fdvm_doorbell_fd(db2)));
	fdvm_doorbell_destroy(db2);
	assert_int_equal(count_fds(), fds0 - 1);
}

static void test_doorbells_fd(void **state)
{
	enum fdvm_doorbell_mode mode;
	FOR_EACH_DB_MODE(mode) {
		print_message("    mode %s\n", db_mode_name(mode));
		doorbells_fd(*state, mode);
	}
}

/* KVM refuses a doorbell: KERNEL fails and leaves nothing; AUTO takes the
 * userspace path. */
static void test_doorbells_kvm_failure(void **state)
{
	struct ctx *c = *state;
	struct fdvm_doorbell_config cfg = db_cfg(FDVM_DOORBELL_KERNEL, FDVM_SPACE_MMIO, DB_MMIO, 4);
	struct fdvm_doorbell *db;

	fail_next(KVM_IOEVENTFD, ENOSPC);
	db_fails(c, &cfg, -ENOSPC);
	assert_true(failed());
	assert_contains(log_last(c), "KVM_IOEVENTFD");
	assert_contains(log_last(c), strerror(ENOSPC));
	db = db_ok(c, &cfg); /* nothing was left behind */
	fdvm_doorbell_destroy(db);

	cfg.mode = FDVM_DOORBELL_AUTO;
	fail_next(KVM_IOEVENTFD, ENOSPC);
	db = SENTINEL_DB;
	assert_ok_quiet(c, fdvm_doorbell_create(c->vm, &cfg, &db));
	assert_true(failed());
	assert_false(fdvm_doorbell_in_kernel(db));
	/* It still counts for overlaps. */
	cfg.mode = FDVM_DOORBELL_KERNEL;
	db_fails(c, &cfg, -EBUSY);
	fdvm_doorbell_destroy(db);
	cfg.mode = FDVM_DOORBELL_AUTO;
	db = db_ok_any(c, &cfg);
	assert_true(fdvm_doorbell_in_kernel(db));
	fdvm_doorbell_destroy(db);
}

#define MANY_DB 500

static void doorbells_many(struct ctx *c, enum fdvm_doorbell_mode mode)
{
	static struct fdvm_doorbell *d[MANY_DB];
	struct fdvm_doorbell_config cfg;
	int fds0 = count_fds();

	/* A mix of sizes, datamatch and any-length, at distinct addresses. */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < MANY_DB; i++) {
			uint32_t len = (uint32_t[]){ 0, 1, 2, 4, 8 }[i % 5];
			cfg = db_cfg(mode, FDVM_SPACE_MMIO, DB_MMIO + 0x10 * (uint64_t)i, len);
			if (len && i % 3 == 0) {
				cfg.datamatch = true;
				cfg.data = i & 0xff;
			}
			d[i] = db_ok(c, &cfg);
		}
		assert_int_equal(count_fds(), fds0 + MANY_DB);
		shuffle((void **)d, MANY_DB);
		for (int i = 0; i < MANY_DB; i++)
			fdvm_doorbell_destroy(d[i]);
		assert_int_equal(count_fds(), fds0);
	}
	/* No deassign failed (it would have been logged). */
	assert_int_equal(log_count(c), 0);
}

static void test_doorbells_many(void **state)
{
	enum fdvm_doorbell_mode mode;
	FOR_EACH_DB_MODE(mode) {
		print_message("    mode %s\n", db_mode_name(mode));
		doorbells_many(*state, mode);
	}
}

/* A VM destroyed with everything still alive: no fd leaks (the fixture)
 * and no memory leaks (ASan). Includes an external service loop. */
static void test_vm_destroy_with_live_objects(void **state)
{
	struct ctx *c = *state;
	struct fdvm_vm *vm = c->vm;
	struct fdvm_irq_line *l;
	struct fdvm_irq_line_config lc;
	struct fdvm_doorbell_config dc;
	struct fdvm_io_region *r;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0);
	for (int m = 0; m < 2; m++) {
		enum fdvm_irq_mode mode = irq_modes[m];
		for (int i = 0; i < 10; i++) {
			lc = msi_cfg(mode, 0x20 + i);
			lc.masked = i & 1;
			assert_ok_quiet(c, fdvm_irq_line_create(vm, &lc, &l));
			if (i == 3)
				efd_write(fdvm_irq_line_fd(l), 1);
		}
		lc = level_cfg(mode, 10 + m);
		assert_ok_quiet(c, fdvm_irq_line_create(vm, &lc, &l));
		efd_write(fdvm_irq_line_fd(l), 1);
	}
	lc = msi_cfg(FDVM_IRQ_KERNEL, 0x40);
	lc.fd = efd;
	lc.borrow_fd = true;
	assert_ok_quiet(c, fdvm_irq_line_create(vm, &lc, &l));

	assert_ok_quiet(c, fdvm_io_register(vm, FDVM_SPACE_MMIO, REGION_BASE, REGION_LEN,
					    &stub_ops, NULL, "testdev", &r));
	for (int m = 0; m < 2; m++) {
		for (int i = 0; i < 10; i++) {
			struct fdvm_doorbell *db;
			dc = db_cfg(db_modes[m], FDVM_SPACE_MMIO,
				    REGION_BASE + 0x100 * m + 8 * i, i % 2 ? 4 : 0);
			dc.region = r;
			assert_ok_quiet(c, fdvm_doorbell_create(vm, &dc, &db));
			dc = db_cfg(db_modes[m], FDVM_SPACE_PIO, DB_PIO + 0x10 * m + i, 1);
			assert_ok_quiet(c, fdvm_doorbell_create(vm, &dc, &db));
		}
	}
	/* Let the userspace path see its signals. */
	sleep_ms(20);
	fdvm_vm_destroy(vm);
	/* The borrowed fd is the caller's: not closed by the VM. */
	assert_true(is_eventfd(efd));
	close(efd);
	assert_int_equal(ctx_create_vm(c), 0); /* for the fixture's teardown */
}

/* ---- 4. the event loop ----------------------------------------------------- */

struct watch_state {
	struct fdvm_loop *loop;
	atomic_int calls;
	atomic_int in_cb, done;
	atomic_int hold;	 /* the callback waits while this is set */
	bool del_self;
	atomic_int del_ret;	 /* from inside the callback */
	atomic_int del_returned;
	bool stop_loop;
	struct fdvm_epoll_loop *ep;
};

static void watch_cb(void *opaque, int fd, uint32_t events)
{
	struct watch_state *s = opaque;
	uint64_t v;

	atomic_store(&s->in_cb, 1);
	if (events & EPOLLIN)
		(void)!read(fd, &v, sizeof(v));
	while (atomic_load(&s->hold))
		sleep_ms(1);
	if (s->del_self) {
		atomic_store(&s->del_ret, fdvm_loop_del(s->loop, fd));
		atomic_store(&s->del_returned, 1);
	}
	if (s->stop_loop)
		fdvm_epoll_loop_stop(s->ep);
	atomic_fetch_add(&s->calls, 1);
	atomic_store(&s->done, 1);
}

static bool wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < 2000; i++) {
		if (atomic_load(v) >= want)
			return true;
		sleep_ms(1);
	}
	return false;
}

static void test_loop_watch(void **state)
{
	(void)state;
	struct fdvm_epoll_loop *ep;
	struct watch_state s = { 0 };
	int threads0 = count_threads(), fds0 = count_fds();
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int other = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0 && other >= 0);
	assert_int_equal(fdvm_epoll_loop_create(&ep), 0);
	s.loop = fdvm_epoll_loop_handle(ep);
	assert_non_null(s.loop);
	assert_int_equal(fdvm_epoll_loop_start(ep, "test-loop"), 0);
	assert_int_equal(count_threads(), threads0 + 1);

	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), -EEXIST);
	assert_int_equal(fdvm_loop_del(s.loop, other), -ENOENT);
	assert_int_equal(fdvm_loop_del(s.loop, -1), -ENOENT);

	/* Nothing written: no call. */
	sleep_ms(20);
	assert_int_equal(atomic_load(&s.calls), 0);

	efd_write(efd, 1);
	assert_true(wait_for(&s.calls, 1));
	sleep_ms(20); /* drained: level-triggered, but no more calls */
	assert_int_equal(atomic_load(&s.calls), 1);
	efd_write(efd, 1);
	assert_true(wait_for(&s.calls, 2));

	/* After del, no callback, whatever is written. */
	assert_int_equal(fdvm_loop_del(s.loop, efd), 0);
	int calls = atomic_load(&s.calls);
	efd_write(efd, 1);
	sleep_ms(50);
	assert_int_equal(atomic_load(&s.calls), calls);
	assert_int_equal(fdvm_loop_del(s.loop, efd), -ENOENT); /* already gone */
	assert_int_equal(efd_take(efd), 1); /* nobody drained it */

	/* The fd can be watched again. */
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	efd_write(efd, 1);
	assert_true(wait_for(&s.calls, calls + 1));
	/* An fd that is not open cannot be watched. */
	assert_true(fdvm_loop_add(s.loop, closed_fd(), EPOLLIN, watch_cb, &s) < 0);

	/* Destroy with a watch still on: drops it, joins the thread. */
	fdvm_epoll_loop_destroy(ep);
	assert_int_equal(count_threads(), threads0);
	close(efd);
	close(other);
	assert_int_equal(count_fds(), fds0);
}

static void *release_later(void *arg)
{
	struct watch_state *s = arg;
	sleep_ms(100);
	atomic_store(&s->hold, 0);
	return NULL;
}

/* del_watch from another thread waits for a callback in flight. */
static void test_loop_del_waits(void **state)
{
	(void)state;
	struct fdvm_epoll_loop *ep;
	struct watch_state s = { 0 };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_t t;

	assert_true(efd >= 0);
	atomic_store(&s.hold, 1);
	assert_int_equal(fdvm_epoll_loop_create(&ep), 0);
	s.loop = fdvm_epoll_loop_handle(ep);
	assert_int_equal(fdvm_epoll_loop_start(ep, "test-loop"), 0);
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	efd_write(efd, 1);
	assert_true(wait_for(&s.in_cb, 1));
	/* The callback is held until 100 ms after this; del must wait. */
	assert_int_equal(pthread_create(&t, NULL, release_later, &s), 0);
	assert_int_equal(fdvm_loop_del(s.loop, efd), 0);
	assert_int_equal(atomic_load(&s.done), 1); /* del waited for it */
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(atomic_load(&s.calls), 1);
	efd_write(efd, 1);
	sleep_ms(50);
	assert_int_equal(atomic_load(&s.calls), 1);
	fdvm_epoll_loop_destroy(ep);
	close(efd);
}

/* del_watch from the watch's own callback: returns at once, no more calls. */
static void test_loop_del_self(void **state)
{
	(void)state;
	struct fdvm_epoll_loop *ep;
	struct watch_state s = { .del_self = true };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0);
	atomic_store(&s.del_ret, 1);
	assert_int_equal(fdvm_epoll_loop_create(&ep), 0);
	s.loop = fdvm_epoll_loop_handle(ep);
	assert_int_equal(fdvm_epoll_loop_start(ep, "test-loop"), 0);
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	efd_write(efd, 1);
	if (!wait_for(&s.del_returned, 1))
		fail_msg("del_watch from its own callback did not return (deadlock)");
	assert_int_equal(atomic_load(&s.del_ret), 0);
	assert_true(wait_for(&s.done, 1));
	assert_int_equal(atomic_load(&s.calls), 1);
	efd_write(efd, 1);
	sleep_ms(50);
	assert_int_equal(atomic_load(&s.calls), 1);
	/* The loop still works for a new watch. */
	s.del_self = false;
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	assert_true(wait_for(&s.calls, 2)); /* the count written above */
	fdvm_epoll_loop_destroy(ep);
	close(efd);
}

/* The loop on the caller's thread, stopped from a callback. */
static void test_loop_run_inline(void **state)
{
	(void)state;
	struct fdvm_epoll_loop *ep;
	struct watch_state s = { .stop_loop = true };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	assert_true(efd >= 0);
	assert_int_equal(fdvm_epoll_loop_create(&ep), 0);
	s.loop = fdvm_epoll_loop_handle(ep);
	s.ep = ep;
	assert_int_equal(fdvm_loop_add(s.loop, efd, EPOLLIN, watch_cb, &s), 0);
	efd_write(efd, 1);
	assert_int_equal(fdvm_epoll_loop_run(ep), 0);
	assert_int_equal(atomic_load(&s.calls), 1);
	/* run again: stop was consumed, it runs until the next stop. */
	s.del_self = true;
	efd_write(efd, 1);
	assert_int_equal(fdvm_epoll_loop_run(ep), 0);
	assert_int_equal(atomic_load(&s.calls), 2);
	assert_int_equal(atomic_load(&s.del_ret), 0); /* del from fn on the run thread */
	fdvm_epoll_loop_destroy(ep);
	close(efd);
}

/* A VM given a loop puts its userspace lines on that loop. */
static void test_loop_external_service(void **state)
{
	(void)state;
	struct fdvm_epoll_loop *ep;
	struct ctx c = { 0 };
	struct fdvm_irq_line *l;
	int threads0 = count_threads();

	pthread_mutex_init(&c.log.lock, NULL);
	assert_int_equal(fdvm_epoll_loop_create(&ep), 0);
	assert_int_equal(fdvm_epoll_loop_start(ep, "test-loop"), 0);
	c.loop = fdvm_epoll_loop_handle(ep);
	int fds0 = count_fds();
	assert_int_equal(ctx_create_vm(&c), 0);
	struct fdvm_irq_line_config cfg = msi_cfg(FDVM_IRQ_USERSPACE, 0x20);
	assert_ok_quiet(&c, fdvm_irq_line_create(c.vm, &cfg, &l));
	/* The line's eventfd is watched there, and no thread of the VM's own. */
	assert_int_equal(fdvm_loop_add(c.loop, fdvm_irq_line_fd(l), EPOLLIN, watch_cb, NULL),
			 -EEXIST);
	assert_int_equal(count_threads(), threads0 + 1);
	/* Masked: the loop's callback turns a signal into the pending bit. */
	assert_ok_quiet(&c, fdvm_irq_line_mask(l));
	efd_write(fdvm_irq_line_fd(l), 1);
	sleep_ms(20);
	assert_true(fdvm_irq_line_pending(l));
	int lfd = fdvm_irq_line_fd(l);
	fdvm_irq_line_destroy(l);
	/* Destroy took the watch off. */
	assert_int_equal(fdvm_loop_del(c.loop, lfd), -ENOENT);
	fdvm_vm_destroy(c.vm);
	assert_int_equal(count_fds(), fds0);
	assert_int_equal(log_count(&c), 0);
	fdvm_epoll_loop_destroy(ep);
	assert_int_equal(count_threads(), threads0);
	pthread_mutex_destroy(&c.log.lock);
}

/* ---- device handles --------------------------------------------------------- */

/* Every device constructor gives a handle that takes the device (and its
 * model, image fd and threads) out before the VM goes; the rest go with
 * the VM (teardown checks no fd is left). */
static void test_device_handles(void **state)
{
	struct ctx *c = *state;
	struct fdvm_virtio_pci *blk, *rng, *con;
	struct fdvm_virtio_blk_config bc;
	char path[] = "/tmp/fdvm-api-disk-XXXXXX";
	int img = mkstemp(path);

	assert_true(img >= 0);
	assert_int_equal(ftruncate(img, 1 << 20), 0);
	close(img);
	int fds0 = count_fds();
	fdvm_virtio_blk_config_init(&bc);
	assert_int_equal(bc.poll_us, FDVM_VIRTIO_POLL_US_DEFAULT);
	assert_int_equal(bc.num_queues, 1);
	bc.path = path;
	for (int round = 0; round < 3; round++) { /* the slot and the fds come back */
		assert_ok_quiet(c, fdvm_virtio_blk_create(c->vm, &bc, &blk));
		assert_non_null(blk);
		assert_true(count_fds() > fds0);
		fdvm_virtio_pci_destroy(blk);
		assert_int_equal(count_fds(), fds0);
	}
	assert_ok_quiet(c, fdvm_virtio_rng_create(c->vm, FDVM_DOORBELL_AUTO, &rng));
	assert_ok_quiet(c, fdvm_virtio_console_create(c->vm, -1, FDVM_DOORBELL_AUTO, &con));
	fdvm_virtio_pci_destroy(rng);
	/* NULL out: the VM alone has it */
	assert_ok_quiet(c, fdvm_virtio_blk_create(c->vm, &bc, NULL));
	unlink(path);
	(void)con; /* left to fdvm_vm_destroy */
}

/* ---- main ------------------------------------------------------------------ */

#define VM_TEST(f) cmocka_unit_test_setup_teardown(f, vm_setup, vm_teardown)

int main(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("SKIP: cannot open /dev/kvm read-write: %s\n", strerror(errno));
		return 77;
	}
	close(fd);

	const struct CMUnitTest tests[] = {
		VM_TEST(test_gsi_batch),
		VM_TEST(test_device_handles),
		VM_TEST(test_gsi_nested),
		VM_TEST(test_gsi_exhaustion),
		VM_TEST(test_gsi_invalid),
		VM_TEST(test_gsi_write_failure),
		VM_TEST(test_gsi_batch_thread),
		VM_TEST(test_gsi_batch_two_vms),
		cmocka_unit_test(line_config_init_defaults),
		VM_TEST(test_lines_level_pins),
		VM_TEST(test_lines_bad_fd),
		VM_TEST(test_lines_borrow_busy_kernel),
		VM_TEST(test_lines_fds),
		VM_TEST(test_lines_mask),
		VM_TEST(test_lines_delivery),
		VM_TEST(test_lines_in_batch),
		VM_TEST(test_lines_level_delivery),
		VM_TEST(test_lines_many),
		VM_TEST(test_lines_kvm_failure),
		cmocka_unit_test(db_config_defaults),
		VM_TEST(test_doorbells_config),
		VM_TEST(test_doorbells_overlap),
		VM_TEST(test_doorbells_region),
		VM_TEST(test_doorbells_fd),
		VM_TEST(test_doorbells_many),
		VM_TEST(test_doorbells_kvm_failure),
		VM_TEST(test_vm_destroy_with_live_objects),
		cmocka_unit_test(test_loop_watch),
		cmocka_unit_test(test_loop_del_waits),
		cmocka_unit_test(test_loop_del_self),
		cmocka_unit_test(test_loop_run_inline),
		cmocka_unit_test(test_loop_external_service),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
