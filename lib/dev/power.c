/*
 * How a guest ends: the isa-debug-exit port (status (value << 1) | 1) and
 * the ACPI PM1a control register (SLP_EN with SLP_TYP 0 = power off,
 * status 0), at QEMU's addresses.
 */
#include <errno.h>
#include <stdlib.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

struct fdvm_power {
	struct fdvm_vm *vm;
	struct fdvm_io_region *exit_port, *pm1a_cnt;
	_Atomic uint16_t pm1a_cnt_value;
};

static void exit_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_power *p = opaque;

	(void)off;
	(void)size;
	/* QEMU's status arithmetic; the process status keeps the low 8 bits. */
	fdvm_vm_set_stop(p->vm, FDVM_STOP_EXIT_PORT, (int)((((uint32_t)value << 1) | 1) & 0xff));
}

static uint64_t exit_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)size;
	return ~0ull;
}

static void pm1a_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_power *p = opaque;
	uint16_t v = (uint16_t)(value << (off * 8));

	if (off + size > 2)
		return;
	if (v & FDVM_ACPI_PM1_SLP_EN) {
		if (((v >> 10) & 7) == 0)
			fdvm_vm_set_stop(p->vm, FDVM_STOP_POWEROFF, 0);
		return; /* other sleep types: not supported, ignored */
	}
	atomic_store(&p->pm1a_cnt_value, v);
}

static uint64_t pm1a_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_power *p = opaque;
	(void)size;
	return atomic_load(&p->pm1a_cnt_value) >> (off * 8);
}

static const struct fdvm_io_ops exit_ops = { .read = exit_read, .write = exit_write };
static const struct fdvm_io_ops pm1a_ops = { .read = pm1a_read, .write = pm1a_write };

int fdvm_power_init(struct fdvm_vm *vm, struct fdvm_power **out)
{
	struct fdvm_power *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	p->vm = vm;
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_DEBUG_EXIT, 4, &exit_ops, p,
			       "debug-exit", &p->exit_port);
	if (ret)
		goto err_free;
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_ACPI_PM1A_CNT, 2, &pm1a_ops,
			       p, "acpi-pm1a-cnt", &p->pm1a_cnt);
	if (ret)
		goto err_exit_port;
	*out = p;
	return 0;

err_exit_port:
	fdvm_io_unregister(vm, p->exit_port);
err_free:
	free(p);
	return ret;
}

void fdvm_power_exit(struct fdvm_vm *vm, struct fdvm_power *p)
{
	if (!p)
		return;
	fdvm_io_unregister(vm, p->pm1a_cnt);
	fdvm_io_unregister(vm, p->exit_port);
	free(p);
}
