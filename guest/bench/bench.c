/*
 * The benchmark guest. The same file runs under fdvm, QEMU and the bare
 * KVM floor loop; it times each row with the TSC and prints
 *   BENCH <row> <repetition> <operations> <cycles> [<doorbells rung>]
 * for the host to turn into a table. Command line:
 *   reps=R ops=N fops=F iops=M rows=a,b,...
 *                                      (rows by name, see below; ops: exit
 *                                      rows, fops: ioeventfd rows and the
 *                                      ping-pong, iops: interrupt rows)
 *   floor                              (addresses of the floor loop, no PCI;
 *                                      the bench device's rows if it answers)
 *   blk reps=R bops=N                  (virtio-blk: BLK lines)
 *   net reps=R count=N rows=net-rtt,net-tx64,net-tx1500
 *                                      (virtio-net: NET lines, see below)
 * MMIO rows loop at CPL3, where this machine runs guest code natively;
 * port I/O rows must loop at CPL0 (port I/O faults at CPL3 here).
 */
#include "bench_abi.h"
#include "io.h"
#include "pci.h"
#include "rt.h"
#include "virtio.h"
#include "vnet.h"

static uint64_t reps = 5, ops = 2000, fops = 20000, iops = 1000;
static const char *rows = "";

static bool want(const char *row)
{
	size_t n = strlen(row);
	for (const char *p = rows; *p;) {
		const char *e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		if ((size_t)(e - p) == n && !strncmp(p, row, n))
			return true;
		if (*e != ',')
			break;
		p = e + 1;
	}
	return false;
}

struct loop {
	uint64_t addr, n;
	uint8_t data;
	uint64_t cycles;
};

static long mmio_loop(void *arg)
{
	struct loop *l = arg;
	volatile uint8_t *p = (volatile uint8_t *)l->addr;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++)
		*p = l->data;
	l->cycles = rt_rdtsc() - t0;
	return 0;
}

static void pio_loop(struct loop *l)
{
	uint16_t port = (uint16_t)l->addr;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++)
		outb(port, l->data);
	l->cycles = rt_rdtsc() - t0;
}

/* A doorbell row: n writes of data to addr, reps times. */
static void row(const char *name, bool mmio, uint64_t addr, uint8_t data, uint64_t n)
{
	if (!want(name))
		return;
	for (uint64_t r = 0; r < reps; r++) {
		struct loop l = { addr, n, data, 0 };
		if (mmio)
			rt_user_call(mmio_loop, &l);
		else
			pio_loop(&l);
		rt_printf("BENCH %s %lu %lu %lu\n", name, (unsigned long)r, (unsigned long)n,
			  (unsigned long)l.cycles);
	}
}

/*
 * The interrupt rows' ISR, entered straight from the IDT (rt_idt_set_raw):
 * count, EOI, return; nothing else. This machine emulates CPL0 at about
 * 1 us an instruction, so the runtime's general trap path (every register
 * saved, C dispatch) would be most of what a row measures.
 */
volatile uint64_t bench_irqs;
void bench_isr(void);
_Static_assert(FDVM_LAPIC_BASE + 0xb0 == 0xfee000b0ull, "the ISR's EOI address");
__asm__(".text\n"
	".globl bench_isr\n"
	".p2align 4\n"
	"bench_isr:\n"
	"\tpush %rax\n"
	"\tincq bench_irqs(%rip)\n"
	"\txor %eax, %eax\n"
	"\tmovabs %eax, 0xfee000b0\n" /* LAPIC EOI */
	"\tpop %rax\n"
	"\tiretq\n");

static struct bench_shm shm __attribute__((aligned(64)));

struct irq_loop {
	uint64_t addr;	/* the 4-byte write that starts one */
	uint64_t n, cycles;
	uint64_t rung;	/* doorbells rung (poll rows: the backend was not polling) */
	bool poll;	/* the request goes through the shared page */
	bool ack;	/* the answer comes in the shared page, not as an interrupt */
};

/* CPL3, interrupts on: one request, wait for its answer, n times. */
static long irq_loop(void *arg)
{
	struct irq_loop *l = arg;
	uint64_t seq = shm.req;
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < l->n; i++) {
		uint64_t before = bench_irqs;
		if (l->poll) {
			shm.req = ++seq;
			__asm__ volatile("mfence" ::: "memory");
			if (!shm.polling) {
				*(volatile uint32_t *)l->addr = 1;
				l->rung++;
			}
			if (l->ack) {
				while (shm.ack != seq)
					__asm__ volatile("pause");
				continue;
			}
		} else {
			*(volatile uint32_t *)l->addr = 1;
			l->rung++;
		}
		while (bench_irqs == before)
			__asm__ volatile("pause");
	}
	l->cycles = rt_rdtsc() - t0;
	return 0;
}

/* CPL3: waits (1 s at most) until the backend stops polling, so that a
 * row does not start while it still answers the one before. */
static long wait_idle(void *arg)
{
	(void)arg;
	for (uint64_t end = rt_rdtsc() + 3000000000ull; shm.polling && rt_rdtsc() < end;)
		__asm__ volatile("pause");
	return 0;
}

static void irq_row(const char *name, uint64_t addr, unsigned poll, uint64_t n)
{
	if (!want(name))
		return;
	if (poll != BENCH_POLL_OFF) {
		mmio_write64(FDVM_BENCH_MMIO + BENCH_REG_SHM, (uint64_t)&shm);
		mmio_write64(FDVM_BENCH_MMIO + BENCH_REG_POLL, poll);
	}
	for (uint64_t r = 0; r < reps; r++) {
		struct irq_loop l = { .addr = addr, .n = n, .poll = poll != BENCH_POLL_OFF,
				      .ack = poll == BENCH_POLL_SHM };
		rt_user_call(irq_loop, &l);
		rt_printf("BENCH %s %lu %lu %lu %lu\n", name, (unsigned long)r, (unsigned long)n,
			  (unsigned long)l.cycles, (unsigned long)l.rung);
	}
	if (poll != BENCH_POLL_OFF) {
		mmio_write64(FDVM_BENCH_MMIO + BENCH_REG_POLL, BENCH_POLL_OFF);
		rt_user_call(wait_idle, NULL);
	}
}

/*
 * The interrupt rows on the bench device (fdvm, and the floor loop, which
 * answers the same registers): a kick that injects at once, a doorbell to
 * a backend thread and back, the same with the backend polling, and the
 * shared-memory ping-pong with no exit and no interrupt at all.
 */
static void bench_device_rows(void)
{
	const uint64_t b = FDVM_BENCH_MMIO;
	irq_row("irq-irqfd", b + BENCH_KICK_IRQFD, BENCH_POLL_OFF, iops);
	irq_row("irq-signal-msi", b + BENCH_KICK_MSI, BENCH_POLL_OFF, iops);
	irq_row("irq-userspace", b + BENCH_KICK_USER, BENCH_POLL_OFF, iops);
	irq_row("roundtrip-kernel", b + BENCH_DOORBELL_KERNEL, BENCH_POLL_OFF, iops);
	irq_row("roundtrip-userspace", b + BENCH_DOORBELL_USER, BENCH_POLL_OFF, iops);
	irq_row("roundtrip-kernel-poll", b + BENCH_DOORBELL_KERNEL, BENCH_POLL_LINE, iops);
	irq_row("roundtrip-userspace-poll", b + BENCH_DOORBELL_USER, BENCH_POLL_LINE, iops);
	irq_row("pingpong", b + BENCH_DOORBELL_KERNEL, BENCH_POLL_SHM, fops);
}

/* ---- blk: 4 KiB random reads and writes at a queue depth ---- */

#define BLK_MAX_OPS 50000
static struct vdev blk;
static struct vq bq;
static struct {
	uint32_t type, ioprio;
	uint64_t sector;
	uint8_t status;
	uint64_t t0;
} breq[VQ_MAX];
static uint8_t bdata[64][4096] __attribute__((aligned(4096)));
static uint64_t lat[BLK_MAX_OPS];

struct blk_run {
	uint32_t type;
	unsigned depth;
	uint64_t ops, blocks, cycles, errors;
};

static bool blk_submit(unsigned slot, uint32_t type, uint64_t sector)
{
	breq[slot].type = type;
	breq[slot].sector = sector;
	breq[slot].status = 0xff;
	breq[slot].t0 = rt_rdtsc();
	struct vbuf b[3] = { { (uint64_t)&breq[slot], 16, false },
			     { (uint64_t)bdata[slot], 4096, type == 0 },
			     { (uint64_t)&breq[slot].status, 1, true } };
	return vq_add(&bq, b, 3, &breq[slot]);
}

static long blk_loop(void *arg)
{
	struct blk_run *r = arg;
	uint64_t rng = 0x853c49e6748fea9bull, done = 0, started = 0;
	uint64_t t0 = rt_rdtsc();
	for (unsigned s = 0; s < r->depth && started < r->ops; s++, started++)
		blk_submit(s, r->type, (rt_rand(&rng) % r->blocks) * 8);
	vq_kick(&bq);
	while (done < r->ops) {
		void *c = vq_get(&bq, 0);
		if (!c)
			continue;
		unsigned s = (unsigned)((__typeof__(&breq[0]))c - breq);
		lat[done++] = rt_rdtsc() - breq[s].t0;
		r->errors += breq[s].status != 0;
		if (started < r->ops) {
			blk_submit(s, r->type, (rt_rand(&rng) % r->blocks) * 8);
			started++;
			vq_kick(&bq);
		}
	}
	r->cycles = rt_rdtsc() - t0;
	return 0;
}

static void sort(uint64_t *a, uint64_t n)
{
	/* Heapsort: no recursion, no allocation. */
	for (uint64_t i = n / 2; i-- > 0;) {
		for (uint64_t k = i;;) {
			uint64_t c = 2 * k + 1;
			if (c >= n)
				break;
			if (c + 1 < n && a[c + 1] > a[c])
				c++;
			if (a[k] >= a[c])
				break;
			uint64_t t = a[k]; a[k] = a[c]; a[c] = t; k = c;
		}
	}
	for (uint64_t end = n; end-- > 1;) {
		uint64_t t = a[0]; a[0] = a[end]; a[end] = t;
		for (uint64_t k = 0;;) {
			uint64_t c = 2 * k + 1;
			if (c >= end)
				break;
			if (c + 1 < end && a[c + 1] > a[c])
				c++;
			if (a[k] >= a[c])
				break;
			t = a[k]; a[k] = a[c]; a[c] = t; k = c;
		}
	}
}

/* Sorts lat[0..n) and sums it at CPL3, at native speed: on a host that
 * emulates CPL0 (this one) sorting 50000 figures there took seconds. */
struct lat_summary {
	uint64_t n, sum;
};

static long summarize(void *arg)
{
	struct lat_summary *ls = arg;
	sort(lat, ls->n);
	ls->sum = 0;
	for (uint64_t i = 0; i < ls->n; i++)
		ls->sum += lat[i];
	return 0;
}

static int blk_bench(void)
{
	uint64_t bops = rt_cmdline_u64("bops", 5000);
	if (bops > BLK_MAX_OPS)
		bops = BLK_MAX_OPS;
	if (!virtio_find(2, 0, &blk) || !virtio_negotiate(&blk, 1ull << VIRTIO_F_EVENT_IDX |
							       1ull << VIRTIO_F_INDIRECT_DESC) ||
	    !virtio_setup_vq(&blk, &bq, 0, 64, 0xffff)) {
		rt_printf("bench: no usable virtio-blk\n");
		return 1;
	}
	virtio_driver_ok(&blk);
	uint64_t blocks = virtio_cfg64(&blk, 0) / 8;
	static const unsigned depths[] = { 1, 32 };
	for (uint64_t rep = 0; rep < reps; rep++)
		for (unsigned w = 0; w < 2; w++)
			for (unsigned d = 0; d < 2; d++) {
				struct blk_run r = { w ? 1 : 0, depths[d], bops, blocks, 0, 0 };
				rt_user_call(blk_loop, &r);
				struct lat_summary ls = { bops, 0 };
				rt_user_call(summarize, &ls);
				uint64_t sum = ls.sum;
				rt_printf("BLK %s %u %lu %lu %lu %lu %lu %lu\n", w ? "write" : "read",
					  depths[d], (unsigned long)rep, (unsigned long)bops,
					  (unsigned long)r.cycles, (unsigned long)(sum / bops),
					  (unsigned long)lat[bops * 99 / 100], (unsigned long)r.errors);
			}
	rt_printf("BENCH-END\n");
	return 0;
}

/* ---- net: UDP round trips to the host's echo, and tx packet rates ----
 *
 * The guest is 10.77.0.2 on the device's first queue pair, polling (no
 * interrupts); the host is 10.77.0.1, learnt by ARP. Lines for the host:
 *   NET rtt <rep> <ok> <cycles> <mean> <p99> <lost>     (cycles: TSC)
 *   NET-READY tx<size> <rep>     then waits for a "go" datagram to port
 *                                5000 (the host reads the tap's counters)
 *   NET tx<size> <rep> <completed> <cycles> <count>
 * tx64: 64-byte frames (UDP payload 22); tx1500: 1500-byte IP packets
 * (1514-byte frames), to the host's discard port 9. Every wait is bounded.
 */

#define NET_MAX_COUNT BLK_MAX_OPS /* lat[] */
#define NET_ECHO_PORT 7
#define NET_DISCARD_PORT 9
#define NET_GO_PORT 5000
#define NET_MY_PORT 40000
#define NET_TX_BATCH 16

static struct vnet net;
static uint8_t host_mac[6];
static const uint8_t net_my_ip[4] = { 10, 77, 0, 2 }, net_host_ip[4] = { 10, 77, 0, 1 };
static uint8_t net_frame[1514];
static uint64_t net_arps_answered, net_go;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* An ARP request for our address: answered in place. */
static bool net_arp_request(struct vnet_pkt *p)
{
	uint8_t *f = p->frame, *a = f + 14;
	if (p->len < 42 || be16(f + 12) != 0x0806 || be16(a + 6) != 1 || memcmp(a + 24, net_my_ip, 4))
		return false;
	memcpy(a + 18, a + 8, 10); /* target <- sender */
	memcpy(a + 8, net.mac, 6);
	memcpy(a + 14, net_my_ip, 4);
	put16(a + 6, 2);
	memcpy(f, f + 6, 6);
	memcpy(f + 6, net.mac, 6);
	p->len = 60;
	memset(p->hdr, 0, sizeof(*p->hdr));
	return true;
}

/* The UDP payload of an IPv4 datagram from the host to port dport, or NULL. */
static const uint8_t *net_udp_from_host(const struct vnet_pkt *p, uint16_t dport, uint16_t *sport,
					 uint32_t *len)
{
	const uint8_t *f = p->frame, *ip = f + 14;
	if (p->len < 42 || be16(f + 12) != 0x0800 || ip[0] >> 4 != 4 || ip[9] != 17 ||
	    memcmp(ip + 12, net_host_ip, 4) || memcmp(ip + 16, net_my_ip, 4))
		return NULL;
	unsigned ihl = (ip[0] & 15) * 4u;
	const uint8_t *u = ip + ihl;
	if (ihl < 20 || 14 + ihl + 8 > p->len || be16(u + 2) != dport || be16(u + 4) < 8 ||
	    14 + ihl + be16(u + 4) > p->len)
		return NULL;
	*sport = be16(u);
	*len = be16(u + 4) - 8u;
	return u + 8;
}

/*
 * Takes whatever was received: ARP requests for us are answered, a "go"
 * counted, anything else handed back unless want() claims it (then it is
 * the caller's: true). CPL3.
 */
static bool net_poll_rx(bool (*want)(struct vnet_pkt *, void *), void *arg, struct vnet_pkt *out)
{
	struct vnet_pkt p;
	while (vnet_recv(&net, 0, &p)) {
		uint16_t sport;
		uint32_t len;
		if (net_arp_request(&p)) {
			net_arps_answered++;
			if (!vnet_send_pkt(&net, 0, &p))
				continue; /* ring full: the host asks again */
			vnet_flush(&net, 0);
			continue;
		}
		if (net_udp_from_host(&p, NET_GO_PORT, &sport, &len)) {
			net_go++;
			vnet_rx_return(&net, &p);
			continue;
		}
		if (want && want(&p, arg)) {
			*out = p;
			return true;
		}
		vnet_rx_return(&net, &p);
	}
	return false;
}

static uint16_t ip_csum(const uint8_t *h)
{
	uint32_t s = 0;
	for (unsigned i = 0; i < 20; i += 2)
		s += be16(h + i);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

/* A UDP datagram from us to the host in net_frame: frame length len. UDP
 * checksum 0 (none, as IPv4 allows). */
static void net_build_udp(uint32_t len, uint16_t dport)
{
	uint8_t *f = net_frame, *ip = f + 14, *u = ip + 20;
	memcpy(f, host_mac, 6);
	memcpy(f + 6, net.mac, 6);
	put16(f + 12, 0x0800);
	memset(ip, 0, 20);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(len - 14));
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, net_my_ip, 4);
	memcpy(ip + 16, net_host_ip, 4);
	put16(ip + 10, ip_csum(ip));
	put16(u, NET_MY_PORT);
	put16(u + 2, dport);
	put16(u + 4, (uint16_t)(len - 34));
	put16(u + 6, 0);
	for (uint32_t i = 42; i < len; i++)
		f[i] = (uint8_t)i;
}

static bool net_is_arp_reply(struct vnet_pkt *p, void *arg)
{
	const uint8_t *a = p->frame + 14;
	(void)arg;
	return p->len >= 42 && be16(p->frame + 12) == 0x0806 && be16(a + 6) == 2 &&
	       !memcmp(a + 14, net_host_ip, 4) && !memcmp(a + 24, net_my_ip, 4);
}

/* CPL3: asks for the host's MAC every 100 ms, for 10 s at most. */
static long net_arp(void *arg)
{
	(void)arg;
	uint64_t ms = vnet_tsc_per_ms(), end = rt_rdtsc() + 10000 * ms;
	uint8_t *f = net_frame, *a = f + 14;
	while (rt_rdtsc() < end) {
		memset(f, 0, 60);
		memset(f, 0xff, 6);
		memcpy(f + 6, net.mac, 6);
		put16(f + 12, 0x0806);
		put16(a, 1);
		put16(a + 2, 0x0800);
		a[4] = 6;
		a[5] = 4;
		put16(a + 6, 1);
		memcpy(a + 8, net.mac, 6);
		memcpy(a + 14, net_my_ip, 4);
		memcpy(a + 24, net_host_ip, 4);
		vnet_tx_reclaim(&net, 0);
		vnet_send(&net, 0, NULL, f, 60);
		vnet_flush(&net, 0);
		for (uint64_t t = rt_rdtsc() + 100 * ms; rt_rdtsc() < t;) {
			struct vnet_pkt p;
			vnet_tx_reclaim(&net, 0);
			if (net_poll_rx(net_is_arp_reply, NULL, &p)) {
				memcpy(host_mac, p.frame + 14 + 8, 6);
				vnet_rx_return(&net, &p);
				return 0;
			}
		}
	}
	return -1;
}

struct net_rtt {
	uint64_t n, ok, lost, cycles, seq;
};

static bool net_is_echo(struct vnet_pkt *p, void *arg)
{
	const struct net_rtt *r = arg;
	uint16_t sport;
	uint32_t len;
	const uint8_t *d = net_udp_from_host(p, NET_MY_PORT, &sport, &len);
	uint64_t seq;
	if (!d || sport != NET_ECHO_PORT || len < 8)
		return false;
	memcpy(&seq, d, 8);
	return seq == r->seq; /* a late echo of a lost one is dropped */
}

/* CPL3: n round trips, each given up after 50 ms; 30 s in all at most. */
static long net_rtt_loop(void *arg)
{
	struct net_rtt *r = arg;
	uint64_t ms = vnet_tsc_per_ms(), end = rt_rdtsc() + 30000 * ms;
	net_build_udp(64, NET_ECHO_PORT);
	uint64_t t0 = rt_rdtsc();
	for (uint64_t i = 0; i < r->n && rt_rdtsc() < end; i++) {
		r->seq++;
		memcpy(net_frame + 42, &r->seq, 8);
		vnet_tx_reclaim(&net, 0);
		uint64_t s = rt_rdtsc(), give_up = s + 50 * ms;
		if (!vnet_send(&net, 0, NULL, net_frame, 64)) {
			r->lost++;
			continue;
		}
		vnet_flush(&net, 0);
		struct vnet_pkt p;
		bool got = false;
		while (!(got = net_poll_rx(net_is_echo, r, &p)) && rt_rdtsc() < give_up)
			vnet_tx_reclaim(&net, 0);
		if (!got) {
			r->lost++;
			continue;
		}
		lat[r->ok++] = rt_rdtsc() - s;
		vnet_rx_return(&net, &p);
	}
	r->cycles = rt_rdtsc() - t0;
	return 0;
}

struct net_tx {
	uint32_t len;
	uint64_t n, done, cycles;
	bool go;
};

/* CPL3: waits (10 s at most) for the host's "go". */
static long net_wait_go(void *arg)
{
	struct net_tx *t = arg;
	uint64_t before = net_go, end = rt_rdtsc() + 10000 * vnet_tsc_per_ms();
	while (net_go == before && rt_rdtsc() < end) {
		vnet_tx_reclaim(&net, 0);
		net_poll_rx(NULL, NULL, NULL);
	}
	t->go = net_go != before;
	return 0;
}

/*
 * CPL3: n frames of len bytes to the discard port as fast as the ring
 * takes them, notifying every NET_TX_BATCH frames or when it is full;
 * done: frames the device completed (30 s at most), cycles: from the first
 * send to the last completion.
 */
static long net_tx_loop(void *arg)
{
	struct net_tx *t = arg;
	uint64_t end = rt_rdtsc() + 30000 * vnet_tsc_per_ms(), sent = 0;
	unsigned queued = 0;
	net_build_udp(t->len, NET_DISCARD_PORT);
	uint64_t base = vnet_tx_pending(&net, 0);
	uint64_t t0 = rt_rdtsc();
	for (;;) {
		uint64_t pending = vnet_tx_pending(&net, 0);
		t->done = sent + base > pending ? sent + base - pending : 0;
		if (t->done >= t->n || rt_rdtsc() >= end)
			break;
		if (sent < t->n && vnet_send(&net, 0, NULL, net_frame, t->len)) {
			sent++;
			if (++queued < NET_TX_BATCH && sent < t->n)
				continue;
		}
		if (queued) {
			vnet_flush(&net, 0);
			queued = 0;
		}
		vnet_tx_reclaim(&net, 0);
		net_poll_rx(NULL, NULL, NULL);
	}
	t->cycles = rt_rdtsc() - t0;
	return 0;
}

static int net_bench(void)
{
	uint64_t count = rt_cmdline_u64("count", 20000);
	if (count > NET_MAX_COUNT)
		count = NET_MAX_COUNT;
	if (!count)
		count = 1;
	struct vnet_config cfg = {
		.features = 1ull << VIRTIO_NET_F_MAC | 1ull << VIRTIO_NET_F_STATUS |
			    1ull << VIRTIO_NET_F_MRG_RXBUF | 1ull << VIRTIO_F_EVENT_IDX,
		.poll = true,
	};
	if (!vnet_init(&net, 0, &cfg)) {
		rt_printf("bench: no usable virtio-net: %s\n", net.error ? net.error : "?");
		return 1;
	}
	if (rt_user_call(net_arp, NULL)) {
		rt_printf("bench: no ARP reply from 10.77.0.1 in 10 s\n");
		return 1;
	}
	rt_printf("NET-UP mac=%02x:%02x:%02x:%02x:%02x:%02x host=%02x:%02x:%02x:%02x:%02x:%02x\n",
		  net.mac[0], net.mac[1], net.mac[2], net.mac[3], net.mac[4], net.mac[5], host_mac[0],
		  host_mac[1], host_mac[2], host_mac[3], host_mac[4], host_mac[5]);
	/* Warm-up: the host's ARP for us, caches on both sides. */
	struct net_rtt warm = { .n = 20 };
	rt_user_call(net_rtt_loop, &warm);
	static const uint32_t sizes[2] = { 64, 1514 };
	static const char *const names[2] = { "tx64", "tx1500" }, *const rows_[2] = { "net-tx64",
											"net-tx1500" };
	uint64_t seq = warm.seq;
	for (uint64_t rep = 0; rep < reps; rep++) {
		if (want("net-rtt")) {
			struct net_rtt r = { .n = count, .seq = seq };
			rt_user_call(net_rtt_loop, &r);
			seq = r.seq;
			struct lat_summary ls = { r.ok, 0 };
			rt_user_call(summarize, &ls);
			uint64_t sum = ls.sum;
			rt_printf("NET rtt %lu %lu %lu %lu %lu %lu\n", (unsigned long)rep, (unsigned long)r.ok,
				  (unsigned long)r.cycles, (unsigned long)(r.ok ? sum / r.ok : 0),
				  (unsigned long)(r.ok ? lat[r.ok * 99 / 100] : 0), (unsigned long)r.lost);
		}
		for (unsigned s = 0; s < 2; s++) {
			if (!want(rows_[s]))
				continue;
			struct net_tx t = { .len = sizes[s], .n = count };
			rt_printf("NET-READY %s %lu\n", names[s], (unsigned long)rep);
			rt_user_call(net_wait_go, &t);
			if (!t.go)
				rt_printf("bench: no go from the host in 10 s: sending anyway\n");
			rt_user_call(net_tx_loop, &t);
			rt_printf("NET %s %lu %lu %lu %lu\n", names[s], (unsigned long)rep, (unsigned long)t.done,
				  (unsigned long)t.cycles, (unsigned long)count);
		}
	}
	rt_printf("NET-END arp-answered %lu tx-errors %lu rx-errors %lu\n", (unsigned long)net_arps_answered,
		  (unsigned long)net.pair[0].tx_errors, (unsigned long)net.pair[0].rx_errors);
	rt_printf("BENCH-END\n");
	return 0;
}

static void select_test(const struct pci_dev *d, unsigned bar, uint8_t test)
{
	if (d->bar_io[bar])
		outb((uint16_t)d->bar[bar], test);
	else
		mmio_write8(d->bar[bar], test);
}

/* QEMU: its edu device's MSI, raised at once by a write on the vCPU
 * thread (KVM_SIGNAL_MSI from there): the twin of irq-signal-msi. */
static void edu_rows(void)
{
	struct pci_dev d;
	if (!want("irq-signal-msi") || !pci_find(EDU_VENDOR, EDU_DEVICE, &d))
		return;
	if (d.bar_io[0] || !d.bar[0] || !msi_enable(&d, BENCH_VECTOR)) {
		rt_printf("bench: edu without an MMIO BAR0 or MSI: no irq-signal-msi row\n");
		return;
	}
	irq_row("irq-signal-msi", d.bar[0] + EDU_REG_RAISE, BENCH_POLL_OFF, iops);
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	reps = rt_cmdline_u64("reps", reps);
	ops = rt_cmdline_u64("ops", ops);
	fops = rt_cmdline_u64("fops", fops);
	iops = rt_cmdline_u64("iops", iops);
	for (const char *p = rt_cmdline(); *p; p++)
		if ((p == rt_cmdline() || p[-1] == ' ') && !strncmp(p, "rows=", 5))
			rows = p + 5;
	rt_printf("BENCH-START reps=%lu ops=%lu fops=%lu iops=%lu\n", (unsigned long)reps,
		  (unsigned long)ops, (unsigned long)fops, (unsigned long)iops);

	if (rt_cmdline_has("blk"))
		return blk_bench();
	if (rt_cmdline_has("net"))
		return net_bench();
	rt_idt_set_raw(BENCH_VECTOR, bench_isr);
	bool bench_dev = mmio_read32(FDVM_BENCH_MMIO + BENCH_REG_MAGIC) == FDVM_BENCH_MAGIC;
	if (rt_cmdline_has("floor")) {
		row("mmio-exit", true, FDVM_FLOOR_MMIO, 0xfa, ops);
		row("mmio-wildcard", true, FDVM_FLOOR_MMIO + 8, 0xce, fops);
		row("pio-exit", false, FDVM_FLOOR_PIO, 0xfa, ops);
		row("pio-wildcard", false, FDVM_FLOOR_PIO + 8, 0xce, fops);
		if (bench_dev)
			bench_device_rows();
		rt_printf("BENCH-END\n");
		return 0;
	}

	/* pci-testdev: test 0..2 = no eventfd, wildcard, datamatch; the
	 * header says where to write what. */
	struct pci_dev d;
	if (!pci_find(0x1b36, 0x0005, &d)) {
		rt_printf("bench: no pci-testdev\n");
		return 1;
	}
	static const char *const names[2][3] = {
		{ "mmio-exit", "mmio-wildcard", "mmio-datamatch" },
		{ "pio-exit", "pio-wildcard", "pio-datamatch" },
	};
	for (unsigned bar = 0; bar < 2; bar++) {
		for (uint8_t t = 0; t < 3; t++) {
			if (!want(names[bar][t]))
				continue;
			select_test(&d, bar, t);
			uint32_t off, data;
			if (d.bar_io[bar]) {
				off = inl((uint16_t)(d.bar[bar] + 4));
				data = inb((uint16_t)(d.bar[bar] + 8));
			} else {
				off = mmio_read32(d.bar[bar] + 4);
				data = mmio_read8(d.bar[bar] + 8);
			}
			row(names[bar][t], !d.bar_io[bar], d.bar[bar] + off, (uint8_t)data,
			    t ? fops : ops);
		}
	}
	select_test(&d, 0, 0xff);

	if (bench_dev)
		bench_device_rows();
	else
		edu_rows();
	rt_printf("BENCH-END\n");
	return 0;
}
