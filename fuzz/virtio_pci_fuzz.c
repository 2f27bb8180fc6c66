/*
 * Fuzz target: the virtio-pci transport (lib/virtio/pci.c) as a hostile
 * driver sees it, on a real VM's I/O bus (made once; no vCPU runs). Each
 * input plugs a transport with a device model of its own here (queue
 * count, ring size, configuration size and features from the input) and
 * plays a sequence of accesses to the common, notify, ISR and device
 * configuration structures, status transitions and resets, queue setup
 * with rings inside RAM or anywhere, DRIVER_OK, feature selects, the MSI-X
 * table, BAR0 moves while started, writes into guest RAM, and passes of
 * the device over its started queues.
 *
 * Checked: the transport hands the model only in-bounds configuration
 * accesses, started queues that are checked (every buffer in RAM), no
 * start twice, no stop without a start.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdvm/abi.h"
#include "fdvm/virtio.h"
#include "fuzz_input.h"
#include "fuzz_vm.h"
#include "../lib/vm_priv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ISR_OFF 0x1000
#define DEVICE_OFF 0x2000
#define NOTIFY_OFF 0x3000
#define NOTIFY_MULT 4

static struct fdvm_vm *vm;
static uint8_t *ram;

/* The device model behind the transport. */
struct model {
	struct fdvm_virtio_dev_ops ops;
	bool refuse;		/* start fails */
	bool started;
	struct fdvm_virtio_start st;
	bool broken[64];
	uint8_t config[64];
	struct fdvm_vq_elem elem;
};
static struct model m;

static void config_read(void *opaque, uint32_t off, void *buf, uint32_t len)
{
	struct model *d = opaque;
	if (off + len > d->ops.config_size || len > 8)
		abort();
	memcpy(buf, d->config + off, len);
}

static void config_write(void *opaque, uint32_t off, const void *buf, uint32_t len)
{
	struct model *d = opaque;
	if (off + len > d->ops.config_size || len > 8)
		abort();
	memcpy(d->config + off, buf, len);
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct model *d = opaque;
	if (d->started || s->n > d->ops.num_queues)
		abort();
	if (d->refuse)
		return -1;
	d->st = *s;
	d->started = true;
	memset(d->broken, 0, sizeof(d->broken));
	return 0;
}

static void stop(void *opaque)
{
	struct model *d = opaque;
	if (!d->started)
		abort();
	d->started = false;
}

static void inside(const struct iovec *v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if ((uint8_t *)v[i].iov_base < ram ||
		    (uint8_t *)v[i].iov_base + v[i].iov_len > ram + FUZZ_VM_MEM)
			abort();
}

/* One pass of the device over its queues, as a backend thread would make. */
static void device_pass(struct fin *in)
{
	if (!m.started)
		return;
	uint8_t budget = fin_u8(in) & 7;
	for (unsigned i = 0; i < m.st.n; i++) {
		struct fdvm_virtio_queue *q = &m.st.queues[i];
		uint64_t kicks;
		if (q->index >= m.ops.num_queues)
			abort();
		if (q->kick_fd >= 0)
			fdvm_eventfd_drain(q->kick_fd, &kicks);
		if (m.broken[i])
			continue;
		for (unsigned k = 0; k < budget; k++) {
			int ret = fdvm_vq_pop(&q->vq, &m.elem);
			if (ret < 0) {
				m.broken[i] = true;
				m.st.broken(m.st.ctx, q->index);
				break;
			}
			if (ret == 0)
				break;
			inside(m.elem.out, m.elem.nout);
			inside(m.elem.in, m.elem.nin);
			uint8_t buf[16] = { 0 };
			fdvm_iov_to_buf(m.elem.out, m.elem.nout, 0, buf, sizeof(buf));
			size_t n = fdvm_iov_from_buf(m.elem.in, m.elem.nin, 0, buf, sizeof(buf));
			fdvm_vq_push(&q->vq, m.elem.head, (uint32_t)n);
		}
		if (fdvm_vq_should_notify(&q->vq) && q->call_fd >= 0)
			fdvm_eventfd_signal(q->call_fd);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	vm = fuzz_vm();
	ram = fdvm_gpa(vm, 0, FUZZ_VM_MEM);
	if (!ram)
		abort();
	return 0;
}

/* The common structure's fields: offset and size (4.1.4.3). */
static const struct { uint8_t off, size; } fields[] = {
	{ 0x00, 4 }, { 0x04, 4 }, { 0x08, 4 }, { 0x0c, 4 }, { 0x10, 2 }, { 0x12, 2 },
	{ 0x14, 1 }, { 0x15, 1 }, { 0x16, 2 }, { 0x18, 2 }, { 0x1a, 2 }, { 0x1c, 2 },
	{ 0x1e, 2 }, { 0x20, 8 }, { 0x24, 4 }, { 0x28, 8 }, { 0x2c, 4 }, { 0x30, 8 },
	{ 0x34, 4 }, { 0x20, 4 }, { 0x28, 4 }, { 0x30, 4 },
};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

struct dev {
	unsigned slot;
	struct fdvm_virtio_pci *t;
};

static uint64_t ecam(unsigned slot, unsigned off)
{
	return FDVM_PCI_ECAM_BASE + ((uint64_t)slot << 15) + off;
}

static uint64_t bar(struct dev *d, unsigned i)
{
	return fuzz_vm_read(FDVM_SPACE_MMIO, ecam(d->slot, 0x10 + 4 * i), 4) & ~0xfull;
}

/* A RAM address from the input: mostly in the first 64 KiB, rarely anything. */
static uint64_t guest_addr(struct fin *in, uint8_t how)
{
	if ((how & 0xc0) == 0xc0)
		return fin_u64(in);
	return (uint64_t)fin_u16(in) << 2;
}

static void common(struct dev *d, struct fin *in, uint8_t op, bool write)
{
	unsigned off, size;
	uint8_t f = fin_u8(in);
	if (op & 0x80) {
		off = f & 0x3f;
		size = fin_size(in);
	} else {
		off = fields[f % NFIELDS].off;
		size = fields[f % NFIELDS].size;
	}
	uint64_t at = bar(d, 0) + off;
	if (!write) {
		fuzz_vm_read(FDVM_SPACE_MMIO, at, size);
		return;
	}
	uint64_t v = off >= 0x20 ? guest_addr(in, op) : fin_bytes(in, size);
	fuzz_vm_write(FDVM_SPACE_MMIO, at, size, v);
}

static void status(struct dev *d, struct fin *in, uint8_t op)
{
	static const uint8_t steps[] = { 0, 1, 3, 11, 15 };
	uint8_t v = op & 0x80 ? fin_u8(in) : steps[fin_u8(in) % 5];
	fuzz_vm_write(FDVM_SPACE_MMIO, bar(d, 0) + 0x14, 1, v);
}

static void features(struct dev *d, struct fin *in)
{
	uint64_t b0 = bar(d, 0);
	uint64_t f = fin_u64(in) | 1ull << FDVM_VIRTIO_F_VERSION_1;
	for (unsigned sel = 0; sel < 2; sel++) {
		fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x00, 4, sel);
		fuzz_vm_read(FDVM_SPACE_MMIO, b0 + 0x04, 4);
		fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x08, 4, sel);
		fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x0c, 4, (uint32_t)(f >> (32 * sel)));
	}
}

/* Select, size, rings, vector, enable: a queue as a driver sets it up. */
static void queue_setup(struct dev *d, struct fin *in, uint8_t op)
{
	uint64_t b0 = bar(d, 0);
	uint8_t how = fin_u8(in);
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x16, 2, how & 0x7);
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x18, 2, 1u << (fin_u8(in) % 12));
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x20, 8, guest_addr(in, op));
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x28, 8, guest_addr(in, op));
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x30, 8, guest_addr(in, op));
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x1a, 2, how >> 3 & 7);
	fuzz_vm_write(FDVM_SPACE_MMIO, b0 + 0x1c, 2, 1);
}

static void ops(struct dev *d, struct fin *in)
{
	for (unsigned n = 0; n < 256 && fin_more(in); n++) {
		uint8_t op = fin_u8(in);
		switch (op % 14) {
		case 0: case 1: common(d, in, op, true); break;
		case 2: common(d, in, op, false); break;
		case 3: status(d, in, op); break;
		case 4: features(d, in); break;
		case 5: queue_setup(d, in, op); break;
		case 6: { /* notify: a queue's doorbell, or next to it */
			unsigned q = fin_u8(in), sz = op & 0x80 ? fin_size(in) : 2;
			uint64_t at = bar(d, 0) + NOTIFY_OFF + (q & 0x80 ? q & 0x7f : NOTIFY_MULT * (q & 0x7f));
			fuzz_vm_write(FDVM_SPACE_MMIO, at, sz, q & 0x7f);
			break;
		}
		case 7: /* ISR, and around it */
			fuzz_vm_read(FDVM_SPACE_MMIO, bar(d, 0) + ISR_OFF + (op >> 7), 1);
			break;
		case 8: { /* device configuration, past its end too */
			unsigned off = fin_u8(in) % 80, sz = fin_size(in);
			if (op & 0x80)
				fuzz_vm_write(FDVM_SPACE_MMIO, bar(d, 0) + DEVICE_OFF + off, sz, fin_u64(in));
			else
				fuzz_vm_read(FDVM_SPACE_MMIO, bar(d, 0) + DEVICE_OFF + off, sz);
			break;
		}
		case 9: { /* guest RAM: rings and buffers */
			unsigned at = (unsigned)fin_u16(in) << 2, len = fin_u8(in) & 63;
			for (unsigned i = 0; i < len; i++)
				ram[(at + i) % FUZZ_VM_MEM] = fin_u8(in);
			break;
		}
		case 10: device_pass(in); break;
		case 11: { /* MSI-X table (BAR1), and the PBA */
			unsigned off = fin_u16(in) & 0xfff, sz = fin_size(in);
			if (op & 0x80)
				fuzz_vm_write(FDVM_SPACE_MMIO, bar(d, 1) + off, sz, fin_u64(in));
			else
				fuzz_vm_read(FDVM_SPACE_MMIO, bar(d, 1) + off, sz);
			break;
		}
		case 12: { /* configuration space: BAR0 moves, decoding, MSI-X enable */
			static const uint8_t regs[] = { 0x04, 0x10, 0x14, 0x4e, 0x40, 0x80 };
			unsigned reg = regs[fin_u8(in) % sizeof(regs)];
			uint32_t v = fin_u32(in);
			if (reg == 0x10 && (op & 0x80))
				v = 0xc0000000u + (v & 0x3ff) * 0x4000;
			fuzz_vm_write(FDVM_SPACE_MMIO, ecam(d->slot, reg), reg == 0x4e || reg == 0x04 ? 2 : 4, v);
			break;
		}
		default: /* the device finds a queue broken */
			if (m.started && m.st.n)
				m.st.broken(m.st.ctx, m.st.queues[fin_u8(in) % m.st.n].index);
			break;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fin in = { data, size };
	struct dev d = { 0 };

	if (!vm)
		LLVMFuzzerInitialize(NULL, NULL);
	uint8_t h0 = fin_u8(&in), h1 = fin_u8(&in);
	m = (struct model){ .refuse = h0 & 0x80 };
	m.ops = (struct fdvm_virtio_dev_ops){
		.name = "fuzz", .device_id = 4, .pci_class = 0xff0000,
		.num_queues = 1 + (h0 & 3),
		.queue_max_size = (uint16_t)(1u << (h1 % 11)),
		.features = FDVM_VIRTIO_VQ_FEATURES | (uint64_t)(h1 >> 4) << 1,
		.config_size = (h0 >> 2 & 7) * 8,
		.config_read = config_read, .config_write = config_write,
		.start = start, .stop = stop,
	};
	/* KVM doorbells cost milliseconds to make and tear down (the kernel
	 * waits for its readers): one input in four. */
	enum fdvm_doorbell_mode mode = (h0 >> 5 & 3) == 3 ? FDVM_DOORBELL_AUTO : FDVM_DOORBELL_USERSPACE;
	fuzz_vm_reset_pci();
	memset(ram, 0, 0x40000);
	if (fdvm_virtio_pci_create(vm, &m.ops, &m, mode, &d.t))
		abort();
	for (d.slot = 0; d.slot < 32; d.slot++)
		if (fuzz_vm_read(FDVM_SPACE_MMIO, ecam(d.slot, 0), 4) == ((0x1040u + 4) << 16 | 0x1af4))
			break;
	if (d.slot == 32)
		abort();
	ops(&d, &in);
	fdvm_virtio_pci_destroy(d.t);
	if (m.started)
		abort(); /* destroy stops the device */
	return 0;
}
