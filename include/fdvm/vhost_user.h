/*
 * vhost-user backends: serve a virtio device model (include/fdvm/virtio.h)
 * to a frontend in another process (QEMU, cloud-hypervisor, fdvm) over a
 * Unix socket. The frontend hands over guest memory (memfds), and per queue
 * the ring addresses, the eventfd the guest kicks and the eventfd that
 * interrupts the guest; from then on the device talks to the guest through
 * shared memory and those eventfds alone.
 *
 * The library has no event loop of its own: it watches its sockets through
 * a struct fdvm_loop (include/fdvm/loop.h), the embedder's or libfdvm's
 * epoll loop, and handles every message on that loop's thread. The device
 * runs its own thread(s). One frontend is served at a time; after it
 * disconnects the next one is accepted.
 *
 * The frontend is untrusted: every message is checked (sizes, fds, regions,
 * ring numbers and addresses); a bad one gets a negative REPLY_ACK when the
 * frontend asked for one, else the connection is dropped, with one log line
 * either way. Descriptors are checked against the memory table as the
 * in-process device checks them against guest RAM.
 */
#ifndef FDVM_VHOST_USER_H
#define FDVM_VHOST_USER_H

#include "fdvm/loop.h"
#include "fdvm/virtio.h"
#include "fdvm/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fdvm_vu_backend;

struct fdvm_vu_backend_config {
	/* The device served: not owned, must outlive the backend. */
	struct fdvm_virtio_model *model;
	/* Where the backend's sockets are watched; it must run on one thread. */
	struct fdvm_loop *loop;
	const char *name;		/* for messages, e.g. the socket path */
	fdvm_log_fn log;		/* NULL: "fdvm: MSG" on stderr */
	void *log_opaque;
	enum fdvm_log_level log_level;	/* default (0) errors only */
};

/* Creates a backend that serves nobody yet; *out is the caller's. */
int fdvm_vu_backend_create(const struct fdvm_vu_backend_config *cfg,
			   struct fdvm_vu_backend **out);
/*
 * Serves the frontends that connect to listen_fd (a listening AF_UNIX
 * stream socket; stays the caller's, and must outlive the backend), one at
 * a time. From the loop's thread, or before the loop runs.
 */
int fdvm_vu_backend_listen(struct fdvm_vu_backend *be, int listen_fd);
/*
 * Serves one frontend already connected on conn_fd (taken over: closed at
 * disconnect or destroy). -EBUSY while another is being served.
 */
int fdvm_vu_backend_serve(struct fdvm_vu_backend *be, int conn_fd);
/*
 * For the embedder's SIGBUS handler (SA_SIGINFO; pass si_addr): the
 * frontend's memory is files it shares, and one it shrinks after handing
 * it over faults at the next access. If addr lies in one of this
 * backend's mappings, a blank page is put there (the access completes),
 * the frontend is dropped from the loop, and it returns true; otherwise
 * false (not ours: re-raise). Async-signal-safe.
 */
bool fdvm_vu_backend_fault(struct fdvm_vu_backend *be, void *addr);
/* Whether a frontend is connected now. */
bool fdvm_vu_backend_connected(const struct fdvm_vu_backend *be);
/*
 * The counters of the device's rings (fdvm/stats.h), kept across
 * connections, into out[0..max); returns how many rings the device has.
 * From the loop's thread (ring state is the loop's).
 */
unsigned fdvm_vu_backend_stats(struct fdvm_vu_backend *be, struct fdvm_virtio_queue_stats *out,
			       unsigned max);
/*
 * Stops the device, drops the frontend, unmaps its memory and stops
 * watching every fd. When it returns no handler of this backend runs.
 * From the loop's thread, or once the loop has stopped.
 */
void fdvm_vu_backend_destroy(struct fdvm_vu_backend *be);

/* fdvm_unix_listen (fdvm/loop.h) for a vhost-user socket. */
int fdvm_vu_listen_unix(const char *path, fdvm_log_fn log, void *log_opaque, int *out);

/*
 * fdvm as a vhost-user frontend: a virtio-pci device in the VM whose device
 * is a backend in another process (fdvm serve blk, qemu-storage-daemon,
 * ...). The guest sees the backend's features that fdvm can carry, its
 * config space and its queues. At DRIVER_OK the backend gets guest RAM
 * (the VM's memfd, both RAM regions), the rings, and per queue the
 * doorbell's eventfd (kick) and the MSI-X line's eventfd (call): MSI-X
 * masking needs no message to the backend. A backend that goes away is
 * reconnected every reconnect_s seconds, the rings and the inflight region
 * handed back; without reconnect_s, or after 10 failed tries, the device
 * tells the driver DEVICE_NEEDS_RESET.
 */
struct fdvm_vu_frontend_config {
	const char *socket;		/* the backend's listening socket */
	uint32_t device_id;		/* virtio device ID: 1 (network), 2 (block) */
	unsigned num_queues;		/* 0: as many as the backend has */
	unsigned reconnect_s;		/* 0: no reconnect */
	enum fdvm_doorbell_mode notify;	/* doorbells and MSI-X lines */
	/* Network: the guest's MAC (else the backend's, or one made from the
	 * socket path when the backend has no config space). */
	uint8_t mac[6];
	bool mac_set;
};

/* The defaults fdvm run uses: all the backend's queues, no reconnect,
 * doorbells auto (socket NULL and device_id 0: the caller sets them). */
void fdvm_vu_frontend_config_init(struct fdvm_vu_frontend_config *cfg);
/* Connects and plugs the device in; the VM owns it. -errno (logged). */
int fdvm_vhost_user_create(struct fdvm_vm *vm, const struct fdvm_vu_frontend_config *cfg,
			   struct fdvm_virtio_pci **out);
/* The same, as a model to plug into a transport of the caller's choice. */
int fdvm_vu_frontend_create(struct fdvm_vm *vm, const struct fdvm_vu_frontend_config *cfg,
			    struct fdvm_virtio_model **out);

#ifdef __cplusplus
}
#endif

#endif
