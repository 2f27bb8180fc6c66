/*
 * Doorbells: KVM_IOEVENTFD registrations and their userspace twin in the
 * exit dispatch. All doorbells of a VM (both kinds) are in vm->doorbells,
 * so overlap checks see every one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fdvm/doorbell.h"
#include "../vm_priv.h"

struct fdvm_doorbell {
	struct fdvm_vm *vm;
	struct fdvm_doorbell *next;	/* vm->doorbells, under vm->doorbell_lock */
	struct fdvm_doorbell_config cfg;
	int fd;				/* owned */
	bool kernel;
	struct kvm_ioeventfd reg;	/* kernel: exactly what was assigned */
};

void fdvm_doorbell_config_init(struct fdvm_doorbell_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->space = FDVM_SPACE_MMIO;
	cfg->len = 4;
	cfg->fd = -1;
}

int fdvm_doorbell_fd(const struct fdvm_doorbell *db) { return db->fd; }
bool fdvm_doorbell_in_kernel(const struct fdvm_doorbell *db) { return db->kernel; }

static const char *space_name(enum fdvm_space s) { return s == FDVM_SPACE_PIO ? "port" : "mmio"; }

/* The bytes a doorbell answers to: len 0 is "writes starting at addr". */
static uint64_t span(const struct fdvm_doorbell_config *c) { return c->len ? c->len : 1; }

static bool conflicts(const struct fdvm_doorbell_config *a, const struct fdvm_doorbell_config *b)
{
	if (a->space != b->space)
		return false;
	if (a->addr + span(a) <= b->addr || b->addr + span(b) <= a->addr)
		return false;
	/* Same address and size, both datamatch, different values: fine. */
	return !(a->addr == b->addr && a->len == b->len && a->datamatch && b->datamatch &&
		 a->data != b->data);
}

static int check_config(struct fdvm_vm *vm, const struct fdvm_doorbell_config *c)
{
	const char *sp = space_name(c->space);
	uint64_t end = c->addr + span(c);

	if ((unsigned)c->space > FDVM_SPACE_MMIO ||
	    (c->len != 0 && c->len != 1 && c->len != 2 && c->len != 4 && c->len != 8) ||
	    (c->datamatch && c->len == 0) ||
	    (c->datamatch && c->len < 8 && c->data >> (c->len * 8)) ||
	    end < c->addr || (c->space == FDVM_SPACE_PIO && end > 0x10000)) {
		fdvm_log(vm, FDVM_LOG_ERROR,
			 "doorbell %s 0x%llx len %u%s: invalid (size 0/1/2/4/8, datamatch needs a size and a value that fits)",
			 sp, (unsigned long long)c->addr, c->len, c->datamatch ? " datamatch" : "");
		return -EINVAL;
	}
	if (c->region) {
		const struct fdvm_io_region *r = c->region;
		if (r->space != c->space || c->addr < r->base || end - r->base > r->len) {
			fdvm_log(vm, FDVM_LOG_ERROR, "doorbell %s 0x%llx: not inside region %s",
				 sp, (unsigned long long)c->addr, r->name);
			return -EINVAL;
		}
	} else {
		const char *name = fdvm_iobus_overlap(&vm->bus[c->space], c->addr, span(c));
		if (name) {
			fdvm_log(vm, FDVM_LOG_ERROR,
				 "doorbell %s 0x%llx len %u: overlaps device region %s", sp,
				 (unsigned long long)c->addr, c->len, name);
			return -EBUSY;
		}
	}
	return 0;
}

static int kernel_assign(struct fdvm_doorbell *db)
{
	const struct fdvm_doorbell_config *c = &db->cfg;

	db->reg = (struct kvm_ioeventfd){
		.datamatch = c->datamatch ? c->data : 0,
		.addr = c->addr,
		.len = c->len,
		.fd = db->fd,
		.flags = (c->space == FDVM_SPACE_PIO ? KVM_IOEVENTFD_FLAG_PIO : 0) |
			 (c->datamatch ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0),
	};
	if (ioctl(db->vm->vm_fd, KVM_IOEVENTFD, &db->reg) < 0)
		return -errno;
	return 0;
}

int fdvm_doorbell_create(struct fdvm_vm *vm, const struct fdvm_doorbell_config *cfg,
			 struct fdvm_doorbell **out)
{
	struct fdvm_doorbell *db;
	const char *sp = space_name(cfg->space);
	int ret;

	*out = NULL;
	ret = check_config(vm, cfg);
	if (ret)
		return ret;
	db = calloc(1, sizeof(*db));
	if (!db)
		return -ENOMEM;
	db->vm = vm;
	db->cfg = *cfg;
	ret = fdvm_eventfd_get(vm, cfg->fd, false, "doorbell", &db->fd);
	if (ret)
		goto err_free;

	/* Checked and added under one lock, so two racing creates cannot both pass. */
	pthread_rwlock_wrlock(&vm->doorbell_lock);
	for (struct fdvm_doorbell *o = vm->doorbells; o; o = o->next) {
		if (conflicts(&o->cfg, cfg)) {
			fdvm_log(vm, FDVM_LOG_ERROR,
				 "doorbell %s 0x%llx len %u: overlaps the doorbell at 0x%llx len %u",
				 sp, (unsigned long long)cfg->addr, cfg->len,
				 (unsigned long long)o->cfg.addr, o->cfg.len);
			ret = -EBUSY;
			goto err_unlock;
		}
	}
	bool can_kernel = vm->caps.ioeventfd && (cfg->len || vm->caps.ioeventfd_any_length);
	if (cfg->mode != FDVM_DOORBELL_USERSPACE && can_kernel) {
		ret = kernel_assign(db);
		db->kernel = ret == 0;
		/* A kernel that refuses (out of io bus slots, say) gets the
		 * userspace path, unless the caller insisted. */
		if (ret && (cfg->mode == FDVM_DOORBELL_KERNEL || ret == -EEXIST)) {
			fdvm_log_errno(vm, -ret, "doorbell %s 0x%llx len %u: KVM_IOEVENTFD", sp,
				       (unsigned long long)cfg->addr, cfg->len);
			goto err_unlock;
		}
		if (ret)
			fdvm_log(vm, FDVM_LOG_DEBUG, "doorbell %s 0x%llx: KVM refused (%s), userspace path",
				 sp, (unsigned long long)cfg->addr, strerror(-ret));
	} else if (cfg->mode == FDVM_DOORBELL_KERNEL) {
		fdvm_log(vm, FDVM_LOG_ERROR, "doorbell %s 0x%llx: KVM lacks %s", sp,
			 (unsigned long long)cfg->addr,
			 vm->caps.ioeventfd ? "any-length ioeventfd" : "ioeventfd");
		ret = -ENOTSUP;
		goto err_unlock;
	}
	db->next = vm->doorbells;
	vm->doorbells = db;
	if (!db->kernel)
		vm->user_doorbells++;
	pthread_rwlock_unlock(&vm->doorbell_lock);
	*out = db;
	return 0;

err_unlock:
	pthread_rwlock_unlock(&vm->doorbell_lock);
	close(db->fd);
err_free:
	free(db);
	return ret;
}

void fdvm_doorbell_destroy(struct fdvm_doorbell *db)
{
	struct fdvm_vm *vm;

	if (!db)
		return;
	vm = db->vm;
	/* The write lock also waits out a dispatch that is signalling it. */
	pthread_rwlock_wrlock(&vm->doorbell_lock);
	for (struct fdvm_doorbell **p = &vm->doorbells; *p; p = &(*p)->next) {
		if (*p == db) {
			*p = db->next;
			break;
		}
	}
	if (!db->kernel)
		vm->user_doorbells--;
	pthread_rwlock_unlock(&vm->doorbell_lock);
	if (db->kernel) {
		struct kvm_ioeventfd d = db->reg;
		d.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
		if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &d) < 0)
			fdvm_log_errno(vm, errno, "doorbell %s 0x%llx: KVM_IOEVENTFD deassign",
				       space_name(db->cfg.space), (unsigned long long)db->cfg.addr);
	}
	close(db->fd);
	free(db);
}

void fdvm_doorbells_exit(struct fdvm_vm *vm)
{
	while (vm->doorbells)
		fdvm_doorbell_destroy(vm->doorbells);
}

bool fdvm_doorbell_dispatch(struct fdvm_vm *vm, enum fdvm_space space, uint64_t addr,
			    unsigned size, uint64_t value)
{
	bool hit = false;

	if (!atomic_load_explicit(&vm->user_doorbells, memory_order_relaxed))
		return false;
	pthread_rwlock_rdlock(&vm->doorbell_lock);
	for (struct fdvm_doorbell *db = vm->doorbells; db && !hit; db = db->next) {
		const struct fdvm_doorbell_config *c = &db->cfg;
		if (db->kernel || c->space != space || c->addr != addr ||
		    (c->len && c->len != size) || (c->datamatch && c->data != value))
			continue;
		fdvm_eventfd_signal(db->fd);
		hit = true;
	}
	pthread_rwlock_unlock(&vm->doorbell_lock);
	return hit;
}
