/* Port and MMIO ranges claimed by devices, and their dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../vm_priv.h"

int fdvm_iobus_init(struct fdvm_iobus *bus)
{
	memset(bus, 0, sizeof(*bus));
	pthread_mutex_init(&bus->wait_lock, NULL);
	pthread_cond_init(&bus->drained, NULL);
	return -pthread_rwlock_init(&bus->lock, NULL);
}

void fdvm_iobus_exit(struct fdvm_iobus *bus)
{
	for (size_t i = 0; i < bus->n; i++)
		free(bus->regions[i]);
	free(bus->regions);
	pthread_rwlock_destroy(&bus->lock);
	pthread_cond_destroy(&bus->drained);
	pthread_mutex_destroy(&bus->wait_lock);
	memset(bus, 0, sizeof(*bus));
}

/* Index of the first region whose end is above addr. Lock held. */
static size_t lower_bound(const struct fdvm_iobus *bus, uint64_t addr)
{
	size_t lo = 0, hi = bus->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct fdvm_io_region *r = bus->regions[mid];
		if (r->base + (r->len - 1) < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * by_guest: the guest chose base (it moved a BAR), so a conflict is its
 * doing, not a bug in the host's layout: a warning it cannot flood the log
 * with, instead of an error.
 */
static int io_register(struct fdvm_vm *vm, enum fdvm_space space, uint64_t base,
		       uint64_t len, const struct fdvm_io_ops *ops, void *opaque,
		       const char *name, bool by_guest, struct fdvm_io_region **out)
{
	struct fdvm_iobus *bus;
	struct fdvm_io_region *r;
	const char *sp = space == FDVM_SPACE_PIO ? "port" : "mmio";
	size_t i;
	int ret = 0;

	if ((unsigned)space > FDVM_SPACE_MMIO || !len || base + (len - 1) < base ||
	    (space == FDVM_SPACE_PIO && base + (len - 1) > 0xffff) || !ops) {
		if (by_guest)
			fdvm_log_limited(vm, FDVM_LOG_SITE_BAR_OVERLAP, FDVM_LOG_WARN,
					 "%s: %s [0x%llx, +0x%llx): invalid range, not mapped",
					 name, sp, (unsigned long long)base, (unsigned long long)len);
		else
			fdvm_log(vm, FDVM_LOG_ERROR, "%s: %s [0x%llx, +0x%llx): invalid range",
				 name, sp, (unsigned long long)base, (unsigned long long)len);
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	*r = (struct fdvm_io_region){ .space = space, .base = base, .len = len,
				      .ops = ops, .opaque = opaque };
	snprintf(r->name, sizeof(r->name), "%s", name ? name : "?");

	bus = &vm->bus[space];
	pthread_rwlock_wrlock(&bus->lock);
	i = lower_bound(bus, base);
	if (i < bus->n && bus->regions[i]->base <= base + (len - 1)) {
		if (by_guest)
			fdvm_log_limited(vm, FDVM_LOG_SITE_BAR_OVERLAP, FDVM_LOG_WARN,
					 "%s: %s [0x%llx, +0x%llx): overlaps %s at 0x%llx, not mapped",
					 r->name, sp, (unsigned long long)base,
					 (unsigned long long)len, bus->regions[i]->name,
					 (unsigned long long)bus->regions[i]->base);
		else
			fdvm_log(vm, FDVM_LOG_ERROR,
				 "%s: %s [0x%llx, +0x%llx): overlaps %s at 0x%llx", r->name, sp,
				 (unsigned long long)base, (unsigned long long)len,
				 bus->regions[i]->name,
				 (unsigned long long)bus->regions[i]->base);
		ret = -EBUSY;
		goto out_unlock;
	}
	if (bus->n == bus->cap) {
		size_t cap = bus->cap ? bus->cap * 2 : 16;
		void *p = realloc(bus->regions, cap * sizeof(*bus->regions));
		if (!p) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		bus->regions = p;
		bus->cap = cap;
	}
	memmove(&bus->regions[i + 1], &bus->regions[i], (bus->n - i) * sizeof(r));
	bus->regions[i] = r;
	bus->n++;
out_unlock:
	pthread_rwlock_unlock(&bus->lock);
	if (ret) {
		free(r);
		r = NULL;
	}
	if (out)
		*out = r;
	return ret;
}

int fdvm_io_register(struct fdvm_vm *vm, enum fdvm_space space, uint64_t base,
		     uint64_t len, const struct fdvm_io_ops *ops, void *opaque,
		     const char *name, struct fdvm_io_region **out)
{
	return io_register(vm, space, base, len, ops, opaque, name, false, out);
}

int fdvm_io_register_for_guest(struct fdvm_vm *vm, enum fdvm_space space, uint64_t base,
			       uint64_t len, const struct fdvm_io_ops *ops, void *opaque,
			       const char *name, struct fdvm_io_region **out)
{
	return io_register(vm, space, base, len, ops, opaque, name, true, out);
}

void fdvm_io_unregister(struct fdvm_vm *vm, struct fdvm_io_region *r)
{
	struct fdvm_iobus *bus;

	if (!r)
		return;
	bus = &vm->bus[r->space];
	pthread_rwlock_wrlock(&bus->lock);
	for (size_t i = 0; i < bus->n; i++) {
		if (bus->regions[i] == r) {
			memmove(&bus->regions[i], &bus->regions[i + 1],
				(bus->n - i - 1) * sizeof(r));
			bus->n--;
			break;
		}
	}
	pthread_rwlock_unlock(&bus->lock);
	/* No new dispatch finds it now; wait for those already in a handler. */
	pthread_mutex_lock(&bus->wait_lock);
	while (atomic_load(&r->inflight))
		pthread_cond_wait(&bus->drained, &bus->wait_lock);
	pthread_mutex_unlock(&bus->wait_lock);
	free(r);
}

/* The region holding all of [addr, addr + size), or NULL. Lock held. */
static struct fdvm_io_region *find(struct fdvm_iobus *bus, uint64_t addr, unsigned size)
{
	size_t i = lower_bound(bus, addr);
	if (i == bus->n)
		return NULL;
	struct fdvm_io_region *r = bus->regions[i];
	if (addr < r->base || addr - r->base > r->len - size || size > r->len)
		return NULL;
	return r;
}

static struct fdvm_io_region *pin(struct fdvm_iobus *bus, uint64_t addr, unsigned size)
{
	pthread_rwlock_rdlock(&bus->lock);
	struct fdvm_io_region *r = find(bus, addr, size);
	if (r)
		atomic_fetch_add(&r->inflight, 1);
	pthread_rwlock_unlock(&bus->lock);
	return r;
}

/*
 * After the decrement that reaches 0 the region may be freed at once by an
 * unregister that was waiting, so it is not read again: the wake-up goes
 * through the bus, which outlives every region.
 */
static void unpin(struct fdvm_iobus *bus, struct fdvm_io_region *r)
{
	if (atomic_fetch_sub(&r->inflight, 1) == 1) {
		pthread_mutex_lock(&bus->wait_lock);
		pthread_cond_broadcast(&bus->drained);
		pthread_mutex_unlock(&bus->wait_lock);
	}
}

bool fdvm_iobus_read(struct fdvm_iobus *bus, uint64_t addr, unsigned size, uint64_t *value)
{
	struct fdvm_io_region *r = pin(bus, addr, size);
	if (!r)
		return false;
	*value = r->ops->read ? r->ops->read(r->opaque, addr - r->base, size) : ~0ull;
	unpin(bus, r);
	return true;
}

bool fdvm_iobus_write(struct fdvm_iobus *bus, uint64_t addr, unsigned size, uint64_t value)
{
	struct fdvm_io_region *r = pin(bus, addr, size);
	if (!r)
		return false;
	if (r->ops->write)
		r->ops->write(r->opaque, addr - r->base, value, size);
	unpin(bus, r);
	return true;
}

const char *fdvm_iobus_overlap(struct fdvm_iobus *bus, uint64_t base, uint64_t len)
{
	const char *name = NULL;

	pthread_rwlock_rdlock(&bus->lock);
	size_t i = lower_bound(bus, base);
	if (i < bus->n && bus->regions[i]->base <= base + (len - 1))
		name = bus->regions[i]->name;
	pthread_rwlock_unlock(&bus->lock);
	return name;
}
