/*
 * The GSI routing table. KVM_SET_GSI_ROUTING replaces the whole table, so
 * fdvm keeps all of it: the irqchip routes KVM starts with (GSI 0-15 on
 * both the PIC and the IOAPIC, 16-23 on the IOAPIC) and every MSI route.
 * Changes are staged and written once per batch; a failed write rolls the
 * staged table back to what KVM has.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "fdvm/gsi.h"
#include "../vm_priv.h"

enum { SLOT_FREE, SLOT_MSI };

struct slot {
	uint8_t kind;
	struct fdvm_msi msi;
};

struct fdvm_gsi {
	pthread_mutex_t lock;	/* guards everything below */
	uint32_t nr;		/* GSIs and routes KVM allows */
	struct slot *staged;	/* nr slots: what the next write will say */
	struct slot *committed;	/* nr slots: what KVM has */
	uint32_t msi_used;
	uint32_t pins;		/* claimed IOAPIC pins, a bit each */
	bool dirty;
	uint64_t rollbacks;	/* failed writes so far (a batch compares) */
	int last_err;		/* the -errno of the last failed write */
	uint64_t writes;
};

#define IRQCHIP_ROUTES (16 * 2 + 8)

int fdvm_gsi_init(struct fdvm_vm *vm)
{
	struct fdvm_gsi *g = calloc(1, sizeof(*g));
	int nr;

	if (!g)
		return -ENOMEM;
	nr = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING);
	if (nr <= 0) {
		nr = 0; /* no routing: MSI lines use the userspace path */
	} else if (nr > 65536) {
		nr = 65536;
	}
	g->nr = (uint32_t)nr;
	g->staged = calloc(nr ? nr : 1, sizeof(struct slot));
	g->committed = calloc(nr ? nr : 1, sizeof(struct slot));
	if (!g->staged || !g->committed) {
		free(g->staged);
		free(g->committed);
		free(g);
		return -ENOMEM;
	}
	pthread_mutex_init(&g->lock, NULL);
	vm->gsi = g;
	return 0;
}

void fdvm_gsi_exit(struct fdvm_vm *vm)
{
	struct fdvm_gsi *g = vm->gsi;
	if (!g)
		return;
	pthread_mutex_destroy(&g->lock);
	free(g->staged);
	free(g->committed);
	free(g);
	vm->gsi = NULL;
}

/* Lock held. Writes the staged table to KVM, or rolls it back. */
static int write_table(struct fdvm_vm *vm, struct fdvm_gsi *g)
{
	struct kvm_irq_routing *t;
	uint32_t n = 0;
	int ret = 0;

	if (!g->dirty)
		return 0;
	t = calloc(1, sizeof(*t) + (IRQCHIP_ROUTES + g->msi_used) * sizeof(t->entries[0]));
	if (!t) {
		ret = -ENOMEM;
		goto rollback;
	}
	for (uint32_t pin = 0; pin < FDVM_GSI_IRQCHIP_PINS; pin++) {
		if (pin < 16)
			t->entries[n++] = (struct kvm_irq_routing_entry){
				.gsi = pin, .type = KVM_IRQ_ROUTING_IRQCHIP,
				.u.irqchip = { pin < 8 ? KVM_IRQCHIP_PIC_MASTER
						       : KVM_IRQCHIP_PIC_SLAVE, pin % 8 } };
		t->entries[n++] = (struct kvm_irq_routing_entry){
			.gsi = pin, .type = KVM_IRQ_ROUTING_IRQCHIP,
			.u.irqchip = { KVM_IRQCHIP_IOAPIC, pin } };
	}
	for (uint32_t gsi = FDVM_GSI_IRQCHIP_PINS; gsi < g->nr; gsi++) {
		const struct slot *s = &g->staged[gsi];
		if (s->kind != SLOT_MSI)
			continue;
		t->entries[n++] = (struct kvm_irq_routing_entry){
			.gsi = gsi, .type = KVM_IRQ_ROUTING_MSI,
			.u.msi = { .address_lo = (uint32_t)s->msi.address,
				   .address_hi = (uint32_t)(s->msi.address >> 32),
				   .data = s->msi.data } };
	}
	t->nr = n;
	if (ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, t) < 0) {
		ret = fdvm_log_errno(vm, errno, "gsi routing (%u routes): KVM_SET_GSI_ROUTING", n);
		free(t);
		goto rollback;
	}
	free(t);
	g->writes++;
	memcpy(g->committed, g->staged, g->nr * sizeof(struct slot));
	g->dirty = false;
	return 0;

rollback:
	g->rollbacks++;
	g->last_err = ret;
	memcpy(g->staged, g->committed, g->nr * sizeof(struct slot));
	g->msi_used = 0;
	for (uint32_t gsi = 0; gsi < g->nr; gsi++)
		g->msi_used += g->staged[gsi].kind == SLOT_MSI;
	g->dirty = false;
	return ret;
}

/*
 * A batch belongs to the thread that opened it: another thread's change is
 * written at once (with whatever the batch has staged so far), so that its
 * route exists before it assigns an irqfd on it.
 */
static _Thread_local struct {
	struct fdvm_vm *vm;
	unsigned depth;
	uint64_t rollbacks; /* g->rollbacks when the batch opened */
} batch;

void fdvm_gsi_begin(struct fdvm_vm *vm)
{
	if (batch.depth && batch.vm != vm)
		return; /* one VM's batch per thread; others write at once */
	if (!batch.depth) {
		pthread_mutex_lock(&vm->gsi->lock);
		batch.rollbacks = vm->gsi->rollbacks;
		pthread_mutex_unlock(&vm->gsi->lock);
	}
	batch.vm = vm;
	batch.depth++;
}

int fdvm_gsi_end(struct fdvm_vm *vm)
{
	struct fdvm_gsi *g = vm->gsi;
	int ret = 0;

	if (batch.vm != vm || !batch.depth || --batch.depth)
		return 0;
	batch.vm = NULL;
	pthread_mutex_lock(&g->lock);
	ret = write_table(vm, g);
	/* A failed write meanwhile (this thread's sync, or another thread's
	 * change) rolled back this batch's changes too: say so. */
	if (!ret && g->rollbacks != batch.rollbacks)
		ret = g->last_err ? g->last_err : -EIO;
	pthread_mutex_unlock(&g->lock);
	return ret;
}

bool fdvm_gsi_is_msi(struct fdvm_vm *vm, uint32_t gsi)
{
	struct fdvm_gsi *g = vm->gsi;
	pthread_mutex_lock(&g->lock);
	bool r = gsi >= FDVM_GSI_IRQCHIP_PINS && gsi < g->nr && g->staged[gsi].kind == SLOT_MSI;
	pthread_mutex_unlock(&g->lock);
	return r;
}

/* Lock held: ends an implicit batch of one, unless this thread has one open. */
static int maybe_write(struct fdvm_vm *vm, struct fdvm_gsi *g)
{
	return batch.vm == vm && batch.depth ? 0 : write_table(vm, g);
}

int fdvm_gsi_sync(struct fdvm_vm *vm)
{
	pthread_mutex_lock(&vm->gsi->lock);
	int ret = write_table(vm, vm->gsi);
	pthread_mutex_unlock(&vm->gsi->lock);
	return ret;
}

int fdvm_gsi_alloc_msi(struct fdvm_vm *vm, const struct fdvm_msi *msg, uint32_t *gsi)
{
	struct fdvm_gsi *g = vm->gsi;
	int ret = -ENOSPC;

	pthread_mutex_lock(&g->lock);
	if (g->msi_used + IRQCHIP_ROUTES < g->nr) {
		for (uint32_t i = FDVM_GSI_IRQCHIP_PINS; i < g->nr; i++) {
			if (g->staged[i].kind != SLOT_FREE)
				continue;
			g->staged[i] = (struct slot){ SLOT_MSI, *msg };
			g->msi_used++;
			g->dirty = true;
			ret = maybe_write(vm, g);
			if (!ret)
				*gsi = i;
			break;
		}
	}
	pthread_mutex_unlock(&g->lock);
	if (ret == -ENOSPC)
		fdvm_log(vm, FDVM_LOG_ERROR, "gsi routing: no free GSI (%u MSI routes in use)",
			 g->msi_used);
	return ret;
}

static bool is_msi(struct fdvm_gsi *g, uint32_t gsi)
{
	return gsi >= FDVM_GSI_IRQCHIP_PINS && gsi < g->nr && g->staged[gsi].kind == SLOT_MSI;
}

int fdvm_gsi_set_msi(struct fdvm_vm *vm, uint32_t gsi, const struct fdvm_msi *msg)
{
	struct fdvm_gsi *g = vm->gsi;
	int ret = 0;

	pthread_mutex_lock(&g->lock);
	if (!is_msi(g, gsi)) {
		ret = -EINVAL;
	} else if (g->staged[gsi].msi.address != msg->address ||
		   g->staged[gsi].msi.data != msg->data) {
		g->staged[gsi].msi = *msg;
		g->dirty = true;
		ret = maybe_write(vm, g);
	}
	pthread_mutex_unlock(&g->lock);
	if (ret == -EINVAL)
		fdvm_log(vm, FDVM_LOG_ERROR, "gsi %u: not an allocated MSI route", gsi);
	return ret;
}

int fdvm_gsi_free(struct fdvm_vm *vm, uint32_t gsi)
{
	struct fdvm_gsi *g = vm->gsi;
	int ret = 0;

	pthread_mutex_lock(&g->lock);
	if (!is_msi(g, gsi)) {
		ret = -EINVAL;
	} else {
		g->staged[gsi].kind = SLOT_FREE;
		g->msi_used--;
		g->dirty = true;
		ret = maybe_write(vm, g);
	}
	pthread_mutex_unlock(&g->lock);
	if (ret == -EINVAL)
		fdvm_log(vm, FDVM_LOG_ERROR, "gsi %u: free of a GSI that is not an MSI route", gsi);
	return ret;
}

int fdvm_gsi_claim_pin(struct fdvm_vm *vm, uint32_t pin)
{
	struct fdvm_gsi *g = vm->gsi;
	int ret = 0;

	if (pin >= FDVM_GSI_IRQCHIP_PINS) {
		fdvm_log(vm, FDVM_LOG_ERROR, "ioapic pin %u: no such pin (0-%d)", pin,
			 FDVM_GSI_IRQCHIP_PINS - 1);
		return -EINVAL;
	}
	pthread_mutex_lock(&g->lock);
	if (g->pins & (1u << pin))
		ret = -EBUSY;
	else
		g->pins |= 1u << pin;
	pthread_mutex_unlock(&g->lock);
	if (ret)
		fdvm_log(vm, FDVM_LOG_ERROR, "ioapic pin %u: already has a line", pin);
	return ret;
}

void fdvm_gsi_release_pin(struct fdvm_vm *vm, uint32_t pin)
{
	pthread_mutex_lock(&vm->gsi->lock);
	vm->gsi->pins &= ~(1u << pin);
	pthread_mutex_unlock(&vm->gsi->lock);
}

uint64_t fdvm_gsi_writes(struct fdvm_vm *vm)
{
	pthread_mutex_lock(&vm->gsi->lock);
	uint64_t n = vm->gsi->writes;
	pthread_mutex_unlock(&vm->gsi->lock);
	return n;
}

uint32_t fdvm_gsi_msi_free(struct fdvm_vm *vm)
{
	struct fdvm_gsi *g = vm->gsi;
	pthread_mutex_lock(&g->lock);
	uint32_t n = g->nr > IRQCHIP_ROUTES + g->msi_used ? g->nr - IRQCHIP_ROUTES - g->msi_used : 0;
	pthread_mutex_unlock(&g->lock);
	return n;
}
