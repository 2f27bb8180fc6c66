/*
 * The I/O bus: port I/O and MMIO ranges that devices claim, dispatched from
 * vCPU exits.
 */
#ifndef FDVM_IO_H
#define FDVM_IO_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_io_region;

enum fdvm_space { FDVM_SPACE_PIO, FDVM_SPACE_MMIO };

/*
 * A device's handlers. offset is relative to the region's base; size is 1,
 * 2, 4 or 8. Handlers run on a vCPU thread; they may register and
 * unregister regions, but not their own.
 */
struct fdvm_io_ops {
	uint64_t (*read)(void *opaque, uint64_t offset, unsigned size);
	void (*write)(void *opaque, uint64_t offset, uint64_t value, unsigned size);
};

/*
 * Claims [base, base + len) in space. -EINVAL for len 0 or a range that
 * wraps, -EBUSY if it overlaps a region already claimed. The region is
 * owned by the VM; *out (may be NULL) is a handle for fdvm_io_unregister.
 */
int fdvm_io_register(struct fdvm_vm *vm, enum fdvm_space space, uint64_t base,
		     uint64_t len, const struct fdvm_io_ops *ops, void *opaque,
		     const char *name, struct fdvm_io_region **out);

/*
 * Releases a region. When it returns, no handler of the region runs or will
 * run. Must not be called from one of the region's own handlers.
 */
void fdvm_io_unregister(struct fdvm_vm *vm, struct fdvm_io_region *region);

#ifdef __cplusplus
}
#endif

#endif
