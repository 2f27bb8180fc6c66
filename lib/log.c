/* The library's one way of saying what went wrong. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

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
