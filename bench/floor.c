/*
 * The floor: the bench guest on a bare KVM_RUN loop that answers MMIO and
 * port exits without looking them up (no device model, no dispatch), with
 * one wildcard ioeventfd per address space. What fdvm adds on top of KVM
 * is the distance from this. The VM itself (memory, irqchip, the loaded
 * guest) is made by libfdvm; only the run loop is bare.
 */
#include <errno.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bench.h"
#include "fdvm/abi.h"
#include "bench_abi.h"
#include "vm_raw.h"
#include "fdvm/vm.h"

static int add_ioeventfd(int vmfd, int efd, uint64_t addr, bool pio)
{
	struct kvm_ioeventfd io = { .addr = addr, .len = 1, .fd = efd,
				    .flags = pio ? KVM_IOEVENTFD_FLAG_PIO : 0 };
	return ioctl(vmfd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

int bench_run_floor(const struct bench_opts *o, const char *cmdline, char **out, size_t *len)
{
	struct fdvm_vm_config cfg;
	struct fdvm_vm *vm;
	struct kvm_run *run;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	int ret, efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (!buf || efd < 0) {
		free(buf);
		return -ENOMEM;
	}
	fdvm_vm_config_init(&cfg);
	if ((ret = fdvm_vm_create(&cfg, &vm)))
		goto out;
	if ((ret = fdvm_vm_load_pvh(vm, o->guest, cmdline)))
		goto out_vm;
	int vmfd = fdvm_vm_fd(vm), cpufd = fdvm_vm_vcpu0_fd(vm, (void **)&run);
	if ((ret = add_ioeventfd(vmfd, efd, FDVM_FLOOR_MMIO + 8, false)) ||
	    (ret = add_ioeventfd(vmfd, efd, FDVM_FLOOR_PIO + 8, true)))
		goto out_vm;

	for (bool done = false; !done;) {
		if (ioctl(cpufd, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (run->exit_reason == KVM_EXIT_MMIO)
			continue;
		if (run->exit_reason != KVM_EXIT_IO) {
			fprintf(stderr, "fdvm bench: floor: unexpected exit %u\n", run->exit_reason);
			ret = -EIO;
			break;
		}
		uint8_t *data = (uint8_t *)run + run->io.data_offset;
		uint16_t port = run->io.port;
		if (port == FDVM_PORT_COM1 && run->io.direction == KVM_EXIT_IO_OUT) {
			for (uint32_t i = 0; i < run->io.count; i++) {
				if (n + 1 >= cap) {
					char *nb = realloc(buf, cap *= 2);
					if (!nb) {
						ret = -ENOMEM;
						goto out_vm;
					}
					buf = nb;
				}
				if (data[i] != '\r')
					buf[n++] = (char)data[i];
			}
		} else if (port == FDVM_PORT_COM1 + 5 && run->io.direction == KVM_EXIT_IO_IN) {
			*data = 0x60; /* transmitter empty */
		} else if (port == FDVM_PORT_DEBUG_EXIT || port == FDVM_PORT_ACPI_PM1A_CNT) {
			done = true;
		}
	}
out_vm:
	fdvm_vm_destroy(vm);
out:
	close(efd);
	if (ret) {
		free(buf);
		return ret;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}
