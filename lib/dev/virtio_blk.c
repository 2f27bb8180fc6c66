/*
 * virtio-blk (virtio 1.x, 5.2) on a raw image file: read, write, flush and
 * get-id, served by the device's backend thread with preadv/pwritev (the
 * image is usually in the page cache or on tmpfs, where a synchronous call
 * costs less than an io_uring round trip would save).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../virtio/backend.h"
#include "../vm_priv.h"

#define SECTOR 512
#define F_SEG_MAX 2
#define F_RO 5
#define F_BLK_SIZE 6
#define F_FLUSH 9
#define F_MQ 12
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define ID_BYTES 20
#define SEG_MAX (FDVM_VQ_MAX_SEGS - 2)

struct blk_config {
	uint64_t capacity;
	uint32_t size_max, seg_max;
	uint16_t cylinders;
	uint8_t heads, sectors;
	uint32_t blk_size;
	uint8_t physical_block_exp, alignment_offset;
	uint16_t min_io_size;
	uint32_t opt_io_size;
	uint8_t writeback, unused0;
	uint16_t num_queues;
} __attribute__((packed));

struct blk {
	struct fdvm_virtio_model model;
	struct fdvm_virtio_dev_ops ops;
	struct fdvm_virtio_backend be;
	struct blk_config config;
	int fd;
	bool ro;
	char id[ID_BYTES];
};

static void config_read(void *opaque, uint32_t off, void *buf, uint32_t len)
{
	struct blk *b = opaque;
	memcpy(buf, (const uint8_t *)&b->config + off, len);
}

/* iov minus its first skip bytes and last trim bytes, into out. */
static unsigned carve(const struct iovec *iov, unsigned n, size_t skip, size_t keep,
		      struct iovec *out)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n && keep; i++) {
		size_t l = iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		size_t c = l - skip < keep ? l - skip : keep;
		out[k++] = (struct iovec){ (char *)iov[i].iov_base + skip, c };
		keep -= c;
		skip = 0;
	}
	return k;
}

static uint8_t do_rw(struct blk *b, bool write, uint64_t sector, const struct iovec *iov,
		     unsigned n, uint64_t len)
{
	if (len % SECTOR || sector > b->config.capacity || len / SECTOR > b->config.capacity - sector)
		return S_IOERR;
	if (write && b->ro)
		return S_IOERR;
	off_t off = (off_t)(sector * SECTOR);
	uint64_t done = 0;
	while (done < len) {
		struct iovec rest[FDVM_VQ_MAX_SEGS];
		unsigned k = carve(iov, n, done, len - done, rest);
		ssize_t r = write ? pwritev(b->fd, rest, (int)k, off + (off_t)done)
				  : preadv(b->fd, rest, (int)k, off + (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return S_IOERR;
		done += (uint64_t)r;
	}
	return S_OK;
}

static void handle(void *opaque, unsigned queue, struct fdvm_vq_elem *e, uint32_t *written)
{
	struct blk *b = opaque;
	struct { uint32_t type, ioprio; uint64_t sector; } hdr;
	uint8_t status;
	struct iovec data[FDVM_VQ_MAX_SEGS];

	(void)queue;
	*written = 0;
	/* The status byte is the last device-writable byte (5.2.6). */
	if (e->in_len < 1)
		return; /* nowhere to answer: complete with nothing written */
	uint64_t in_data = e->in_len - 1;
	if (e->out_len < sizeof(hdr)) {
		status = S_IOERR; /* wrong header size */
		goto answer;
	}
	fdvm_iov_to_buf(e->out, e->nout, 0, &hdr, sizeof(hdr));
	switch (hdr.type) {
	case T_IN: {
		unsigned k = carve(e->in, e->nin, 0, in_data, data);
		status = do_rw(b, false, hdr.sector, data, k, in_data);
		if (status == S_OK)
			*written = (uint32_t)in_data;
		break;
	}
	case T_OUT: {
		uint64_t len = e->out_len - sizeof(hdr);
		unsigned k = carve(e->out, e->nout, sizeof(hdr), len, data);
		status = do_rw(b, true, hdr.sector, data, k, len);
		break;
	}
	case T_FLUSH:
		status = fdatasync(b->fd) ? S_IOERR : S_OK;
		break;
	case T_GET_ID: {
		size_t n = in_data < ID_BYTES ? in_data : ID_BYTES;
		fdvm_iov_from_buf(e->in, e->nin, 0, b->id, n);
		*written = (uint32_t)n;
		status = S_OK;
		break;
	}
	default:
		status = S_UNSUPP;
	}
answer:
	fdvm_iov_from_buf(e->in, e->nin, in_data, &status, 1);
	*written += 1;
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct blk *b = opaque;
	return fdvm_virtio_backend_start(&b->be, s);
}

static void stop(void *opaque)
{
	struct blk *b = opaque;
	fdvm_virtio_backend_stop(&b->be);
}

static void blk_destroy(struct fdvm_virtio_model *m)
{
	struct blk *b = m->opaque;
	/* Whoever started it stopped it first (the transport's teardown). */
	close(b->fd);
	free(b);
}

int fdvm_virtio_blk_model_create(const struct fdvm_virtio_blk_config *cfg, fdvm_log_fn log,
				 void *log_opaque, struct fdvm_virtio_model **out)
{
	struct blk *b;
	struct stat st;
	unsigned nq = cfg->num_queues ? cfg->num_queues : 1;
	int ret;

	if (nq > FDVM_BACKEND_MAX_QUEUES) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR, "virtio-blk %s: %u queues (at most %d)",
			    cfg->path, nq, FDVM_BACKEND_MAX_QUEUES);
		return -EINVAL;
	}
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->ro = cfg->read_only;
	b->fd = open(cfg->path, (b->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (b->fd < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "virtio-blk %s: open", cfg->path);
		goto err_free;
	}
	if (fstat(b->fd, &st) < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "virtio-blk %s: fstat", cfg->path);
		goto err_close;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < SECTOR) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: not a regular file of at least %d bytes", cfg->path, SECTOR);
		ret = -EINVAL;
		goto err_close;
	}
	b->config.capacity = (uint64_t)st.st_size / SECTOR;
	b->config.seg_max = SEG_MAX;
	b->config.blk_size = SECTOR;
	b->config.num_queues = (uint16_t)nq;
	snprintf(b->id, sizeof(b->id), "fdvm-%llx", (unsigned long long)st.st_ino);
	b->ops = (struct fdvm_virtio_dev_ops){
		.name = "virtio-blk",
		.device_id = 2,
		.pci_class = 0x018000,
		.num_queues = nq,
		.queue_max_size = 256,
		.features = 1ull << F_SEG_MAX | 1ull << F_BLK_SIZE | 1ull << F_FLUSH |
			    (b->ro ? 1ull << F_RO : 0) | (nq > 1 ? 1ull << F_MQ : 0) |
			    FDVM_VIRTIO_VQ_FEATURES,
		.config_size = sizeof(struct blk_config),
		.resubmit = true,
		.config_read = config_read,
		.start = start,
		.stop = stop,
	};
	b->be = (struct fdvm_virtio_backend){ .handle = handle, .opaque = b, .name = "virtio-blk",
					      .poll_ns = cfg->poll_us * 1000ull };
	b->model = (struct fdvm_virtio_model){ .ops = &b->ops, .opaque = b, .destroy = blk_destroy };
	*out = &b->model;
	return 0;

err_close:
	close(b->fd);
err_free:
	free(b);
	return ret;
}

static void vm_log(void *opaque, enum fdvm_log_level level, const char *msg)
{
	fdvm_log(opaque, level, "%s", msg);
}

void fdvm_virtio_blk_config_init(struct fdvm_virtio_blk_config *cfg)
{
	*cfg = (struct fdvm_virtio_blk_config){ .num_queues = 1, .notify = FDVM_DOORBELL_AUTO,
						.poll_us = FDVM_VIRTIO_POLL_US_DEFAULT };
}

int fdvm_virtio_blk_create(struct fdvm_vm *vm, const struct fdvm_virtio_blk_config *cfg,
			   struct fdvm_virtio_pci **out)
{
	struct fdvm_virtio_model *m;
	int ret = fdvm_virtio_blk_model_create(cfg, vm_log, vm, &m);
	if (ret)
		return ret;
	return fdvm_virtio_pci_add_model(vm, m, cfg->notify, out);
}
