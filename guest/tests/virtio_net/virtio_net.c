/*
 * virtio-net from the guest: a responder at 10.77.0.2/24 on the device's
 * MAC. It answers ARP requests for its address, ICMP echo requests and UDP
 * datagrams to port 7 (echo), each in place in the received buffer, which
 * then goes out on the transmit queue as it is: addresses and ports
 * swapped, ICMP type and checksum adjusted incrementally. IP fragments are
 * answered one by one (a non-first fragment carries no ports: it is echoed
 * as is), so the host reassembles the reply without the guest reassembling.
 * A partial checksum (NEEDS_CSUM) stays partial in the reply when CSUM was
 * negotiated (swapping addresses and ports leaves the pseudo-header sum
 * alone), and is finished here otherwise.
 *
 * It prints "# net ready ..." once it can receive, serves until a UDP
 * datagram "bye" to port 9 (or seconds=N, default 120), prints counters and
 * its TAP verdicts. Command line: nomrg, nocsum, noevent, noindirect turn
 * features off; mq asks for two queue pairs and serves both; poll uses no
 * interrupts. The packet loop runs at CPL3 (native speed on nested
 * hypervisors); it sleeps at CPL0 when idle.
 */
#include "rt.h"
#include "vnet.h"

#define VEC_BASE 0x70
#define BATCH 64

static struct vnet net;
static const uint8_t my_ip[4] = { 10, 77, 0, 2 };
static struct {
	uint64_t rx, tx, arp, icmp, udp, frags, dropped, csum_partial, csum_sw, gso, send_fail;
	uint64_t rx_pair[VNET_MAX_PAIRS];
	bool bye;
} c;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static void swap(uint8_t *a, uint8_t *b, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint8_t t = a[i];
		a[i] = b[i];
		b[i] = t;
	}
}
static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static bool arp(struct vnet_pkt *p)
{
	uint8_t *f = p->frame, *a = f + 14;
	if (p->len < 42 || be16(a) != 1 || be16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4 ||
	    be16(a + 6) != 1 || memcmp(a + 24, my_ip, 4))
		return false;
	memcpy(a + 18, a + 8, 10); /* target <- sender */
	memcpy(a + 8, net.mac, 6);
	memcpy(a + 14, my_ip, 4);
	put16(a + 6, 2);
	memcpy(f, f + 6, 6);
	memcpy(f + 6, net.mac, 6);
	p->len = 42;
	c.arp++;
	return true;
}

/* Finishes a partial checksum: the field holds the pseudo-header sum. */
static void finish_csum(uint8_t *f, uint32_t len, uint32_t start, uint32_t off, bool udp)
{
	uint32_t s = 0;
	for (uint32_t i = start; i + 1 < len; i += 2)
		s += be16(f + i);
	if ((len - start) & 1)
		s += (uint32_t)f[len - 1] << 8;
	uint16_t v = (uint16_t)~fold(s);
	put16(f + start + off, udp && !v ? 0xffff : v);
}

static bool ipv4(struct vnet_pkt *p)
{
	uint8_t *f = p->frame, *ip = f + 14;
	if (p->len < 34 || ip[0] >> 4 != 4)
		return false;
	unsigned ihl = (ip[0] & 15) * 4u, tot = be16(ip + 2);
	if (ihl < 20 || tot < ihl || 14 + tot > p->len || memcmp(ip + 16, my_ip, 4))
		return false;
	uint16_t frag = be16(ip + 6);
	bool first = !(frag & 0x1fff), more = frag & 0x2000;
	uint8_t *l4 = ip + ihl;
	unsigned l4len = tot - ihl;
	struct virtio_net_hdr *h = p->hdr;
	bool partial = h->flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
	if (h->gso_type != VIRTIO_NET_HDR_GSO_NONE) {
		c.gso++; /* GUEST_TSO is not asked for: never expected */
		return false;
	}
	if (ip[9] == 1) {
		if (first) {
			if (l4len < 8 || l4[0] != 8 || l4[1] != 0)
				return false;
			l4[0] = 0;
			/* RFC 1624: HC' = ~(~HC + ~m + m'), m = 0x0800, m' = 0. A
			 * partial checksum is summed over the new type anyway. */
			if (!partial)
				put16(l4 + 2, (uint16_t)~fold((uint16_t)~be16(l4 + 2) + (uint16_t)~0x0800u));
			c.icmp++;
		}
	} else if (ip[9] == 17) {
		if (first) {
			if (l4len < 8)
				return false;
			uint16_t dport = be16(l4 + 2);
			if (dport == 9 && !more && l4len >= 11 && !memcmp(l4 + 8, "bye", 3))
				c.bye = true;
			if (dport != 7)
				return false;
			swap(l4, l4 + 2, 2);
			c.udp++;
		}
	} else {
		return false;
	}
	if (!first)
		c.frags++;
	swap(ip + 12, ip + 16, 4); /* the header checksum does not change */
	memcpy(f, f + 6, 6);
	memcpy(f + 6, net.mac, 6);
	p->len = 14 + tot; /* without the Ethernet padding */
	if (partial) {
		uint32_t start = h->csum_start, off = h->csum_offset;
		if (start < 34 || start + off + 2 > p->len)
			return false;
		if (net.features >> VIRTIO_NET_F_CSUM & 1) {
			c.csum_partial++;
		} else {
			finish_csum(f, p->len, start, off, ip[9] == 17);
			h->flags = 0;
			c.csum_sw++;
		}
	} else {
		h->flags = 0;
	}
	h->gso_type = 0;
	h->gso_size = h->hdr_len = h->num_buffers = 0;
	return true;
}

static bool handle(struct vnet_pkt *p)
{
	if (p->len < 14)
		return false;
	uint16_t type = be16(p->frame + 12);
	if (type == 0x0806)
		return arp(p);
	if (type == 0x0800)
		return ipv4(p);
	return false;
}

struct serve_arg {
	uint64_t deadline;
	unsigned pending_at_end;
};

/* CPL3, interrupts off: serve until "bye" or the deadline. */
static long serve(void *arg)
{
	struct serve_arg *s = arg;
	uint64_t half_s = 500 * vnet_tsc_per_ms();
	rt_irq_disable();
	while (!c.bye) {
		uint64_t now = rt_rdtsc();
		if (now >= s->deadline)
			break;
		bool busy = false;
		for (unsigned i = 0; i < net.pairs; i++) {
			vnet_tx_reclaim(&net, i);
			struct vnet_pkt p;
			for (unsigned k = 0; k < BATCH && vnet_recv(&net, i, &p); k++) {
				busy = true;
				c.rx++;
				c.rx_pair[i]++;
				if (!handle(&p)) {
					c.dropped++;
					vnet_rx_return(&net, &p);
				} else if (vnet_send_pkt(&net, i, &p)) {
					c.tx++;
				} else {
					c.send_fail++;
				}
			}
			vnet_flush(&net, i);
		}
		if (!busy)
			vnet_wait(&net, s->deadline - now < half_s ? s->deadline : now + half_s);
	}
	/* Let the last replies go out. */
	uint64_t end = rt_rdtsc() + 2000 * vnet_tsc_per_ms();
	unsigned pending;
	do {
		pending = 0;
		for (unsigned i = 0; i < net.pairs; i++) {
			vnet_tx_reclaim(&net, i);
			vnet_flush(&net, i);
			pending += vnet_tx_pending(&net, i);
		}
	} while (pending && rt_rdtsc() < end);
	s->pending_at_end = pending;
	return 0;
}

static unsigned seconds_arg(const char *cmdline)
{
	for (const char *p = cmdline; *p; p++) {
		if ((p == cmdline || p[-1] == ' ') && !strncmp(p, "seconds=", 8)) {
			unsigned v = 0;
			for (p += 8; *p >= '0' && *p <= '9'; p++)
				v = v * 10 + (unsigned)(*p - '0');
			return v ? v : 120;
		}
	}
	return 120;
}

static bool has(uint64_t f, unsigned bit) { return f >> bit & 1; }

int guest_main(const char *cmdline)
{
	bool mq = rt_cmdline_has("mq");
	rt_tap_plan(mq ? 9 : 8);
	struct vnet_config cfg = {
		.features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MTU |
			    1ull << VIRTIO_NET_F_MRG_RXBUF | 1ull << VIRTIO_NET_F_CSUM |
			    1ull << VIRTIO_NET_F_GUEST_CSUM | 1ull << VIRTIO_NET_F_CTRL_VQ |
			    1ull << VIRTIO_NET_F_MQ | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_F_INDIRECT_DESC,
		.pairs = mq ? 2 : 1,
		.vector_base = VEC_BASE,
		.poll = rt_cmdline_has("poll"),
	};
	if (rt_cmdline_has("nomrg"))
		cfg.features &= ~(1ull << VIRTIO_NET_F_MRG_RXBUF);
	if (rt_cmdline_has("nocsum"))
		cfg.features &= ~(1ull << VIRTIO_NET_F_CSUM | 1ull << VIRTIO_NET_F_GUEST_CSUM);
	if (rt_cmdline_has("noevent"))
		cfg.features &= ~(1ull << VIRTIO_F_EVENT_IDX);
	if (rt_cmdline_has("noindirect"))
		cfg.features &= ~(1ull << VIRTIO_F_INDIRECT_DESC);
	if (rt_cmdline_has("smallbuf"))
		cfg.mrg_buf_size = 512; /* a full-size frame spans several buffers */

	struct vdev probe;
	if (!virtio_find(1, 0, &probe))
		rt_needs("a virtio-net device", "fdvm run --net tap=NAME GUEST.elf (as root), or "
			 "--vhost-user net,socket=PATH with fdvm serve net");
	bool up = vnet_init(&net, 0, &cfg);
	uint64_t f = net.features;
	rt_tap_ok(up, "virtio-net up: offered 0x%lx, negotiated 0x%lx (mrg %d csum %d guest-csum %d ctrl %d mq %d "
		      "event-idx %d indirect %d)%s%s",
		  (unsigned long)net.offered, (unsigned long)f, has(f, VIRTIO_NET_F_MRG_RXBUF),
		  has(f, VIRTIO_NET_F_CSUM), has(f, VIRTIO_NET_F_GUEST_CSUM), has(f, VIRTIO_NET_F_CTRL_VQ),
		  has(f, VIRTIO_NET_F_MQ), has(f, VIRTIO_F_EVENT_IDX), has(f, VIRTIO_F_INDIRECT_DESC),
		  up ? "" : ": ", up ? "" : net.error);
	if (!up)
		return rt_tap_done();
	if (mq)
		rt_tap_ok(net.pairs == 2 && net.pairs_ack == VIRTIO_NET_OK,
			  "two queue pairs (device has %u, VQ_PAIRS_SET ack %d)", net.max_pairs, net.pairs_ack);
	else
		rt_tap_ok(net.pairs == 1, "one queue pair in use (device has %u)", net.max_pairs);
	const uint8_t *m = net.mac;
	rt_printf("# net ready mac=%02x:%02x:%02x:%02x:%02x:%02x ip=10.77.0.2 mtu=%u pairs=%u rxbuf=%u link=%u "
		  "irq=%d msix=%u tsc/ms=%lu\n",
		  m[0], m[1], m[2], m[3], m[4], m[5], net.mtu, net.pairs, net.rx_buf_size,
		  vnet_link_status(&net), net.use_irq, net.msix_entries, (unsigned long)vnet_tsc_per_ms());

	unsigned secs = seconds_arg(cmdline);
	struct serve_arg sa = { rt_rdtsc() + secs * 1000ull * vnet_tsc_per_ms(), 0 };
	rt_user_call(serve, &sa);

	uint64_t rx_err = 0, tx_err = 0, drops = 0;
	for (unsigned i = 0; i < net.pairs; i++) {
		rx_err += net.pair[i].rx_errors;
		tx_err += net.pair[i].tx_errors;
		drops += net.pair[i].tx_drops;
	}
	rt_printf("# counters: rx %lu tx %lu arp %lu icmp %lu udp %lu fragments %lu dropped %lu csum-partial %lu "
		  "csum-sw %lu gso %lu rx-pair0 %lu rx-pair1 %lu irqs %lu timer %lu tx-drops %lu\n",
		  (unsigned long)c.rx, (unsigned long)c.tx, (unsigned long)c.arp, (unsigned long)c.icmp,
		  (unsigned long)c.udp, (unsigned long)c.frags, (unsigned long)c.dropped,
		  (unsigned long)c.csum_partial, (unsigned long)c.csum_sw, (unsigned long)c.gso,
		  (unsigned long)c.rx_pair[0], (unsigned long)c.rx_pair[1], (unsigned long)net.irqs,
		  (unsigned long)net.timer_irqs, (unsigned long)drops);
	rt_tap_ok(c.bye, "\"bye\" to port 9 arrived within %u s", secs);
	rt_tap_ok(c.arp > 0, "answered %lu ARP requests", (unsigned long)c.arp);
	rt_tap_ok(c.icmp > 0, "answered %lu ICMP echo requests", (unsigned long)c.icmp);
	rt_tap_ok(c.udp > 0, "echoed %lu UDP datagrams (%lu more fragments)", (unsigned long)c.udp,
		  (unsigned long)c.frags);
	if (mq)
		rt_tap_ok(c.rx_pair[0] > 0 && c.rx_pair[1] > 0, "both pairs received (%lu, %lu packets)",
			  (unsigned long)c.rx_pair[0], (unsigned long)c.rx_pair[1]);
	rt_tap_ok(!rx_err && !tx_err && !c.gso && !c.send_fail && !sa.pending_at_end,
		  "no device error: %lu bad rx completions, %lu bad tx completions, %lu GSO packets, "
		  "%lu failed sends, %u sends not completed",
		  (unsigned long)rx_err, (unsigned long)tx_err, (unsigned long)c.gso, (unsigned long)c.send_fail,
		  sa.pending_at_end);
	uint8_t st = vnet_device_status(&net);
	rt_tap_ok((st & VIRTIO_STATUS_DRIVER_OK) && !(st & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED)),
		  "device status 0x%x: DRIVER_OK, no NEEDS_RESET", st);
	return rt_tap_done();
}
