/*
 * A hostile driver against fdvm's virtio-net: transmit chains shorter than
 * the 12-byte header, headers whose offload fields lie (GSO TCPV4 with
 * gso_size 0 on a frame larger than the MTU; NEEDS_CSUM with csum_start or
 * csum_start + csum_offset past the end of the frame), control commands
 * with a bad class, a bad command, a payload too short or too long, a pair
 * count of 0; and last, a receive buffer outside guest RAM. After each, a
 * normal frame must still go out (its transmission completes) and, before
 * the receive case, come back in: the guest ARPs and pings the host at
 * 10.77.0.1 (the tap's address) as 10.77.0.2. After the bad receive buffer
 * the device may set DEVICE_NEEDS_RESET; after a reset it must work again.
 *
 * Every wait is bounded: on a device that answers otherwise (QEMU's marks
 * itself broken on a bad buffer) tests fail, nothing hangs. Runs at CPL0.
 */
#include "rt.h"
#include "vnet.h"

#define VEC_BASE 0x70
#define BAD_ADDR 0x10000000000ull /* 1 TiB: no guest has RAM there */

static struct vnet net;
static struct vnet_config cfg;
static const uint8_t my_ip[4] = { 10, 77, 0, 2 }, host_ip[4] = { 10, 77, 0, 1 };
static uint8_t host_mac[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static uint16_t seq;
static struct vnet_buf junk[4];
static uint8_t junk_mem[4][VNET_TX_SLOT_SIZE] __attribute__((aligned(64)));
static uint8_t big[4096] __attribute__((aligned(64)));
static uint8_t frame[3100];

static uint64_t ms(unsigned n) { return n * vnet_tsc_per_ms(); }
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static uint16_t csum(const uint8_t *p, unsigned n)
{
	uint32_t s = 0;
	for (unsigned i = 0; i + 1 < n; i += 2)
		s += be16(p + i);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void eth(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, net.mac, 6);
	put16(f + 12, type);
}

static unsigned arp_request(uint8_t *f)
{
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t head[8] = { 0, 1, 8, 0, 6, 4, 0, 1 };
	eth(f, bcast, 0x0806);
	memcpy(f + 14, head, 8);
	memcpy(f + 22, net.mac, 6);
	memcpy(f + 28, my_ip, 4);
	memset(f + 32, 0, 6);
	memcpy(f + 38, host_ip, 4);
	return 42;
}

/* An IPv4 header to the host with a payload of n bytes after it. */
static void ipv4(uint8_t *ip, uint8_t proto, unsigned n)
{
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(20 + n));
	put16(ip + 4, seq);
	ip[8] = 64;
	ip[9] = proto;
	memcpy(ip + 12, my_ip, 4);
	memcpy(ip + 16, host_ip, 4);
	put16(ip + 10, csum(ip, 20));
}

static unsigned echo_request(uint8_t *f, uint16_t s)
{
	eth(f, host_mac, 0x0800);
	ipv4(f + 14, 1, 40);
	uint8_t *ic = f + 34;
	memset(ic, 0, 40);
	ic[0] = 8;
	put16(ic + 4, 0x4e54);
	put16(ic + 6, s);
	for (unsigned i = 8; i < 40; i++)
		ic[i] = (uint8_t)i;
	put16(ic + 2, csum(ic, 40));
	return 74;
}

/* A UDP datagram to the host's discard port, n bytes of payload. */
static unsigned udp(uint8_t *f, unsigned n)
{
	eth(f, host_mac, 0x0800);
	ipv4(f + 14, 17, 8 + n);
	uint8_t *u = f + 34;
	put16(u, 40000);
	put16(u + 2, 9);
	put16(u + 4, (uint16_t)(8 + n));
	put16(u + 6, 0);
	memset(u + 8, 0x5a, n);
	return 42 + n;
}

/* 0: something else; 1: the host's ARP reply; 2: its echo reply to seq s.
 * An ARP request for our address is answered on the way. */
static int look(struct vnet_pkt *p, uint16_t s)
{
	uint8_t *f = p->frame;
	if (p->len >= 42 && be16(f + 12) == 0x0806 && be16(f + 20) == 2 && !memcmp(f + 28, host_ip, 4)) {
		memcpy(host_mac, f + 22, 6);
		return 1;
	}
	if (p->len >= 42 && be16(f + 12) == 0x0806 && be16(f + 20) == 1 && !memcmp(f + 38, my_ip, 4)) {
		memcpy(f + 32, f + 22, 10);
		memcpy(f + 22, net.mac, 6);
		memcpy(f + 28, my_ip, 4);
		put16(f + 20, 2);
		memcpy(f, f + 6, 6);
		memcpy(f + 6, net.mac, 6);
		p->len = 42;
		p->hdr->flags = 0;
		p->hdr->num_buffers = 0;
		vnet_send_pkt(&net, 0, p);
		return -1;
	}
	if (p->len >= 42 && be16(f + 12) == 0x0800 && f[23] == 1 && !memcmp(f + 26, host_ip, 4)) {
		uint8_t *ic = f + 14 + (f[14] & 15) * 4;
		if (ic + 8 <= f + p->len && ic[0] == 0 && be16(ic + 4) == 0x4e54 && be16(ic + 6) == s)
			return 2;
	}
	return 0;
}

/* Takes what came in (answering ARP), true once `want` arrived. */
static bool drain(int want, uint16_t s)
{
	bool got = false;
	struct vnet_pkt p;
	vnet_tx_reclaim(&net, 0);
	while (vnet_recv(&net, 0, &p)) {
		int k = look(&p, s);
		if (k >= 0)
			vnet_rx_return(&net, &p);
		got |= want && k == want;
	}
	vnet_flush(&net, 0);
	return got;
}

/* Waits (bounded) until nothing is left in flight on tx. */
static bool tx_settled(unsigned wait_ms)
{
	uint64_t end = rt_rdtsc() + ms(wait_ms);
	do {
		drain(0, 0);
		if (!vnet_tx_pending(&net, 0))
			return true;
		vnet_wait(&net, rt_rdtsc() + ms(10) < end ? rt_rdtsc() + ms(10) : end);
	} while (rt_rdtsc() < end);
	return !vnet_tx_pending(&net, 0);
}

/* A normal frame goes out: its transmission completes. */
static bool tx_works(void)
{
	unsigned len = arp_request(frame);
	return vnet_send(&net, 0, 0, frame, len) && (vnet_flush(&net, 0), tx_settled(2000));
}

/* A request to the host and its answer: ARP, or ICMP echo. */
static bool roundtrip(bool icmp)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		uint16_t s = ++seq;
		unsigned len = icmp ? echo_request(frame, s) : arp_request(frame);
		if (!vnet_send(&net, 0, 0, frame, len))
			tx_settled(100);
		vnet_flush(&net, 0);
		uint64_t end = rt_rdtsc() + ms(1000);
		while (rt_rdtsc() < end) {
			if (drain(icmp ? 2 : 1, s))
				return true;
			vnet_wait(&net, rt_rdtsc() + ms(50) < end ? rt_rdtsc() + ms(50) : end);
		}
	}
	return false;
}

static bool healthy(void)
{
	return !(vnet_device_status(&net) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED));
}

/* Takes the host's answer to an ARP request and keeps it: with one
 * receive buffer posted, the ring is then empty. */
static bool hold(struct vnet_pkt *held)
{
	unsigned l = arp_request(frame);
	vnet_send(&net, 0, 0, frame, l);
	vnet_flush(&net, 0);
	for (uint64_t end = rt_rdtsc() + ms(2000); rt_rdtsc() < end;) {
		vnet_tx_reclaim(&net, 0);
		if (vnet_recv(&net, 0, held))
			return true;
		vnet_wait(&net, rt_rdtsc() + ms(50));
	}
	return false;
}

/* After a hostile request: tx and rx still work, no reset needed. */
static void still_works(const char *what, int completed)
{
	bool tx = tx_works(), rx = roundtrip(false);
	uint8_t st = vnet_device_status(&net);
	rt_tap_ok(tx && rx && healthy(), "after %s: a frame still goes out (%s) and one comes in (%s), status 0x%x%s",
		  what, tx ? "yes" : "no", rx ? "yes" : "no", st,
		  completed < 0 ? "" : completed ? "; the bad request was completed" : "; the bad request never completed");
}

/* A transmit chain of our own making; true if the device completed it. */
static int raw_tx(unsigned j, const struct vbuf *v, unsigned k)
{
	struct vnet_pair *pr = &net.pair[0];
	/* A spare 2 KiB tx slot: once completed it joins the free ones. */
	junk[j] = (struct vnet_buf){ .addr = junk_mem[j], .size = VNET_TX_SLOT_SIZE, .pair = 0, .tx = true };
	if (!vq_add(&pr->tx, v, k, &junk[j]))
		return 0;
	junk[j].posted = true;
	pr->tx_inflight++;
	vq_kick(&pr->tx);
	return tx_settled(1000);
}

static bool bring_up(unsigned rx_bufs)
{
	virtio_pool_reset();
	cfg.rx_bufs = rx_bufs;
	struct vdev probe;
	if (!virtio_find(1, 0, &probe))
		rt_needs("a virtio-net device", "fdvm run --net tap=NAME GUEST.elf (as root), or "
			 "--vhost-user net,socket=PATH with fdvm serve net");
	return vnet_init(&net, 0, &cfg);
}

static void ctrl_case(const char *what, uint8_t cls, uint8_t cmd, const void *data, uint32_t len)
{
	if (!net.has_ctrl) {
		rt_tap_ok(true, "control: %s # SKIP no control queue", what);
		return;
	}
	int ack = vnet_ctrl(&net, cls, cmd, data, len, 2000);
	rt_tap_ok(ack == VIRTIO_NET_ERR, "control: %s: ack %d (VIRTIO_NET_ERR expected)", what, ack);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	rt_tap_plan(21);
	cfg = (struct vnet_config){
		.features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS | 1ull << VIRTIO_NET_F_MTU |
			    1ull << VIRTIO_NET_F_MRG_RXBUF | 1ull << VIRTIO_NET_F_CSUM |
			    1ull << VIRTIO_NET_F_GUEST_CSUM | 1ull << VIRTIO_NET_F_HOST_TSO4 |
			    1ull << VIRTIO_NET_F_HOST_TSO6 | 1ull << VIRTIO_NET_F_CTRL_VQ | 1ull << VIRTIO_NET_F_MQ |
			    1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_F_INDIRECT_DESC,
		.pairs = 1,
		.vector_base = VEC_BASE,
	};
	bool up = bring_up(0);
	rt_tap_ok(up, "virtio-net up: negotiated 0x%lx of 0x%lx%s%s", (unsigned long)net.features,
		  (unsigned long)net.offered, up ? "" : ": ", up ? "" : net.error);
	if (!up)
		return rt_tap_done();
	rt_printf("# net ready mac=%02x:%02x:%02x:%02x:%02x:%02x ip=10.77.0.2 mtu=%u max-pairs=%u ctrl=%d\n",
		  net.mac[0], net.mac[1], net.mac[2], net.mac[3], net.mac[4], net.mac[5], net.mtu, net.max_pairs,
		  net.has_ctrl);
	bool arp_ok = roundtrip(false);
	rt_tap_ok(arp_ok, "ARP for the host: answered (host MAC %02x:%02x:%02x:%02x:%02x:%02x)",
		  host_mac[0], host_mac[1], host_mac[2], host_mac[3], host_mac[4], host_mac[5]);
	rt_tap_ok(roundtrip(true), "ping the host: answered");

	/* Transmit chains shorter than the header. */
	struct vbuf v[2] = { { (uint64_t)junk_mem[0], 4, false } };
	memset(junk_mem, 0, sizeof(junk_mem));
	int done = raw_tx(0, v, 1);
	still_works("a 4-byte tx chain", done);
	v[0] = (struct vbuf){ (uint64_t)junk_mem[1], 6, false };
	v[1] = (struct vbuf){ (uint64_t)junk_mem[1] + 6, 5, false };
	done = raw_tx(1, v, 2);
	still_works("an 11-byte tx chain in two descriptors", done);

	/* GSO TCPV4 with gso_size 0 on a 3000-byte frame. */
	unsigned len = udp(frame, 3000 - 42);
	frame[23] = 6; /* TCP: port 40000 -> 9, the rest is payload */
	put16(frame + 24, 0);
	put16(frame + 24, csum(frame + 14, 20));
	struct virtio_net_hdr h = { VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 54, 0, 34, 16, 0 };
	bool sent = vnet_send(&net, 0, &h, frame, len);
	vnet_flush(&net, 0);
	still_works(sent ? "GSO TCPV4 with gso_size 0 (3000 bytes)" : "GSO TCPV4 (not even queued)", -1);

	/* NEEDS_CSUM pointing past the end. */
	static const struct {
		const char *what;
		uint16_t start, off;
	} lies[] = {
		{ "NEEDS_CSUM with csum_start past the end", 1000, 6 },
		{ "NEEDS_CSUM with csum_start + csum_offset past the end", 34, 200 },
		{ "NEEDS_CSUM with csum_start and csum_offset 0xffff", 0xffff, 0xffff },
	};
	for (unsigned i = 0; i < sizeof(lies) / sizeof(lies[0]); i++) {
		len = udp(frame, 18);
		h = (struct virtio_net_hdr){ VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, lies[i].start, lies[i].off, 0 };
		vnet_send(&net, 0, &h, frame, len);
		vnet_flush(&net, 0);
		still_works(lies[i].what, -1);
	}

	/* The control queue. */
	uint8_t one = 1;
	uint16_t pairs = 1, zero = 0;
	memset(big, 0, sizeof(big));
	big[0] = 1;
	ctrl_case("class 0x77", 0x77, 0, &one, 1);
	ctrl_case("MQ command 0x55", VIRTIO_NET_CTRL_MQ, 0x55, &pairs, 2);
	ctrl_case("VQ_PAIRS_SET with 1 byte", VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &one, 1);
	ctrl_case("VQ_PAIRS_SET with 4096 bytes", VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, big,
		  sizeof(big));
	ctrl_case("VQ_PAIRS_SET with no payload", VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0, 0);
	ctrl_case("VQ_PAIRS_SET 0", VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &zero, 2);
	if (net.features >> VIRTIO_NET_F_MQ & 1) {
		int ack = vnet_ctrl(&net, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &pairs, 2, 2000);
		bool rt = roundtrip(false);
		rt_tap_ok(ack == VIRTIO_NET_OK && rt, "then a good VQ_PAIRS_SET 1: ack %d; traffic flows: %s", ack,
			  rt ? "yes" : "no");
	} else {
		rt_tap_ok(roundtrip(false), "traffic flows after the control commands (no MQ: no good one to send)");
	}

	/* Last: a receive buffer outside guest RAM, the only one the device
	 * has. Up again with a single buffer of our own first. */
	vnet_reset(&net);
	up = bring_up(1) && roundtrip(false);
	rt_tap_ok(up, "reset, up again with one rx buffer: ARP answered");
	struct vnet_pkt held = { 0 };
	bool holding = up && hold(&held);
	/* No receive buffer at all: transmit goes on, and the host's answer
	 * waits in the device for one instead of being lost. */
	bool went = false, answered = false;
	if (holding) {
		uint16_t s = ++seq;
		unsigned l = echo_request(frame, s);
		went = vnet_send(&net, 0, 0, frame, l) && (vnet_flush(&net, 0), tx_settled(2000));
		for (uint64_t end = rt_rdtsc() + ms(300); rt_rdtsc() < end;)
			vnet_wait(&net, end); /* the answer arrives meanwhile */
		vnet_rx_return(&net, &held); /* one buffer, and a kick */
		vnet_flush(&net, 0);
		for (uint64_t end = rt_rdtsc() + ms(2000); !answered && rt_rdtsc() < end;) {
			answered = drain(2, s);
			if (!answered)
				vnet_wait(&net, rt_rdtsc() + ms(50));
		}
		holding = hold(&held); /* the ring empty again, for the next case */
	}
	rt_tap_ok(went && answered,
		  "no receive buffers: a frame still goes out (%s), the host's answer waits and comes in once one is posted (%s)",
		  went ? "yes" : "no", answered ? "yes" : "no");
	static struct vnet_buf bad;
	struct vbuf bv = { BAD_ADDR, 2048, true };
	bool posted = holding && vq_add(&net.pair[0].rx, &bv, 1, &bad);
	if (posted) {
		vq_kick(&net.pair[0].rx);
		unsigned l = arp_request(frame); /* the answer goes to the bad buffer */
		vnet_send(&net, 0, 0, frame, l);
		vnet_flush(&net, 0);
		for (uint64_t end = rt_rdtsc() + ms(500); rt_rdtsc() < end;)
			vnet_wait(&net, end);
		drain(0, 0);
	}
	rt_printf("# bad rx buffer: posted %d, rx used index %u (driver at %u), rx errors %lu\n", posted,
		  ((volatile uint16_t *)net.pair[0].rx.used)[1], net.pair[0].rx.last_used,
		  (unsigned long)net.pair[0].rx_errors);
	bool tx = posted && tx_works();
	uint8_t st = vnet_device_status(&net);
	rt_tap_ok(tx, "an rx buffer at 0x%lx (outside RAM)%s: a frame still goes out; status 0x%x%s",
		  (unsigned long)BAD_ADDR, posted ? "" : " could not even be posted", st,
		  st & VIRTIO_STATUS_NEEDS_RESET ? " (NEEDS_RESET)" : "");
	if (holding)
		vnet_rx_return(&net, &held);
	vnet_reset(&net);
	up = bring_up(0);
	bool rt = up && roundtrip(false) && roundtrip(true);
	rt_tap_ok(rt, "after a reset the device works again (ARP and ping answered)");
	st = vnet_device_status(&net);
	rt_tap_ok((st & VIRTIO_STATUS_DRIVER_OK) && healthy(), "device status 0x%x at the end", st);
	return rt_tap_done();
}
