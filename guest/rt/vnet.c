/* The guest's virtio-net driver (see vnet.h). */
#include "vnet.h"
#include "io.h"

#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
#define LVT_MASKED (1u << 16)
#define TIMER_VECTOR_OFF 15
#define SLEEP_MAX_MS 20
#define GATHER_WAIT_MS 50
#define TX_ROOM_WAIT_MS 100

#define ARENA_SIZE (8u << 20)
static uint8_t arena[ARENA_SIZE] __attribute__((aligned(4096)));
static struct vnet_buf rx_bufs[VNET_MAX_PAIRS][VQ_MAX];
static struct vnet_buf tx_slots[VNET_MAX_PAIRS][VNET_TX_SLOTS];
static struct {
	uint8_t cls, cmd;
} ctrl_hdr __attribute__((aligned(16)));
static volatile uint8_t ctrl_ack;
static uint64_t tsc_ms;

uint64_t vnet_tsc_per_ms(void) { return tsc_ms ? tsc_ms : 2500000; }

/* One-shot, divide by 1, masked: count 10 ms of KVM's 1 GHz APIC bus
 * against the TSC. CPL0. */
static void calibrate(void)
{
	if (tsc_ms)
		return;
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_DIV, 0xb);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_LVT_TIMER, LVT_MASKED);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_INIT, 0xffffffffu);
	uint32_t c0 = mmio_read32(FDVM_LAPIC_BASE + LAPIC_TIMER_CUR);
	uint64_t t0 = rt_rdtsc(), t1 = t0;
	uint32_t c1 = c0;
	while (c0 - c1 < 10000000u && t1 - t0 < 50000000000ull) {
		c1 = mmio_read32(FDVM_LAPIC_BASE + LAPIC_TIMER_CUR);
		t1 = rt_rdtsc();
	}
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_INIT, 0);
	uint64_t v = c0 - c1 >= 10000000u ? (t1 - t0) * 1000000ull / (c0 - c1) : 0;
	/* Outside 100 MHz..20 GHz the timer is not what we assumed. */
	tsc_ms = v >= 100000 && v <= 20000000 ? v : 2500000;
}

static void on_irq(struct rt_frame *f, void *opaque)
{
	(void)f;
	((struct vnet *)opaque)->irqs++;
}

static void on_timer(struct rt_frame *f, void *opaque)
{
	(void)f;
	((struct vnet *)opaque)->timer_irqs++;
}

static uint16_t cfg16(struct vnet *n, unsigned off) { return mmio_read16(n->dev.device + off); }

static uint64_t read_offered(struct vdev *d)
{
	mmio_write32(d->common + 0x00, 0);
	uint64_t f = mmio_read32(d->common + 0x04);
	mmio_write32(d->common + 0x00, 1);
	return f | (uint64_t)mmio_read32(d->common + 0x04) << 32;
}

/* What may be asked for: wanted & offered, minus what lacks its
 * prerequisite (virtio 1.x 5.1.3.1). */
static uint64_t consistent(uint64_t f)
{
	const uint64_t guest_gso = 1ull << VIRTIO_NET_F_GUEST_TSO4 | 1ull << VIRTIO_NET_F_GUEST_TSO6 |
				   1ull << VIRTIO_NET_F_GUEST_UFO;
	const uint64_t host_gso = 1ull << VIRTIO_NET_F_HOST_TSO4 | 1ull << VIRTIO_NET_F_HOST_TSO6;
	if (!(f >> VIRTIO_NET_F_GUEST_CSUM & 1))
		f &= ~guest_gso;
	if (!(f >> VIRTIO_NET_F_CSUM & 1))
		f &= ~host_gso;
	if (!(f >> VIRTIO_NET_F_CTRL_VQ & 1))
		f &= ~(1ull << VIRTIO_NET_F_MQ);
	return f;
}

static void rx_post(struct vnet *n, struct vnet_buf *b)
{
	struct vnet_pair *pr = &n->pair[b->pair];
	struct vbuf v = { (uint64_t)b->addr, b->size, true };
	b->next = 0;
	if (!vq_add(&pr->rx, &v, 1, b)) {
		/* Full ring (a caller posted its own buffers): later. */
		b->next = pr->rx_spare;
		pr->rx_spare = b;
		return;
	}
	b->posted = true;
	pr->rx_added = true;
}

static void *arena_take(uint32_t *at, uint32_t size, uint32_t align)
{
	uint32_t a = (*at + align - 1) & ~(align - 1);
	if (a + size > ARENA_SIZE || a + size < a)
		return 0;
	*at = a + size;
	return arena + a;
}

/* Buffers for one pair out of its share of the arena. */
static bool carve(struct vnet *n, unsigned i, uint32_t *at, uint32_t end, unsigned want_rx)
{
	struct vnet_pair *pr = &n->pair[i];
	pr->rxb = rx_bufs[i];
	pr->txb = tx_slots[i];
	pr->gather = arena_take(at, VNET_HDR_LEN + VNET_MAX_FRAME, 64);
	if (!pr->gather)
		return false;
	for (unsigned k = 0; k < VNET_TX_SLOTS; k++) {
		struct vnet_buf *b = &pr->txb[k];
		*b = (struct vnet_buf){ .addr = arena_take(at, VNET_TX_SLOT_SIZE, 64),
					.size = VNET_TX_SLOT_SIZE, .pair = (uint16_t)i, .tx = true,
					.next = pr->tx_free };
		if (!b->addr)
			return false;
		pr->tx_free = b;
	}
	uint32_t step = (n->rx_buf_size + 63) & ~63u;
	unsigned fit = *at < end ? (end - *at) / step : 0;
	unsigned count = want_rx && want_rx < pr->rx.size ? want_rx : pr->rx.size;
	if (count > fit)
		count = fit;
	if (!count)
		return false;
	for (unsigned k = 0; k < count; k++) {
		struct vnet_buf *b = &pr->rxb[k];
		*b = (struct vnet_buf){ .addr = arena_take(at, n->rx_buf_size, 64), .size = n->rx_buf_size,
					.pair = (uint16_t)i };
		rx_post(n, b);
	}
	pr->nrx = count;
	return true;
}

static uint16_t queue_vector(struct vnet *n, unsigned q)
{
	if (!n->use_irq)
		return 0xffff;
	return (uint16_t)(n->msix_entries > 1 ? q : 0);
}

static bool fail(struct vnet *n, const char *why)
{
	n->error = why;
	virtio_reset(&n->dev);
	return false;
}

bool vnet_init(struct vnet *n, unsigned nth, const struct vnet_config *cfg)
{
	memset(n, 0, sizeof(*n));
	memset(rx_bufs, 0, sizeof(rx_bufs));
	memset(tx_slots, 0, sizeof(tx_slots));
	n->pairs_ack = -4;
	calibrate();
	if (!virtio_find(VIRTIO_ID_NET, nth, &n->dev)) {
		n->error = "no virtio-net device";
		return false;
	}
	if (!n->dev.device)
		return fail(n, "no device-specific config capability");

	virtio_reset(&n->dev);
	virtio_set_status(&n->dev, 1);
	virtio_set_status(&n->dev, 3);
	n->offered = read_offered(&n->dev);
	uint64_t want = consistent(cfg->features & n->offered);
	if (!virtio_negotiate(&n->dev, want))
		return fail(n, "the device refused the features (or lacks VERSION_1)");
	n->features = n->dev.features;
	uint64_t f = n->features;
	n->mrg = f >> VIRTIO_NET_F_MRG_RXBUF & 1;
	n->has_ctrl = f >> VIRTIO_NET_F_CTRL_VQ & 1;

	for (unsigned i = 0; i < 6; i++)
		n->mac[i] = f >> VIRTIO_NET_F_MAC & 1 ? virtio_cfg8(&n->dev, i)
						      : (uint8_t[]){ 0x02, 0xfd, 0x00, 0x00, 0x00, 0x02 }[i];
	n->status = f >> VIRTIO_NET_F_STATUS & 1 ? cfg16(n, 6) : VIRTIO_NET_S_LINK_UP;
	n->max_pairs = f >> VIRTIO_NET_F_MQ & 1 ? cfg16(n, 8) : 1;
	n->mtu = f >> VIRTIO_NET_F_MTU & 1 ? cfg16(n, 10) : 1500;
	if (!n->max_pairs || n->max_pairs > 0x7fff)
		return fail(n, "max_virtqueue_pairs out of range");
	if (n->mtu < 68)
		return fail(n, "MTU below 68");
	unsigned want_pairs = cfg->pairs ? cfg->pairs : 1;
	if (want_pairs > VNET_MAX_PAIRS)
		want_pairs = VNET_MAX_PAIRS;
	n->pairs = (uint16_t)(want_pairs < n->max_pairs ? want_pairs : n->max_pairs);
	n->ctrl_index = (uint16_t)(f >> VIRTIO_NET_F_MQ & 1 ? 2 * n->max_pairs : 2);

	if (n->mrg) {
		uint32_t s = cfg->mrg_buf_size ? cfg->mrg_buf_size : 2048;
		n->rx_buf_size = s < 64 ? 64 : s > 4096 ? 4096 : s;
	} else if (f & (1ull << VIRTIO_NET_F_GUEST_TSO4 | 1ull << VIRTIO_NET_F_GUEST_TSO6 |
			1ull << VIRTIO_NET_F_GUEST_UFO)) {
		n->rx_buf_size = 65562;
	} else {
		/* Header, Ethernet header, a VLAN tag and the MTU. */
		uint32_t s = VNET_HDR_LEN + 14 + 4 + n->mtu;
		n->rx_buf_size = s < 1526 ? 1526 : s;
	}

	/* MSI-X: a vector per queue if the device has enough, else one for all. */
	unsigned nq = 2u * n->pairs + n->has_ctrl;
	n->vector_base = cfg->vector_base ? cfg->vector_base : 0x70;
	n->use_irq = !cfg->poll && n->dev.pci.msix_n > 0;
	if (n->use_irq) {
		n->msix_entries = n->dev.pci.msix_n >= nq ? nq : 1;
		for (unsigned e = 0; e < n->msix_entries; e++) {
			rt_irq_set_handler(n->vector_base + e, on_irq, n);
			msix_program(&n->dev.pci, e, (uint8_t)(n->vector_base + e));
		}
		rt_irq_set_handler(n->vector_base + TIMER_VECTOR_OFF, on_timer, n);
		msix_enable(&n->dev.pci, true);
		for (unsigned e = 0; e < n->msix_entries; e++)
			msix_mask(&n->dev.pci, e, false);
	}

	for (unsigned i = 0; i < n->pairs; i++) {
		if (!virtio_setup_vq(&n->dev, &n->pair[i].rx, (uint16_t)(2 * i), VQ_MAX, queue_vector(n, 2 * i)) ||
		    !virtio_setup_vq(&n->dev, &n->pair[i].tx, (uint16_t)(2 * i + 1), VQ_MAX,
				     queue_vector(n, 2 * i + 1)))
			return fail(n, "a data queue could not be set up (size 0 or out of ring memory)");
	}
	if (n->has_ctrl && !virtio_setup_vq(&n->dev, &n->ctrl, n->ctrl_index, 64, queue_vector(n, nq - 1)))
		return fail(n, "the control queue could not be set up");
	/* A vector the device could not take reads back as NO_VECTOR: poll. */
	for (unsigned q = 0; n->use_irq && q < nq; q++) {
		uint16_t index = q + 1 == nq && n->has_ctrl ? n->ctrl_index : (uint16_t)q;
		mmio_write16(n->dev.common + 0x16, index);
		if (mmio_read16(n->dev.common + 0x1a) != queue_vector(n, q))
			n->use_irq = false;
	}

	uint32_t at = 0;
	for (unsigned i = 0; i < n->pairs; i++) {
		uint32_t end = (uint32_t)((uint64_t)ARENA_SIZE * (i + 1) / n->pairs);
		if (!carve(n, i, &at, end, cfg->rx_bufs))
			return fail(n, "not enough buffer memory");
	}
	virtio_driver_ok(&n->dev);
	for (unsigned i = 0; i < n->pairs; i++)
		vnet_flush(n, i);
	if (virtio_status(&n->dev) & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED))
		return fail(n, "the device needs a reset right after DRIVER_OK");
	if (n->pairs > 1) {
		uint16_t p = n->pairs;
		n->pairs_ack = vnet_ctrl(n, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, &p, 2, 2000);
		if (n->pairs_ack != VIRTIO_NET_OK)
			n->pairs = 1; /* the device still uses pair 0 only */
	}
	return true;
}

void vnet_reset(struct vnet *n)
{
	virtio_reset(&n->dev);
	mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_INIT, 0);
	for (unsigned i = 0; i < VNET_MAX_PAIRS; i++) {
		for (unsigned k = 0; k < VQ_MAX; k++)
			rx_bufs[i][k].posted = false;
		for (unsigned k = 0; k < VNET_TX_SLOTS; k++)
			tx_slots[i][k].posted = false;
	}
}

uint16_t vnet_link_status(struct vnet *n)
{
	return n->features >> VIRTIO_NET_F_STATUS & 1 ? cfg16(n, 6) : VIRTIO_NET_S_LINK_UP;
}

uint8_t vnet_device_status(struct vnet *n) { return virtio_status(&n->dev); }

/* The next completion on rx, if it is one of this pair's posted buffers. */
static struct vnet_buf *rx_take(struct vnet *n, unsigned pi, bool *any)
{
	struct vnet_pair *pr = &n->pair[pi];
	uint32_t len = 0;
	uint16_t before = pr->rx.last_used;
	struct vnet_buf *b = vq_get(&pr->rx, &len);
	*any = pr->rx.last_used != before;
	if (!b)
		return 0;
	if (b->tx || b->pair != pi || !b->posted || b < pr->rxb || b >= pr->rxb + VQ_MAX) {
		pr->rx_errors++; /* a head that was not in flight */
		return 0;
	}
	b->posted = false;
	b->used = len;
	b->next = 0;
	return b;
}

static void return_chain(struct vnet *n, struct vnet_buf *b)
{
	while (b) {
		struct vnet_buf *next = b->next;
		rx_post(n, b);
		b = next;
	}
}

bool vnet_recv(struct vnet *n, unsigned pi, struct vnet_pkt *p)
{
	struct vnet_pair *pr = &n->pair[pi];
	for (;;) {
		bool any;
		struct vnet_buf *b = rx_take(n, pi, &any);
		if (!b) {
			if (any)
				continue;
			return false;
		}
		if (b->used < VNET_HDR_LEN || b->used > b->size) {
			pr->rx_errors++;
			rx_post(n, b);
			continue;
		}
		struct virtio_net_hdr *h = (struct virtio_net_hdr *)b->addr;
		unsigned nb = n->mrg ? h->num_buffers : 1;
		*p = (struct vnet_pkt){ .hdr = h, .frame = b->addr + VNET_HDR_LEN, .len = b->used - VNET_HDR_LEN,
					.pair = pi, .nbufs = 1, .bufs = b };
		if (nb == 1) {
			pr->rx_packets++;
			return true;
		}
		if (nb == 0 || nb > pr->rx.size) {
			pr->rx_errors++;
			rx_post(n, b);
			continue;
		}
		/* Mergeable: the rest of the packet follows in the used ring
		 * (the device publishes the buffers of a packet together; a
		 * bounded wait covers one that does not). */
		uint8_t *g = pr->gather;
		memcpy(g, b->addr, b->used);
		uint32_t total = b->used;
		struct vnet_buf *tail = b;
		bool bad = false;
		uint64_t deadline = rt_rdtsc() + GATHER_WAIT_MS * vnet_tsc_per_ms();
		while (p->nbufs < nb && !bad) {
			struct vnet_buf *c = rx_take(n, pi, &any);
			if (!c) {
				if (any || rt_rdtsc() < deadline)
					continue;
				bad = true;
				break;
			}
			tail->next = c;
			tail = c;
			p->nbufs++;
			if (c->used > c->size || total + c->used > VNET_HDR_LEN + VNET_MAX_FRAME) {
				bad = true;
				break;
			}
			memcpy(g + total, c->addr, c->used);
			total += c->used;
		}
		if (bad) {
			pr->rx_errors++;
			return_chain(n, b);
			continue;
		}
		p->hdr = (struct virtio_net_hdr *)g;
		p->frame = g + VNET_HDR_LEN;
		p->len = total - VNET_HDR_LEN;
		p->gathered = true;
		pr->rx_packets++;
		return true;
	}
}

void vnet_rx_return(struct vnet *n, struct vnet_pkt *p)
{
	return_chain(n, p->bufs);
	p->bufs = 0;
}

static unsigned free_slots(struct vnet_pair *pr, unsigned enough)
{
	unsigned have = 0;
	for (struct vnet_buf *b = pr->tx_free; b && have < enough; b = b->next)
		have++;
	return have;
}

/* Out of tx slots or descriptors: notify the device of what is queued and
 * take its completions for a while (bounded). */
static bool tx_room(struct vnet *n, unsigned pi, unsigned slots, unsigned descs)
{
	struct vnet_pair *pr = &n->pair[pi];
	uint64_t deadline = 0;
	for (;;) {
		vnet_tx_reclaim(n, pi);
		if (free_slots(pr, slots) >= slots && pr->tx.num_free >= descs)
			return true;
		if (!deadline) {
			pr->tx_added = false;
			vq_kick(&pr->tx);
			deadline = rt_rdtsc() + TX_ROOM_WAIT_MS * vnet_tsc_per_ms();
		} else if (rt_rdtsc() >= deadline) {
			return false;
		}
	}
}

static bool tx_add(struct vnet *n, unsigned pi, const struct vbuf *v, unsigned k, struct vnet_buf *first)
{
	struct vnet_pair *pr = &n->pair[pi];
	if (!vq_add(&pr->tx, v, k, first)) {
		if (!tx_room(n, pi, 0, pr->tx.use_indirect && k > 1 && k <= 8 ? 1 : k) ||
		    !vq_add(&pr->tx, v, k, first))
			return false;
	}
	for (struct vnet_buf *b = first; b; b = b->next)
		b->posted = true;
	pr->tx_added = true;
	pr->tx_inflight++;
	pr->tx_packets++;
	return true;
}

bool vnet_send_pkt(struct vnet *n, unsigned pi, struct vnet_pkt *p)
{
	struct vnet_pair *pr = &n->pair[pi];
	struct vnet_buf *b = p->bufs;
	if (p->gathered || !b || p->len + VNET_HDR_LEN > b->size ||
	    (uint8_t *)p->hdr != b->addr || p->frame != b->addr + VNET_HDR_LEN) {
		bool ok = vnet_send(n, pi, p->hdr, p->frame, p->len);
		vnet_rx_return(n, p);
		return ok;
	}
	struct vbuf v = { (uint64_t)b->addr, VNET_HDR_LEN + p->len, false };
	b->used = v.len;
	if (!tx_add(n, pi, &v, 1, b)) {
		pr->tx_drops++;
		vnet_rx_return(n, p);
		return false;
	}
	p->bufs = 0;
	return true;
}

bool vnet_send(struct vnet *n, unsigned pi, const struct virtio_net_hdr *hdr, const void *frame, uint32_t len)
{
	struct vnet_pair *pr = &n->pair[pi];
	static const struct virtio_net_hdr zero;
	if (len > VNET_MAX_FRAME)
		return false;
	uint32_t total = VNET_HDR_LEN + len;
	unsigned k = (total + VNET_TX_SLOT_SIZE - 1) / VNET_TX_SLOT_SIZE;
	if (free_slots(pr, k) < k && !tx_room(n, pi, k, 0)) {
		pr->tx_drops++;
		return false;
	}
	struct vbuf v[(VNET_HDR_LEN + VNET_MAX_FRAME + VNET_TX_SLOT_SIZE - 1) / VNET_TX_SLOT_SIZE];
	struct vnet_buf *first = pr->tx_free, *b = first, *last = first;
	const uint8_t *src = frame;
	uint32_t done = 0; /* frame bytes placed */
	for (unsigned i = 0; i < k; i++, b = b->next) {
		uint32_t put = 0;
		if (!i) {
			memcpy(b->addr, hdr ? hdr : &zero, VNET_HDR_LEN);
			put = VNET_HDR_LEN;
		}
		uint32_t chunk = len - done < VNET_TX_SLOT_SIZE - put ? len - done : VNET_TX_SLOT_SIZE - put;
		memcpy(b->addr + put, src + done, chunk);
		done += chunk;
		b->used = put + chunk;
		v[i] = (struct vbuf){ (uint64_t)b->addr, b->used, false };
		last = b;
	}
	pr->tx_free = last->next;
	last->next = 0;
	if (!tx_add(n, pi, v, k, first)) {
		last->next = pr->tx_free;
		pr->tx_free = first;
		pr->tx_drops++;
		return false;
	}
	return true;
}

unsigned vnet_tx_reclaim(struct vnet *n, unsigned pi)
{
	struct vnet_pair *pr = &n->pair[pi];
	unsigned got = 0;
	for (;;) {
		uint16_t before = pr->tx.last_used;
		struct vnet_buf *b = vq_get(&pr->tx, 0);
		if (pr->tx.last_used == before)
			break;
		if (!b || !b->posted) {
			pr->tx_errors++; /* a head that was not in flight */
			continue;
		}
		while (b) {
			struct vnet_buf *next = b->next;
			b->posted = false;
			if (b->tx) {
				struct vnet_pair *owner = &n->pair[b->pair];
				b->next = owner->tx_free;
				owner->tx_free = b;
			} else {
				rx_post(n, b);
			}
			b = next;
		}
		if (pr->tx_inflight)
			pr->tx_inflight--;
		got++;
	}
	return got;
}

unsigned vnet_tx_pending(struct vnet *n, unsigned pi) { return n->pair[pi].tx_inflight; }

void vnet_flush(struct vnet *n, unsigned pi)
{
	struct vnet_pair *pr = &n->pair[pi];
	struct vnet_buf *spare = pr->rx_spare;
	pr->rx_spare = 0;
	while (spare) {
		struct vnet_buf *next = spare->next;
		rx_post(n, spare);
		spare = next;
	}
	if (pr->rx_added) {
		pr->rx_added = false;
		vq_kick(&pr->rx);
	}
	if (pr->tx_added) {
		pr->tx_added = false;
		vq_kick(&pr->tx);
	}
}

int vnet_ctrl(struct vnet *n, uint8_t cls, uint8_t cmd, const void *data, uint32_t len, unsigned timeout_ms)
{
	if (!n->has_ctrl)
		return -3;
	if (n->ctrl_stuck)
		return -2;
	ctrl_hdr.cls = cls;
	ctrl_hdr.cmd = cmd;
	ctrl_ack = 0xee;
	struct vbuf v[3];
	unsigned k = 0;
	v[k++] = (struct vbuf){ (uint64_t)&ctrl_hdr, 2, false };
	if (len)
		v[k++] = (struct vbuf){ (uint64_t)data, len, false };
	v[k++] = (struct vbuf){ (uint64_t)&ctrl_ack, 1, true };
	if (!vq_add(&n->ctrl, v, k, &ctrl_hdr)) {
		n->ctrl_stuck = true;
		return -2;
	}
	vq_kick(&n->ctrl);
	uint64_t deadline = rt_rdtsc() + timeout_ms * vnet_tsc_per_ms();
	while (rt_rdtsc() < deadline) {
		if (vq_get(&n->ctrl, 0) == &ctrl_hdr)
			return ctrl_ack;
		__asm__ volatile("pause");
	}
	n->ctrl_stuck = true;
	return -1;
}

/* A receive completion to take, or a transmit completion to reclaim. */
static bool ready(struct vnet *n)
{
	for (unsigned i = 0; i < n->pairs; i++) {
		struct vq *r = &n->pair[i].rx, *t = &n->pair[i].tx;
		if (__atomic_load_n(&((volatile uint16_t *)r->used)[1], __ATOMIC_ACQUIRE) != r->last_used ||
		    (n->pair[i].tx_inflight &&
		     __atomic_load_n(&((volatile uint16_t *)t->used)[1], __ATOMIC_ACQUIRE) != t->last_used))
			return true;
	}
	return false;
}

struct wait_arg {
	struct vnet *n;
	uint64_t deadline;
};

/* CPL0, interrupts off: sleep until an interrupt, each sleep bounded by a
 * one-shot LAPIC timer so that the deadline holds without one. */
static long wait_irq(void *arg)
{
	struct wait_arg *w = arg;
	struct vnet *n = w->n;
	uint64_t per_ms = vnet_tsc_per_ms();
	for (;;) {
		for (unsigned i = 0; i < n->pairs; i++) {
			vq_enable_interrupts(&n->pair[i].rx, true);
			vq_enable_interrupts(&n->pair[i].tx, true);
		}
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (ready(n))
			return 1;
		uint64_t now = rt_rdtsc();
		if (now >= w->deadline)
			return 0;
		uint64_t left = w->deadline - now;
		if (left > SLEEP_MAX_MS * per_ms)
			left = SLEEP_MAX_MS * per_ms;
		mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_DIV, 0xb);
		mmio_write32(FDVM_LAPIC_BASE + LAPIC_LVT_TIMER, n->vector_base + TIMER_VECTOR_OFF);
		mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_INIT, (uint32_t)(left * 1000000 / per_ms + 1));
		rt_wait_for_interrupt();
		mmio_write32(FDVM_LAPIC_BASE + LAPIC_TIMER_INIT, 0);
		mmio_write32(FDVM_LAPIC_BASE + LAPIC_LVT_TIMER, LVT_MASKED);
	}
}

bool vnet_wait(struct vnet *n, uint64_t deadline)
{
	for (unsigned i = 0; i < n->pairs; i++)
		vnet_flush(n, i);
	if (ready(n))
		return true;
	if (n->use_irq) {
		struct wait_arg w = { n, deadline };
		return rt_kernel_call(wait_irq, &w) != 0;
	}
	while (rt_rdtsc() < deadline) {
		if (ready(n))
			return true;
		__asm__ volatile("pause");
	}
	return false;
}
