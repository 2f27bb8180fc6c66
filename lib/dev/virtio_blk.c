/*
 * virtio-blk (virtio 1.x, 5.2) on a raw image file or a block device: read,
 * write, flush, get-id, discard and write-zeroes, served by the device's
 * backend thread with preadv/pwritev and fallocate (the image is usually in
 * the page cache or on tmpfs, where a synchronous call costs less than an
 * io_uring round trip would save). The image is locked as QEMU locks its
 * own, so neither starts a second writer on it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
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
#define F_DISCARD 13
#define F_WRITE_ZEROES 14
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define WZ_UNMAP 1
/* Discard and write-zeroes: segments a request, sectors a segment. */
#define RANGE_SEGS 16
#define RANGE_SECTORS (1u << 22)
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
	uint32_t max_discard_sectors, max_discard_seg, discard_sector_alignment;
	uint32_t max_write_zeroes_sectors, max_write_zeroes_seg;
	uint8_t write_zeroes_may_unmap, unused1[3];
} __attribute__((packed));

struct blk {
	struct fdvm_virtio_model model;
	struct fdvm_virtio_dev_ops ops;
	struct fdvm_virtio_backend be;
	struct blk_config config;
	int fd;
	bool ro;
	char id[ID_BYTES];
	/* cache=none: the image is open with O_DIRECT; requests whose
	 * offset, length or buffers are not multiples of align go through
	 * bounce (BOUNCE bytes, aligned), read-modify-write where needed.
	 * Backend thread only. */
	bool direct;
	unsigned align;
	uint8_t *bounce;
	/* aio=io_uring: reads and writes go to a ring and are answered out
	 * of order as they complete (aux); what does not fit, or needs the
	 * bounce buffer, is served synchronously. Set up at each start, torn
	 * down by drain. Backend thread, then the stopping thread. */
	bool use_uring, uring_up;
	fdvm_log_fn log;
	void *log_opaque;
	struct io_uring ring;
	int aio_fd;			/* the ring's completion eventfd */
	unsigned inflight;
	int free_slot;			/* free list of slot[], -1: none */
	struct aio_slot {
		uint16_t head;
		bool read;
		unsigned queue;
		uint32_t len;		/* bytes the request moves */
		uint8_t *status;	/* its status byte, in guest memory */
		int next;
	} slot[FDVM_VQ_MAX_SIZE];
};
#define BOUNCE (1u << 20)
#define AIO_SLOTS FDVM_VQ_MAX_SIZE

/* A discard or write-zeroes segment (5.2.6). */
struct range {
	uint64_t sector;
	uint32_t num_sectors, flags;
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

/* Whole reads or writes of [off, off + len) at buf. */
static int rw_full(int fd, bool write, uint8_t *buf, uint64_t len, uint64_t off)
{
	for (uint64_t done = 0; done < len;) {
		ssize_t r = write ? pwrite(fd, buf + done, len - done, (off_t)(off + done))
				  : pread(fd, buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		done += (uint64_t)r;
	}
	return 0;
}

/* cache=none, a request O_DIRECT cannot take as it is: through the bounce
 * buffer, a window of whole aligned blocks at a time (read first where a
 * write covers a block in part). */
static uint8_t bounce_rw(struct blk *b, bool write, uint64_t off, const struct iovec *iov,
			 unsigned n, uint64_t len)
{
	uint64_t a = b->align;
	for (uint64_t done = 0; done < len;) {
		uint64_t start = off + done, w0 = start / a * a;
		uint64_t chunk = len - done < BOUNCE - (start - w0) - a ? len - done
									: BOUNCE - (start - w0) - a;
		uint64_t w1 = (start + chunk + a - 1) / a * a;
		bool partial = w0 != start || w1 != start + chunk;
		if ((!write || partial) && rw_full(b->fd, false, b->bounce, w1 - w0, w0))
			return S_IOERR;
		if (write) {
			fdvm_iov_to_buf(iov, n, done, b->bounce + (start - w0), chunk);
			if (rw_full(b->fd, true, b->bounce, w1 - w0, w0))
				return S_IOERR;
		} else {
			fdvm_iov_from_buf(iov, n, done, b->bounce + (start - w0), chunk);
		}
		done += chunk;
	}
	return S_OK;
}

static bool dio_ok(const struct blk *b, uint64_t off, const struct iovec *iov, unsigned n)
{
	if (off % b->align)
		return false;
	for (unsigned i = 0; i < n; i++)
		if ((uintptr_t)iov[i].iov_base % b->align || iov[i].iov_len % b->align)
			return false;
	return true;
}

/* A read or write the disk can do: whole sectors, inside it, no write to
 * a read-only disk. */
static bool rw_ok(const struct blk *b, bool write, uint64_t sector, uint64_t len)
{
	return !(len % SECTOR) && sector <= b->config.capacity &&
	       len / SECTOR <= b->config.capacity - sector && !(write && b->ro);
}

static uint8_t do_rw(struct blk *b, bool write, uint64_t sector, const struct iovec *iov,
		     unsigned n, uint64_t len)
{
	if (!rw_ok(b, write, sector, len))
		return S_IOERR;
	off_t off = (off_t)(sector * SECTOR);
	if (b->direct && !dio_ok(b, (uint64_t)off, iov, n))
		return bounce_rw(b, write, (uint64_t)off, iov, n, len);
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

/* Zeroes [off, off + len) by writing zeroes: where the file system can do
 * neither a zero range nor a hole. */
static int write_zeroes(int fd, uint64_t off, uint64_t len)
{
	/* Aligned for O_DIRECT (cache=none); the range is whole blocks there
	 * (discard_sector_alignment). */
	static const uint8_t zero[65536] __attribute__((aligned(65536)));
	while (len) {
		size_t n = len < sizeof(zero) ? (size_t)len : sizeof(zero);
		ssize_t r = pwrite(fd, zero, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	return 0;
}

/* Discard or write-zeroes: the segments in data (len bytes), each checked
 * before any is done. */
static uint8_t do_ranges(struct blk *b, uint32_t type, const struct iovec *iov, unsigned n,
			 uint64_t len)
{
	struct range r[RANGE_SEGS];
	bool discard = type == T_DISCARD;

	if (!len || len % sizeof(r[0]) || len / sizeof(r[0]) > RANGE_SEGS)
		return S_IOERR;
	unsigned nr = (unsigned)(len / sizeof(r[0]));
	fdvm_iov_to_buf(iov, n, 0, r, len);
	for (unsigned i = 0; i < nr; i++) {
		if (r[i].flags & ~(uint32_t)(discard ? 0 : WZ_UNMAP))
			return S_UNSUPP; /* discard's unmap bit, reserved bits */
		if (r[i].num_sectors > RANGE_SECTORS || r[i].sector > b->config.capacity ||
		    r[i].num_sectors > b->config.capacity - r[i].sector)
			return S_IOERR;
	}
	if (b->ro)
		return S_IOERR;
	for (unsigned i = 0; i < nr; i++) {
		off_t off = (off_t)(r[i].sector * SECTOR), l = (off_t)r[i].num_sectors * SECTOR;
		if (!l)
			continue;
		if (discard) {
			/* Advisory: a file system without holes keeps the data. */
			if (fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, l) &&
			    errno != EOPNOTSUPP)
				return S_IOERR;
			continue;
		}
		/* Unmap: a hole reads as zeroes and frees the blocks; else keep
		 * them allocated, zeroed. Each falls back to the next. */
		if (r[i].flags & WZ_UNMAP &&
		    !fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, l))
			continue;
		if (!fallocate(b->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, l))
			continue;
		if (errno != EOPNOTSUPP && errno != EINVAL && errno != ENODEV)
			return S_IOERR;
		if (write_zeroes(b->fd, (uint64_t)off, (uint64_t)l))
			return S_IOERR;
	}
	return S_OK;
}

/* Where byte off of a request's device-writable buffers is. */
static uint8_t *in_byte(const struct fdvm_vq_elem *e, uint64_t off)
{
	for (unsigned i = 0; i < e->nin; i++) {
		if (off < e->in[i].iov_len)
			return (uint8_t *)e->in[i].iov_base + off;
		off -= e->in[i].iov_len;
	}
	return NULL;
}

/*
 * aio=io_uring: a read or write that can go to the ring goes there (true:
 * it is answered later); false: serve it synchronously (it is bad, needs
 * the bounce buffer, or there is no room).
 */
static void aio_complete(struct blk *b, const struct io_uring_cqe *cqe);

/* Answers what has completed; with wait, at least one. */
static void aio_reap(struct blk *b, bool wait)
{
	struct io_uring_cqe *cqe;
	while (io_uring_peek_cqe(&b->ring, &cqe) == 0 ||
	       (wait && b->inflight && io_uring_wait_cqe(&b->ring, &cqe) == 0)) {
		aio_complete(b, cqe);
		io_uring_cqe_seen(&b->ring, cqe);
		wait = false;
	}
}

static bool aio_submit(struct blk *b, bool write, unsigned queue, const struct fdvm_vq_elem *e,
		       uint64_t sector, const struct iovec *iov, unsigned n, uint64_t len,
		       uint64_t status_off)
{
	if (b->uring_up && b->free_slot < 0)
		aio_reap(b, true); /* as many in flight as the rings hold: room comes */
	if (!b->uring_up || b->free_slot < 0 || !len || len > UINT32_MAX || n > IOV_MAX ||
	    !rw_ok(b, write, sector, len))
		return false;
	uint64_t off = sector * SECTOR;
	if (b->direct && !dio_ok(b, off, iov, n))
		return false;
	uint8_t *status = in_byte(e, status_off);
	struct io_uring_sqe *sqe = status ? io_uring_get_sqe(&b->ring) : NULL;
	if (!sqe)
		return false;
	int i = b->free_slot;
	struct aio_slot *sl = &b->slot[i];
	b->free_slot = sl->next;
	*sl = (struct aio_slot){ .head = e->head, .read = !write, .queue = queue,
				 .len = (uint32_t)len, .status = status, .next = -1 };
	if (write)
		io_uring_prep_writev(sqe, b->fd, iov, n, off);
	else
		io_uring_prep_readv(sqe, b->fd, iov, n, off);
	sqe->user_data = (uint64_t)i;
	b->inflight++;
	/* The kernel copies the iovecs at submit (IORING_FEAT_SUBMIT_STABLE,
	 * checked at setup). A failed submit leaves the entry queued: the
	 * next one, or the drain, sends it. */
	io_uring_submit(&b->ring);
	return true;
}

/* One completion: the status byte, then the used ring. */
static void aio_complete(struct blk *b, const struct io_uring_cqe *cqe)
{
	uint64_t i = cqe->user_data;
	if (i >= AIO_SLOTS || !b->slot[i].status)
		return;
	struct aio_slot *sl = &b->slot[i];
	bool ok = cqe->res == (int)sl->len;
	*sl->status = ok ? S_OK : S_IOERR;
	uint32_t written = (sl->read && ok ? sl->len : 0) + 1;
	fdvm_virtio_backend_complete(&b->be, sl->queue, sl->head, written);
	sl->status = NULL;
	sl->next = b->free_slot;
	b->free_slot = (int)i;
	b->inflight--;
}

/* The ring's eventfd: every completion there is, then the interrupts. */
static void aio_ready(void *opaque)
{
	struct blk *b = opaque;
	uint64_t n;

	fdvm_eventfd_drain(b->aio_fd, &n);
	aio_reap(b, false);
	io_uring_submit(&b->ring);
	fdvm_virtio_backend_flush(&b->be);
}

/* While the backend polls its queues: completions too, from shared
 * memory (no system call when there are none). */
static void aio_poll(void *opaque)
{
	struct blk *b = opaque;
	if (io_uring_cq_ready(&b->ring)) {
		aio_reap(b, false);
		fdvm_virtio_backend_flush(&b->be);
	}
}

/* After the backend's thread is gone: waits for every request in flight
 * and answers it (no interrupt: the device is stopping), then the ring
 * goes. After this no buffer of the guest's is touched. */
static void aio_drain(void *opaque)
{
	struct blk *b = opaque;
	struct io_uring_cqe *cqe;

	if (!b->uring_up)
		return;
	while (b->inflight) {
		io_uring_submit(&b->ring);
		int ret = io_uring_wait_cqe(&b->ring, &cqe);
		if (ret == -EINTR || ret == -EAGAIN)
			continue;
		if (ret < 0)
			break; /* cannot happen with a ring we set up; nothing to wait on */
		aio_complete(b, cqe);
		io_uring_cqe_seen(&b->ring, cqe);
	}
	io_uring_queue_exit(&b->ring);
	close(b->aio_fd);
	b->uring_up = false;
}

/* aio=io_uring: a ring for this start; false (and synchronous I/O) if the
 * kernel will not give one. */
static bool aio_setup(struct blk *b)
{
	struct io_uring_params p = { 0 };
	if (io_uring_queue_init_params(2 * AIO_SLOTS, &b->ring, &p) < 0)
		return false;
	b->aio_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!(p.features & IORING_FEAT_SUBMIT_STABLE) || b->aio_fd < 0 ||
	    io_uring_register_eventfd(&b->ring, b->aio_fd) < 0) {
		if (b->aio_fd >= 0)
			close(b->aio_fd);
		io_uring_queue_exit(&b->ring);
		return false;
	}
	b->free_slot = -1;
	for (int i = AIO_SLOTS - 1; i >= 0; i--)
		b->slot[i] = (struct aio_slot){ .next = b->free_slot }, b->free_slot = i;
	b->inflight = 0;
	b->uring_up = true;
	return true;
}

static bool handle(void *opaque, unsigned queue, struct fdvm_vq_elem *e, uint32_t *written)
{
	struct blk *b = opaque;
	struct { uint32_t type, ioprio; uint64_t sector; } hdr;
	uint8_t status;
	struct iovec data[FDVM_VQ_MAX_SEGS];

	*written = 0;
	/* The status byte is the last device-writable byte (5.2.6). */
	if (e->in_len < 1)
		return true; /* nowhere to answer: complete with nothing written */
	uint64_t in_data = e->in_len - 1;
	if (e->out_len < sizeof(hdr)) {
		status = S_IOERR; /* wrong header size */
		goto answer;
	}
	fdvm_iov_to_buf(e->out, e->nout, 0, &hdr, sizeof(hdr));
	switch (hdr.type) {
	case T_IN: {
		unsigned k = carve(e->in, e->nin, 0, in_data, data);
		if (aio_submit(b, false, queue, e, hdr.sector, data, k, in_data, in_data))
			return false;
		status = do_rw(b, false, hdr.sector, data, k, in_data);
		if (status == S_OK)
			*written = (uint32_t)in_data;
		break;
	}
	case T_OUT: {
		uint64_t len = e->out_len - sizeof(hdr);
		unsigned k = carve(e->out, e->nout, sizeof(hdr), len, data);
		if (aio_submit(b, true, queue, e, hdr.sector, data, k, len, in_data))
			return false;
		status = do_rw(b, true, hdr.sector, data, k, len);
		break;
	}
	case T_FLUSH:
		status = fdatasync(b->fd) ? S_IOERR : S_OK;
		break;
	case T_DISCARD:
	case T_WRITE_ZEROES: {
		if (!(b->ops.features >> (hdr.type == T_DISCARD ? F_DISCARD : F_WRITE_ZEROES) & 1)) {
			status = S_UNSUPP;
			break;
		}
		uint64_t len = e->out_len - sizeof(hdr);
		unsigned k = carve(e->out, e->nout, sizeof(hdr), len, data);
		status = do_ranges(b, hdr.type, data, k, len);
		break;
	}
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
	return true;
}

/*
 * cache=none: the alignment O_DIRECT wants here, found by trying (a 512-byte
 * read, else 4096), which is also what the guest is told its logical
 * block is; and the bounce buffer for requests that do not keep to it.
 */
static int direct_setup(struct blk *b, uint64_t size, unsigned *lbs, const char *path,
			fdvm_log_fn log, void *log_opaque)
{
	if (posix_memalign((void **)&b->bounce, 65536, BOUNCE))
		return -ENOMEM;
	b->align = 0;
	for (unsigned a = *lbs; a <= 4096 && !b->align; a *= 2) {
		ssize_t r = pread(b->fd, b->bounce, a, 0);
		if (r == (ssize_t)a)
			b->align = a;
		else if (r >= 0 || errno != EINVAL)
			return fdvm_log_to_errno(log, log_opaque, r < 0 ? errno : EIO,
						 "virtio-blk %s: cache=none: reading the first block", path);
	}
	if (!b->align || size % b->align) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: cache=none: %s",
			    path, b->align ? "the size is not a whole number of the device's blocks"
					   : "no direct read of up to 4096 bytes works here");
		return -EINVAL;
	}
	*lbs = b->align;
	return 0;
}

/*
 * Locks the image as QEMU's file driver does (block/file-posix.c), so that
 * fdvm and QEMU see each other's locks: OFD locks on byte 100 + n for "I
 * use permission n" and 200 + n for "I let nobody else have it", n = 0
 * (consistent read) or 1 (write). A writer holds byte 100 exclusively
 * (every other user, QEMU's or fdvm's, reads consistently and takes it
 * shared) and 101 shared (what QEMU users that want nobody writing test).
 * A reader shares byte 100, holds 201 (QEMU's writers test it) and first
 * makes sure nobody holds 101 (a QEMU writer). The locks belong to
 * the open file description: they go when the image is closed.
 */
static int lock_image(int fd, bool ro, const char *path, fdvm_log_fn log, void *log_opaque)
{
	struct flock l = { .l_type = ro ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET, .l_start = 100,
			   .l_len = 1 };
	const char *why = NULL;

	if (fcntl(fd, F_OFD_SETLK, &l) < 0) {
		if (errno != EAGAIN && errno != EACCES)
			goto no_locks;
		why = ro ? "writes to it" : "uses it";
	} else if (!ro) {
		/* "I write": what QEMU users that need a stable image test for,
		 * also those that take no read lock (qemu-img info). */
		struct flock w = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 101, .l_len = 1 };
		if (fcntl(fd, F_OFD_SETLK, &w) < 0 && errno != EAGAIN && errno != EACCES)
			goto no_locks;
	} else {
		struct flock w = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 101, .l_len = 1 };
		struct flock u = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 201, .l_len = 1 };
		if (fcntl(fd, F_OFD_GETLK, &w) < 0)
			goto no_locks;
		if (w.l_type != F_UNLCK)
			why = "writes to it";
		else if (fcntl(fd, F_OFD_SETLK, &u) < 0) {
			if (errno != EAGAIN && errno != EACCES)
				goto no_locks;
			why = "writes to it";
		}
	}
	if (why) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: in use: another process (fdvm or QEMU) %s%s; lock=off overrides this",
			    path, why, ro ? "" : " (ro shares it with other readers)");
		return -EBUSY;
	}
	return 0;
no_locks:
	/* A file system without OFD locks (some network ones): go on, said. */
	fdvm_log_to(log, log_opaque, FDVM_LOG_WARN, "virtio-blk %s: cannot lock the image (%s); not locked",
		    path, strerror(errno));
	return 0;
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct blk *b = opaque;
	b->be.aux = b->be.aux_poll = NULL;
	b->be.drain = NULL;
	if (b->use_uring && aio_setup(b)) {
		b->be.aux = aio_ready;
		b->be.aux_poll = aio_poll;
		b->be.aux_fd = b->aio_fd;
		b->be.drain = aio_drain;
	} else if (b->use_uring) {
		fdvm_log_to(b->log, b->log_opaque, FDVM_LOG_WARN,
			    "virtio-blk: no io_uring from this kernel: synchronous I/O");
	}
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
	free(b->bounce);
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
	b->direct = cfg->cache == FDVM_BLK_CACHE_NONE;
	b->fd = open(cfg->path, (b->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | (b->direct ? O_DIRECT : 0));
	if (b->fd < 0 && b->direct && errno == EINVAL) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: cache=none: its file system does not do direct I/O (O_DIRECT; tmpfs does not): use cache=writeback",
			    cfg->path);
		ret = -EINVAL;
		goto err_free;
	}
	if (b->fd < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "virtio-blk %s: open", cfg->path);
		goto err_free;
	}
	if (fstat(b->fd, &st) < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "virtio-blk %s: fstat", cfg->path);
		goto err_close;
	}
	uint64_t size;
	unsigned lbs = SECTOR, pbs = 0;
	if (S_ISBLK(st.st_mode)) {
		int l = 0, p = 0;
		if (ioctl(b->fd, BLKGETSIZE64, &size) < 0 || ioctl(b->fd, BLKSSZGET, &l) < 0) {
			ret = fdvm_log_to_errno(log, log_opaque, errno,
						"virtio-blk %s: the block device's size", cfg->path);
			goto err_close;
		}
		if (l >= SECTOR && l <= 65536 && !(l & (l - 1)))
			lbs = (unsigned)l;
		if (!ioctl(b->fd, BLKPBSZGET, &p) && p > (int)lbs && p <= 65536 && !(p & (p - 1)))
			pbs = (unsigned)p;
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: not a regular file or a block device", cfg->path);
		ret = -EINVAL;
		goto err_close;
	}
	if (size < lbs || size % lbs) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "virtio-blk %s: %llu bytes, not a whole number of %u-byte sectors (at least one): a disk has no partial sector; resize it (truncate -s) to a multiple of %u",
			    cfg->path, (unsigned long long)size, lbs, lbs);
		ret = -EINVAL;
		goto err_close;
	}
	if (!cfg->no_lock && (ret = lock_image(b->fd, b->ro, cfg->path, log, log_opaque)))
		goto err_close;
	if (b->direct && (ret = direct_setup(b, size, &lbs, cfg->path, log, log_opaque)))
		goto err_close;
	b->config.capacity = size / SECTOR;
	b->config.seg_max = SEG_MAX;
	b->config.blk_size = lbs;
	for (unsigned x = lbs; x < pbs; x <<= 1)
		b->config.physical_block_exp++;
	b->config.num_queues = (uint16_t)nq;
	b->log = log;
	b->log_opaque = log_opaque;
	b->use_uring = cfg->aio == FDVM_BLK_AIO_IO_URING ||
		       (cfg->aio == FDVM_BLK_AIO_AUTO && (b->direct || S_ISBLK(st.st_mode)));
	fdvm_log_to(log, log_opaque, FDVM_LOG_DEBUG, "virtio-blk %s: %llu sectors of %u bytes, cache=%s, aio=%s",
		    cfg->path, (unsigned long long)(size / lbs), lbs, b->direct ? "none" : "writeback",
		    b->use_uring ? "io_uring" : "sync");
	bool ranges = !cfg->no_discard && !b->ro;
	if (ranges) {
		b->config.max_discard_sectors = RANGE_SECTORS;
		b->config.max_discard_seg = RANGE_SEGS;
		b->config.discard_sector_alignment = lbs / SECTOR;
		b->config.max_write_zeroes_sectors = RANGE_SECTORS;
		b->config.max_write_zeroes_seg = RANGE_SEGS;
		b->config.write_zeroes_may_unmap = 1;
	}
	snprintf(b->id, sizeof(b->id), "fdvm-%llx", (unsigned long long)st.st_ino);
	b->ops = (struct fdvm_virtio_dev_ops){
		.name = "virtio-blk",
		.device_id = 2,
		.pci_class = 0x018000,
		.num_queues = nq,
		.queue_max_size = 256,
		.features = 1ull << F_SEG_MAX | 1ull << F_BLK_SIZE | 1ull << F_FLUSH |
			    (b->ro ? 1ull << F_RO : 0) | (nq > 1 ? 1ull << F_MQ : 0) |
			    (ranges ? 1ull << F_DISCARD | 1ull << F_WRITE_ZEROES : 0) |
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
