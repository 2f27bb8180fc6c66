/*
 * How a guest ends: the isa-debug-exit port (status (value << 1) | 1) and
 * the ACPI PM1a control register (SLP_EN with SLP_TYP 0 = power off,
 * status 0), at QEMU's addresses; and the PM1a event block the FADT names
 * beside it (no fixed events: status reads 0, enable is kept).
 */
#include <errno.h>
#include <stdlib.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

struct fdvm_power {
	struct fdvm_vm *vm;
	struct fdvm_io_region *exit_port, *pm1a_cnt, *pm1a_evt;
	_Atomic uint16_t pm1a_cnt_value, pm1a_enable;
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
	atomic_store(&p->pm1a_cnt_value, v | FDVM_ACPI_PM1_SCI_EN);
}

static uint64_t pm1a_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_power *p = opaque;
	(void)size;
	return atomic_load(&p->pm1a_cnt_value) >> (off * 8);
}

/* PM1a_EVT: bytes 0-1 status (write 1 to clear; nothing ever sets a bit),
 * bytes 2-3 enable. */
static void evt_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_power *p = opaque;
	if (off + size > 4)
		return;
	uint32_t all = (uint32_t)atomic_load(&p->pm1a_enable) << 16;
	for (unsigned i = 0; i < size; i++) {
		unsigned b = (unsigned)off + i;
		all = (all & ~(0xffu << (8 * b))) | (uint32_t)((value >> (8 * i)) & 0xff) << (8 * b);
	}
	atomic_store(&p->pm1a_enable, (uint16_t)(all >> 16));
}

static uint64_t evt_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_power *p = opaque;
	(void)size;
	uint32_t all = (uint32_t)atomic_load(&p->pm1a_enable) << 16;
	return off < 4 ? all >> (off * 8) : 0;
}

static const struct fdvm_io_ops exit_ops = { .read = exit_read, .write = exit_write };
static const struct fdvm_io_ops evt_ops = { .read = evt_read, .write = evt_write };
static const struct fdvm_io_ops pm1a_ops = { .read = pm1a_read, .write = pm1a_write };

int fdvm_power_init(struct fdvm_vm *vm, struct fdvm_power **out)
{
	struct fdvm_power *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	p->vm = vm;
	atomic_store(&p->pm1a_cnt_value, FDVM_ACPI_PM1_SCI_EN);
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_DEBUG_EXIT, 4, &exit_ops, p,
			       "debug-exit", &p->exit_port);
	if (ret)
		goto err_free;
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_ACPI_PM1A_CNT, 2, &pm1a_ops,
			       p, "acpi-pm1a-cnt", &p->pm1a_cnt);
	if (ret)
		goto err_exit_port;
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_ACPI_PM1A_EVT, 4, &evt_ops, p,
			       "acpi-pm1a-evt", &p->pm1a_evt);
	if (ret)
		goto err_cnt;
	*out = p;
	return 0;

err_cnt:
	fdvm_io_unregister(vm, p->pm1a_cnt);
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
	fdvm_io_unregister(vm, p->pm1a_evt);
	fdvm_io_unregister(vm, p->pm1a_cnt);
	fdvm_io_unregister(vm, p->exit_port);
	free(p);
}
