/*
 * Fuzz target: the vhost-user backend's message handler, fed a sequence of
 * messages from a hostile frontend. Each message is a 12-byte header and
 * its payload (cut short where the input ends); it comes with the fds its
 * request carries (memfds for memory and inflight regions, eventfds for
 * rings), one more when bit 31 of its flags is set, one fewer when bit 30
 * is. The backend serves a virtio-blk model on a memfd image and may start
 * it (rings in the fuzzer's memory): nothing may crash, leak or hang, and
 * a dropped frontend ends the input.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdvm/vhost_user.h"
#include "../lib/vhost-user/backend_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REGION (1u << 20)

static int add_watch(void *impl, int fd, uint32_t events, fdvm_watch_fn fn, void *opaque)
{
	(void)impl, (void)fd, (void)events, (void)fn, (void)opaque;
	return 0;
}

static int del_watch(void *impl, int fd)
{
	(void)impl, (void)fd;
	return 0;
}

static const struct fdvm_loop_ops no_loop_ops = { add_watch, del_watch };
static struct fdvm_loop no_loop = { &no_loop_ops, NULL };

/* FUZZ_VERBOSE=1 shows what the backend says (to read a crash input). */
static void quiet(void *opaque, enum fdvm_log_level level, const char *msg)
{
	(void)opaque;
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "%d: %s\n", (int)level, msg);
}

static struct fdvm_virtio_model *model(void)
{
	static struct fdvm_virtio_model *m;
	if (!m) {
		char path[64];
		int fd = memfd_create("fuzz-image", MFD_CLOEXEC);
		if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		struct fdvm_virtio_blk_config c = { .path = path, .num_queues = 2 };
		if (fdvm_virtio_blk_model_create(&c, quiet, NULL, &m))
			abort();
		close(fd);
	}
	return m;
}

static int memfd(void)
{
	int fd = memfd_create("fuzz-region", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, REGION) < 0)
		abort();
	return fd;
}

/* The fds a well-formed message of this kind carries. */
static unsigned fds_for(const struct vu_msg *m, int *fds)
{
	unsigned n = 0;
	switch (m->hdr.request) {
	case 5: /* SET_MEM_TABLE */
		for (uint32_t i = 0; i < m->mem.nregions && n < 8; i++)
			fds[n++] = memfd();
		break;
	case 37: case 32: /* ADD_MEM_REG, SET_INFLIGHT_FD */
		fds[n++] = memfd();
		break;
	case 12: case 13: case 14: /* SET_VRING_KICK/CALL/ERR */
		if (!(m->u64 & (1u << 8)))
			fds[n++] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		break;
	}
	if (m->hdr.flags >> 31 & 1)
		fds[n++] = eventfd(0, EFD_CLOEXEC);
	if (m->hdr.flags >> 30 & 1 && n)
		close(fds[--n]);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdvm_vu_backend_config cfg = { .model = model(), .loop = &no_loop, .name = "fuzz",
					      .log = quiet, .log_level = FDVM_LOG_DEBUG };
	struct fdvm_vu_backend *be;
	struct vu_msg *m = malloc(sizeof(*m));
	int sv[2];

	if (!m || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    fdvm_vu_backend_create(&cfg, &be) || fdvm_vu_backend_serve(be, sv[0]))
		abort();
	for (size_t off = 0; off + sizeof(m->hdr) <= size;) {
		memset(m, 0, sizeof(*m));
		memcpy(&m->hdr, data + off, sizeof(m->hdr));
		off += sizeof(m->hdr);
		uint32_t len = m->hdr.size < size - off ? m->hdr.size : (uint32_t)(size - off);
		if (len > FDVM_VU_MAX_PAYLOAD)
			len = FDVM_VU_MAX_PAYLOAD;
		memcpy(m->bytes, data + off, len);
		off += len;
		m->hdr.size = len;
		int fds[10];
		unsigned n = fds_for(m, fds);
		int ret = vu_backend_handle(be, m, fds, n);
		char sink[8192];
		while (recv(sv[1], sink, sizeof(sink), MSG_DONTWAIT) > 0) {
			/* replies (and fds, closed with the message) */
		}
		if (ret)
			break;
	}
	fdvm_vu_backend_destroy(be); /* closes sv[0] */
	close(sv[1]);
	free(m);
	return 0;
}
