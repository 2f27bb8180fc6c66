/*
 * A Linux tap device as a packet source and sink for virtio-net: opened by
 * name, one file (queue) per queue pair with IFF_MULTI_QUEUE, every packet
 * preceded by a virtio_net_hdr (IFF_VNET_HDR), so checksum and segmentation
 * offloads pass between the guest and the host stack unchanged.
 */
#ifndef FDVM_NET_TAP_H
#define FDVM_NET_TAP_H

#include <net/if.h>
#include <stdbool.h>

#include "fdvm/vm.h"

#define FDVM_TAP_MAX_QUEUES 16

/* Offloads the tap may hand us (linux/if_tun.h TUN_F_*). */
#define FDVM_TAP_CSUM 0x01
#define FDVM_TAP_TSO4 0x02
#define FDVM_TAP_TSO6 0x04

struct fdvm_tap {
	char name[IFNAMSIZ];
	unsigned n;
	int fd[FDVM_TAP_MAX_QUEUES];	/* non-blocking */
	bool attached[FDVM_TAP_MAX_QUEUES];
	bool created;			/* it did not exist: it goes when we close */
	bool wrapped;			/* fds given, maybe not a tap (tests) */
	unsigned mtu;
	fdvm_log_fn log;
	void *log_opaque;
};

/*
 * Opens tap NAME with queues files (more than one: it must be, or is
 * created, multi-queue). A tap that does not exist is created (that needs
 * CAP_NET_ADMIN) and disappears when the last file closes. -errno, logged.
 */
int fdvm_tap_open(const char *name, unsigned queues, fdvm_log_fn log, void *log_opaque,
		  struct fdvm_tap **out);
/*
 * A "tap" on fds the caller opened (taken over: closed by fdvm_tap_close).
 * Datagram sockets stand in for a tap in tests: ioctls a socket does not
 * know are skipped.
 */
int fdvm_tap_wrap(const char *name, const int *fds, unsigned n, fdvm_log_fn log,
		  void *log_opaque, struct fdvm_tap **out);
/* The header size (10 or 12) and offloads (FDVM_TAP_*) on every queue. */
int fdvm_tap_set_vnet(struct fdvm_tap *t, unsigned hdr_len, unsigned offloads);
/* Packets go to queues 0..n-1 only: the rest are detached. */
int fdvm_tap_set_active(struct fdvm_tap *t, unsigned n);
void fdvm_tap_close(struct fdvm_tap *t);

#endif
