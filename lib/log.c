/* The library's one way of saying what went wrong. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "vm_priv.h"

static void default_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "fdvm: %s%s\n", level == FDVM_LOG_WARN ? "warning: " : "", msg);
}

static void vlog_cfg(const struct fdvm_vm_config *cfg, enum fdvm_log_level level,
		     const char *fmt, va_list ap)
{
	char msg[1024];

	if (level > cfg->log_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	(cfg->log ? cfg->log : default_log)(cfg->log_opaque, level, msg);
}

void fdvm_log_cfg(const struct fdvm_vm_config *cfg, enum fdvm_log_level level,
		  const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog_cfg(cfg, level, fmt, ap);
	va_end(ap);
}

void fdvm_vlog(const struct fdvm_vm *vm, enum fdvm_log_level level,
	       const char *fmt, va_list ap)
{
	vlog_cfg(&vm->cfg, level, fmt, ap);
}

void fdvm_log(const struct fdvm_vm *vm, enum fdvm_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fdvm_vlog(vm, level, fmt, ap);
	va_end(ap);
}

int fdvm_log_errno(const struct fdvm_vm *vm, int err, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fdvm_log(vm, FDVM_LOG_ERROR, "%s: %s", what, strerror(err));
	return -err;
}

void fdvm_log_to(fdvm_log_fn fn, void *opaque, enum fdvm_log_level level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(fn ? fn : default_log)(opaque, level, msg);
}

int fdvm_log_to_errno(fdvm_log_fn fn, void *opaque, int err, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fdvm_log_to(fn, opaque, FDVM_LOG_ERROR, "%s: %s", what, strerror(err));
	return -err;
}

/*
 * One lock for every VM's budgets: it is held for a few instructions per
 * message, and a static lock needs no setup in a VM that is calloc'd.
 */
static pthread_mutex_t ratelimit_lock = PTHREAD_MUTEX_INITIALIZER;

#define REFILL_NS 1000000000ull /* one line a second once the burst is spent */

/* Whether a line may go out now; *dropped: how many were held back before it. */
static bool ratelimit_take(struct fdvm_ratelimit *rl, unsigned long *dropped)
{
	struct timespec ts;
	uint64_t now;
	bool ok;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	pthread_mutex_lock(&ratelimit_lock);
	if (!rl->refilled_ns || now < rl->refilled_ns)
		rl->refilled_ns = now;
	uint64_t earned = (now - rl->refilled_ns) / REFILL_NS;
	if (earned) {
		rl->spent = earned >= rl->spent ? 0 : rl->spent - (unsigned)earned;
		rl->refilled_ns += earned * REFILL_NS;
	}
	ok = rl->spent < FDVM_LOG_BURST;
	if (ok) {
		rl->spent++;
		*dropped = rl->suppressed;
		rl->suppressed = 0;
	} else {
		rl->suppressed++;
	}
	pthread_mutex_unlock(&ratelimit_lock);
	return ok;
}

void fdvm_log_limited(struct fdvm_vm *vm, enum fdvm_log_site site, enum fdvm_log_level level,
		      const char *fmt, ...)
{
	unsigned long dropped;
	char msg[1024];
	va_list ap;

	/* A level nobody sees spends nothing. */
	if (level > vm->cfg.log_level || (unsigned)site >= FDVM_LOG_SITES)
		return;
	if (!ratelimit_take(&vm->ratelimit[site], &dropped))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (dropped)
		fdvm_log(vm, level, "%s (%lu similar messages suppressed)", msg, dropped);
	else
		fdvm_log(vm, level, "%s", msg);
}
