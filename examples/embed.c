/*
 * The smallest embedder of libfdvm: a VM with one virtio-blk disk, a guest
 * loaded into it, run until it stops; the process exits with the status
 * fdvm run would give.
 *
 *   cc embed.c $(pkg-config --cflags --libs fdvm) -o embed
 *   ./embed GUEST.elf DISK.img [GUEST ARGS...]
 */
#include <stdio.h>
#include <string.h>

#include <fdvm/version.h>
#include <fdvm/virtio.h>
#include <fdvm/vm.h>

int main(int argc, char **argv)
{
	struct fdvm_vm_config cfg;
	struct fdvm_virtio_blk_config disk;
	struct fdvm_virtio_pci *dev;
	struct fdvm_stop stop;
	struct fdvm_vm *vm;
	char cmdline[1024] = "";
	int ret;

	if (argc < 3) {
		fprintf(stderr, "usage: %s GUEST.elf DISK.img [GUEST ARGS...]\n", argv[0]);
		return 2;
	}
	for (int i = 3; i < argc; i++) {
		if (strlen(cmdline) + strlen(argv[i]) + 2 > sizeof(cmdline)) {
			fprintf(stderr, "embed: the guest's arguments are too long\n");
			return 2;
		}
		if (i > 3)
			strcat(cmdline, " ");
		strcat(cmdline, argv[i]);
	}
	fprintf(stderr, "embed: libfdvm %s (headers %s)\n", fdvm_version(), FDVM_VERSION_STRING);

	fdvm_vm_config_init(&cfg); /* 64 MiB, COM1 on stdout, messages on stderr */
	if ((ret = fdvm_vm_create(&cfg, &vm)))
		return 2; /* fdvm said why on stderr */

	fdvm_virtio_blk_config_init(&disk); /* fdvm run --blk's defaults */
	disk.path = argv[2];
	/* dev could be taken out with fdvm_virtio_pci_destroy before the VM goes. */
	if ((ret = fdvm_virtio_blk_create(vm, &disk, &dev)) ||
	    (ret = fdvm_vm_load_pvh(vm, argv[1], cmdline))) {
		fdvm_vm_destroy(vm); /* and the disk with it: the VM owns its devices */
		return 2;
	}

	/* On this thread; fdvm_vm_start/fdvm_vm_join would run it on another. */
	fdvm_vm_run(vm, &stop);
	fprintf(stderr, "embed: the guest stopped: %s\n", fdvm_stop_reason_name(stop.reason));
	fdvm_vm_destroy(vm);
	return fdvm_stop_exit_status(&stop);
}
