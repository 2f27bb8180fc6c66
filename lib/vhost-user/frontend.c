/*
 * fdvm as a vhost-user frontend: a virtio device model whose work is done by
 * a backend in another process. Plugged into the virtio-pci transport like
 * any model (lib/virtio/pci.c); at start it hands the backend guest RAM
 * (the VM's memfd), each queue's ring addresses, its kick eventfd (the
 * queue's doorbell, an ioeventfd) and its call eventfd (the queue's MSI-X
 * line, an irqfd). From then on fdvm is out of the data path: the guest's
 * doorbell reaches the backend through KVM, the backend's interrupt reaches
 * the guest through KVM. MSI-X masking is the line's own business (deassign
 * the irqfd, the eventfd keeps the pending count): the backend is never
 * told, since its call fd does not change.
 *
 * Threads: start, stop and config accesses come from the transport (a vCPU
 * thread); a supervisor thread of our own watches the socket for a hang-up,
 * the rings' error eventfds, and a reconnect timer. fe->lock serialises
 * every conversation with the backend and the state below it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdvm/vhost_user.h"
#include "wire.h"
#include "../vm_priv.h"

#define MAX_QUEUES 64
#define QUEUE_SIZE 256
#define GIVE_UP_TRIES 10

struct fdvm_vu_frontend;

/* What fdvm knows of each device type: its PCI class, how much config space
 * to ask for, and what fdvm says itself in it. */
struct dev_type {
	uint32_t device_id;
	const char *name;
	uint32_t pci_class;
	uint32_t config_size;
	/* The config space has fdvm's own values where fdvm knows better
	 * (the queue count it uses; net: the MAC asked for). from_backend
	 * false: the backend has none (no CONFIG), config is zeroed. */
	void (*fix_config)(const struct fdvm_vu_frontend *fe, uint8_t *config, bool from_backend);
	/* The features the driver is offered, from the backend's. */
	uint64_t (*features)(const struct fdvm_vu_frontend *fe, uint64_t offered);
	bool own_config;	/* fdvm fills the config space if the backend does not */
};

static void blk_fix_config(const struct fdvm_vu_frontend *fe, uint8_t *config, bool from_backend);
static void net_fix_config(const struct fdvm_vu_frontend *fe, uint8_t *config, bool from_backend);
static uint64_t net_features(const struct fdvm_vu_frontend *fe, uint64_t offered);

static const struct dev_type types[] = {
	{ 1, "vhost-user-net", 0x020000, 12, net_fix_config, net_features, true },
	{ 2, "vhost-user-blk", 0x018000, 60, blk_fix_config, NULL, false },
};

struct fdvm_vu_frontend {
	struct fdvm_vm *vm;
	struct fdvm_vu_frontend_config cfg;
	char *path;
	const struct dev_type *type;
	struct fdvm_virtio_dev_ops ops;
	struct fdvm_virtio_model model;
	struct fdvm_epoll_loop *sup;	/* the supervisor thread */
	struct fdvm_loop *supl;
	int timer_fd;			/* reconnect tries */
	int err_fd[MAX_QUEUES];		/* the backend says a ring broke */

	pthread_mutex_t config_lock;	/* guards config: a vCPU reads it while
					 * a reconnect may hold lock for long */
	uint8_t config[VU_MAX_CONFIG];
	pthread_mutex_t lock;		/* guards everything below */
	int sock;			/* -1 while disconnected */
	bool mem_sent;			/* on this connection */
	uint64_t backend_features, protocol_features;
	unsigned nq;
	bool started;			/* the transport started us */
	struct fdvm_virtio_start st;	/* its queues, while started */
	uint64_t features;		/* negotiated with the driver */
	int inflight_fd;		/* kept across reconnects; -1 */
	struct vu_inflight inflight;
	unsigned tries;			/* reconnect attempts since the loss */
	bool gave_up;
	unsigned long messages;		/* sent to the backend, ever */
};

/* ---- one conversation: a request and, where there is one, its reply ---- */

static bool has_pf(const struct fdvm_vu_frontend *fe, unsigned bit)
{
	return fe->protocol_features >> bit & 1;
}

/*
 * Sends a request; with want (a reply payload of exactly want_len bytes)
 * waits for its reply, and a reply fd if reply_fd. A request without a
 * reply of its own asks for a REPLY_ACK when the backend has it, so that a
 * refusal is seen here. Lock held. 0 or -errno (logged). A failure leaves
 * the socket to the supervisor, which sees the hang-up.
 */
static int call(struct fdvm_vu_frontend *fe, uint32_t req, const void *payload, uint32_t len,
		const int *fds, unsigned nfds, void *want, uint32_t want_len, int *reply_fd)
{
	struct vu_msg *m = malloc(sizeof(*m));
	int rfds[VU_MAX_FDS];
	unsigned nr = 0;
	char name[32];
	int ret;

	if (!m)
		return -ENOMEM;
	if (fe->sock < 0) {
		ret = -ENOTCONN;
		goto out;
	}
	bool ack = !want && has_pf(fe, VU_PF_REPLY_ACK);
	m->hdr = (struct vu_hdr){ .request = req, .flags = VU_VERSION | (ack ? VU_FLAG_NEED_REPLY : 0),
				  .size = len };
	if (len)
		memcpy(m->bytes, payload, len);
	fe->messages++;
	if ((ret = vu_send(fe->sock, m, fds, nfds)))
		goto fail;
	if (!want && !ack)
		goto out;
	if ((ret = vu_recv(fe->sock, m, rfds, &nr, VU_IO_TIMEOUT_MS)))
		goto fail;
	if (m->hdr.request != req || !(m->hdr.flags & VU_FLAG_REPLY) ||
	    m->hdr.size != (want ? want_len : 8) || nr > (reply_fd ? 1u : 0u)) {
		vu_close_fds(rfds, nr);
		ret = -EPROTO;
		goto fail;
	}
	if (ack) {
		if (m->u64) {
			fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: %s: the backend refused it",
				 fe->path, vu_request_name(req, name, sizeof(name)));
			ret = -EINVAL;
		}
		goto out;
	}
	memcpy(want, m->bytes, m->hdr.size);
	if (reply_fd)
		*reply_fd = nr ? rfds[0] : -1;
	goto out;
fail:
	fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: %s: %s", fe->path,
		 vu_request_name(req, name, sizeof(name)),
		 ret == -EPROTO ? "the backend's reply is malformed" : strerror(-ret));
	/* Whatever comes next on this socket is out of step: the supervisor
	 * sees the hang-up and takes it from there. */
	shutdown(fe->sock, SHUT_RDWR);
out:
	free(m);
	return ret;
}

static int call_u64(struct fdvm_vu_frontend *fe, uint32_t req, uint64_t v)
{
	return call(fe, req, &v, sizeof(v), NULL, 0, NULL, 0, NULL);
}

static int get_u64(struct fdvm_vu_frontend *fe, uint32_t req, uint64_t *v)
{
	return call(fe, req, NULL, 0, NULL, 0, v, sizeof(*v), NULL);
}

static int call_state(struct fdvm_vu_frontend *fe, uint32_t req, uint32_t index, uint32_t num)
{
	struct vu_vring_state s = { index, num };
	return call(fe, req, &s, sizeof(s), NULL, 0, NULL, 0, NULL);
}

/* KICK/CALL/ERR for ring i: fd, or "no fd" when fd < 0. */
static int call_vring_fd(struct fdvm_vu_frontend *fe, uint32_t req, unsigned i, int fd)
{
	uint64_t v = i | (fd < 0 ? VU_VRING_NOFD : 0);
	return call(fe, req, &v, sizeof(v), fd < 0 ? NULL : &fd, fd < 0 ? 0 : 1, NULL, 0, NULL);
}

/* ---- connecting ---- */

static void on_hangup(void *opaque, int fd, uint32_t events);

static int connect_socket(struct fdvm_vu_frontend *fe, bool quiet)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd, ret;

	if (strlen(fe->path) >= sizeof(a.sun_path)) {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the socket path is too long", fe->path);
		return -ENAMETOOLONG;
	}
	strcpy(a.sun_path, fe->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fdvm_log_errno(fe->vm, errno, "vhost-user %s: socket", fe->path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int err = errno;
		close(fd);
		if (quiet)
			return -err;
		return fdvm_log_errno(fe->vm, err, "vhost-user %s: connect", fe->path);
	}
	if ((ret = vu_set_send_timeout(fd))) {
		int err = -ret;
		close(fd);
		return fdvm_log_errno(fe->vm, err, "vhost-user %s: socket send timeout", fe->path);
	}
	fe->sock = fd;
	fe->mem_sent = false;
	return 0;
}

/* The supervisor's thread only (or once it is gone): the socket's watch
 * is deleted, which must not wait for a callback that waits for us. */
static void drop_socket(struct fdvm_vu_frontend *fe)
{
	if (fe->sock < 0)
		return;
	if (fe->supl)
		fdvm_loop_del(fe->supl, fe->sock);
	close(fe->sock);
	fe->sock = -1;
}

/* What we ask of a backend, of the protocol features. */
#define WANT_PF                                                                         \
	(1ull << VU_PF_MQ | 1ull << VU_PF_REPLY_ACK | 1ull << VU_PF_CONFIG |            \
	 1ull << VU_PF_INFLIGHT_SHMFD | 1ull << VU_PF_RESET_DEVICE |                    \
	 1ull << VU_PF_CONFIGURE_MEM_SLOTS)

/* Features, protocol features, owner, queue count, config. Lock held. */
static int handshake(struct fdvm_vu_frontend *fe)
{
	uint64_t f, pf = 0, nq = 1;
	int ret;

	fe->protocol_features = 0;
	if ((ret = get_u64(fe, VU_GET_FEATURES, &f)))
		return ret;
	if (!(f >> FDVM_VIRTIO_F_VERSION_1 & 1)) {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend is not a virtio 1.x device (no VERSION_1)",
			 fe->path);
		return -ENOTSUP;
	}
	if (f >> VU_F_PROTOCOL_FEATURES & 1) {
		if ((ret = get_u64(fe, VU_GET_PROTOCOL_FEATURES, &pf)))
			return ret;
		pf &= WANT_PF;
		if ((ret = call_u64(fe, VU_SET_PROTOCOL_FEATURES, pf)))
			return ret;
		fe->protocol_features = pf;
	}
	if (fe->started && (fe->features & ~f)) {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend no longer offers features 0x%llx",
			 fe->path, (unsigned long long)(fe->features & ~f));
		return -ENOTSUP;
	}
	fe->backend_features = f;
	if (has_pf(fe, VU_PF_MQ) && (ret = get_u64(fe, VU_GET_QUEUE_NUM, &nq)))
		return ret;
	if (!nq || nq > MAX_QUEUES)
		nq = nq ? MAX_QUEUES : 1;
	if (fe->nq && nq < fe->nq) {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend has %llu queues, %u wanted",
			 fe->path, (unsigned long long)nq, fe->nq);
		return -ENOTSUP;
	}
	if (!fe->nq)
		fe->nq = (unsigned)nq;
	if (fe->type->device_id == 1 && fe->nq < 2) {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: a network backend with %u queue (at least a receive and a transmit queue are needed)",
			 fe->path, fe->nq);
		return -ENOTSUP;
	}
	if ((ret = call(fe, VU_SET_OWNER, NULL, 0, NULL, 0, NULL, 0, NULL)))
		return ret;
	if (has_pf(fe, VU_PF_CONFIG) || fe->type->own_config) {
		struct vu_config c = { .offset = 0, .size = fe->type->config_size };
		if (has_pf(fe, VU_PF_CONFIG) &&
		    (ret = call(fe, VU_GET_CONFIG, &c, VU_CONFIG_HDR + c.size, NULL, 0, &c,
				VU_CONFIG_HDR + c.size, NULL)))
			return ret;
		fe->type->fix_config(fe, c.payload, has_pf(fe, VU_PF_CONFIG));
		pthread_mutex_lock(&fe->config_lock);
		memcpy(fe->config, c.payload, fe->type->config_size);
		pthread_mutex_unlock(&fe->config_lock);
	}
	return 0;
}

/* ---- device types ---- */

static void blk_fix_config(const struct fdvm_vu_frontend *fe, uint8_t *config, bool from_backend)
{
	uint16_t v = (uint16_t)fe->nq;
	(void)from_backend;
	memcpy(config + 34, &v, 2); /* virtio_blk_config.num_queues */
}

#define NET_F_MTU 3
#define NET_F_MAC 5
#define NET_F_STATUS 16
#define NET_F_CTRL_VQ 17
#define NET_F_CTRL_RX 18
#define NET_F_CTRL_VLAN 19
#define NET_F_GUEST_ANNOUNCE 21
#define NET_F_MQ 22
#define NET_F_CTRL_MAC_ADDR 23

/* virtio_net_config: mac[6], status, max_virtqueue_pairs, mtu. */
static void net_fix_config(const struct fdvm_vu_frontend *fe, uint8_t *config, bool from_backend)
{
	uint16_t pairs = (uint16_t)(fe->nq / 2), link_up = 1, have;
	if (fe->cfg.mac_set) {
		memcpy(config, fe->cfg.mac, 6);
	} else if (!from_backend) {
		/* QEMU's 52:54:00 prefix, and three bytes from the socket path. */
		uint32_t h = 2166136261u;
		for (const char *c = fe->path; *c; c++)
			h = (h ^ (uint8_t)*c) * 16777619u;
		const uint8_t mac[6] = { 0x52, 0x54, 0x00, (uint8_t)(h >> 16), (uint8_t)(h >> 8), (uint8_t)h };
		memcpy(config, mac, 6);
	}
	if (!from_backend)
		memcpy(config + 6, &link_up, 2);
	memcpy(&have, config + 8, 2);
	if (!from_backend || !have || have > pairs)
		memcpy(config + 8, &pairs, 2);
}

static uint64_t net_features(const struct fdvm_vu_frontend *fe, uint64_t f)
{
	if (!has_pf(fe, VU_PF_CONFIG)) {
		/* fdvm's own config space: a MAC and a link that is up. */
		f |= 1ull << NET_F_MAC | 1ull << NET_F_STATUS;
		f &= ~(1ull << NET_F_MTU);
	}
	/* A control queue only if the backend serves one (fdvm serve net
	 * does; fdvm does not answer it itself), and it must have a queue. */
	if (!(fe->nq % 2))
		f &= ~(1ull << NET_F_CTRL_VQ);
	/* Everything said on the control queue goes with it (5.1.3.1). */
	if (!(f >> NET_F_CTRL_VQ & 1))
		f &= ~(1ull << NET_F_CTRL_RX | 1ull << NET_F_CTRL_VLAN | 1ull << NET_F_GUEST_ANNOUNCE |
		       1ull << NET_F_MQ | 1ull << NET_F_CTRL_MAC_ADDR);
	if (fe->nq < 5)
		f &= ~(1ull << NET_F_MQ);
	return f;
}

/* ---- the rings ---- */

/* Guest RAM: one region per RAM slot, split around the MMIO hole. Once a
 * connection: RAM does not change. */
static int send_memory(struct fdvm_vu_frontend *fe)
{
	struct fdvm_vm *vm = fe->vm;
	struct vu_mem_table t = { .nregions = vm->nram };
	int fds[FDVM_MAX_RAM_REGIONS];
	int ret;

	if (fe->mem_sent)
		return 0;
	for (unsigned i = 0; i < vm->nram; i++) {
		const struct fdvm_ram *r = &vm->ram[i];
		t.regions[i] = (struct vu_region){ .gpa = r->gpa, .size = r->size,
						   .uva = (uintptr_t)r->host,
						   .mmap_offset = (uint64_t)(r->host - vm->mem) };
		fds[i] = vm->mem_fd;
	}
	if (!has_pf(fe, VU_PF_CONFIGURE_MEM_SLOTS)) {
		ret = call(fe, VU_SET_MEM_TABLE, &t, 8 + vm->nram * sizeof(struct vu_region), fds,
			   vm->nram, NULL, 0, NULL);
		fe->mem_sent = !ret;
		return ret;
	}
	uint64_t slots;
	if ((ret = get_u64(fe, VU_GET_MAX_MEM_SLOTS, &slots)))
		return ret;
	if (slots < vm->nram) {
		fdvm_log(vm, FDVM_LOG_ERROR, "vhost-user %s: the backend takes %llu memory regions, guest RAM has %u",
			 fe->path, (unsigned long long)slots, vm->nram);
		return -ENOSPC;
	}
	for (unsigned i = 0; i < vm->nram; i++) {
		struct vu_single_region r = { .region = t.regions[i] };
		if ((ret = call(fe, VU_ADD_MEM_REG, &r, sizeof(r), &fds[i], 1, NULL, 0, NULL)))
			return ret;
	}
	fe->mem_sent = true;
	return 0;
}

/* The inflight region: asked for at a fresh start, handed back after a
 * reconnect so the backend resubmits what its predecessor had taken. */
static int send_inflight(struct fdvm_vu_frontend *fe, bool fresh)
{
	int ret;
	if (!has_pf(fe, VU_PF_INFLIGHT_SHMFD))
		return 0;
	if (fresh || fe->inflight_fd < 0) {
		if (fe->inflight_fd >= 0)
			close(fe->inflight_fd);
		fe->inflight_fd = -1;
		/* One ring size for all: the region's layout has one. */
		uint16_t size = fe->st.n ? fe->st.queues[0].vq.size : QUEUE_SIZE;
		for (unsigned k = 1; k < fe->st.n; k++)
			if (fe->st.queues[k].vq.size != size)
				return 0; /* no tracking: a crash may lose what was in flight */
		struct vu_inflight in = { .num_queues = (uint16_t)fe->nq, .queue_size = size };
		if ((ret = call(fe, VU_GET_INFLIGHT_FD, &in, sizeof(in), NULL, 0, &fe->inflight,
				sizeof(fe->inflight), &fe->inflight_fd)))
			return ret;
		if (fe->inflight_fd < 0) {
			fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: GET_INFLIGHT_FD: no fd", fe->path);
			return -EPROTO;
		}
	}
	return call(fe, VU_SET_INFLIGHT_FD, &fe->inflight, sizeof(fe->inflight), &fe->inflight_fd, 1,
		    NULL, 0, NULL);
}

/* A queue without an MSI-X vector still gets a call eventfd, one nobody
 * reads, as QEMU's do: libvhost-user (qemu-storage-daemon) takes "no fd"
 * and then fails writing to it. */
static int send_call_fd(struct fdvm_vu_frontend *fe, unsigned i, int fd)
{
	if (fd >= 0)
		return call_vring_fd(fe, VU_SET_VRING_CALL, i, fd);
	int d = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d < 0)
		return fdvm_log_errno(fe->vm, errno, "vhost-user %s: eventfd", fe->path);
	int ret = call_vring_fd(fe, VU_SET_VRING_CALL, i, d);
	close(d); /* the backend has its own */
	return ret;
}

/* Everything the backend needs to run the started queues. fresh: a start
 * by the driver (indices from 0); else a reconnect (the indices the used
 * rings show). Lock held. */
static int program(struct fdvm_vu_frontend *fe, bool fresh)
{
	/* Only what the backend offered: bits fdvm provides itself (a net
	 * device's MAC and STATUS without CONFIG) are not the backend's. */
	uint64_t f = (fe->features & fe->backend_features) |
		     (fe->backend_features & 1ull << VU_F_PROTOCOL_FEATURES);
	int ret;

	if ((ret = call_u64(fe, VU_SET_FEATURES, f)) || (ret = send_memory(fe)) ||
	    (ret = send_inflight(fe, fresh)))
		return ret;
	for (unsigned k = 0; k < fe->st.n; k++) {
		struct fdvm_virtio_queue *q = &fe->st.queues[k];
		unsigned i = q->index;
		struct fdvm_vq *vq = &q->vq;
		/* The rings were checked by the transport: they are in RAM. */
		struct vu_vring_addr a = { .index = i, .desc = (uintptr_t)vq->desc,
					   .used = (uintptr_t)vq->used, .avail = (uintptr_t)vq->avail };
		uint16_t base = fresh ? 0 : __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);
		uint64_t drain;
		fdvm_eventfd_drain(fe->err_fd[i], &drain);
		if ((ret = call_state(fe, VU_SET_VRING_NUM, i, vq->size)) ||
		    (ret = call_state(fe, VU_SET_VRING_BASE, i, base)) ||
		    (ret = call(fe, VU_SET_VRING_ADDR, &a, sizeof(a), NULL, 0, NULL, 0, NULL)) ||
		    (ret = send_call_fd(fe, i, q->call_fd)) ||
		    (ret = call_vring_fd(fe, VU_SET_VRING_ERR, i, fe->err_fd[i])) ||
		    /* Last: the kick starts the ring, with its call fd in place. */
		    (ret = call_vring_fd(fe, VU_SET_VRING_KICK, i, q->kick_fd)))
			return ret;
		if ((fe->backend_features >> VU_F_PROTOCOL_FEATURES & 1) &&
		    (ret = call_state(fe, VU_SET_VRING_ENABLE, i, 1)))
			return ret;
	}
	return 0;
}

/* Stops every started ring (GET_VRING_BASE). Lock held. */
static void unprogram(struct fdvm_vu_frontend *fe)
{
	for (unsigned k = 0; k < fe->st.n && fe->sock >= 0; k++) {
		unsigned i = fe->st.queues[k].index;
		struct vu_vring_state s = { i, 0 };
		if (fe->backend_features >> VU_F_PROTOCOL_FEATURES & 1)
			call_state(fe, VU_SET_VRING_ENABLE, i, 0);
		if (call(fe, VU_GET_VRING_BASE, &s, sizeof(s), NULL, 0, &s, sizeof(s), NULL))
			break; /* a backend that cannot stop is gone (call shut it down) */
	}
}

/* ---- the model the transport drives ---- */

static void config_read(void *opaque, uint32_t off, void *buf, uint32_t len)
{
	struct fdvm_vu_frontend *fe = opaque;
	pthread_mutex_lock(&fe->config_lock);
	memcpy(buf, fe->config + off, len);
	pthread_mutex_unlock(&fe->config_lock);
}

static void config_write(void *opaque, uint32_t off, const void *buf, uint32_t len)
{
	struct fdvm_vu_frontend *fe = opaque;
	struct vu_config c = { .offset = off, .size = len };
	pthread_mutex_lock(&fe->lock);
	memcpy(c.payload, buf, len);
	bool ok = has_pf(fe, VU_PF_CONFIG) &&
		  !call(fe, VU_SET_CONFIG, &c, VU_CONFIG_HDR + len, NULL, 0, NULL, 0, NULL);
	pthread_mutex_unlock(&fe->lock);
	if (ok) {
		pthread_mutex_lock(&fe->config_lock);
		memcpy(fe->config + off, buf, len);
		pthread_mutex_unlock(&fe->config_lock);
	}
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct fdvm_vu_frontend *fe = opaque;
	int ret = 0;

	pthread_mutex_lock(&fe->lock);
	fe->st = *s;
	fe->features = s->features;
	fe->started = true;
	if (fe->sock >= 0) {
		ret = program(fe, true);
		/* Rings set up before the failure must not run on: stop them
		 * (GET_VRING_BASE), or failing that cut the connection. */
		if (ret) {
			unprogram(fe);
			if (fe->sock >= 0)
				shutdown(fe->sock, SHUT_RDWR);
		}
	} else if (!fe->cfg.reconnect_s || fe->gave_up)
		ret = -ENOTCONN; /* the transport reports DEVICE_NEEDS_RESET */
	/* else: the rings are handed over when the backend is back. */
	if (ret) {
		fe->started = false;
		if (ret != -ENOTCONN && fe->sock >= 0) {
			fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend would not start the device",
				 fe->path);
		}
	}
	pthread_mutex_unlock(&fe->lock);
	return ret;
}

static void stop(void *opaque)
{
	struct fdvm_vu_frontend *fe = opaque;
	pthread_mutex_lock(&fe->lock);
	if (fe->started)
		unprogram(fe);
	fe->started = false;
	/* A driver's reset ends what was in flight: the next start gets a
	 * fresh inflight region. */
	if (fe->inflight_fd >= 0)
		close(fe->inflight_fd);
	fe->inflight_fd = -1;
	pthread_mutex_unlock(&fe->lock);
}

/* ---- the supervisor: hang-ups, ring errors, reconnects ---- */

static void set_timer(struct fdvm_vu_frontend *fe, unsigned s)
{
	struct itimerspec t = { .it_value = { .tv_sec = s }, .it_interval = { .tv_sec = s } };
	if (timerfd_settime(fe->timer_fd, 0, &t, NULL) < 0)
		fdvm_log_errno(fe->vm, errno, "vhost-user %s: reconnect timer", fe->path);
}

static void arm_reconnect(struct fdvm_vu_frontend *fe)
{
	set_timer(fe, fe->cfg.reconnect_s);
}

/* The driver must reset the device: the backend is gone or broke a ring. */
static void needs_reset(struct fdvm_vu_frontend *fe, unsigned index)
{
	if (fe->started && fe->st.broken)
		fe->st.broken(fe->st.ctx, index);
}

static void lost(struct fdvm_vu_frontend *fe)
{
	drop_socket(fe);
	fe->tries = 0;
	fe->gave_up = false;
	if (fe->cfg.reconnect_s) {
		fdvm_log(fe->vm, FDVM_LOG_WARN, "vhost-user %s: the backend went away; reconnecting every %u s",
			 fe->path, fe->cfg.reconnect_s);
		arm_reconnect(fe);
	} else {
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend went away; the device needs a reset",
			 fe->path);
		needs_reset(fe, 0);
		fe->started = false;
	}
}

static void on_hangup(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_frontend *fe = opaque;
	(void)events;
	pthread_mutex_lock(&fe->lock);
	if (fe->sock == fd)
		lost(fe);
	pthread_mutex_unlock(&fe->lock);
}

static int watch_socket(struct fdvm_vu_frontend *fe)
{
	/* Only a hang-up: the backend speaks only when spoken to. */
	return fdvm_loop_add(fe->supl, fe->sock, EPOLLRDHUP, on_hangup, fe);
}

static void on_timer(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_frontend *fe = opaque;
	uint64_t n;
	(void)events;
	if (read(fd, &n, sizeof(n)) < 0)
		return;
	pthread_mutex_lock(&fe->lock);
	if (fe->sock >= 0) {
		set_timer(fe, 0);
		goto out;
	}
	fe->tries++;
	if (connect_socket(fe, true) == 0) {
		int ret = handshake(fe);
		if (!ret && fe->started)
			ret = program(fe, false);
		if (!ret)
			ret = watch_socket(fe);
		if (!ret) {
			fdvm_log(fe->vm, FDVM_LOG_WARN, "vhost-user %s: reconnected after %u tries%s",
				 fe->path, fe->tries, fe->started ? "; the rings go on where they were" : "");
			fe->tries = 0;
			fe->gave_up = false;
			set_timer(fe, 0);
			goto out;
		}
		drop_socket(fe);
	}
	if (fe->tries == GIVE_UP_TRIES && !fe->gave_up) {
		fe->gave_up = true;
		fdvm_log(fe->vm, FDVM_LOG_ERROR, "vhost-user %s: the backend has not come back after %u tries; the device needs a reset (still trying every %u s)",
			 fe->path, fe->tries, fe->cfg.reconnect_s);
		needs_reset(fe, 0);
	}
out:
	pthread_mutex_unlock(&fe->lock);
}

static void on_ring_error(void *opaque, int fd, uint32_t events)
{
	struct fdvm_vu_frontend *fe = opaque;
	uint64_t n;
	(void)events;
	fdvm_eventfd_drain(fd, &n);
	pthread_mutex_lock(&fe->lock);
	for (unsigned i = 0; i < fe->nq; i++) {
		if (fe->err_fd[i] == fd && fe->started) {
			fdvm_log(fe->vm, FDVM_LOG_WARN, "vhost-user %s: the backend stopped ring %u (the guest broke it)",
				 fe->path, i);
			needs_reset(fe, i);
		}
	}
	pthread_mutex_unlock(&fe->lock);
}

/* ---- life ---- */

static void fe_destroy(struct fdvm_virtio_model *m)
{
	struct fdvm_vu_frontend *fe = m->opaque;
	/* The transport stopped us. The supervisor goes first: afterwards
	 * no callback runs. */
	fdvm_epoll_loop_destroy(fe->sup);
	fe->supl = NULL;
	drop_socket(fe);
	for (unsigned i = 0; i < MAX_QUEUES; i++)
		if (fe->err_fd[i] >= 0)
			close(fe->err_fd[i]);
	if (fe->timer_fd >= 0)
		close(fe->timer_fd);
	if (fe->inflight_fd >= 0)
		close(fe->inflight_fd);
	fdvm_log(fe->vm, FDVM_LOG_INFO, "vhost-user %s: %lu messages sent to the backend", fe->path,
		 fe->messages);
	pthread_mutex_destroy(&fe->lock);
	pthread_mutex_destroy(&fe->config_lock);
	free(fe->path);
	free(fe);
}

void fdvm_vu_frontend_config_init(struct fdvm_vu_frontend_config *cfg)
{
	*cfg = (struct fdvm_vu_frontend_config){ .notify = FDVM_DOORBELL_AUTO };
}

int fdvm_vu_frontend_create(struct fdvm_vm *vm, const struct fdvm_vu_frontend_config *cfg,
			    struct fdvm_virtio_model **out)
{
	const struct dev_type *type = NULL;
	struct fdvm_vu_frontend *fe;
	int ret;

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (types[i].device_id == cfg->device_id)
			type = &types[i];
	/* A network device's queues are the backend's: rx/tx pairs and the
	 * control queue at the end, whose index the pair count fixes. */
	if (!type || !cfg->socket || cfg->num_queues > MAX_QUEUES ||
	    (cfg->device_id == 1 && cfg->num_queues)) {
		fdvm_log(vm, FDVM_LOG_ERROR, "vhost-user: device type %u with %u queues is not supported",
			 cfg->device_id, cfg->num_queues);
		return -EINVAL;
	}
	fe = calloc(1, sizeof(*fe));
	if (!fe || !(fe->path = strdup(cfg->socket))) {
		free(fe);
		return -ENOMEM;
	}
	fe->vm = vm;
	fe->cfg = *cfg;
	fe->cfg.socket = fe->path;
	fe->type = type;
	fe->sock = fe->timer_fd = fe->inflight_fd = -1;
	fe->nq = cfg->num_queues;
	for (unsigned i = 0; i < MAX_QUEUES; i++)
		fe->err_fd[i] = -1;
	pthread_mutex_init(&fe->lock, NULL);
	pthread_mutex_init(&fe->config_lock, NULL);
	fe->model = (struct fdvm_virtio_model){ .ops = &fe->ops, .opaque = fe, .destroy = fe_destroy };

	if ((ret = fdvm_epoll_loop_create(&fe->sup)))
		goto err;
	fe->supl = fdvm_epoll_loop_handle(fe->sup);
	if ((ret = connect_socket(fe, false)))
		goto err;
	pthread_mutex_lock(&fe->lock);
	ret = handshake(fe);
	pthread_mutex_unlock(&fe->lock);
	if (ret)
		goto err;
	fe->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (fe->timer_fd < 0) {
		ret = fdvm_log_errno(vm, errno, "vhost-user %s: timerfd", fe->path);
		goto err;
	}
	if ((ret = fdvm_loop_add(fe->supl, fe->timer_fd, EPOLLIN, on_timer, fe)) ||
	    (ret = watch_socket(fe)))
		goto err;
	for (unsigned i = 0; i < fe->nq; i++) {
		fe->err_fd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (fe->err_fd[i] < 0) {
			ret = fdvm_log_errno(vm, errno, "vhost-user %s: eventfd", fe->path);
			goto err;
		}
		if ((ret = fdvm_loop_add(fe->supl, fe->err_fd[i], EPOLLIN, on_ring_error, fe)))
			goto err;
	}
	if ((ret = fdvm_epoll_loop_start_as(fe->sup, "fdvm-vhost-user", FDVM_ROLE_SERVICE)))
		goto err;

	/* The device as the guest sees it: the backend's features that fdvm
	 * can carry (device bits, and the ring bits of the split ring), its
	 * config space, its queues. */
	uint64_t carried = 0xffffffull | FDVM_VIRTIO_VQ_FEATURES;
	fe->ops = (struct fdvm_virtio_dev_ops){
		.name = type->name,
		.device_id = type->device_id,
		.pci_class = type->pci_class,
		.num_queues = fe->nq,
		.queue_max_size = QUEUE_SIZE,
		.features = type->features ? type->features(fe, fe->backend_features & carried)
					   : fe->backend_features & carried,
		.config_size = has_pf(fe, VU_PF_CONFIG) || type->own_config ? type->config_size : 0,
		.config_read = config_read,
		.config_write = config_write,
		.start = start,
		.stop = stop,
		.remote = true,
	};
	fdvm_log(vm, FDVM_LOG_INFO, "vhost-user %s: %s, %u queues, features 0x%llx, protocol features 0x%llx",
		 fe->path, type->name, fe->nq, (unsigned long long)fe->ops.features,
		 (unsigned long long)fe->protocol_features);
	*out = &fe->model;
	return 0;

err:
	fe_destroy(&fe->model);
	return ret;
}

int fdvm_vhost_user_create(struct fdvm_vm *vm, const struct fdvm_vu_frontend_config *cfg,
			   struct fdvm_virtio_pci **out)
{
	struct fdvm_virtio_model *m;
	int ret = fdvm_vu_frontend_create(vm, cfg, &m);
	if (ret)
		return ret;
	return fdvm_virtio_pci_add_model(vm, m, cfg->notify, out);
}
