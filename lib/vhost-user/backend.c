/*
 * The vhost-user backend (include/fdvm/vhost_user.h): the frontend's
 * messages, on the loop's thread, become a device model's start and stop.
 *
 * Rings are set up one message at a time, but a device model starts and
 * stops as a whole (struct fdvm_virtio_dev_ops). So whenever a message
 * changes what the running device uses (a ring's fds, addresses or state,
 * the memory table, the inflight region), the device is stopped first
 * (quiesce) and, once the message is handled, started again on every ring
 * that is started, enabled and intact (apply). A stop returns with every
 * taken request answered and the rings' indices in be->dq, so nothing is
 * lost across it. Memory and fds change only while the device is stopped,
 * so the device's threads need no lock to use them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdvm/vhost_user.h"
#include "backend_priv.h"
#include "mem.h"
#include "../vm_priv.h"

#define MAX_RINGS 64
#define INFLIGHT_ALIGN 64

struct ring {
	uint16_t num;			/* SET_VRING_NUM; 0: not set */
	bool addr_set;
	uint64_t desc, avail, used;	/* frontend virtual addresses */
	uint16_t last_avail;		/* SET_VRING_BASE, then the device's */
	int kick_fd, call_fd, err_fd;	/* owned; -1 */
	bool started;			/* kicked (SET_VRING_KICK), not stopped */
	bool bad_size;			/* the guest's size was refused: out */
	bool unplaced;			/* not in the memory table at the last start */
	bool fresh;			/* kicked, not yet started on this kick */
	bool enabled;
	atomic_bool broken;		/* the guest broke it: out until restarted */
};

struct fdvm_vu_backend {
	struct fdvm_vu_backend_config cfg;
	const struct fdvm_virtio_dev_ops *ops;
	unsigned nrings;
	int listen_fd;			/* the caller's; -1 */
	int conn_fd;			/* owned; -1 when nobody is served */
	bool watching_listen;

	/* The connection's state, reset at disconnect. Loop thread only. */
	uint64_t features;		/* acked by SET_FEATURES */
	uint64_t protocol_features;	/* acked */
	uint8_t status;
	unsigned long counts[VU_GET_STATUS + 2]; /* messages by request; last: others */
	struct vu_mem mem;
	struct ring rings[MAX_RINGS];
	void *inflight;			/* mmap of the inflight fd */
	size_t inflight_len, inflight_page;
	uint16_t inflight_nq, inflight_qsize;
	size_t inflight_stride;

	/* The running device: dq[0..nrun) are its queues, in place. */
	bool running, restart;
	unsigned nrun;
	struct fdvm_virtio_queue dq[MAX_RINGS];

	/* Ring i's counters: written by the device's threads, kept across
	 * connections (fdvm/stats.h). */
	struct fdvm_queue_stats stats[MAX_RINGS];

	pthread_mutex_t err_lock;	/* err fds: written by device threads */
	int fault_fd;			/* eventfd: a mapping faulted (SIGBUS) */
	atomic_bool faulted;
};

#define vu_log(be, level, ...) \
	do { \
		if ((level) <= (be)->cfg.log_level) \
			fdvm_log_to((be)->cfg.log, (be)->cfg.log_opaque, (level), __VA_ARGS__); \
	} while (0)

static uint64_t offered_features(const struct fdvm_vu_backend *be)
{
	return be->ops->features | 1ull << FDVM_VIRTIO_F_VERSION_1 | 1ull << VU_F_PROTOCOL_FEATURES;
}

static uint64_t offered_protocol(const struct fdvm_vu_backend *be)
{
	/* A network device's config space (MAC, link) is the frontend's:
	 * QEMU keeps its own and warns about a backend offering CONFIG. */
	bool config = be->ops->config_size && be->ops->device_id != 1;
	return 1ull << VU_PF_MQ | 1ull << VU_PF_REPLY_ACK |
	       (be->ops->resubmit ? 1ull << VU_PF_INFLIGHT_SHMFD : 0) | 1ull << VU_PF_RESET_DEVICE | 1ull << VU_PF_CONFIGURE_MEM_SLOTS |
	       1ull << VU_PF_STATUS | (config ? 1ull << VU_PF_CONFIG : 0);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- the device: stopped before anything it uses changes ---- */

/* A device thread found ring index broken: it leaves the device until the
 * frontend restarts the ring; the frontend hears of it on the err fd. */
static void ring_out(struct fdvm_vu_backend *be, unsigned index)
{
	struct ring *r = &be->rings[index];
	atomic_store(&r->broken, true);
	pthread_mutex_lock(&be->err_lock);
	if (r->err_fd >= 0)
		fdvm_eventfd_signal(r->err_fd);
	pthread_mutex_unlock(&be->err_lock);
}

static void ring_broken(void *ctx, unsigned index)
{
	struct fdvm_vu_backend *be = ctx;
	vu_log(be, FDVM_LOG_WARN, "vhost-user %s: ring %u: the guest broke the ring; stopped until the frontend restarts it",
	       be->cfg.name, index);
	ring_out(be, index);
}

static void device_stop(struct fdvm_vu_backend *be)
{
	if (!be->running)
		return;
	be->ops->stop(be->cfg.model->opaque);
	for (unsigned k = 0; k < be->nrun; k++)
		be->rings[be->dq[k].index].last_avail = be->dq[k].vq.last_avail;
	be->running = false;
	be->nrun = 0;
}

/* Before changing what the device uses: stop it, start it again later. */
static void quiesce(struct fdvm_vu_backend *be)
{
	device_stop(be);
	be->restart = true;
}

static volatile struct fdvm_vq_inflight *inflight_of(struct fdvm_vu_backend *be, unsigned i)
{
	/* A region sized for inflight_qsize entries holds a smaller ring too. */
	if (!be->inflight || i >= be->inflight_nq || be->rings[i].num > be->inflight_qsize)
		return NULL;
	return (void *)((uint8_t *)be->inflight + i * be->inflight_stride);
}

/* Sets up ring i as device queue q; false if the ring cannot run. */
static bool queue_setup(struct fdvm_vu_backend *be, unsigned i, struct fdvm_virtio_queue *q)
{
	struct ring *r = &be->rings[i];
	uint64_t desc, avail, used;
	bool ei = be->features >> FDVM_VIRTIO_F_EVENT_IDX & 1;
	bool ind = be->features >> FDVM_VIRTIO_F_INDIRECT_DESC & 1;

	if (!vu_mem_uva_to_gpa(&be->mem, r->desc, &desc) ||
	    !vu_mem_uva_to_gpa(&be->mem, r->avail, &avail) ||
	    !vu_mem_uva_to_gpa(&be->mem, r->used, &used) ||
	    fdvm_vq_init(&q->vq, r->num, desc, avail, used, ei, ind, vu_mem_gpa, &be->mem)) {
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: ring %u: size %u, rings misaligned or outside the memory table; the ring will not run",
		       be->cfg.name, i, r->num);
		r->unplaced = true;
		ring_out(be, i);
		return false;
	}
	q->index = i;
	q->kick_fd = r->kick_fd;
	q->call_fd = r->call_fd;
	q->stats = &be->stats[i];
	q->vq.last_avail = r->last_avail;
	q->vq.used_idx = __atomic_load_n(&q->vq.used->idx, __ATOMIC_ACQUIRE);
	volatile struct fdvm_vq_inflight *fl = inflight_of(be, i);
	if (fl) {
		fdvm_vq_inflight_attach(&q->vq, fl);
		if (q->vq.nresubmit)
			vu_log(be, FDVM_LOG_INFO, "vhost-user %s: ring %u: %u requests in flight at the last disconnect, resubmitted",
			       be->cfg.name, i, q->vq.nresubmit);
	}
	/* A ring that was running before this kick (the frontend restarted
	 * it, or reconnected after our predecessor died) may hold answers
	 * whose interrupt was never sent: one signal, where the driver could
	 * be waiting. A fresh ring (used index 0) gets none. */
	if (r->fresh && q->vq.used_idx && q->call_fd >= 0 &&
	    (!ei || q->vq.used_idx != __atomic_load_n(&q->vq.avail->ring[q->vq.size], __ATOMIC_ACQUIRE)))
		fdvm_eventfd_signal(q->call_fd);
	r->fresh = false;
	return true;
}

/* Starts the device on every ring ready to run. */
static void apply(struct fdvm_vu_backend *be)
{
	unsigned n = 0;

	device_stop(be);
	if (!be->mem.n)
		return;
	for (unsigned i = 0; i < be->nrings; i++) {
		struct ring *r = &be->rings[i];
		if (!r->started || !r->enabled || atomic_load(&r->broken) || r->unplaced || !r->num ||
		    !r->addr_set)
			continue;
		if (queue_setup(be, i, &be->dq[n]))
			n++;
	}
	if (!n)
		return;
	struct fdvm_virtio_start st = { .features = be->features, .queues = be->dq, .n = n,
					.broken = ring_broken, .ctx = be };
	int ret = be->ops->start(be->cfg.model->opaque, &st);
	if (ret) {
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: starting %s on %u rings: %s", be->cfg.name,
		     be->ops->name, n, strerror(-ret));
		return;
	}
	be->running = true;
	be->nrun = n;
}

static void ring_reset(struct fdvm_vu_backend *be, struct ring *r)
{
	close_fd(&r->kick_fd);
	close_fd(&r->call_fd);
	pthread_mutex_lock(&be->err_lock);
	close_fd(&r->err_fd);
	pthread_mutex_unlock(&be->err_lock);
	*r = (struct ring){ .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
}

static void inflight_unmap(struct fdvm_vu_backend *be)
{
	if (be->inflight)
		munmap(be->inflight, be->inflight_len);
	be->inflight = NULL;
	be->inflight_len = 0;
	be->inflight_nq = 0;
}

/* The device as after a reset: stopped, no ring, no inflight region, status
 * 0. Memory and negotiated features stay (RESET_DEVICE keeps them). */
static void device_reset(struct fdvm_vu_backend *be)
{
	device_stop(be);
	for (unsigned i = 0; i < MAX_RINGS; i++)
		ring_reset(be, &be->rings[i]);
	inflight_unmap(be);
	be->status = 0;
}

/* Everything a connection set up goes; the backend is as created. */
static void state_reset(struct fdvm_vu_backend *be)
{
	device_reset(be);
	vu_mem_clear(&be->mem);
	be->features = be->protocol_features = 0;
	be->restart = false;
	memset(be->counts, 0, sizeof(be->counts));
}

/* ---- messages ---- */

/* What a handler tells dispatch: done (0), a failure the frontend may hear
 * of through REPLY_ACK (-errno), or drop the connection (DROP). */
#define DROP 1

struct ctx {
	struct fdvm_vu_backend *be;
	struct vu_msg *m;
	int *fds;
	unsigned nfds;
	bool replied;		/* the handler sent its own reply */
	bool ack;		/* the frontend asked for a REPLY_ACK */
	char why[160];		/* what was wrong, for the one log line */
};

static int fail(struct ctx *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct ctx *c, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	return err;
}

static int reply(struct ctx *c, const void *payload, uint32_t size, const int *fds, unsigned nfds)
{
	struct vu_msg r;
	r.hdr = (struct vu_hdr){ .request = c->m->hdr.request, .flags = VU_VERSION | VU_FLAG_REPLY,
				 .size = size };
	memcpy(r.bytes, payload, size);
	c->replied = true;
	int ret = vu_send(c->be->conn_fd, &r, fds, nfds);
	return ret ? fail(c, DROP, "sending the reply: %s", strerror(-ret)) : 0;
}

static int reply_u64(struct ctx *c, uint64_t v)
{
	return reply(c, &v, sizeof(v), NULL, 0);
}

/* The ring a message names; NULL (and c->why) if there is none. */
static struct ring *ring_at(struct ctx *c, uint32_t index)
{
	if (index >= c->be->nrings) {
		fail(c, -EINVAL, "ring %u does not exist (%u rings)", index, c->be->nrings);
		return NULL;
	}
	return &c->be->rings[index];
}

static int get_features(struct ctx *c)
{
	return reply_u64(c, offered_features(c->be));
}

static int set_features(struct ctx *c)
{
	uint64_t f = c->m->u64;
	if (f & ~offered_features(c->be))
		return fail(c, -EINVAL, "features 0x%llx were not offered",
			    (unsigned long long)(f & ~offered_features(c->be)));
	if (f != c->be->features)
		quiesce(c->be);
	c->be->features = f;
	return 0;
}

static int get_protocol_features(struct ctx *c)
{
	return reply_u64(c, offered_protocol(c->be));
}

static int set_protocol_features(struct ctx *c)
{
	uint64_t f = c->m->u64;
	if (f & ~offered_protocol(c->be))
		return fail(c, -EINVAL, "protocol features 0x%llx were not offered",
			    (unsigned long long)(f & ~offered_protocol(c->be)));
	c->be->protocol_features = f;
	return 0;
}

static int nothing(struct ctx *c)
{
	(void)c;
	return 0;
}

static int reset_device(struct ctx *c)
{
	device_reset(c->be);
	return 0;
}

/* Each of the ring's three parts lies whole in one region. */
static bool ring_fits(const struct vu_mem *mem, const struct ring *r, uint16_t num)
{
	uint64_t parts[3][2] = { { r->desc, 16ull * num }, { r->avail, 6 + 2ull * num },
				 { r->used, 6 + 8ull * num } };
	for (unsigned k = 0; k < 3; k++) {
		uint64_t gpa;
		if (!vu_mem_uva_to_gpa(mem, parts[k][0], &gpa) || !vu_mem_gpa((void *)mem, gpa, parts[k][1]))
			return false;
	}
	return true;
}

/* A new table (or a region removed) must leave every started ring whole. */
static int rings_fit(struct ctx *c, const struct vu_mem *mem)
{
	for (unsigned i = 0; i < c->be->nrings; i++) {
		const struct ring *r = &c->be->rings[i];
		if (r->started && r->addr_set && r->num && !ring_fits(mem, r, r->num))
			return fail(c, -EINVAL, "ring %u is running and would lie outside the memory table", i);
	}
	return 0;
}

/* Replaces the memory table with regions[0..n) on fds[0..n). */
static int set_mem_table(struct ctx *c)
{
	struct fdvm_vu_backend *be = c->be;
	struct vu_mem *next = calloc(1, sizeof(*next));
	const struct vu_mem_table *t = &c->m->mem;
	const char *why = "";
	int ret = 0;

	if (!next)
		return fail(c, -ENOMEM, "out of memory");
	for (unsigned i = 0; i < t->nregions && !ret; i++) {
		struct vu_mapping mp;
		ret = vu_mem_map(next, &t->regions[i], c->fds[i], &mp, &why);
		if (!ret)
			vu_mem_add(next, &mp);
		else
			fail(c, ret, "region %u (guest 0x%llx, size 0x%llx): %s", i,
			     (unsigned long long)t->regions[i].gpa,
			     (unsigned long long)t->regions[i].size, why);
	}
	if (!ret)
		ret = rings_fit(c, next);
	if (ret) {
		vu_mem_clear(next);
		free(next);
		return ret;
	}
	quiesce(be);
	vu_mem_clear(&be->mem);
	be->mem = *next;
	free(next);
	/* Rings the old table could not place may fit the new one. */
	for (unsigned i = 0; i < be->nrings; i++)
		be->rings[i].unplaced = false;
	return 0;
}

static int add_mem_reg(struct ctx *c)
{
	struct fdvm_vu_backend *be = c->be;
	const struct vu_region *r = &c->m->reg.region;
	struct vu_mapping mp;
	const char *why = "";

	/* The same region again: each of QEMU's per-queue-pair vhost devices
	 * adds the whole table on the one connection. Counted, not mapped. */
	int same = vu_mem_find(&be->mem, r, c->fds[0]);
	if (same >= 0) {
		be->mem.m[same].refs++;
		return 0;
	}
	if (be->mem.n == VU_MAX_SLOTS)
		return fail(c, -ENOSPC, "all %d memory slots are taken", VU_MAX_SLOTS);
	int ret = vu_mem_map(&be->mem, r, c->fds[0], &mp, &why);
	if (ret)
		return fail(c, ret, "region (guest 0x%llx, size 0x%llx): %s",
			    (unsigned long long)r->gpa, (unsigned long long)r->size, why);
	quiesce(be);
	vu_mem_add(&be->mem, &mp);
	for (unsigned i = 0; i < be->nrings; i++)
		be->rings[i].unplaced = false;
	return 0;
}

static int rem_mem_reg(struct ctx *c)
{
	const struct vu_region *r = &c->m->reg.region;
	for (unsigned i = 0; i < c->be->mem.n; i++) {
		struct vu_mapping *m = &c->be->mem.m[i];
		if (m->r.gpa == r->gpa && m->r.size == r->size && m->r.uva == r->uva && m->refs > 1) {
			m->refs--; /* still added by another */
			return 0;
		}
	}
	struct vu_mem *after = malloc(sizeof(*after));
	if (!after)
		return fail(c, -ENOMEM, "out of memory");
	/* The table as it would be, mappings borrowed: only looked at. */
	*after = c->be->mem;
	after->n = 0;
	for (unsigned i = 0; i < c->be->mem.n; i++) {
		const struct vu_region *o = &c->be->mem.m[i].r;
		if (o->gpa != r->gpa || o->size != r->size || o->uva != r->uva)
			after->m[after->n++] = c->be->mem.m[i];
	}
	bool found = after->n < c->be->mem.n;
	int ret = found ? rings_fit(c, after) : 0;
	free(after);
	if (!found)
		return fail(c, -ENOENT, "no region at guest 0x%llx, size 0x%llx",
			    (unsigned long long)r->gpa, (unsigned long long)r->size);
	if (ret)
		return ret;
	quiesce(c->be);
	vu_mem_remove(&c->be->mem, r);
	return 0;
}

static int get_max_mem_slots(struct ctx *c)
{
	return reply_u64(c, VU_MAX_SLOTS);
}

static int set_vring_num(struct ctx *c)
{
	struct ring *r = ring_at(c, c->m->state.index);
	uint32_t num = c->m->state.num;
	if (!r)
		return -EINVAL;
	if (!num || (num & (num - 1)) || num > FDVM_VQ_MAX_SIZE) {
		if (c->ack)
			return fail(c, -EINVAL, "ring %u: size %u is not a power of two up to %d",
				    c->m->state.index, num, FDVM_VQ_MAX_SIZE);
		/* The guest chose it (QEMU passes it on unchecked): the ring is
		 * the guest's loss, not the connection. */
		if (r->started)
			quiesce(c->be);
		r->num = 0;
		r->bad_size = true;
		ring_out(c->be, c->m->state.index);
		vu_log(c->be, FDVM_LOG_ERROR, "vhost-user %s: ring %u: size %u is not a power of two up to %d; the ring will not run",
		       c->be->cfg.name, c->m->state.index, num, FDVM_VQ_MAX_SIZE);
		return 0;
	}
	if (r->addr_set && !ring_fits(&c->be->mem, r, (uint16_t)num))
		return fail(c, -EINVAL, "ring %u: with %u entries the rings leave their memory region",
			    c->m->state.index, num);
	if (r->started)
		quiesce(c->be);
	r->num = (uint16_t)num;
	r->bad_size = false;
	r->unplaced = false;
	atomic_store(&r->broken, false);
	return 0;
}

static int set_vring_addr(struct ctx *c)
{
	const struct vu_vring_addr *a = &c->m->addr;
	struct ring *r = ring_at(c, a->index);
	uint64_t gpa;
	if (!r)
		return -EINVAL;
	/* Ring addresses mean something only in a memory table: checked
	 * here, and again at every start (the table may change). */
	if (!c->be->mem.n)
		return fail(c, -EINVAL, "ring %u: ring addresses before any memory table", a->index);
	struct ring probe = { .desc = a->desc, .avail = a->avail, .used = a->used };
	if (!vu_mem_uva_to_gpa(&c->be->mem, a->desc, &gpa) ||
	    !vu_mem_uva_to_gpa(&c->be->mem, a->avail, &gpa) ||
	    !vu_mem_uva_to_gpa(&c->be->mem, a->used, &gpa) ||
	    (r->num && !ring_fits(&c->be->mem, &probe, r->num)))
		return fail(c, -EINVAL, "ring %u: ring addresses outside every memory region", a->index);
	if (r->started)
		quiesce(c->be);
	r->desc = a->desc;
	r->avail = a->avail;
	r->used = a->used;
	r->addr_set = true;
	r->unplaced = false;
	atomic_store(&r->broken, false);
	return 0;
}

static int set_vring_base(struct ctx *c)
{
	struct ring *r = ring_at(c, c->m->state.index);
	if (!r)
		return -EINVAL;
	if (c->m->state.num > 0xffff)
		return fail(c, -EINVAL, "ring %u: base %u is not a 16-bit ring index",
			    c->m->state.index, c->m->state.num);
	if (r->started)
		quiesce(c->be);
	r->last_avail = (uint16_t)c->m->state.num;
	return 0;
}

/* Stops the ring and says where the device got to. */
static int get_vring_base(struct ctx *c)
{
	struct fdvm_vu_backend *be = c->be;
	uint32_t index = c->m->state.index;
	struct ring *r = ring_at(c, index);
	if (!r)
		return DROP; /* a reply was asked for; there is none to give */
	quiesce(be);
	struct vu_vring_state st = { .index = index, .num = r->last_avail };
	r->started = false;
	close_fd(&r->kick_fd);
	close_fd(&r->call_fd);
	atomic_store(&r->broken, false);
	return reply(c, &st, sizeof(st), NULL, 0);
}

/* KICK/CALL/ERR: the ring index, and an fd unless the no-fd bit is set. */
static int vring_fd(struct ctx *c, struct ring **r, int *fd)
{
	uint64_t v = c->m->u64;
	*fd = -1;
	if (v & ~(uint64_t)(VU_VRING_IDX_MASK | VU_VRING_NOFD))
		return fail(c, -EINVAL, "unknown bits 0x%llx", (unsigned long long)v);
	if (!(*r = ring_at(c, (uint32_t)(v & VU_VRING_IDX_MASK))))
		return -EINVAL;
	if (v & VU_VRING_NOFD)
		return 0;
	/* Device threads read and write it without a second thought: it must
	 * be an eventfd (a full pipe would block them). */
	if (!fdvm_fd_is_eventfd(c->fds[0]))
		return fail(c, -EINVAL, "ring %u: the fd is not an eventfd", (unsigned)(v & VU_VRING_IDX_MASK));
	/* A blocking one at its maximum count would hang whoever writes it. */
	int fl = fcntl(c->fds[0], F_GETFL);
	if (fl < 0 || fcntl(c->fds[0], F_SETFL, fl | O_NONBLOCK) < 0)
		return fail(c, -errno, "ring %u: making the eventfd non-blocking: %s",
			    (unsigned)(v & VU_VRING_IDX_MASK), strerror(errno));
	*fd = c->fds[0];
	c->fds[0] = -1; /* the ring's now */
	return 0;
}

static int set_vring_kick(struct ctx *c)
{
	struct ring *r;
	int fd, ret = vring_fd(c, &r, &fd);
	if (ret)
		return ret;
	if (fd < 0)
		return fail(c, -ENOTSUP, "ring %u: a ring without a kick fd (polled) is not supported",
			    (unsigned)(c->m->u64 & VU_VRING_IDX_MASK));
	/* (A ring already out, for a size the guest chose, takes its kick
	 * and stays out.) */
	if ((!r->num || !r->addr_set) && !r->bad_size) {
		close(fd);
		return fail(c, -EINVAL, "ring %u: kicked before its size and addresses were set",
			    (unsigned)(c->m->u64 & VU_VRING_IDX_MASK));
	}
	quiesce(c->be);
	close_fd(&r->kick_fd);
	r->kick_fd = fd;
	r->started = true;
	r->fresh = true;
	atomic_store(&r->broken, false);
	/* Without protocol features a ring is enabled as it starts. */
	if (!(c->be->features >> VU_F_PROTOCOL_FEATURES & 1))
		r->enabled = true;
	return 0;
}

static int set_vring_call(struct ctx *c)
{
	struct ring *r;
	int fd, ret = vring_fd(c, &r, &fd);
	if (ret)
		return ret;
	if (r->started)
		quiesce(c->be);
	close_fd(&r->call_fd);
	r->call_fd = fd;
	/* A running ring may have answered requests with no call fd, or
	 * signalled the old one after the frontend stopped looking at it:
	 * one signal on the new fd, so that no completion goes unheard. */
	if (r->started && fd >= 0)
		fdvm_eventfd_signal(fd);
	return 0;
}

static int set_vring_err(struct ctx *c)
{
	struct ring *r;
	int fd, ret = vring_fd(c, &r, &fd);
	if (ret)
		return ret;
	pthread_mutex_lock(&c->be->err_lock);
	close_fd(&r->err_fd);
	r->err_fd = fd;
	pthread_mutex_unlock(&c->be->err_lock);
	return 0;
}

static int set_vring_enable(struct ctx *c)
{
	struct ring *r = ring_at(c, c->m->state.index);
	if (!r)
		return -EINVAL;
	if (c->m->state.num > 1)
		return fail(c, -EINVAL, "ring %u: enable value %u", c->m->state.index, c->m->state.num);
	if (r->enabled != (c->m->state.num == 1))
		quiesce(c->be);
	r->enabled = c->m->state.num == 1;
	return 0;
}

static int get_queue_num(struct ctx *c)
{
	return reply_u64(c, c->be->nrings);
}

/* Bytes past the device's config space read as zero, as they do through
 * virtio-pci: a frontend may know of more fields than the device has. */
static int get_config(struct ctx *c)
{
	struct vu_config cfg = c->m->config;
	const struct fdvm_virtio_dev_ops *ops = c->be->ops;
	if (c->m->hdr.size != VU_CONFIG_HDR + cfg.size)
		return fail(c, DROP, "a %u-byte config access in a %u-byte payload", cfg.size,
			    c->m->hdr.size);
	if (cfg.size > VU_MAX_CONFIG || cfg.offset > VU_MAX_CONFIG - cfg.size) {
		/* An answer with no contents: the frontend sees the error. */
		vu_log(c->be, FDVM_LOG_ERROR, "vhost-user %s: GET_CONFIG: bytes %u+%u past %u",
		       c->be->cfg.name, cfg.offset, cfg.size, VU_MAX_CONFIG);
		cfg.size = 0;
		return reply(c, &cfg, VU_CONFIG_HDR, NULL, 0);
	}
	memset(cfg.payload, 0, cfg.size);
	uint32_t have = cfg.offset < ops->config_size ? ops->config_size - cfg.offset : 0;
	if (have > cfg.size)
		have = cfg.size;
	if (have && ops->config_read)
		ops->config_read(c->be->cfg.model->opaque, cfg.offset, cfg.payload, have);
	return reply(c, &cfg, VU_CONFIG_HDR + cfg.size, NULL, 0);
}

static int set_config(struct ctx *c)
{
	const struct vu_config *cfg = &c->m->config;
	const struct fdvm_virtio_dev_ops *ops = c->be->ops;
	if (c->m->hdr.size != VU_CONFIG_HDR + cfg->size)
		return fail(c, -EINVAL, "a %u-byte config access in a %u-byte payload", cfg->size,
			    c->m->hdr.size);
	if (cfg->offset > ops->config_size || cfg->size > ops->config_size - cfg->offset)
		return fail(c, -EINVAL, "bytes %u+%u outside the %u-byte config space", cfg->offset,
			    cfg->size, ops->config_size);
	if (ops->config_write && cfg->size)
		ops->config_write(c->be->cfg.model->opaque, cfg->offset, cfg->payload, cfg->size);
	return 0;
}

/* Inflight regions: one per queue, each as big as the ring size needs. */
static size_t inflight_stride(uint16_t qsize)
{
	size_t s = fdvm_vq_inflight_size(qsize);
	return (s + INFLIGHT_ALIGN - 1) & ~(size_t)(INFLIGHT_ALIGN - 1);
}

static int inflight_check(struct ctx *c, const struct vu_inflight *in)
{
	if (!in->num_queues || in->num_queues > c->be->nrings)
		return fail(c, -EINVAL, "inflight for %u queues (the device has %u)", in->num_queues,
			    c->be->nrings);
	if (!in->queue_size || (in->queue_size & (in->queue_size - 1)) ||
	    in->queue_size > FDVM_VQ_MAX_SIZE)
		return fail(c, -EINVAL, "inflight queue size %u is not a power of two up to %d",
			    in->queue_size, FDVM_VQ_MAX_SIZE);
	return 0;
}

static int inflight_install(struct ctx *c, void *map, size_t len, size_t page,
			    const struct vu_inflight *in)
{
	struct fdvm_vu_backend *be = c->be;
	quiesce(be);
	inflight_unmap(be);
	be->inflight = map;
	be->inflight_len = len;
	be->inflight_page = page;
	be->inflight_nq = in->num_queues;
	be->inflight_qsize = in->queue_size;
	be->inflight_stride = inflight_stride(in->queue_size);
	return 0;
}

static int get_inflight_fd(struct ctx *c)
{
	struct vu_inflight in = c->m->inflight;
	int ret = inflight_check(c, &in);
	if (ret)
		return DROP; /* a reply was asked for; there is none to give */
	size_t len = in.num_queues * inflight_stride(in.queue_size);
	int fd = memfd_create("fdvm-vhost-user-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return fail(c, DROP, "memfd_create: %s", strerror(errno));
	void *map = MAP_FAILED;
	if (ftruncate(fd, (off_t)len) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0 ||
	    (map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		ret = fail(c, DROP, "inflight region of %zu bytes: %s", len, strerror(errno));
		close(fd);
		return ret;
	}
	inflight_install(c, map, len, (size_t)sysconf(_SC_PAGESIZE), &in);
	in.mmap_size = len;
	in.mmap_offset = 0;
	ret = reply(c, &in, sizeof(in), &fd, 1);
	close(fd);
	return ret;
}

static int set_inflight_fd(struct ctx *c)
{
	struct vu_inflight in = c->m->inflight;
	struct stat st;
	int ret = inflight_check(c, &in);
	if (ret)
		return ret;
	size_t need = in.num_queues * inflight_stride(in.queue_size);
	if (in.mmap_size < need || in.mmap_offset % (uint64_t)sysconf(_SC_PAGESIZE) ||
	    in.mmap_offset + in.mmap_size < in.mmap_offset)
		return fail(c, -EINVAL, "inflight region of %llu bytes at %llu, %zu needed",
			    (unsigned long long)in.mmap_size, (unsigned long long)in.mmap_offset, need);
	if (fstat(c->fds[0], &st) < 0 || !S_ISREG(st.st_mode) ||
	    in.mmap_offset + need > (uint64_t)st.st_size)
		return fail(c, -EINVAL, "the inflight fd is not a file of %llu bytes",
			    (unsigned long long)(in.mmap_offset + need));
	void *map = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, c->fds[0], (off_t)in.mmap_offset);
	if (map == MAP_FAILED)
		return fail(c, -errno, "mapping the inflight fd: %s", strerror(errno));
	return inflight_install(c, map, need, vu_page_size(&st), &in);
}

static int set_status(struct ctx *c)
{
	if (c->m->u64 > 0xff)
		return fail(c, -EINVAL, "status 0x%llx", (unsigned long long)c->m->u64);
	c->be->status = (uint8_t)c->m->u64;
	return 0;
}

static int get_status(struct ctx *c)
{
	return reply_u64(c, c->be->status);
}

/* Every request served: its payload size (min == max: exact), its fds
 * (max_fds; fds_from_payload: as many as the payload says), and whether it
 * answers itself (then REPLY_ACK does not apply). */
enum fds_rule { FDS_NONE, FDS_ONE, FDS_ONE_OR_NONE, FDS_VRING, FDS_REGIONS };

static const struct handler {
	int (*fn)(struct ctx *c);
	uint32_t min, max;
	enum fds_rule fds;
	bool replies;
	uint32_t needs_pf;	/* a protocol feature bit + 1 it needs, 0 if none */
} handlers[] = {
	[VU_GET_FEATURES] = { get_features, 0, 0, FDS_NONE, true, 0 },
	[VU_SET_FEATURES] = { set_features, 8, 8, FDS_NONE, false, 0 },
	[VU_SET_OWNER] = { nothing, 0, 0, FDS_NONE, false, 0 },
	[VU_RESET_OWNER] = { reset_device, 0, 0, FDS_NONE, false, 0 },
	[VU_SET_MEM_TABLE] = { set_mem_table, 8, sizeof(struct vu_mem_table), FDS_REGIONS, false, 0 },
	[VU_SET_VRING_NUM] = { set_vring_num, 8, 8, FDS_NONE, false, 0 },
	[VU_SET_VRING_ADDR] = { set_vring_addr, 40, 40, FDS_NONE, false, 0 },
	[VU_SET_VRING_BASE] = { set_vring_base, 8, 8, FDS_NONE, false, 0 },
	[VU_GET_VRING_BASE] = { get_vring_base, 8, 8, FDS_NONE, true, 0 },
	[VU_SET_VRING_KICK] = { set_vring_kick, 8, 8, FDS_VRING, false, 0 },
	[VU_SET_VRING_CALL] = { set_vring_call, 8, 8, FDS_VRING, false, 0 },
	[VU_SET_VRING_ERR] = { set_vring_err, 8, 8, FDS_VRING, false, 0 },
	[VU_GET_PROTOCOL_FEATURES] = { get_protocol_features, 0, 0, FDS_NONE, true, 0 },
	[VU_SET_PROTOCOL_FEATURES] = { set_protocol_features, 8, 8, FDS_NONE, false, 0 },
	[VU_GET_QUEUE_NUM] = { get_queue_num, 0, 0, FDS_NONE, true, VU_PF_MQ + 1 },
	[VU_SET_VRING_ENABLE] = { set_vring_enable, 8, 8, FDS_NONE, false, 0 },
	[VU_GET_CONFIG] = { get_config, VU_CONFIG_HDR, VU_CONFIG_HDR + VU_MAX_CONFIG, FDS_NONE, true,
			    VU_PF_CONFIG + 1 },
	[VU_SET_CONFIG] = { set_config, VU_CONFIG_HDR, VU_CONFIG_HDR + VU_MAX_CONFIG, FDS_NONE, false,
			    VU_PF_CONFIG + 1 },
	[VU_GET_INFLIGHT_FD] = { get_inflight_fd, 20, 24, FDS_NONE, true, VU_PF_INFLIGHT_SHMFD + 1 },
	[VU_SET_INFLIGHT_FD] = { set_inflight_fd, 20, 24, FDS_ONE, false, VU_PF_INFLIGHT_SHMFD + 1 },
	[VU_RESET_DEVICE] = { reset_device, 0, 0, FDS_NONE, false, VU_PF_RESET_DEVICE + 1 },
	[VU_GET_MAX_MEM_SLOTS] = { get_max_mem_slots, 0, 0, FDS_NONE, true,
				   VU_PF_CONFIGURE_MEM_SLOTS + 1 },
	[VU_ADD_MEM_REG] = { add_mem_reg, 40, 40, FDS_ONE, false, VU_PF_CONFIGURE_MEM_SLOTS + 1 },
	[VU_REM_MEM_REG] = { rem_mem_reg, 40, 40, FDS_ONE_OR_NONE, false,
			     VU_PF_CONFIGURE_MEM_SLOTS + 1 },
	[VU_SET_STATUS] = { set_status, 8, 8, FDS_NONE, false, VU_PF_STATUS + 1 },
	[VU_GET_STATUS] = { get_status, 0, 0, FDS_NONE, true, VU_PF_STATUS + 1 },
};

/* The message's shape against its request's rule: 0, or why not. */
static int check_shape(struct ctx *c, const struct handler *h)
{
	const struct vu_msg *m = c->m;
	uint32_t size = m->hdr.size, want_fds = 0;
	bool fds_any = false;

	if (size < h->min || size > h->max) {
		if (h->min == h->max)
			return fail(c, DROP, "payload of %u bytes, expected %u", size, h->min);
		return fail(c, DROP, "payload of %u bytes, expected %u to %u", size, h->min, h->max);
	}
	switch (h->fds) {
	case FDS_NONE: break;
	case FDS_ONE: want_fds = 1; break;
	case FDS_ONE_OR_NONE: fds_any = c->nfds <= 1; break;
	case FDS_VRING: want_fds = m->u64 & VU_VRING_NOFD ? 0 : 1; break;
	case FDS_REGIONS:
		if (m->mem.nregions > VU_MEM_TABLE_REGIONS)
			return fail(c, DROP, "%u regions (at most %d)", m->mem.nregions,
				    VU_MEM_TABLE_REGIONS);
		if (size != 8 + m->mem.nregions * sizeof(struct vu_region))
			return fail(c, DROP, "payload of %u bytes for %u regions", size,
				    m->mem.nregions);
		want_fds = m->mem.nregions;
		break;
	}
	if (!fds_any && c->nfds != want_fds)
		return fail(c, DROP, "%u fds, expected %u", c->nfds, want_fds);
	if (h->needs_pf && !(c->be->protocol_features >> (h->needs_pf - 1) & 1))
		return fail(c, -ENOTSUP, "protocol feature %u was not negotiated", h->needs_pf - 1);
	return 0;
}

int vu_backend_handle(struct fdvm_vu_backend *be, struct vu_msg *m, int *fds, unsigned nfds)
{
	struct ctx c = { .be = be, .m = m, .fds = fds, .nfds = nfds };
	const struct handler *h = m->hdr.request < sizeof(handlers) / sizeof(handlers[0]) &&
					  handlers[m->hdr.request].fn
				  ? &handlers[m->hdr.request]
				  : NULL;
	bool ack = be->protocol_features >> VU_PF_REPLY_ACK & 1 && m->hdr.flags & VU_FLAG_NEED_REPLY;
	char name[32];

	c.ack = ack;
	int ret;

	be->counts[m->hdr.request <= VU_GET_STATUS ? m->hdr.request : VU_GET_STATUS + 1]++;
	vu_log(be, FDVM_LOG_DEBUG, "vhost-user %s: %s, %u bytes, %u fds", be->cfg.name,
	       vu_request_name(m->hdr.request, name, sizeof(name)), m->hdr.size, nfds);
	/* Zero what a short payload left out, so no handler reads stale bytes. */
	if (m->hdr.size < sizeof(m->bytes))
		memset(m->bytes + m->hdr.size, 0, sizeof(m->bytes) - m->hdr.size);
	if ((m->hdr.flags & VU_FLAG_VERSION_MASK) != VU_VERSION)
		ret = fail(&c, DROP, "version %u", m->hdr.flags & VU_FLAG_VERSION_MASK);
	else if (!h)
		ret = fail(&c, ack ? -ENOTSUP : DROP, "not supported");
	else if (!(ret = check_shape(&c, h)))
		ret = h->fn(&c);
	vu_close_fds(fds, nfds); /* what a handler kept, it took out */
	if (ret) {
		/* A "no" only where the frontend asked for one; otherwise it
		 * would go on as if all were done: better it learns now. */
		bool nack = ret != DROP && ack && !(h && h->replies) && !c.replied;
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: %s: %s%s", be->cfg.name,
		       vu_request_name(m->hdr.request, name, sizeof(name)), c.why,
		       nack ? "" : "; dropping the frontend");
		if (!nack)
			return -1;
	}
	if (ack && !(h && h->replies) && reply_u64(&c, ret ? 1 : 0))
		return -1;
	if (be->restart) {
		be->restart = false;
		apply(be);
	}
	return 0;
}

/* ---- memory that faults ---- */

static bool in_mapping(const void *addr, const void *map, size_t len)
{
	return map && (const uint8_t *)addr >= (const uint8_t *)map &&
	       (size_t)((const uint8_t *)addr - (const uint8_t *)map) < len;
}

bool fdvm_vu_backend_fault(struct fdvm_vu_backend *be, void *addr)
{
	size_t page = 0;
	if (in_mapping(addr, be->inflight, be->inflight_len))
		page = be->inflight_page;
	for (unsigned i = 0; i < be->mem.n && !page; i++)
		if (in_mapping(addr, be->mem.m[i].map, be->mem.m[i].map_len))
			page = be->mem.m[i].page;
	if (!page)
		return false;
	/* The file under the mapping shrank: put a blank page (of the
	 * mapping's page size: a huge page cannot be split) where the access
	 * faulted, so it completes, and have the loop drop the frontend. Only
	 * syscalls here: this runs in a signal handler. */
	uintptr_t at = (uintptr_t)addr & ~(uintptr_t)(page - 1);
	if (mmap((void *)at, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) == MAP_FAILED)
		return false;
	atomic_store(&be->faulted, true);
	uint64_t one = 1;
	if (write(be->fault_fd, &one, sizeof(one)) < 0) {
		/* the count is at its maximum: the loop knows already */
	}
	return true;
}

static void disconnect(struct fdvm_vu_backend *be);

static void on_fault(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_backend *be = opaque;
	uint64_t n;
	(void)events;
	fdvm_eventfd_drain(fd, &n);
	if (!atomic_exchange(&be->faulted, false) || be->conn_fd < 0)
		return;
	vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: the frontend's memory shrank under a mapping (SIGBUS); dropping the frontend",
	       be->cfg.name);
	disconnect(be);
}

/* ---- connections ---- */

static void on_listen(void *opaque, int fd, uint32_t events);

static void watch_listen(struct fdvm_vu_backend *be)
{
	if (be->listen_fd < 0 || be->watching_listen)
		return;
	int ret = fdvm_loop_add(be->cfg.loop, be->listen_fd, EPOLLIN, on_listen, be);
	if (ret)
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: watching the listening socket: %s",
		     be->cfg.name, strerror(-ret));
	else
		be->watching_listen = true;
}

static void disconnect(struct fdvm_vu_backend *be)
{
	if (be->conn_fd < 0)
		return;
	/* What the frontend said, by request: how often it restarted rings,
	 * moved memory or swapped call fds (QEMU does on every MSI-X mask). */
	char said[1024] = "";
	size_t at = 0;
	for (unsigned r = 0; r < sizeof(be->counts) / sizeof(be->counts[0]); r++) {
		char name[32];
		if (be->counts[r] && at < sizeof(said))
			at += (size_t)snprintf(said + at, sizeof(said) - at, " %s %lu",
					       r > VU_GET_STATUS ? "unknown" : vu_request_name(r, name, sizeof(name)),
					       be->counts[r]);
	}
	fdvm_loop_del(be->cfg.loop, be->conn_fd);
	state_reset(be);
	close(be->conn_fd);
	be->conn_fd = -1;
	vu_log(be, FDVM_LOG_INFO, "vhost-user %s: frontend disconnected; messages:%s", be->cfg.name, said);
	watch_listen(be);
}

static void on_message(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_backend *be = opaque;
	struct vu_msg *m = malloc(sizeof(*m));
	int fds[VU_MAX_FDS];
	unsigned nfds;
	int ret;

	(void)events;
	if (!m) {
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: out of memory", be->cfg.name);
		disconnect(be);
		return;
	}
	ret = vu_recv(fd, m, fds, &nfds, VU_IO_TIMEOUT_MS);
	if (ret == -EPIPE)
		ret = -1; /* the frontend went away */
	else if (ret)
		vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: reading a message: %s; dropping the frontend",
		       be->cfg.name, ret == -EPROTO ? "malformed or cut short"
				     : ret == -ETIMEDOUT ? "not whole within 5 s" : strerror(-ret));
	else
		ret = vu_backend_handle(be, m, fds, nfds);
	free(m);
	if (ret)
		disconnect(be);
}

int fdvm_vu_backend_serve(struct fdvm_vu_backend *be, int conn_fd)
{
	if (be->conn_fd >= 0)
		return -EBUSY;
	int ret = vu_set_send_timeout(conn_fd);
	if (ret)
		return fdvm_log_to_errno(be->cfg.log, be->cfg.log_opaque, -ret,
					 "vhost-user %s: socket send timeout", be->cfg.name);
	ret = fdvm_loop_add(be->cfg.loop, conn_fd, EPOLLIN, on_message, be);
	if (ret)
		return ret;
	be->conn_fd = conn_fd;
	vu_log(be, FDVM_LOG_INFO, "vhost-user %s: frontend connected", be->cfg.name);
	return 0;
}

static void on_listen(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_backend *be = opaque;
	(void)events;
	int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
	if (conn < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			vu_log(be, FDVM_LOG_ERROR, "vhost-user %s: accept: %s", be->cfg.name, strerror(errno));
		return;
	}
	/* One frontend at a time: the next waits in the backlog. */
	fdvm_loop_del(be->cfg.loop, fd);
	be->watching_listen = false;
	if (fdvm_vu_backend_serve(be, conn)) {
		close(conn);
		watch_listen(be);
	}
}

int fdvm_vu_backend_listen(struct fdvm_vu_backend *be, int listen_fd)
{
	if (be->listen_fd >= 0)
		return -EBUSY;
	be->listen_fd = listen_fd;
	if (be->conn_fd < 0)
		watch_listen(be);
	return be->conn_fd < 0 && !be->watching_listen ? -EIO : 0;
}

bool fdvm_vu_backend_connected(const struct fdvm_vu_backend *be)
{
	return be->conn_fd >= 0;
}

int fdvm_vu_backend_create(const struct fdvm_vu_backend_config *cfg, struct fdvm_vu_backend **out)
{
	const struct fdvm_virtio_dev_ops *ops = cfg->model ? cfg->model->ops : NULL;
	if (!ops || !cfg->loop || !ops->num_queues || ops->num_queues > MAX_RINGS ||
	    ops->config_size > VU_MAX_CONFIG)
		return -EINVAL;
	struct fdvm_vu_backend *be = aligned_alloc(_Alignof(struct fdvm_vu_backend), sizeof(*be));
	if (!be)
		return -ENOMEM;
	memset(be, 0, sizeof(*be));
	be->cfg = *cfg;
	if (!be->cfg.name)
		be->cfg.name = ops->name;
	be->ops = ops;
	be->nrings = ops->num_queues;
	be->listen_fd = be->conn_fd = -1;
	be->fault_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int ret = be->fault_fd < 0 ? -errno : fdvm_loop_add(cfg->loop, be->fault_fd, EPOLLIN, on_fault, be);
	if (ret) {
		if (be->fault_fd >= 0)
			close(be->fault_fd);
		free(be);
		return ret;
	}
	pthread_mutex_init(&be->err_lock, NULL);
	for (unsigned i = 0; i < MAX_RINGS; i++)
		be->rings[i] = (struct ring){ .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
	*out = be;
	return 0;
}

unsigned fdvm_vu_backend_stats(struct fdvm_vu_backend *be, struct fdvm_virtio_queue_stats *out,
			       unsigned max)
{
	unsigned n = be->nrings < max ? be->nrings : max;
	for (unsigned i = 0; i < n; i++) {
		const struct ring *r = &be->rings[i];
		out[i] = (struct fdvm_virtio_queue_stats){
			.index = i, .enabled = r->enabled && r->started, .size = r->num,
			.vector = 0xffff, .kick_path = FDVM_KICK_FRONTEND };
		fdvm_queue_stats_read(&be->stats[i], &out[i].s);
	}
	return be->nrings;
}

void fdvm_vu_backend_destroy(struct fdvm_vu_backend *be)
{
	if (!be)
		return;
	if (be->watching_listen)
		fdvm_loop_del(be->cfg.loop, be->listen_fd);
	be->watching_listen = false;
	be->listen_fd = -1; /* no new connection */
	disconnect(be);
	state_reset(be);
	fdvm_loop_del(be->cfg.loop, be->fault_fd);
	close(be->fault_fd);
	pthread_mutex_destroy(&be->err_lock);
	free(be);
}

int fdvm_vu_listen_unix(const char *path, fdvm_log_fn log, void *log_opaque, int *out)
{
	return fdvm_unix_listen(path, "vhost-user", log, log_opaque, out);
}
