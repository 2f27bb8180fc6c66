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
#include "fdvm/stats.h"
#include "fdvm/virtqueue.h"
#include "fdvm/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vm;
struct fdvm_virtio_pci;

/* Feature bits the transport handles itself. */
#define FDVM_VIRTIO_F_INDIRECT_DESC 28
#define FDVM_VIRTIO_F_EVENT_IDX 29
#define FDVM_VIRTIO_F_VERSION_1 32
/* What fdvm's virtqueue code (lib/virtio/virtqueue.c) does for a device
 * model that uses it: such models put these in their features. */
#define FDVM_VIRTIO_VQ_FEATURES \
	(1ull << FDVM_VIRTIO_F_INDIRECT_DESC | 1ull << FDVM_VIRTIO_F_EVENT_IDX)

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
	/* The queue's counters, the transport's (they outlive a reset), for
	 * the thread that serves the queue to add to (FDVM_STAT_ADD); NULL:
	 * counting is off. */
	struct fdvm_queue_stats *stats;
};

/*
 * What a transport hands a device at start. The queues belong to the
 * transport and stay put until the device's stop returns: the device works
 * on them in place, so the transport reads their indices afterwards (a
 * vhost-user backend answers GET_VRING_BASE from vq.last_avail).
 */
struct fdvm_virtio_start {
	uint64_t features;		/* negotiated */
	struct fdvm_virtio_queue *queues; /* the queues the driver enabled */
	unsigned n;
	/* The device found queue i broken (any thread, at most once a queue):
	 * the transport tells the driver as its transport can (virtio-pci:
	 * DEVICE_NEEDS_RESET and the configuration interrupt). */
	void (*broken)(void *ctx, unsigned index);
	void *ctx;
};

struct fdvm_virtio_dev_ops {
	const char *name;
	uint32_t device_id;	/* virtio device ID: 1 network, 2 block, 3 console, 4 entropy */
	uint32_t pci_class;
	unsigned num_queues;
	uint16_t queue_max_size; /* a power of two, <= FDVM_VQ_MAX_SIZE */
	uint64_t features;	/* the offer: device bits, and ring bits the model
				 * handles (FDVM_VIRTIO_VQ_FEATURES); the transport
				 * adds VERSION_1 */
	uint32_t config_size;
	/*
	 * Requests a crashed vhost-user backend took and never answered may be
	 * handed to the next one (the inflight region, with requests taken
	 * again in order): true for devices whose requests can be redone
	 * (blk). A device that gives requests back (fdvm_vq_unpop) says false.
	 */
	bool resubmit;
	/* The queues are served in another process (fdvm's vhost-user
	 * frontend): their counters are that process's to report. */
	bool remote;
	/* Device configuration space; the transport bounds-checks off/len. */
	void (*config_read)(void *opaque, uint32_t off, void *buf, uint32_t len);
	void (*config_write)(void *opaque, uint32_t off, const void *buf, uint32_t len);
	/*
	 * The driver is ready: serve s->queues with s->features. Called on the
	 * transport's thread (a vCPU, or a vhost-user backend's loop); the
	 * device runs its own thread(s). Non-zero: the device refuses.
	 */
	int (*start)(void *opaque, const struct fdvm_virtio_start *s);
	/* Stop: when it returns, no queue memory is touched and no fd written. */
	void (*stop)(void *opaque);
};

/*
 * A device model on its own, before any transport: the same model serves
 * fdvm's in-process virtio-pci device and a vhost-user backend
 * (include/fdvm/vhost_user.h). destroy() stops it if started and frees it.
 */
struct fdvm_virtio_model {
	const struct fdvm_virtio_dev_ops *ops;
	void *opaque;
	void (*destroy)(struct fdvm_virtio_model *m);
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
/* Counters and state of a virtio-pci device, as fdvm_virtio_pci_stats
 * reads them. */
enum fdvm_kick_path {
	FDVM_KICK_NONE,		/* no doorbell now (not started, BAR unmapped) */
	FDVM_KICK_IOEVENTFD,	/* KVM_IOEVENTFD: the vCPU stays in the kernel */
	FDVM_KICK_EXIT,		/* the userspace exit dispatch */
	FDVM_KICK_FRONTEND,	/* a vhost-user backend's view: the frontend's
				 * eventfd, whichever path fills it */
};
#define FDVM_VIRTIO_MAX_QUEUES 64
struct fdvm_virtio_queue_stats {
	unsigned index;
	bool enabled;		/* by the driver */
	uint16_t size;
	uint16_t vector;	/* MSI-X vector, 0xffff: none */
	/* Doorbells take this path now; s.kicks counts them all, and these
	 * by the path each took (kicks read while no doorbell was in place
	 * are in neither). A vhost-user backend cannot tell: 0 there. */
	enum fdvm_kick_path kick_path;
	uint64_t doorbells_ioeventfd, doorbells_exit;
	struct fdvm_queue_stats s;
};
struct fdvm_virtio_vector_stats {
	unsigned vector;
	struct fdvm_irq_stats s;
};
struct fdvm_virtio_pci_stats {
	const char *name;	/* the device model's ("virtio-blk") */
	unsigned slot;		/* PCI device number on bus 0 */
	uint8_t status;		/* the driver's device status */
	bool counting;		/* false: the VM counts nothing (fdvm_vm_config) */
	bool remote;		/* queues served in another process, counted there */
	unsigned nq, nvec;
	struct fdvm_virtio_queue_stats q[FDVM_VIRTIO_MAX_QUEUES];
	struct fdvm_virtio_vector_stats v[FDVM_VIRTIO_MAX_QUEUES + 1]; /* last: config */
};
/*
 * Fills *out with the device's counters (queues, MSI-X vectors) now. Any
 * thread; it takes the device's lock briefly, as a vCPU's access does.
 */
int fdvm_virtio_pci_stats(struct fdvm_virtio_pci *t, struct fdvm_virtio_pci_stats *out);

/*
 * Plugs a device model in over virtio-pci; *out (if out is not NULL) is
 * the device. The device owns the model from here on, also when this fails
 * (the model is destroyed then). fdvm_virtio_pci_destroy takes the device
 * out of the guest's reach, stops it and then destroys its model;
 * fdvm_vm_destroy does that for the devices left.
 */
int fdvm_virtio_pci_add_model(struct fdvm_vm *vm, struct fdvm_virtio_model *m,
			      enum fdvm_doorbell_mode mode, struct fdvm_virtio_pci **out);

/* Devices (lib/dev/). Each belongs to the VM once created; *out (when out
 * is not NULL) is the device, for fdvm_virtio_pci_destroy. */
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
	/*
	 * The image is locked as QEMU locks its images (OFD locks, which QEMU
	 * sees too): a writer alone, readers together; no_lock: not at all.
	 */
	bool no_lock;
	/* Offer discard and write-zeroes (punching holes, zeroing ranges);
	 * no_discard: neither. */
	bool no_discard;
	/* Through the host's page cache (writeback, the default) or around it
	 * (none: O_DIRECT, as QEMU's cache=none; the guest is told the block
	 * size direct I/O needs, and requests that do not keep to it are
	 * bounced). Flushes are fdatasync either way. */
	enum fdvm_blk_cache { FDVM_BLK_CACHE_WRITEBACK, FDVM_BLK_CACHE_NONE } cache;
	/*
	 * How reads and writes are done: synchronously in the backend thread
	 * (sync: the fastest where the data is in RAM), or through an
	 * io_uring, many in flight and answered as they complete (io_uring:
	 * what a disk needs to see more than one request). auto (the
	 * default): io_uring with cache=none or a block device, else sync.
	 */
	enum fdvm_blk_aio { FDVM_BLK_AIO_AUTO, FDVM_BLK_AIO_SYNC, FDVM_BLK_AIO_IO_URING } aio;
};
/* The defaults fdvm run uses: one queue, doorbells auto, 50 us of polling
 * (path NULL: the caller sets it). */
#define FDVM_VIRTIO_POLL_US_DEFAULT 50
void fdvm_virtio_blk_config_init(struct fdvm_virtio_blk_config *cfg);
/*
 * An in-process virtio-blk-pci device, owned by the VM. path is a raw image
 * (a regular file whose size is a multiple of 512 bytes) or a block device
 * (its size and logical block size from the kernel). -EBUSY when another
 * process holds a lock that conflicts (see no_lock).
 */
int fdvm_virtio_blk_create(struct fdvm_vm *vm, const struct fdvm_virtio_blk_config *cfg,
			   struct fdvm_virtio_pci **out);
/*
 * The virtio-blk model alone (cfg->notify unused), for another transport:
 * *out is the caller's, freed by its destroy. Errors are reported through
 * log (NULL: stderr) and returned as -errno.
 */
int fdvm_virtio_blk_model_create(const struct fdvm_virtio_blk_config *cfg, fdvm_log_fn log,
				 void *log_opaque, struct fdvm_virtio_model **out);
struct fdvm_virtio_net_config {
	const char *tap;	/* the tap's name; made (and gone at exit) if missing */
	uint8_t mac[6];
	bool mac_set;		/* else 52:54:00 and three bytes from the tap's name */
	unsigned num_pairs;	/* queue pairs, one tap queue each: 1 (default) or more */
	unsigned poll_us;	/* as for virtio-blk: watch rings this long before sleeping */
	enum fdvm_doorbell_mode notify;
};
/* The defaults fdvm run uses: one queue pair, doorbells auto, 50 us of
 * polling, the MAC made from the tap's name (tap NULL: the caller sets it). */
void fdvm_virtio_net_config_init(struct fdvm_virtio_net_config *cfg);
/* An in-process virtio-net-pci device on a tap, owned by the VM. */
int fdvm_virtio_net_create(struct fdvm_vm *vm, const struct fdvm_virtio_net_config *cfg,
			   struct fdvm_virtio_pci **out);
/* The virtio-net model alone (cfg->notify unused), as for virtio-blk. */
int fdvm_virtio_net_model_create(const struct fdvm_virtio_net_config *cfg, fdvm_log_fn log,
				 void *log_opaque, struct fdvm_virtio_model **out);
int fdvm_virtio_rng_create(struct fdvm_vm *vm, enum fdvm_doorbell_mode notify,
			   struct fdvm_virtio_pci **out);
int fdvm_virtio_console_create(struct fdvm_vm *vm, int out_fd, enum fdvm_doorbell_mode notify,
			       struct fdvm_virtio_pci **out);

#ifdef __cplusplus
}
#endif

#endif
