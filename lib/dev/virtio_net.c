/*
 * virtio-net (virtio 1.x, 5.1) on a tap device: the seeds' network device
 * server. Each queue pair has a thread and a tap queue of its own; the
 * thread sleeps on one epoll set that holds the tap queue (a packet came
 * from the host), the pair's kick eventfds (the guest sent, or gave
 * receive buffers) and a wake eventfd (stop, or the pair was turned on or
 * off). The control queue is served by pair 0's thread.
 *
 * Packets keep their virtio_net_hdr end to end: the tap is opened with
 * IFF_VNET_HDR and told which offloads the driver accepted, so a checksum
 * left to do or a 64 KiB TCP segment passes through untouched in both
 * directions. A packet read from the tap waits in the pair's buffer until
 * the guest posts room for it: nothing is read from the tap, and so nothing
 * dropped here, while the guest gives no buffers, and only that pair's
 * receive path waits.
 *
 * Everything from the guest is checked: transmit headers against the
 * negotiated offloads and the packet's length (a lying header drops the
 * packet, not the queue), control commands against their class, command
 * and length (VIRTIO_NET_ERR), buffers against guest RAM (the queue is
 * broken and the transport told).
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "fdvm/sandbox.h"
#include "fdvm/virtio.h"

#include "../net/tap.h"
#include "../vm_priv.h"
#include "net_priv.h"

#define F_CSUM 0
#define F_GUEST_CSUM 1
#define F_MTU 3
#define F_MAC 5
#define F_GUEST_TSO4 7
#define F_GUEST_TSO6 8
#define F_HOST_TSO4 11
#define F_HOST_TSO6 12
#define F_MRG_RXBUF 15
#define F_STATUS 16
#define F_CTRL_VQ 17
#define F_MQ 22
#define HAS(f, bit) (((f) >> (bit)) & 1)

#define HDR_F_NEEDS_CSUM 1
#define HDR_F_DATA_VALID 2
#define GSO_NONE 0
#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_ECN 0x80
#define STATUS_LINK_UP 1

#define CTRL_MQ 4
#define CTRL_MQ_VQ_PAIRS_SET 0
#define CTRL_OK 0
#define CTRL_ERR 1

#define ETH_HLEN 14
/* The largest frame a tap gives or takes: a 64 KiB GSO packet. */
#define FRAME_MAX (65535 + ETH_HLEN + 4)
#define HDR_MAX 12
#define RX_BUDGET 64		/* packets per wakeup before looking at other work */
#define TX_BUDGET 256
#define MAX_PAIRS FDVM_TAP_MAX_QUEUES

struct net_hdr {
	uint8_t flags, gso_type;
	uint16_t hdr_len, gso_size, csum_start, csum_offset;
	uint16_t num_buffers;	/* with MRG_RXBUF or VERSION_1 */
} __attribute__((packed));

struct net_config {
	uint8_t mac[6];
	uint16_t status, max_virtqueue_pairs, mtu;
} __attribute__((packed));

enum { W_WAKE, W_TAP, W_RX, W_TX, W_CTRL };

struct counters {
	uint64_t rx_packets, rx_dropped, tx_packets, tx_dropped;
	uint64_t rx_gso, tx_gso;	/* of those, segmentation offloads (TSO) */
};

struct pair {
	struct net *net;
	unsigned index;
	struct fdvm_virtio_queue *rx, *tx, *ctrl; /* the transport's; NULL: not enabled */
	int tap_fd;
	int wake_fd, ep;
	pthread_t thread;
	bool thread_started;
	bool rx_dead, tx_dead, ctrl_dead;
	bool tap_broken;	/* reading it failed for good (the tap went away) */
	bool tap_watched;	/* the tap is in the epoll set with EPOLLIN */
	bool want_buffers;	/* a packet waits for receive buffers */
	int last_tx_errno;	/* the last tap write error reported */
	struct counters c;
	/* The packet read from the tap and not given to the guest yet
	 * (survives a stop and start: nothing read is lost to a restart). */
	uint8_t *pkt;
	size_t pkt_len;
	unsigned pkt_hdr_len, pkt_offloads; /* the format it was read in */
	uint16_t rx_seen;	/* the avail index that held too few buffers */
	/* Counting (fdvm/stats.h): transmit doorbells not yet matched with a
	 * request; our own signals on the control queue's kick eventfd. */
	uint64_t tx_kicked, ctrl_own_kicks;
	struct fdvm_vq_elem *elem;
	struct fdvm_vring_used_elem used[FDVM_VQ_MAX_SIZE];
	struct iovec iov[FDVM_VQ_MAX_SEGS + 1];
};

struct net {
	struct fdvm_virtio_model model;
	struct fdvm_virtio_dev_ops ops;
	struct net_config config;
	struct fdvm_tap *tap;
	unsigned npairs;	/* offered */
	uint64_t poll_ns;
	fdvm_log_fn log;
	void *log_opaque;
	/* Set at start, read by the pair threads. */
	uint64_t features;
	unsigned hdr_len, offloads;
	_Atomic unsigned active; /* pairs the driver uses */
	atomic_bool stopping;
	bool started;
	bool manual;		/* no threads: fdvm_virtio_net_run_once does the work */
	void (*broken)(void *ctx, unsigned index);
	void *broken_ctx;
	struct pair pair[MAX_PAIRS];
};

#define NET_LOG(n, level, ...) fdvm_log_to((n)->log, (n)->log_opaque, (level), __VA_ARGS__)

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void config_read(void *opaque, uint32_t off, void *buf, uint32_t len)
{
	struct net *n = opaque;
	memcpy(buf, (const uint8_t *)&n->config + off, len);
}

static void queue_broken(struct pair *p, struct fdvm_virtio_queue *q, bool *dead)
{
	*dead = true;
	NET_LOG(p->net, FDVM_LOG_WARN, "virtio-net %s: queue %u broken by the driver",
		p->net->tap->name, q->index);
	p->net->broken(p->net->broken_ctx, q->index);
}

static void notify(struct fdvm_virtio_queue *q)
{
	if (q->call_fd < 0)
		return;
	if (fdvm_vq_should_notify(&q->vq)) {
		fdvm_eventfd_signal(q->call_fd);
		FDVM_STAT_ADD(q->stats, irqs, 1);
	} else {
		FDVM_STAT_ADD(q->stats, irqs_suppressed, 1);
	}
}

/* The tap failed for good (deleted under us): out of the epoll set, which
 * would report its error condition whatever events we asked for. */
static void tap_gone(struct pair *p)
{
	if (p->tap_broken)
		return;
	p->tap_broken = true;
	p->tap_watched = false;
	epoll_ctl(p->ep, EPOLL_CTL_DEL, p->tap_fd, NULL);
}

static void watch_tap(struct pair *p, bool on)
{
	if (p->tap_watched == on || p->tap_broken)
		return;
	struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.u32 = W_TAP };
	if (epoll_ctl(p->ep, EPOLL_CTL_MOD, p->tap_fd, &ev) == 0)
		p->tap_watched = on;
	else
		NET_LOG(p->net, FDVM_LOG_ERROR, "virtio-net %s: pair %u: epoll_ctl tap: %s",
			p->net->tap->name, p->index, strerror(errno));
}

/* Receive */

/*
 * Gives the pending packet to the guest: 1 done (or dropped), 0 no room
 * yet (every buffer taken for it is given back), -1 the queue broke.
 */
static int rx_deliver(struct pair *p)
{
	struct net *n = p->net;
	struct fdvm_vq *vq = &p->rx->vq;
	struct fdvm_vq_elem *e = p->elem;
	bool mrg = HAS(n->features, F_MRG_RXBUF);
	struct iovec hdr_iov[HDR_MAX];
	unsigned nhdr = 0, k = 0;
	size_t off = 0;

	while (off < p->pkt_len) {
		int r = fdvm_vq_pop(vq, e);
		if (r < 0)
			return -1;
		if (r == 0) {
			p->rx_seen = vq->last_avail; /* all the driver had posted */
			while (k)
				fdvm_vq_unpop(vq, (uint16_t)p->used[--k].id);
			return 0;
		}
		if (k == 0 && (e->in_len < n->hdr_len || (!mrg && e->in_len < p->pkt_len))) {
			/* No room for the header, or (one buffer per packet) for
			 * the packet: the buffer is kept for the next one. */
			fdvm_vq_unpop(vq, e->head);
			p->c.rx_dropped++;
			p->pkt_len = 0;
			return 1;
		}
		if (k == 0) {
			/* Where the header lies, to fill num_buffers in at the end. */
			size_t need = n->hdr_len;
			for (unsigned i = 0; i < e->nin && need; i++) {
				size_t l = e->in[i].iov_len < need ? e->in[i].iov_len : need;
				hdr_iov[nhdr++] = (struct iovec){ e->in[i].iov_base, l };
				need -= l;
			}
		}
		size_t c = p->pkt_len - off < e->in_len ? p->pkt_len - off : e->in_len;
		fdvm_iov_from_buf(e->in, e->nin, 0, p->pkt + off, c);
		p->used[k++] = (struct fdvm_vring_used_elem){ e->head, (uint32_t)c };
		off += c;
	}
	if (n->hdr_len == sizeof(struct net_hdr)) {
		uint16_t nb = (uint16_t)k;
		fdvm_iov_from_buf(hdr_iov, nhdr, offsetof(struct net_hdr, num_buffers), &nb, sizeof(nb));
	}
	fdvm_vq_push_batch(vq, p->used, k);
	p->c.rx_packets++;
	FDVM_STAT_ADD(p->rx->stats, requests, k);
	FDVM_STAT_ADD(p->rx->stats, in_bytes, p->pkt_len);
	p->pkt_len = 0;
	return 1;
}

/* Moves packets from the tap into the guest until either runs dry. */
static void do_rx(struct pair *p)
{
	struct net *n = p->net;
	unsigned delivered = 0;

	if (!p->rx || p->rx_dead)
		return;
	if (p->tap_broken && !p->pkt_len)
		return;
	fdvm_vq_enable_kicks(&p->rx->vq, false);
	unsigned budget;
	for (budget = RX_BUDGET; budget; budget--) {
		if (p->pkt_len && p->index >= atomic_load(&n->active)) {
			/* The driver turned this pair off: nothing more on it. */
			p->pkt_len = 0;
			p->c.rx_dropped++;
		}
		if (!p->pkt_len) {
			if (p->index >= atomic_load(&n->active) || p->tap_broken)
				break;
			ssize_t r = read(p->tap_fd, p->pkt, n->hdr_len + FRAME_MAX);
			if (r < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN) {
					NET_LOG(n, FDVM_LOG_ERROR,
						"virtio-net %s: pair %u: reading the tap: %s (this pair receives no more)",
						n->tap->name, p->index, strerror(errno));
					tap_gone(p);
				}
				break;
			}
			if ((size_t)r < n->hdr_len + ETH_HLEN) {
				p->c.rx_dropped++;
				continue;
			}
			p->pkt_len = (size_t)r;
			p->pkt_hdr_len = n->hdr_len;
			p->pkt_offloads = n->offloads;
			/* The tap leaves num_buffers to us. */
			if (n->hdr_len == sizeof(struct net_hdr))
				((struct net_hdr *)p->pkt)->num_buffers = 0;
			if (((struct net_hdr *)p->pkt)->gso_type != GSO_NONE)
				p->c.rx_gso++;
		}
		int r = rx_deliver(p);
		if (r < 0) {
			queue_broken(p, p->rx, &p->rx_dead);
			watch_tap(p, false);
			break;
		}
		if (r == 0) {
			/* Wait for buffers beyond those seen; the tap keeps what
			 * it has meanwhile. */
			if (fdvm_vq_kick_after(&p->rx->vq, p->rx_seen)) {
				fdvm_vq_enable_kicks(&p->rx->vq, false);
				continue; /* more came as we asked */
			}
			p->want_buffers = true;
			break;
		}
		p->want_buffers = false;
		delivered++;
	}
	if (delivered)
		notify(p->rx);
	/* Out of budget with a packet in hand: look again after the other
	 * queues, whatever the tap and the driver do meanwhile. */
	if (!budget && p->pkt_len && !p->want_buffers)
		fdvm_eventfd_signal(p->wake_fd);
	watch_tap(p, !p->want_buffers && !p->rx_dead && !p->tap_broken &&
			     p->index < atomic_load(&n->active));
}

/* Transmit */

/* Whether a driver's header is one the negotiated features allow. */
static bool tx_hdr_ok(const struct net *n, const struct net_hdr *h, size_t frame_len)
{
	if (h->flags & HDR_F_NEEDS_CSUM) {
		if (!HAS(n->features, F_CSUM) ||
		    (uint32_t)h->csum_start + h->csum_offset + 2 > frame_len)
			return false;
	}
	switch (h->gso_type) {
	case GSO_NONE:
		return true;
	case GSO_TCPV4:
		if (!HAS(n->features, F_HOST_TSO4))
			return false;
		break;
	case GSO_TCPV6:
		if (!HAS(n->features, F_HOST_TSO6))
			return false;
		break;
	default:
		return false; /* UDP, ECN: not offered */
	}
	/* Segmentation needs a segment size and the checksum to finish. */
	return h->gso_size && (h->flags & HDR_F_NEEDS_CSUM);
}

static void tx_one(struct pair *p, struct fdvm_vq_elem *e)
{
	struct net *n = p->net;
	struct net_hdr h = { 0 };

	if (e->out_len < n->hdr_len + ETH_HLEN || e->out_len > n->hdr_len + FRAME_MAX) {
		p->c.tx_dropped++;
		return;
	}
	size_t frame_len = e->out_len - n->hdr_len;
	/* Our copy of the header is what we check and what the tap reads. */
	fdvm_iov_to_buf(e->out, e->nout, 0, &h, n->hdr_len);
	h.flags &= HDR_F_NEEDS_CSUM;
	h.num_buffers = 0;
	if (!tx_hdr_ok(n, &h, frame_len)) {
		p->c.tx_dropped++;
		return;
	}
	unsigned k = 1;
	p->iov[0] = (struct iovec){ &h, n->hdr_len };
	size_t skip = n->hdr_len;
	for (unsigned i = 0; i < e->nout; i++) {
		if (skip >= e->out[i].iov_len) {
			skip -= e->out[i].iov_len;
			continue;
		}
		p->iov[k++] = (struct iovec){ (uint8_t *)e->out[i].iov_base + skip,
					      e->out[i].iov_len - skip };
		skip = 0;
	}
	for (;;) {
		ssize_t r = writev(p->tap_fd, p->iov, (int)k);
		if (r >= 0) {
			p->c.tx_packets++;
			p->c.tx_gso += h.gso_type != GSO_NONE;
			return;
		}
		if (errno != EINTR)
			break;
	}
	/* The host refused it (queue full, a header it judged bad, the
	 * queue detached): dropped, as a link would; said once per cause. */
	p->c.tx_dropped++;
	if (errno != p->last_tx_errno) {
		p->last_tx_errno = errno;
		NET_LOG(n, FDVM_LOG_WARN,
			"virtio-net %s: pair %u: writing to the tap: %s (packet dropped%s)",
			n->tap->name, p->index, strerror(errno),
			errno == EIO ? "; is the tap up?" : "");
	}
}

static void do_tx(struct pair *p)
{
	struct fdvm_vq *vq;
	bool pushed = false;
	int r = 0;

	if (!p->tx || p->tx_dead)
		return;
	vq = &p->tx->vq;
	fdvm_vq_enable_kicks(vq, false);
	/* A budget, so that a guest that keeps the ring full does not starve
	 * receive or hold off a stop: the caller comes back for the rest. */
	for (unsigned budget = TX_BUDGET; budget && (r = fdvm_vq_pop(vq, p->elem)) == 1; budget--) {
		tx_one(p, p->elem);
		fdvm_vq_push(vq, p->elem->head, 0);
		pushed = true;
		FDVM_STAT_ADD(p->tx->stats, requests, 1);
		FDVM_STAT_ADD(p->tx->stats, out_bytes, p->elem->out_len);
		if (p->tx_kicked)
			p->tx_kicked--;
		else
			FDVM_STAT_ADD(p->tx->stats, kicks_suppressed, 1);
	}
	if (r < 0)
		queue_broken(p, p->tx, &p->tx_dead);
	if (pushed)
		notify(p->tx);
}

/* Control */

static int set_active(struct net *n, unsigned pairs)
{
	int ret = fdvm_tap_set_active(n->tap, pairs);
	if (ret)
		return ret; /* logged; packets keep their old queues */
	atomic_store(&n->active, pairs);
	/* A pair without a thread finds the count at its next start: harmless. */
	for (unsigned i = 0; i < n->npairs; i++)
		fdvm_eventfd_signal(n->pair[i].wake_fd);
	return 0;
}

static uint8_t ctrl_command(struct net *n, struct fdvm_vq_elem *e)
{
	uint8_t cmd[2];
	uint16_t pairs;

	if (e->out_len < sizeof(cmd))
		return CTRL_ERR;
	fdvm_iov_to_buf(e->out, e->nout, 0, cmd, sizeof(cmd));
	if (cmd[0] != CTRL_MQ || cmd[1] != CTRL_MQ_VQ_PAIRS_SET || !HAS(n->features, F_MQ) ||
	    e->out_len != sizeof(cmd) + sizeof(pairs))
		return CTRL_ERR;
	fdvm_iov_to_buf(e->out, e->nout, sizeof(cmd), &pairs, sizeof(pairs));
	if (!pairs || pairs > n->npairs || set_active(n, pairs))
		return CTRL_ERR;
	return CTRL_OK;
}

static void do_ctrl(struct pair *p)
{
	struct fdvm_vq *vq;
	bool pushed = false;
	int r = 0;

	if (!p->ctrl || p->ctrl_dead)
		return;
	vq = &p->ctrl->vq;
	for (unsigned budget = TX_BUDGET; budget && (r = fdvm_vq_pop(vq, p->elem)) == 1; budget--) {
		struct fdvm_vq_elem *e = p->elem;
		uint32_t written = 0;
		if (e->in_len) {
			/* The ack is the one byte the device writes. */
			uint8_t ack = ctrl_command(p->net, e);
			written = (uint32_t)fdvm_iov_from_buf(e->in, e->nin, 0, &ack, 1);
		}
		fdvm_vq_push(vq, e->head, written);
		pushed = true;
		FDVM_STAT_ADD(p->ctrl->stats, requests, 1);
		FDVM_STAT_ADD(p->ctrl->stats, out_bytes, e->out_len);
		FDVM_STAT_ADD(p->ctrl->stats, in_bytes, written);
	}
	if (r < 0) {
		queue_broken(p, p->ctrl, &p->ctrl_dead);
	} else if (r == 1) {
		fdvm_eventfd_signal(p->ctrl->kick_fd); /* more: after the rest */
		p->ctrl_own_kicks++;
	}
	if (pushed)
		notify(p->ctrl);
}

/* The pair's thread */

static bool ring_has_work(struct fdvm_virtio_queue *q, bool dead)
{
	return q && !dead &&
	       __atomic_load_n(&q->vq.avail->idx, __ATOMIC_ACQUIRE) != q->vq.last_avail;
}

/* Handles what epoll reported; false when the pair must stop. */
static bool handle_events(struct pair *p, const struct epoll_event *ev, int nev)
{
	uint64_t cnt;
	for (int i = 0; i < nev; i++) {
		switch (ev[i].data.u32) {
		case W_WAKE:
			fdvm_eventfd_drain(p->wake_fd, &cnt);
			if (atomic_load(&p->net->stopping))
				return false;
			break;
		case W_RX:
			if (!fdvm_eventfd_drain(p->rx->kick_fd, &cnt))
				FDVM_STAT_ADD(p->rx->stats, kicks, cnt);
			break;
		case W_TX:
			if (!fdvm_eventfd_drain(p->tx->kick_fd, &cnt)) {
				FDVM_STAT_ADD(p->tx->stats, kicks, cnt);
				p->tx_kicked += cnt;
			}
			break;
		case W_CTRL:
			if (!fdvm_eventfd_drain(p->ctrl->kick_fd, &cnt)) {
				uint64_t own = p->ctrl_own_kicks < cnt ? p->ctrl_own_kicks : cnt;
				p->ctrl_own_kicks -= own;
				FDVM_STAT_ADD(p->ctrl->stats, kicks, cnt - own);
			}
			do_ctrl(p);
			break;
		case W_TAP:
			if (ev[i].events & (EPOLLERR | EPOLLHUP) && !p->tap_broken) {
				NET_LOG(p->net, FDVM_LOG_ERROR,
					"virtio-net %s: pair %u: the tap reports an error (deleted?); this pair receives no more",
					p->net->tap->name, p->index);
				tap_gone(p);
			}
			break;
		}
	}
	return true;
}

static void *pair_thread(void *arg)
{
	struct pair *p = arg;
	struct net *n = p->net;
	struct epoll_event ev[8];

	for (;;) {
		if (atomic_load(&n->stopping))
			return NULL;
		/* Every wakeup looks at everything: cheap, and no kick that
		 * raced with turning kicks back on is ever missed. */
		do_tx(p);
		do_rx(p);
		do_ctrl(p);
		if (n->poll_ns) {
			/* Kicks stay off while we watch the rings ourselves. */
			bool work = false;
			uint64_t t0 = now_ns();
			for (unsigned spin = 0; !work && now_ns() - t0 < n->poll_ns; spin++) {
				work = ring_has_work(p->tx, p->tx_dead) ||
				       (p->want_buffers && ring_has_work(p->rx, p->rx_dead));
				if (!work && spin % 8 == 7) {
					int nev = epoll_wait(p->ep, ev, 8, 0);
					if (nev > 0 && !handle_events(p, ev, nev))
						return NULL;
					work = nev > 0;
				}
				__builtin_ia32_pause();
			}
			/* The pair polls as one: its rounds count on its
			 * transmit queue. */
			if (p->tx) {
				if (work)
					FDVM_STAT_ADD(p->tx->stats, poll_hits, 1);
				else
					FDVM_STAT_ADD(p->tx->stats, poll_misses, 1);
			}
			if (work)
				continue;
		}
		if (p->tx && !p->tx_dead && fdvm_vq_enable_kicks(&p->tx->vq, true))
			continue;
		int nev = epoll_wait(p->ep, ev, 8, -1);
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			NET_LOG(n, FDVM_LOG_ERROR, "virtio-net %s: pair %u: epoll_wait: %s",
				n->tap->name, p->index, strerror(errno));
			return NULL;
		}
		if (!handle_events(p, ev, nev))
			return NULL;
	}
}

static int epoll_add(struct pair *p, int fd, uint32_t events, uint32_t what)
{
	struct epoll_event ev = { .events = events, .data.u32 = what };
	if (epoll_ctl(p->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		return fdvm_log_to_errno(p->net->log, p->net->log_opaque, errno,
					 "virtio-net %s: pair %u: epoll_ctl", p->net->tap->name,
					 p->index);
	return 0;
}

static void pair_stop(struct pair *p)
{
	if (p->thread_started) {
		fdvm_eventfd_signal(p->wake_fd);
		pthread_join(p->thread, NULL);
		p->thread_started = false;
	}
	if (p->ep >= 0)
		close(p->ep);
	p->ep = -1;
	p->rx = p->tx = p->ctrl = NULL;
}

static int pair_start(struct pair *p)
{
	struct net *n = p->net;
	int ret;

	p->rx_dead = p->tx_dead = p->ctrl_dead = false;
	p->want_buffers = false;
	p->ep = epoll_create1(EPOLL_CLOEXEC);
	if (p->ep < 0)
		return fdvm_log_to_errno(n->log, n->log_opaque, errno, "virtio-net %s: epoll_create1",
					 n->tap->name);
	/* The tap is watched from the first do_rx on, if there is a queue. */
	p->tap_watched = false;
	if ((ret = epoll_add(p, p->wake_fd, EPOLLIN, W_WAKE)) ||
	    (!p->tap_broken && (ret = epoll_add(p, p->tap_fd, 0, W_TAP))) ||
	    (p->rx && (ret = epoll_add(p, p->rx->kick_fd, EPOLLIN, W_RX))) ||
	    (p->tx && (ret = epoll_add(p, p->tx->kick_fd, EPOLLIN, W_TX))) ||
	    (p->ctrl && (ret = epoll_add(p, p->ctrl->kick_fd, EPOLLIN, W_CTRL))))
		return ret;
	if (n->manual)
		return 0;
	char name[16];
	snprintf(name, sizeof(name), "virtio-net-%u", p->index);
	ret = fdvm_thread_create(&p->thread, FDVM_ROLE_DEVICE, name, pair_thread, p);
	if (ret)
		return fdvm_log_to_errno(n->log, n->log_opaque, -ret, "virtio-net %s: thread",
					 n->tap->name);
	p->thread_started = true;
	return 0;
}

static void stop(void *opaque)
{
	struct net *n = opaque;
	atomic_store(&n->stopping, true);
	for (unsigned i = 0; i < n->npairs; i++)
		pair_stop(&n->pair[i]);
	atomic_store(&n->stopping, false);
	n->started = false;
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct net *n = opaque;
	uint64_t f = s->features;
	unsigned offloads = 0, present = 0;
	int ret;

	n->features = f;
	n->broken = s->broken;
	n->broken_ctx = s->ctx;
	/* Legacy drivers without mergeable buffers have the short header. */
	n->hdr_len = HAS(f, FDVM_VIRTIO_F_VERSION_1) || HAS(f, F_MRG_RXBUF) ? 12 : 10;
	if (HAS(f, F_GUEST_CSUM)) {
		offloads |= FDVM_TAP_CSUM;
		if (HAS(f, F_GUEST_TSO4))
			offloads |= FDVM_TAP_TSO4;
		if (HAS(f, F_GUEST_TSO6))
			offloads |= FDVM_TAP_TSO6;
	}
	if ((ret = fdvm_tap_set_vnet(n->tap, n->hdr_len, offloads)))
		return ret;
	n->offloads = offloads;
	/* A packet read in another header format, or with offloads this
	 * driver did not accept, cannot be given to it. */
	for (unsigned i = 0; i < n->npairs; i++) {
		struct pair *p = &n->pair[i];
		if (p->pkt_len && (p->pkt_hdr_len != n->hdr_len || p->pkt_offloads != offloads)) {
			p->pkt_len = 0;
			p->c.rx_dropped++;
		}
	}
	for (unsigned i = 0; i < n->npairs; i++)
		n->pair[i].rx = n->pair[i].tx = n->pair[i].ctrl = NULL;
	/* Queue 2N is the control queue with MQ, 2 without (5.1.2). */
	unsigned ctrl_index = HAS(f, F_MQ) ? 2 * n->npairs : 2;
	for (unsigned i = 0; i < s->n; i++) {
		struct fdvm_virtio_queue *q = &s->queues[i];
		if (HAS(f, F_CTRL_VQ) && q->index == ctrl_index)
			n->pair[0].ctrl = q;
		else if (q->index < 2 * n->npairs && (HAS(f, F_MQ) || q->index < 2))
			*(q->index % 2 ? &n->pair[q->index / 2].tx : &n->pair[q->index / 2].rx) = q;
	}
	for (unsigned i = 0; i < n->npairs; i++)
		if (n->pair[i].rx || n->pair[i].tx)
			present = i + 1;
	/* The driver picks how many pairs to use on the control queue (one
	 * until it does); without one (vhost-user: the frontend keeps it) the
	 * pairs it enabled are the ones in use. */
	unsigned active = n->pair[0].ctrl && HAS(f, F_MQ) ? 1 : present ? present : 1;
	if ((ret = fdvm_tap_set_active(n->tap, active)))
		return ret;
	atomic_store(&n->active, active);
	n->started = true;
	for (unsigned i = 0; i < n->npairs; i++) {
		struct pair *p = &n->pair[i];
		if (!p->rx && !p->tx && !p->ctrl)
			continue;
		if ((ret = pair_start(p))) {
			stop(n);
			return ret;
		}
	}
	return 0;
}

static void net_free(struct net *n)
{
	if (n->started)
		stop(n);
	for (unsigned i = 0; i < n->npairs; i++) {
		struct pair *p = &n->pair[i];
		if (p->c.rx_packets || p->c.tx_packets || p->c.rx_dropped || p->c.tx_dropped)
			NET_LOG(n, FDVM_LOG_INFO,
				"virtio-net %s: pair %u: received %llu (%llu TSO, %llu dropped), sent %llu (%llu TSO, %llu dropped)",
				n->tap->name, i, (unsigned long long)p->c.rx_packets,
				(unsigned long long)p->c.rx_gso, (unsigned long long)p->c.rx_dropped,
				(unsigned long long)p->c.tx_packets, (unsigned long long)p->c.tx_gso,
				(unsigned long long)p->c.tx_dropped);
		if (p->wake_fd >= 0)
			close(p->wake_fd);
		free(p->pkt);
		free(p->elem);
	}
	fdvm_tap_close(n->tap);
	free(n);
}

static void net_destroy(struct fdvm_virtio_model *m)
{
	net_free(m->opaque);
}

/* A MAC of our own (QEMU's 52:54:00 prefix), the same for a tap name on
 * every run. */
static void default_mac(const char *tap, uint8_t mac[6])
{
	uint32_t h = 2166136261u;
	for (const char *c = tap; *c; c++)
		h = (h ^ (uint8_t)*c) * 16777619u;
	mac[0] = 0x52, mac[1] = 0x54, mac[2] = 0x00;
	mac[3] = (uint8_t)(h >> 16), mac[4] = (uint8_t)(h >> 8), mac[5] = (uint8_t)h;
}

static int model_create(const struct fdvm_virtio_net_config *cfg, const int *fds, bool manual,
			fdvm_log_fn log, void *log_opaque, struct fdvm_virtio_model **out)
{
	unsigned np = cfg->num_pairs ? cfg->num_pairs : 1;
	struct net *n;
	int ret;

	if (np > MAX_PAIRS) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR, "virtio-net %s: %u queue pairs (at most %d)",
			    cfg->tap ? cfg->tap : "", np, MAX_PAIRS);
		return -EINVAL;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->log = log;
	n->log_opaque = log_opaque;
	n->npairs = np;
	n->poll_ns = cfg->poll_us * 1000ull;
	for (unsigned i = 0; i < np; i++)
		n->pair[i].wake_fd = n->pair[i].ep = -1;
	n->manual = manual;
	ret = fds ? fdvm_tap_wrap(cfg->tap, fds, np, log, log_opaque, &n->tap)
		  : fdvm_tap_open(cfg->tap, np, log, log_opaque, &n->tap);
	if (ret)
		goto err;
	for (unsigned i = 0; i < np; i++) {
		struct pair *p = &n->pair[i];
		p->net = n;
		p->index = i;
		p->tap_fd = n->tap->fd[i];
		p->pkt = malloc(HDR_MAX + FRAME_MAX);
		p->elem = malloc(sizeof(*p->elem));
		p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (!p->pkt || !p->elem || p->wake_fd < 0) {
			ret = p->wake_fd < 0 ? fdvm_log_to_errno(log, log_opaque, errno,
								 "virtio-net %s: eventfd", cfg->tap)
					     : -ENOMEM;
			goto err;
		}
	}
	if (cfg->mac_set)
		memcpy(n->config.mac, cfg->mac, 6);
	else
		default_mac(cfg->tap, n->config.mac);
	n->config.status = STATUS_LINK_UP;
	n->config.max_virtqueue_pairs = (uint16_t)np;
	n->config.mtu = (uint16_t)(n->tap->mtu < 65535 ? n->tap->mtu : 65535);
	n->ops = (struct fdvm_virtio_dev_ops){
		.name = "virtio-net",
		.device_id = 1,
		.pci_class = 0x020000,
		.num_queues = 2 * np + 1,
		.queue_max_size = 256,
		.features = 1ull << F_CSUM | 1ull << F_GUEST_CSUM | 1ull << F_MTU | 1ull << F_MAC |
			    1ull << F_GUEST_TSO4 | 1ull << F_GUEST_TSO6 | 1ull << F_HOST_TSO4 |
			    1ull << F_HOST_TSO6 | 1ull << F_MRG_RXBUF | 1ull << F_STATUS |
			    1ull << F_CTRL_VQ | (np > 1 ? 1ull << F_MQ : 0) | FDVM_VIRTIO_VQ_FEATURES,
		.config_size = sizeof(struct net_config),
		.config_read = config_read,
		.start = start,
		.stop = stop,
	};
	n->model = (struct fdvm_virtio_model){ .ops = &n->ops, .opaque = n, .destroy = net_destroy };
	*out = &n->model;
	return 0;
err:
	net_free(n);
	return ret;
}

int fdvm_virtio_net_model_create(const struct fdvm_virtio_net_config *cfg, fdvm_log_fn log,
				 void *log_opaque, struct fdvm_virtio_model **out)
{
	return model_create(cfg, NULL, false, log, log_opaque, out);
}

int fdvm_virtio_net_model_on_fds(const struct fdvm_virtio_net_config *cfg, const int *fds,
				 fdvm_log_fn log, void *log_opaque, struct fdvm_virtio_model **out)
{
	return model_create(cfg, fds, true, log, log_opaque, out);
}

void fdvm_virtio_net_run_once(struct fdvm_virtio_model *m)
{
	struct net *n = m->opaque;
	if (!n->manual || !n->started)
		return;
	for (unsigned i = 0; i < n->npairs; i++) {
		struct pair *p = &n->pair[i];
		if (p->ep < 0)
			continue;
		do_tx(p);
		do_rx(p);
		do_ctrl(p);
	}
}

static void vm_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	fdvm_log(opaque, level, "%s", msg);
}

void fdvm_virtio_net_config_init(struct fdvm_virtio_net_config *cfg)
{
	*cfg = (struct fdvm_virtio_net_config){ .num_pairs = 1, .notify = FDVM_DOORBELL_AUTO,
						.poll_us = FDVM_VIRTIO_POLL_US_DEFAULT };
}

int fdvm_virtio_net_create(struct fdvm_vm *vm, const struct fdvm_virtio_net_config *cfg,
			   struct fdvm_virtio_pci **out)
{
	struct fdvm_virtio_model *m;
	int ret = fdvm_virtio_net_model_create(cfg, vm_log, vm, &m);
	if (ret)
		return ret;
	return fdvm_virtio_pci_add_model(vm, m, cfg->notify, out);
}
