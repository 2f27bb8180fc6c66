/*
 * pci-testdev, with the guest-visible behaviour of QEMU's device of that
 * name so one guest runs on both: writing N to offset 0 of BAR0 (mmio) or
 * BAR1 (portio) selects test N of that type; the test's header
 *   { u8 test; u8 width; u8 pad[2]; u32 offset; u8 data; u8 pad[3];
 *     u32 count; char name[] }
 * reads back from the BAR. A write of data (any value for the wildcard
 * test) at offset counts, unless the test has an eventfd, whose doorbell
 * then takes the matching writes before they reach the device. The device
 * handles bytes, as QEMU's does: wider accesses are split.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdvm/devices.h"
#include "fdvm/pci.h"
#include "../vm_priv.h"

#define TEST_DATAMATCH 0xfa
#define TEST_NOMATCH 0xce
#define MMIO_SIZE 4096
#define PIO_SIZE 256
#define N_TESTS 3 /* per type */

struct hdr {
	uint8_t test, width, pad0[2];
	uint32_t offset;
	uint8_t data, pad1[3];
	uint32_t count;
	char name[32];
} __attribute__((packed));

struct fdvm_pci_testdev {
	struct fdvm_vm *vm;
	struct fdvm_pci_dev *pci;
	enum fdvm_doorbell_mode mode;
	pthread_mutex_t lock;		/* guards everything below */
	struct hdr tests[2 * N_TESTS];
	int current;			/* -1: none */
	struct fdvm_doorbell *db;	/* the current test's, if it has one */
	struct fdvm_owned *owned;
};

static const char *const test_names[N_TESTS] = { "no-eventfd", "wildcard-eventfd",
						  "datamatch-eventfd" };

static bool has_eventfd(int t) { return t % N_TESTS != 0; }
/* Every test but the wildcard one counts only its data value. */
static bool matches_data(int t) { return t % N_TESTS != 1; }
static unsigned bar_of(int t) { return t < N_TESTS ? 0 : 1; }

/* Lock held: drops whatever the doorbell has signalled (QEMU's device
 * clears its notifier on every read). */
static void drain(struct fdvm_pci_testdev *td)
{
	uint64_t n;
	if (td->db)
		fdvm_eventfd_drain(fdvm_doorbell_fd(td->db), &n);
}

/* Lock held. */
static void stop(struct fdvm_pci_testdev *td)
{
	drain(td);
	fdvm_doorbell_destroy(td->db);
	td->db = NULL;
	td->current = -1;
}

/* Lock held: the doorbell for test t where its BAR is now. */
static int start(struct fdvm_pci_testdev *td, int t)
{
	struct hdr *h = &td->tests[t];
	unsigned bar = bar_of(t);
	struct fdvm_io_region *region = fdvm_pci_bar_region(td->pci, bar);
	struct fdvm_doorbell_config c;

	h->count = 0;
	td->current = t;
	if (!has_eventfd(t) || !region)
		return 0;
	fdvm_doorbell_config_init(&c);
	c.space = bar ? FDVM_SPACE_PIO : FDVM_SPACE_MMIO;
	c.addr = fdvm_pci_bar_addr(td->pci, bar) + h->offset;
	c.len = h->width;
	c.datamatch = matches_data(t);
	c.data = h->data;
	c.mode = td->mode;
	c.region = region;
	return fdvm_doorbell_create(td->vm, &c, &td->db);
}

static void write_byte(struct fdvm_pci_testdev *td, unsigned bar, uint64_t addr, uint8_t val)
{
	if (addr == 0) {
		stop(td);
		if (val < N_TESTS)
			start(td, (int)(bar * N_TESTS + val));
		return;
	}
	if (td->current < 0 || bar_of(td->current) != bar)
		return;
	struct hdr *h = &td->tests[td->current];
	if (addr != h->offset)
		return;
	if (matches_data(td->current) && val != h->data)
		return;
	h->count++;
}

static uint8_t read_byte(struct fdvm_pci_testdev *td, unsigned bar, uint64_t addr)
{
	if (td->current < 0 || bar_of(td->current) != bar)
		return 0;
	const struct hdr *h = &td->tests[td->current];
	size_t len = offsetof(struct hdr, name) + strlen(h->name) + 1;
	if (addr + 1 >= len)
		return 0;
	drain(td);
	return ((const uint8_t *)h)[addr];
}

static uint64_t td_read(void *opaque, unsigned bar, uint64_t off, unsigned size)
{
	struct fdvm_pci_testdev *td = opaque;
	uint64_t v = 0;

	pthread_mutex_lock(&td->lock);
	for (unsigned i = 0; i < size; i++)
		v |= (uint64_t)read_byte(td, bar, off + i) << (8 * i);
	pthread_mutex_unlock(&td->lock);
	return v;
}

static void td_write(void *opaque, unsigned bar, uint64_t off, uint64_t val, unsigned size)
{
	struct fdvm_pci_testdev *td = opaque;

	pthread_mutex_lock(&td->lock);
	for (unsigned i = 0; i < size; i++)
		write_byte(td, bar, off + i, (uint8_t)(val >> (8 * i)));
	pthread_mutex_unlock(&td->lock);
}

/* The guest moved a BAR: the current test's doorbell moves with it. */
static void td_remap(void *opaque, unsigned bar, uint64_t addr, bool mapped)
{
	struct fdvm_pci_testdev *td = opaque;

	(void)addr;
	(void)mapped;
	pthread_mutex_lock(&td->lock);
	if (td->current >= 0 && bar_of(td->current) == bar) {
		int t = td->current;
		uint32_t count = td->tests[t].count;
		stop(td);
		start(td, t);
		td->tests[t].count = count;
	}
	pthread_mutex_unlock(&td->lock);
}

static const struct fdvm_pci_dev_ops td_ops = {
	.bar_read = td_read, .bar_write = td_write, .bar_remap = td_remap,
};

static void destroy_owned(void *td) { fdvm_pci_testdev_destroy(td); }

int fdvm_pci_testdev_create(struct fdvm_vm *vm, enum fdvm_doorbell_mode mode,
			    struct fdvm_pci_testdev **out)
{
	struct fdvm_pci_testdev *td = calloc(1, sizeof(*td));
	int ret;

	if (!td)
		return -ENOMEM;
	td->vm = vm;
	td->mode = mode;
	td->current = -1;
	pthread_mutex_init(&td->lock, NULL);
	for (int t = 0; t < 2 * N_TESTS; t++) {
		struct hdr *h = &td->tests[t];
		h->test = (uint8_t)t;
		h->width = 1;
		/* Half-way into the BAR, one byte further for each test. */
		h->offset = (uint32_t)((bar_of(t) ? PIO_SIZE : MMIO_SIZE) / 2 + t);
		h->data = matches_data(t) ? TEST_DATAMATCH : TEST_NOMATCH;
		snprintf(h->name, sizeof(h->name), "%s-%s", bar_of(t) ? "portio" : "mmio",
			 test_names[t % N_TESTS]);
	}
	struct fdvm_pci_dev_config c = {
		.name = "pci-testdev",
		.vendor_id = 0x1b36,
		.device_id = 0x0005,
		.class_code = 0xff0000,
		.bars = { { FDVM_PCI_BAR_MMIO32, MMIO_SIZE }, { FDVM_PCI_BAR_IO, PIO_SIZE } },
		.ops = &td_ops,
		.opaque = td,
	};
	ret = fdvm_pci_dev_create(vm, &c, &td->pci);
	if (ret)
		goto err_free;
	ret = fdvm_vm_own(vm, destroy_owned, td, &td->owned);
	if (ret)
		goto err_pci;
	*out = td;
	return 0;

err_pci:
	fdvm_pci_dev_destroy(td->pci);
err_free:
	pthread_mutex_destroy(&td->lock);
	free(td);
	return ret;
}

void fdvm_pci_testdev_destroy(struct fdvm_pci_testdev *td)
{
	if (!td)
		return;
	fdvm_vm_disown(td->vm, td->owned);
	fdvm_pci_dev_destroy(td->pci); /* no handler runs after this */
	pthread_mutex_lock(&td->lock);
	stop(td);
	pthread_mutex_unlock(&td->lock);
	pthread_mutex_destroy(&td->lock);
	free(td);
}
