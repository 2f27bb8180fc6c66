/*
 * Fuzz target: the virtio-net model (lib/dev/virtio_net.c) as a hostile
 * driver and a hostile network see it. The input is a feature choice, a
 * ring size and a sequence of operations: receive buffers, transmit chains
 * (whose headers and frames the input writes into guest RAM), control
 * commands, packets from the host side of the "tap" (a datagram socket
 * pair standing in for it), passes of the device, and restarts with other
 * features. Buffers may point anywhere, inside RAM or not.
 *
 * Checked: no access outside guest RAM (ASan), no completion the driver
 * did not post, no hang (every pass is bounded), and the device never sends
 * the host a packet without a header it accepted.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdvm/virtio.h"
#include "../lib/dev/net_priv.h"
#include "fuzz_input.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE 0x40000
#define RING(q) ((uint64_t)(q) * 0x4000)	/* desc, +0x1000 avail, +0x2000 used */
#define NQ 3					/* rx, tx, control */
#define MAX_OPS 64

static uint8_t *ram;

static void *translate(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	if (gpa > RAM_SIZE || len > RAM_SIZE - gpa)
		return NULL;
	return ram + gpa;
}

static void quiet(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

static void broken(void *ctx, unsigned index)
{
	(void)ctx;
	(void)index;
}

struct ring {
	uint16_t size, next_desc, avail;
};

static struct fdvm_vring_desc *desc(unsigned q, unsigned i)
{
	return (struct fdvm_vring_desc *)(ram + RING(q)) + i;
}

static uint16_t *avail(unsigned q)
{
	return (uint16_t *)(ram + RING(q) + 0x1000);
}

static uint16_t used_idx(unsigned q)
{
	return ((uint16_t *)(ram + RING(q) + 0x2000))[1];
}

/* A chain of 1..3 descriptors from the input, offered on queue q. */
static void add_chain(struct ring *r, unsigned q, struct fin *in, uint16_t force_flags)
{
	unsigned n = 1 + fin_u8(in) % 3;
	uint16_t head = r->next_desc;
	for (unsigned i = 0; i < n; i++) {
		uint16_t d = r->next_desc;
		r->next_desc = (uint16_t)((r->next_desc + 1) % r->size);
		/* Mostly inside RAM, sometimes past it. */
		uint64_t addr = 0x10000 + (uint64_t)fin_u16(in) * 4;
		uint32_t len = fin_u16(in);
		uint16_t flags = (fin_u8(in) & 7) | force_flags;
		if (i + 1 < n)
			flags |= FDVM_VRING_DESC_F_NEXT;
		else
			flags &= (uint16_t)~FDVM_VRING_DESC_F_NEXT;
		*desc(q, d) = (struct fdvm_vring_desc){ addr, len, flags, r->next_desc };
	}
	avail(q)[2 + r->avail % r->size] = head;
	r->avail++;
	__atomic_store_n(&avail(q)[1], r->avail, __ATOMIC_RELEASE);
}

static uint64_t features_of(uint8_t b)
{
	static const unsigned bits[8] = { 15, 0, 1, 11, 7, FDVM_VIRTIO_F_EVENT_IDX,
					  FDVM_VIRTIO_F_INDIRECT_DESC, FDVM_VIRTIO_F_VERSION_1 };
	uint64_t f = 1ull << 17; /* a control queue */
	for (unsigned i = 0; i < 8; i++)
		if (b >> i & 1)
			f |= 1ull << bits[i];
	return f;
}

static int start(struct fdvm_virtio_model *m, struct fdvm_virtio_queue *qs, struct ring *rings,
		 uint64_t f, uint16_t size)
{
	for (unsigned q = 0; q < NQ; q++) {
		memset(ram + RING(q), 0, 0x4000);
		rings[q] = (struct ring){ .size = size };
		qs[q].index = q;
		if (fdvm_vq_init(&qs[q].vq, size, RING(q), RING(q) + 0x1000, RING(q) + 0x2000,
				 f >> FDVM_VIRTIO_F_EVENT_IDX & 1, f >> FDVM_VIRTIO_F_INDIRECT_DESC & 1,
				 translate, NULL))
			abort(); /* our own rings are good */
	}
	struct fdvm_virtio_start s = { .features = f, .queues = qs, .n = NQ, .broken = broken };
	return m->ops->start(m->opaque, &s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pkt[70000];
	struct fin in = { data, size };
	struct fdvm_virtio_queue qs[NQ];
	struct ring rings[NQ];
	struct fdvm_virtio_model *m;
	int sv[2];

	if (size < 2)
		return 0;
	if (!ram && !(ram = malloc(RAM_SIZE)))
		return 0;
	memset(ram, 0, RAM_SIZE);
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	static struct fdvm_queue_stats stats[NQ]; /* counted as in a transport */
	for (unsigned q = 0; q < NQ; q++) {
		qs[q].stats = &stats[q];
		qs[q].kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		qs[q].call_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	}
	struct fdvm_virtio_net_config cfg = { .tap = "fuzz0", .num_pairs = 1 };
	if (fdvm_virtio_net_model_on_fds(&cfg, &sv[0], quiet, NULL, &m))
		abort();
	uint64_t f = features_of(fin_u8(&in));
	uint16_t qsize = (uint16_t)(1u << (fin_u8(&in) % 9));
	bool started = start(m, qs, rings, f, qsize) == 0;

	for (unsigned op = 0; started && fin_more(&in) && op < MAX_OPS; op++) {
		switch (fin_u8(&in) % 8) {
		case 0: /* receive buffers: device-writable */
			add_chain(&rings[0], 0, &in, FDVM_VRING_DESC_F_WRITE);
			break;
		case 1: /* a transmit chain as the input says */
			add_chain(&rings[1], 1, &in, 0);
			break;
		case 2: { /* guest writes RAM: headers, frames, commands */
			uint32_t off = 0x10000 + (uint32_t)fin_u16(&in) * 2;
			unsigned n = fin_u8(&in);
			for (unsigned i = 0; i < n && off + i < RAM_SIZE; i++)
				ram[off + i] = fin_u8(&in);
			break;
		}
		case 3: { /* the host sends a packet: header and frame from the input */
			size_t n = (size_t)fin_u8(&in) * 64 + fin_u8(&in);
			if (fin_u8(&in) == 0xff)
				n = sizeof(pkt); /* the largest the device reads, and past it */
			for (size_t i = 0; i < n; i++)
				pkt[i] = fin_more(&in) ? fin_u8(&in) : (uint8_t)i;
			(void)!send(sv[1], pkt, n, MSG_DONTWAIT);
			break;
		}
		case 4: /* a control command */
			add_chain(&rings[2], 2, &in, 0);
			break;
		case 5:
		case 7:
			fdvm_virtio_net_run_once(m);
			break;
		case 6: /* the driver starts again, maybe with other features */
			m->ops->stop(m->opaque);
			f = features_of(fin_u8(&in));
			started = start(m, qs, rings, f, qsize) == 0;
			break;
		}
		/* Never a completion the driver did not post (both start at 0
		 * and stay far below the 16-bit wrap here). */
		for (unsigned q = 0; q < NQ; q++)
			if (used_idx(q) > rings[q].avail)
				abort();
	}
	if (started) {
		fdvm_virtio_net_run_once(m);
		m->ops->stop(m->opaque);
	}
	/* What the device sent: each packet at least a header and a frame. */
	ssize_t r;
	while ((r = recv(sv[1], pkt, sizeof(pkt), MSG_DONTWAIT)) >= 0)
		if (r < 10 + 14)
			abort();
	m->destroy(m); /* closes sv[0] */
	close(sv[1]);
	for (unsigned q = 0; q < NQ; q++) {
		close(qs[q].kick_fd);
		close(qs[q].call_fd);
	}
	return 0;
}
