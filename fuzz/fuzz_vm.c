/* The fuzz targets' shared VM (fuzz_vm.h). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_vm.h"
#include "../lib/pci/pci_priv.h"

static struct fdvm_vm *vm;
static uint8_t bridge_cfg[PCI_CFG_SIZE];
static uint64_t mmio_next, io_next;

/* The warnings are what the fuzzer provokes on purpose: drop them, unless
 * FUZZ_VERBOSE is set. */
static void quiet(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

struct fdvm_vm *fuzz_vm(void)
{
	if (vm)
		return vm;
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		perror("fuzz: /dev/kvm (skipped)");
		exit(77);
	}
	close(fd);
	struct fdvm_vm_config cfg;
	fdvm_vm_config_init(&cfg);
	cfg.mem_size = FUZZ_VM_MEM;
	cfg.console_fd = -1;
	cfg.unhandled_pio = cfg.unhandled_mmio = FDVM_UNHANDLED_IGNORE;
	bool verbose = getenv("FUZZ_VERBOSE") != NULL;
	cfg.log = verbose ? NULL : quiet;
	cfg.log_level = verbose ? FDVM_LOG_DEBUG : FDVM_LOG_ERROR;
	int ret = fdvm_vm_create(&cfg, &vm);
	if (ret) {
		fprintf(stderr, "fuzz: cannot create a VM (%d)\n", ret);
		exit(1);
	}
	memcpy(bridge_cfg, vm->pci->host_bridge->cfg, sizeof(bridge_cfg));
	mmio_next = vm->pci->mmio_next;
	io_next = vm->pci->io_next;
	return vm;
}

void fuzz_vm_reset_pci(void)
{
	struct fdvm_pci *pci = vm->pci;
	pthread_mutex_lock(&pci->lock);
	pci->mmio_next = mmio_next;
	pci->io_next = io_next;
	pci->cf8 = 0;
	pthread_mutex_unlock(&pci->lock);
	pthread_mutex_lock(&pci->host_bridge->lock);
	memcpy(pci->host_bridge->cfg, bridge_cfg, sizeof(bridge_cfg));
	pthread_mutex_unlock(&pci->host_bridge->lock);
}

uint64_t fuzz_vm_read(enum fdvm_space space, uint64_t addr, unsigned size)
{
	uint64_t v = ~0ull;
	if (!fdvm_iobus_read(&vm->bus[space], addr, size, &v))
		v = ~0ull;
	return v;
}

void fuzz_vm_write(enum fdvm_space space, uint64_t addr, unsigned size, uint64_t val)
{
	if (size < 8)
		val &= (1ull << (8 * size)) - 1;
	if (!fdvm_doorbell_dispatch(vm, space, addr, size, val))
		fdvm_iobus_write(&vm->bus[space], addr, size, val);
}
