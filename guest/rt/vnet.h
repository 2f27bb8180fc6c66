/*
 * The guest's virtio-net driver (virtio 1.x over PCI, on top of virtio.h).
 *
 * Finds the device, negotiates what the caller wants among what is offered
 * (with the spec's feature dependencies enforced), reads the config (MAC,
 * link status, MTU, queue pairs), sets up rx/tx queue pairs and the control
 * queue with MSI-X vectors, and keeps the receive queues full of buffers.
 *
 * Buffers: every rx buffer belongs to one queue pair and goes back to that
 * pair's receive queue when the caller returns it, or, for a packet sent in
 * place (vnet_send_pkt), when the device has completed the transmission.
 * A single-buffer packet is handed out in place (no copy); a packet that the
 * device spread over several mergeable buffers is gathered into a copy.
 *
 * Memory: rings come from virtio.c's pool (call virtio_pool_reset() before
 * setting a device up again), buffers from a static arena in vnet.c: one
 * struct vnet at a time per guest.
 *
 * Calls: vnet_init and vnet_reset at CPL0; everything else at CPL0 or CPL3
 * (rings and registers are identity-mapped and user-accessible; vnet_wait
 * sleeps through rt_kernel_call). No locking: one caller at a time, with
 * interrupts off (vnet's interrupt handler only counts).
 */
#ifndef RT_VNET_H
#define RT_VNET_H

#include "virtio.h"

#define VIRTIO_ID_NET 1

/* Feature bits (virtio 1.x, 5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MTU 3
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_UFO 10
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_MQ 22

/* Config space status bits. */
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_S_ANNOUNCE 2

/* Device status bits the driver watches. */
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* The header in front of every frame (VERSION_1: always 12 bytes). */
struct virtio_net_hdr {
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
};
#define VNET_HDR_LEN 12
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_UDP 3
#define VIRTIO_NET_HDR_GSO_TCPV6 4
#define VIRTIO_NET_HDR_GSO_ECN 0x80

/* Control queue: classes, commands, acks. */
#define VIRTIO_NET_CTRL_RX 0
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1

#define VNET_MAX_PAIRS 4
#define VNET_TX_SLOTS 64	/* per pair: 2 KiB buffers for copied frames */
#define VNET_TX_SLOT_SIZE 2048
#define VNET_MAX_FRAME 65550	/* largest frame vnet_send copies (65562 with the header) */

struct vnet_buf {
	uint8_t *addr;
	uint32_t size;		/* bytes the device may use */
	uint32_t used;		/* bytes it wrote (rx), or sends (tx) */
	uint16_t pair;		/* the pair whose queue it returns to */
	bool tx;		/* a tx slot (else an rx buffer) */
	bool posted;		/* in a ring right now */
	struct vnet_buf *next;	/* the rest of a packet, or the free list */
};

/* A received packet. The caller owns its buffers until it hands them back
 * (vnet_rx_return or vnet_send_pkt). */
struct vnet_pkt {
	struct virtio_net_hdr *hdr;	/* in the first buffer */
	uint8_t *frame;			/* the Ethernet frame, contiguous */
	uint32_t len;			/* its length (the caller may shorten it) */
	unsigned pair, nbufs;
	bool gathered;			/* frame is a copy (nbufs > 1) */
	struct vnet_buf *bufs;
};

struct vnet_pair {
	struct vq rx, tx;
	struct vnet_buf *rxb, *txb;	/* rx buffers, tx slots (static arrays) */
	unsigned nrx;
	struct vnet_buf *tx_free, *rx_spare;
	uint8_t *gather;		/* VNET_HDR_LEN + VNET_MAX_FRAME bytes */
	unsigned tx_inflight;		/* tx requests the device has not completed */
	bool rx_added, tx_added;	/* queued since the last notification */
	uint64_t rx_packets, tx_packets, rx_errors, tx_errors, tx_drops;
};

struct vnet_config {
	uint64_t features;	/* wanted: VIRTIO_NET_F_* and VIRTIO_F_* bits (VERSION_1 always) */
	unsigned pairs;		/* queue pairs wanted, 1..VNET_MAX_PAIRS (0: 1) */
	uint32_t mrg_buf_size;	/* mergeable rx buffer size, 64..4096 (0: 2048) */
	unsigned rx_bufs;	/* rx buffers posted per queue (0: as many as the ring holds) */
	uint8_t vector_base;	/* first interrupt vector (0: 0x70); uses base..base+15 */
	bool poll;		/* no interrupts: vnet_wait polls */
};

struct vnet {
	struct vdev dev;
	uint64_t offered, features;
	uint8_t mac[6];
	uint16_t status, mtu, max_pairs, pairs;
	uint32_t rx_buf_size;
	bool mrg, use_irq, has_ctrl, ctrl_stuck;
	uint8_t vector_base;
	unsigned msix_entries;
	struct vnet_pair pair[VNET_MAX_PAIRS];
	struct vq ctrl;
	uint16_t ctrl_index;
	int pairs_ack;		/* VQ_PAIRS_SET's answer (vnet_ctrl's value), -4: not sent */
	volatile uint64_t irqs, timer_irqs;
	const char *error;	/* why vnet_init failed */
};

/*
 * Finds the nth virtio-net device and brings it up: negotiation, config,
 * queues, MSI-X, rx buffers posted, DRIVER_OK, and VQ_PAIRS_SET when more
 * than one pair is wanted and MQ was negotiated. CPL0 only. Returns false
 * with n->error set on failure (the device is then left reset).
 */
bool vnet_init(struct vnet *n, unsigned nth, const struct vnet_config *cfg);
/* Resets the device (status 0): no buffer is used afterwards. CPL0. */
void vnet_reset(struct vnet *n);

/* The next received packet on this pair, or false. Malformed completions
 * (too short, too long, bad num_buffers) are counted in rx_errors and their
 * buffers reposted. */
bool vnet_recv(struct vnet *n, unsigned pair, struct vnet_pkt *p);
/* Hands the packet's buffers back to their receive queue. */
void vnet_rx_return(struct vnet *n, struct vnet_pkt *p);
/* Sends p->hdr and p->frame[0..p->len) on this pair's tx queue: in place
 * for a single buffer (it returns to rx once the device completed it), a
 * copy for a gathered packet. The caller no longer owns p. False if the tx
 * queue is full (then the buffers went back to rx). */
bool vnet_send_pkt(struct vnet *n, unsigned pair, struct vnet_pkt *p);
/* Copies hdr (NULL: all zero) and frame into tx slots and queues them. */
bool vnet_send(struct vnet *n, unsigned pair, const struct virtio_net_hdr *hdr,
	       const void *frame, uint32_t len);
/* Takes the device's tx completions, returning their buffers; how many. */
unsigned vnet_tx_reclaim(struct vnet *n, unsigned pair);
/* Notifies the device of what was queued on this pair since the last call. */
void vnet_flush(struct vnet *n, unsigned pair);
/* Requests still queued on this pair's tx (sent, not completed). */
unsigned vnet_tx_pending(struct vnet *n, unsigned pair);

/*
 * A control command: class, command, data (len bytes, may be 0) -> the
 * device's ack (VIRTIO_NET_OK / VIRTIO_NET_ERR / other), -1 if it did not
 * answer within timeout_ms (the queue is then not used again: -2), -3 with
 * no control queue.
 */
int vnet_ctrl(struct vnet *n, uint8_t cls, uint8_t cmd, const void *data, uint32_t len,
	      unsigned timeout_ms);

/*
 * Flushes every pair, then sleeps (interrupts, each sleep bounded by the
 * LAPIC timer; or polling) until a receive queue has a completion, a
 * transmit queue with requests in flight has one, or the TSC reaches
 * deadline. True if there is something to receive or reclaim.
 */
bool vnet_wait(struct vnet *n, uint64_t deadline);

/* The link status word (config; VIRTIO_NET_S_LINK_UP if not negotiated)
 * and the device status byte. */
uint16_t vnet_link_status(struct vnet *n);
uint8_t vnet_device_status(struct vnet *n);

/* TSC ticks per millisecond, measured against the LAPIC timer at the first
 * vnet_init (2.5 GHz if that failed). */
uint64_t vnet_tsc_per_ms(void);

#endif
