/*
 * virtio 1.x devices. A device model provides a const ops table and never
 * learns which transport it sits behind: it is handed, per queue, a
 * struct fdvm_vq on guest memory, the eventfd the guest kicks, and the
 * eventfd that interrupts the guest. The PCI transport (virtio-pci modern,
 * lib/virtio/pci.c) is one such transport; a vhost-user backend is another.
 */
#ifndef FDVM_VIRTIO_H
#define FDVM_VIRTIO_H

#include <stdint.h>

#include "fdvm/doorbell.h"
#include "fdvm/irq.h"
#include "fdvm/virtqueue.h"

struct fdvm_vm;
struct fdvm_virtio_pci;

/* Feature bits the transport handles itself. */
#define FDVM_VIRTIO_F_INDIRECT_DESC 28
#define FDVM_VIRTIO_F_EVENT_IDX 29
#define FDVM_VIRTIO_F_VERSION_1 32

#define FDVM_VIRTIO_STATUS_ACKNOWLEDGE 1
#define FDVM_VIRTIO_STATUS_DRIVER 2
#define FDVM_VIRTIO_STATUS_DRIVER_OK 4
#define FDVM_VIRTIO_STATUS_FEATURES_OK 8
#define FDVM_VIRTIO_STATUS_NEEDS_RESET 64
#define FDVM_VIRTIO_STATUS_FAILED 128

/* A started queue, as the device gets it. */
struct fdvm_virtio_queue {
	unsigned index;
	struct fdvm_vq vq;	/* on guest memory, checked */
	int kick_fd;		/* readable when the guest kicked */
	int call_fd;		/* write 1 to interrupt the guest; -1: no vector */
};

struct fdvm_virtio_dev_ops {
	const char *name;
	uint32_t device_id;	/* virtio device ID: 2 block, 3 console, 4 entropy */
	uint32_t pci_class;
	unsigned num_queues;
	uint16_t queue_max_size; /* a power of two, <= FDVM_VQ_MAX_SIZE */
	uint64_t features;	/* device-specific offer; VERSION_1, EVENT_IDX and
				 * INDIRECT_DESC are added by the transport */
	uint32_t config_size;
	/* Device configuration space; the transport bounds-checks off/len. */
	void (*config_read)(void *opaque, uint32_t off, void *buf, uint32_t len);
	void (*config_write)(void *opaque, uint32_t off, const void *buf, uint32_t len);
	/*
	 * The driver set DRIVER_OK: serve queues[0..n) (those it enabled) with
	 * the negotiated features. Called on a vCPU thread; the device runs its
	 * own thread(s). Non-zero: the device refuses (NEEDS_RESET is set).
	 */
	int (*start)(void *opaque, uint64_t features, struct fdvm_virtio_queue *queues, unsigned n);
	/* Reset: when it returns, no queue memory is touched and no fd written. */
	void (*stop)(void *opaque);
};

/*
 * Plugs a virtio-pci (modern, virtio 1.x) device into the VM: BAR0 holds
 * the common, ISR, device and notification structures (one doorbell per
 * queue, notify_off_multiplier 4); BAR1 the MSI-X table (one vector per
 * queue plus config). The transport belongs to the VM; fdvm_vm_destroy
 * removes it after stopping the device.
 */
int fdvm_virtio_pci_create(struct fdvm_vm *vm, const struct fdvm_virtio_dev_ops *ops,
			   void *opaque, enum fdvm_doorbell_mode mode,
			   struct fdvm_virtio_pci **out);
void fdvm_virtio_pci_destroy(struct fdvm_virtio_pci *t);

/*
 * A device found a queue broken (any thread): sets DEVICE_NEEDS_RESET and
 * raises the configuration interrupt. The device stops using the queue.
 */
void fdvm_virtio_needs_reset(struct fdvm_virtio_pci *t);

/* Devices (lib/dev/). Each belongs to the VM once created. */
struct fdvm_virtio_blk_config {
	const char *path;	/* a raw image */
	bool read_only;
	unsigned num_queues;	/* 1 (default) or more */
	/* The path of its doorbells and MSI-X lines: auto (kernel where KVM
	 * can), kernel, or the userspace fallbacks (tests, comparisons). */
	enum fdvm_doorbell_mode notify;
	/* Microseconds the backend keeps polling a queue that ran dry before
	 * it sleeps on the kick eventfd (0: never polls). */
	unsigned poll_us;
};
int fdvm_virtio_blk_create(struct fdvm_vm *vm, const struct fdvm_virtio_blk_config *cfg);
int fdvm_virtio_rng_create(struct fdvm_vm *vm, enum fdvm_doorbell_mode notify);
int fdvm_virtio_console_create(struct fdvm_vm *vm, int out_fd, enum fdvm_doorbell_mode notify);

#endif
