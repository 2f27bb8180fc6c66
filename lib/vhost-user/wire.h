/*
 * The vhost-user wire format (QEMU's docs/interop/vhost-user.rst): a 12-byte
 * header, a payload of at most FDVM_VU_MAX_PAYLOAD bytes, and file
 * descriptors in SCM_RIGHTS. Shared by the backend and the frontend.
 */
#ifndef FDVM_VU_WIRE_H
#define FDVM_VU_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vu_request {
	VU_GET_FEATURES = 1,
	VU_SET_FEATURES = 2,
	VU_SET_OWNER = 3,
	VU_RESET_OWNER = 4,
	VU_SET_MEM_TABLE = 5,
	VU_SET_LOG_BASE = 6,
	VU_SET_LOG_FD = 7,
	VU_SET_VRING_NUM = 8,
	VU_SET_VRING_ADDR = 9,
	VU_SET_VRING_BASE = 10,
	VU_GET_VRING_BASE = 11,
	VU_SET_VRING_KICK = 12,
	VU_SET_VRING_CALL = 13,
	VU_SET_VRING_ERR = 14,
	VU_GET_PROTOCOL_FEATURES = 15,
	VU_SET_PROTOCOL_FEATURES = 16,
	VU_GET_QUEUE_NUM = 17,
	VU_SET_VRING_ENABLE = 18,
	VU_GET_CONFIG = 24,
	VU_SET_CONFIG = 25,
	VU_GET_INFLIGHT_FD = 31,
	VU_SET_INFLIGHT_FD = 32,
	VU_RESET_DEVICE = 34,
	VU_GET_MAX_MEM_SLOTS = 36,
	VU_ADD_MEM_REG = 37,
	VU_REM_MEM_REG = 38,
	VU_SET_STATUS = 39,
	VU_GET_STATUS = 40,
};

/* Virtio feature bit 30, taken by vhost-user for "protocol features". */
#define VU_F_PROTOCOL_FEATURES 30

enum vu_protocol_feature {
	VU_PF_MQ = 0,
	VU_PF_REPLY_ACK = 3,
	VU_PF_CONFIG = 9,
	VU_PF_INFLIGHT_SHMFD = 12,
	VU_PF_RESET_DEVICE = 13,
	VU_PF_CONFIGURE_MEM_SLOTS = 15,
	VU_PF_STATUS = 16,
};

#define VU_VERSION 0x1
#define VU_FLAG_VERSION_MASK 0x3
#define VU_FLAG_REPLY (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)

#define VU_VRING_IDX_MASK 0xffu
#define VU_VRING_NOFD (1u << 8)

#define VU_MAX_FDS 8		/* per message */
#define VU_MEM_TABLE_REGIONS 8	/* in one SET_MEM_TABLE */
#define VU_MAX_CONFIG 256
#define FDVM_VU_MAX_PAYLOAD 4096

struct vu_hdr {
	uint32_t request, flags, size;
};

struct vu_vring_state {
	uint32_t index, num;
};

struct vu_vring_addr {
	uint32_t index, flags;
	uint64_t desc, used, avail, log;
};

struct vu_region {
	uint64_t gpa, size, uva, mmap_offset;
};

struct vu_mem_table {
	uint32_t nregions, padding;
	struct vu_region regions[VU_MEM_TABLE_REGIONS];
};

struct vu_single_region {
	uint64_t padding;
	struct vu_region region;
};

struct vu_config {
	uint32_t offset, size, flags;
	uint8_t payload[VU_MAX_CONFIG];
};
#define VU_CONFIG_HDR 12

struct vu_inflight {
	uint64_t mmap_size, mmap_offset;
	uint16_t num_queues, queue_size;
};

/* On the wire the payload follows the 12-byte header directly; the pad puts
 * the header at offset 4 so that the payload lands 8-aligned, contiguous. */
struct vu_msg {
	uint32_t pad;
	struct vu_hdr hdr;
	union {
		uint64_t u64;
		struct vu_vring_state state;
		struct vu_vring_addr addr;
		struct vu_mem_table mem;
		struct vu_single_region reg;
		struct vu_config config;
		struct vu_inflight inflight;
		uint8_t bytes[FDVM_VU_MAX_PAYLOAD];
	};
};

/* The name of a request, for messages ("request 99" when unknown). */
const char *vu_request_name(uint32_t request, char *buf, size_t len);

/*
 * Reads one whole message and its fds within timeout_ms (the whole message,
 * not each byte). 0 on success; -EPIPE at a clean end of stream before a
 * header; -EPROTO for a payload over FDVM_VU_MAX_PAYLOAD, fds cut short or a
 * stream that ends mid-message; -ETIMEDOUT; -errno otherwise. On any error
 * no fd is left open.
 */
int vu_recv(int sock, struct vu_msg *m, int *fds, unsigned *nfds, int timeout_ms);
#define VU_IO_TIMEOUT_MS 5000
/* A peer that stops reading must not block a send for longer than that
 * either (receives are bounded by vu_recv's own deadline). 0 or -errno. */
int vu_set_send_timeout(int sock);
/* Sends one message with nfds fds (0 or more). */
int vu_send(int sock, const struct vu_msg *m, const int *fds, unsigned nfds);
void vu_close_fds(int *fds, unsigned n);

_Static_assert(offsetof(struct vu_msg, bytes) == offsetof(struct vu_msg, hdr) + 12,
	       "the payload follows the header");

#endif
