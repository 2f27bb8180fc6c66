/*
 * Fuzz target: the virtio-blk model (lib/dev/virtio_blk.c) on a small
 * image, behind a queue in a buffer standing for guest RAM, with no
 * transport and no VM. The input picks the ring size, the ring features
 * and a read-only or writable image, then is a sequence of operations:
 * requests (every type, sectors at and past the end of the image, data
 * lengths around a sector, headers split or short, buffers the wrong way
 * round, indirect tables, status buffers missing or long), raw writes to
 * descriptors and RAM, and runs: publish, kick, wait for the device.
 *
 * Checked: every request is answered (or the device declares the queue
 * broken), used entries name heads that were posted, a used length never
 * exceeds the chain's writable bytes, a well-formed request's status is
 * OK, IOERR or UNSUPP and the right one for its type and range.
 */
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "fdvm/virtio.h"
#include "fuzz_input.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RAM_SIZE 0x40000ull
#define DESC 0x0000ull
#define AVAIL 0x4000ull
#define USED 0x5000ull
#define INDIRECT 0x7000ull	/* indirect tables, 16 entries each */
#define DATA 0x10000ull
#define SECTORS 8		/* image: 8 sectors (a partial one is refused) */
#define IMAGE_SIZE (SECTORS * 512)
#define MAX_REQS 64

/* A broken expectation: says which, then crashes (a finding). */
#define CHECK(c)                                                                  \
	do {                                                                      \
		if (!(c)) {                                                       \
			fprintf(stderr, "virtio_blk_fuzz: %s (line %d)\n", #c, __LINE__); \
			abort();                                                  \
		}                                                                 \
	} while (0)

static uint8_t *ram;
static struct fdvm_virtio_model *models[2]; /* writable, read-only */

static bool rings_set;

/*
 * Guest RAM. Once the rings are set, their pages are not RAM to buffers:
 * the target reads the used ring to tell who answered what, so a buffer
 * the device writes must not land there (a hostile one is refused, and
 * the queue breaks, as for any buffer outside RAM).
 */
static void *translate(void *opaque, uint64_t gpa, uint64_t len)
{
	(void)opaque;
	if (gpa > RAM_SIZE || len > RAM_SIZE - gpa)
		return NULL;
	if (rings_set && gpa < INDIRECT && gpa + len > AVAIL)
		return NULL;
	return ram + gpa;
}

static void quiet(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	(void)level;
	(void)msg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char path[] = "/tmp/fdvm-fuzz-blk-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0)
		abort();
	close(fd);
	ram = aligned_alloc(4096, RAM_SIZE);
	for (unsigned i = 0; i < 2; i++) {
		/* The same image twice, writable and read-only: unlocked. */
		struct fdvm_virtio_blk_config c = { .path = path, .read_only = i == 1, .num_queues = 1,
						    .no_lock = true };
		if (fdvm_virtio_blk_model_create(&c, getenv("FUZZ_VERBOSE") ? NULL : quiet, NULL,
						 &models[i]))
			abort();
	}
	unlink(path); /* the models hold it open */
	return 0;
}

/* What the target knows about a request it posted. */
struct req {
	uint16_t head;
	bool posted, answered, wellformed;
	uint32_t type;
	uint64_t sector, data_len;	/* data bytes (read or written) */
	uint64_t writable;		/* device-writable bytes in the chain */
	uint64_t status_gpa;
};

struct state {
	struct fdvm_virtio_queue q;
	uint16_t qsize, ndesc, avail_idx, used_seen;
	bool indirect, ro, started;
	/* Data buffers were reused, or the input wrote descriptors or heads
	 * of its own, which may point at any buffer: from then on, status
	 * bytes say nothing for sure. */
	bool tainted;
	atomic_bool broken;
	uint64_t data_next;
	struct req reqs[MAX_REQS];
	unsigned nreqs;
	unsigned nindirect;
};

static void on_broken(void *ctx, unsigned index)
{
	struct state *s = ctx;
	(void)index;
	atomic_store(&s->broken, true);
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	struct fdvm_vring_desc d = { addr, len, flags, next };
	memcpy(ram + table + 16ull * i, &d, sizeof(d));
}

static uint64_t alloc_data(struct state *s, uint64_t len)
{
	uint64_t at = s->data_next;
	if (len > RAM_SIZE - DATA)
		len = RAM_SIZE - DATA;
	if (at + len > RAM_SIZE) {
		/* Buffers of requests not yet answered may be reused: their
		 * status bytes say nothing any more. */
		at = DATA;
		for (unsigned k = 0; k <= s->nreqs && k < MAX_REQS; k++)
			s->reqs[k].wellformed = false;
		s->tainted = true;
	}
	s->data_next = at + len;
	return at;
}

static uint64_t pick_sector(struct fin *in)
{
	static const uint64_t edges[] = { 0, 1, SECTORS - 1, SECTORS, SECTORS + 1,
					  (1ull << 54), (1ull << 63), ~0ull, ~0ull - SECTORS };
	uint8_t b = fin_u8(in);
	return b & 0x80 ? fin_u64(in) : edges[b % (sizeof(edges) / sizeof(edges[0]))];
}

static uint32_t pick_len(struct fin *in)
{
	static const uint32_t lens[] = { 0, 1, 511, 512, 513, 1024, 4096, SECTORS * 512,
					 SECTORS * 512 + 512 };
	uint8_t b = fin_u8(in);
	return b & 0x80 ? fin_u16(in) : lens[b % (sizeof(lens) / sizeof(lens[0]))];
}

/* A request as a driver builds it, with the input's mistakes in it. */
static void request(struct state *s, struct fin *in)
{
	static const uint32_t types[] = { 0, 1, 4, 8, 11, 13 };
	uint8_t how = fin_u8(in), segs = 1 + (fin_u8(in) & 3);
	struct req *r;
	struct {
		uint32_t type, ioprio;
		uint64_t sector;
	} hdr;

	if (s->nreqs == MAX_REQS)
		return;
	hdr.type = how & 0x80 ? fin_u32(in) : types[how % 6];
	hdr.ioprio = 0;
	hdr.sector = pick_sector(in);
	bool indirect = s->indirect && (how & 0x40);
	unsigned need = 2 + segs;
	uint64_t table = DESC;
	unsigned base = s->ndesc, i = 0;
	if (indirect) {
		if (s->ndesc >= s->qsize || s->nindirect == 32)
			return;
		table = INDIRECT + 256ull * s->nindirect++;
		base = 0;
	} else if (s->ndesc + need > s->qsize) {
		return;
	}
	r = &s->reqs[s->nreqs];
	*r = (struct req){ .type = hdr.type, .sector = hdr.sector, .wellformed = !(how & 0x20) };
	if (s->tainted)
		r->wellformed = false;
	bool is_write = hdr.type == 1;
	/* Header: one descriptor, or split in two (then a short one maybe). */
	uint64_t h = alloc_data(s, 16);
	memcpy(ram + h, &hdr, 16);
	unsigned hlen = how & 0x10 ? 16 - (fin_u8(in) & 15) : 16;
	if (hlen < 16)
		r->wellformed = false;
	put_desc(table, base + i, h, hlen, 1, (uint16_t)(base + i + 1));
	i++;
	for (unsigned k = 0; k + 1 < segs; k++) {
		uint32_t len = pick_len(in);
		bool dev_writes = !is_write;
		if (how & 0x08)
			dev_writes = !dev_writes; /* the wrong way round */
		if (dev_writes != !is_write)
			r->wellformed = false;
		uint64_t at = alloc_data(s, len);
		put_desc(table, base + i, at, len, (uint16_t)(1 | (dev_writes ? 2 : 0)),
			 (uint16_t)(base + i + 1));
		if (dev_writes)
			r->writable += len;
		r->data_len += len;
		i++;
	}
	/* Status: one byte, or none, or more. */
	uint32_t slen = how & 0x04 ? fin_u8(in) % 3 : 1;
	r->status_gpa = alloc_data(s, slen ? slen : 1);
	ram[r->status_gpa + (slen ? slen - 1 : 0)] = 0xee;
	if (slen != 1)
		r->wellformed = false;
	put_desc(table, base + i, r->status_gpa, slen, 2, 0);
	r->writable += slen;
	if (slen)
		r->status_gpa += slen - 1;
	i++;
	if (indirect) {
		put_desc(DESC, s->ndesc, table, 16 * i, 4, 0);
		r->head = s->ndesc++;
	} else {
		r->head = (uint16_t)base;
		s->ndesc = (uint16_t)(s->ndesc + i);
	}
	/* On the avail ring, not yet published. */
	memcpy(ram + AVAIL + 4 + 2ull * (s->avail_idx % s->qsize), &r->head, 2);
	s->avail_idx++;
	r->posted = true;
	s->nreqs++;
}

/* The status a well-formed request must get. */
static uint8_t expected(const struct state *s, const struct req *r)
{
	switch (r->type) {
	case 0: case 1:
		if (r->data_len % 512 || r->sector > SECTORS || r->data_len / 512 > SECTORS - r->sector)
			return 1;
		return r->type == 1 && s->ro ? 1 : 0;
	case 4: return 0;
	case 8: return 0;
	/* Discard and write-zeroes: not offered read-only; writable, a
	 * well-formed request here carries no segments (its data is
	 * device-writable, as for a read). */
	case 11: case 13: return s->ro ? 2 : 1;
	default: return 2;
	}
}

static uint16_t used_idx(void)
{
	uint16_t v;
	__atomic_load((uint16_t *)(ram + USED + 2), &v, __ATOMIC_ACQUIRE);
	return v;
}

/* Publishes what was posted, kicks, and waits for every answer. */
static void run(struct state *s, struct fdvm_virtio_model *m)
{
	__atomic_store((uint16_t *)(ram + AVAIL + 2), &s->avail_idx, __ATOMIC_RELEASE);
	if (!s->started) {
		struct fdvm_virtio_start st = {
			.features = 1ull << FDVM_VIRTIO_F_VERSION_1 |
				    (s->indirect ? 1ull << FDVM_VIRTIO_F_INDIRECT_DESC : 0),
			.queues = &s->q, .n = 1, .broken = on_broken, .ctx = s,
		};
		int ret = m->ops->start(m->opaque, &st);
		if (ret) {
			fprintf(stderr, "virtio-blk start: %d\n", ret);
			abort();
		}
		s->started = true;
	} else {
		uint64_t one = 1;
		if (write(s->q.kick_fd, &one, sizeof(one)) != sizeof(one))
			abort();
	}
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned spins = 0; used_idx() != s->avail_idx && !atomic_load(&s->broken); spins++) {
		if (spins < 1000) {
			sched_yield();
			continue;
		}
		nanosleep(&(struct timespec){ 0, 20000 }, NULL);
		clock_gettime(CLOCK_MONOTONIC, &now);
		CHECK(now.tv_sec - t0.tv_sec < 10); /* a request nobody answers */
	}
	/* Check what came back since the last run. */
	for (uint16_t u = s->used_seen; u != used_idx(); u++) {
		struct fdvm_vring_used_elem e;
		memcpy(&e, ram + USED + 4 + 8ull * (u % s->qsize), sizeof(e));
		struct req *r = NULL;
		for (unsigned k = 0; k < s->nreqs; k++)
			if (s->reqs[k].posted && !s->reqs[k].answered && s->reqs[k].head == e.id)
				r = &s->reqs[k];
		CHECK(r); /* an answer to nothing posted */
		r->answered = true;
		CHECK(e.len <= r->writable);
		CHECK(!r->wellformed || ram[r->status_gpa] == expected(s, r));
	}
	s->used_seen = used_idx();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct state s;
	struct fin in = { data, size };

	if (!ram)
		LLVMFuzzerInitialize(NULL, NULL);
	uint8_t h = fin_u8(&in);
	memset(ram, 0, DATA);
	memset(&s, 0, sizeof(s));
	static struct fdvm_queue_stats stats; /* counted as in a transport */
	s.q.stats = &stats;
	s.qsize = (uint16_t)(1u << (h % 9));
	s.indirect = h & 0x10;
	s.ro = h & 0x20;
	s.data_next = DATA;
	struct fdvm_virtio_model *m = models[s.ro];
	s.q.index = 0;
	s.q.call_fd = -1;
	s.q.kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rings_set = false;
	if (s.q.kick_fd < 0 ||
	    fdvm_vq_init(&s.q.vq, s.qsize, DESC, AVAIL, USED, false, s.indirect, translate, NULL))
		abort();
	rings_set = true;
	for (unsigned n = 0; n < 128 && fin_more(&in) && !atomic_load(&s.broken); n++) {
		uint8_t op = fin_u8(&in);
		switch (op % 8) {
		case 0: case 1: case 2: request(&s, &in); break;
		case 3: case 4: run(&s, m); break;
		case 5: { /* a hostile descriptor */
			unsigned i = fin_u16(&in) % s.qsize;
			uint64_t addr = op & 0x80 ? fin_u64(&in) : DATA + fin_u16(&in);
			uint32_t len = op & 0x40 ? fin_u32(&in) : fin_u16(&in);
			put_desc(DESC, i, addr, len, fin_u16(&in) & 7, fin_u16(&in));
			/* Whatever used it is no longer known. */
			s.tainted = true;
			for (unsigned k = 0; k < s.nreqs; k++) {
				s.reqs[k].wellformed = false;
				s.reqs[k].writable = ~0ull;
			}
			break;
		}
		case 6: { /* a head on the avail ring, whatever it is */
			uint16_t head = fin_u16(&in);
			if (s.nreqs == MAX_REQS)
				break;
			memcpy(ram + AVAIL + 4 + 2ull * (s.avail_idx % s.qsize), &head, 2);
			s.avail_idx++;
			/* Answered, or the queue breaks (a head out of range). */
			s.reqs[s.nreqs++] = (struct req){ .head = head, .posted = true,
							  .writable = ~0ull };
			/* It may share buffers with the requests posted: their
			 * status bytes say nothing any more. */
			s.tainted = true;
			for (unsigned k = 0; k < s.nreqs; k++)
				s.reqs[k].wellformed = false;
			break;
		}
		default: { /* descriptor tables, direct and indirect (the rings
			    * are the target's, so it can tell who answers what) */
			unsigned at = fin_u16(&in) % (AVAIL + DATA - INDIRECT), len = fin_u8(&in) & 31;
			if (at >= AVAIL)
				at += INDIRECT - AVAIL;
			for (unsigned i = 0; i < len && at + i < DATA && at + i != AVAIL; i++)
				ram[at + i] = fin_u8(&in);
			s.tainted = true;
			for (unsigned k = 0; k < s.nreqs; k++) {
				s.reqs[k].wellformed = false;
				s.reqs[k].writable = ~0ull;
			}
			break;
		}
		}
	}
	run(&s, m);
	m->ops->stop(m->opaque);
	close(s.q.kick_fd);
	return 0;
}
