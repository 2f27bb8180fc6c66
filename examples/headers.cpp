// Every public header compiles and links as C++ (extern "C" guards).
#include <fdvm/abi.h>
#include <fdvm/devices.h>
#include <fdvm/doorbell.h>
#include <fdvm/gsi.h>
#include <fdvm/io.h>
#include <fdvm/irq.h>
#include <fdvm/loader.h>
#include <fdvm/loop.h>
#include <fdvm/pci.h>
#include <fdvm/sandbox.h>
#include <fdvm/vhost_user.h>
#include <fdvm/version.h>
#include <fdvm/virtio.h>
#include <fdvm/virtqueue.h>
#include <fdvm/vm.h>

#include <cstdio>
#include <cstring>

int main()
{
	struct fdvm_vm_config cfg;
	fdvm_vm_config_init(&cfg);
	struct fdvm_virtio_blk_config blk;
	fdvm_virtio_blk_config_init(&blk);
	// The library links (names unmangled) and agrees with its headers.
	if (std::strcmp(fdvm_version(), FDVM_VERSION_STRING) != 0) {
		std::fprintf(stderr, "libfdvm %s, headers %s\n", fdvm_version(), FDVM_VERSION_STRING);
		return 1;
	}
	std::printf("C++: every header compiles, libfdvm %s links, mem default %llu\n", fdvm_version(),
		    (unsigned long long)cfg.mem_size);
	return blk.poll_us == FDVM_VIRTIO_POLL_US_DEFAULT ? 0 : 1;
}
