/*
 * The i8042 keyboard controller, as far as a guest needs it to reset the
 * machine (Linux's reboot=k): command 0xfe on port 0x64 pulses the reset
 * line, and fdvm stops with FDVM_STOP_RESET. Nothing else is there: the
 * status register reads 0 (no data, input buffer empty) and the data port
 * 0 ; the FADT says no 8042 is present, so Linux does not probe for a
 * keyboard.
 */
#include <errno.h>
#include <stdlib.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

struct fdvm_i8042 {
	struct fdvm_vm *vm;
	struct fdvm_io_region *data, *cmd;
};

static uint64_t i8042_read(void *opaque, uint64_t off, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)size;
	return 0;
}

static void cmd_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_i8042 *k = opaque;
	(void)size;
	if (off == 0 && (value & 0xff) == 0xfe)
		fdvm_vm_set_stop(k->vm, FDVM_STOP_RESET, 0);
}

static void data_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	(void)opaque;
	(void)off;
	(void)value;
	(void)size;
}

static const struct fdvm_io_ops data_ops = { .read = i8042_read, .write = data_write };
static const struct fdvm_io_ops cmd_ops = { .read = i8042_read, .write = cmd_write };

int fdvm_i8042_init(struct fdvm_vm *vm, struct fdvm_i8042 **out)
{
	struct fdvm_i8042 *k = calloc(1, sizeof(*k));
	int ret;
	if (!k)
		return -ENOMEM;
	k->vm = vm;
	if ((ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_I8042_DATA, 1, &data_ops, k,
				    "i8042-data", &k->data)))
		goto err_free;
	if ((ret = fdvm_io_register(vm, FDVM_SPACE_PIO, FDVM_PORT_I8042_CMD, 1, &cmd_ops, k,
				    "i8042-cmd", &k->cmd)))
		goto err_data;
	*out = k;
	return 0;

err_data:
	fdvm_io_unregister(vm, k->data);
err_free:
	free(k);
	return ret;
}

void fdvm_i8042_exit(struct fdvm_vm *vm, struct fdvm_i8042 *k)
{
	if (!k)
		return;
	fdvm_io_unregister(vm, k->cmd);
	fdvm_io_unregister(vm, k->data);
	free(k);
}
