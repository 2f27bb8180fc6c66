/* virtio-rng (virtio 1.x, 5.4): fills each device-writable buffer from getrandom. */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "../virtio/backend.h"
#include "../vm_priv.h"

struct rng {
	struct fdvm_virtio_model model;
	struct fdvm_virtio_dev_ops ops;
	struct fdvm_virtio_backend be;
};

static bool handle(void *opaque, unsigned queue, struct fdvm_vq_elem *e, uint32_t *written)
{
	(void)opaque;
	(void)queue;
	*written = 0;
	for (unsigned i = 0; i < e->nin; i++) {
		size_t done = 0;
		while (done < e->in[i].iov_len) {
			ssize_t n = getrandom((char *)e->in[i].iov_base + done, e->in[i].iov_len - done, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return true; /* what was filled so far is reported */
			done += (size_t)n;
			*written += (uint32_t)n;
		}
	}
	return true;
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct rng *r = opaque;
	return fdvm_virtio_backend_start(&r->be, s);
}

static void stop(void *opaque)
{
	struct rng *r = opaque;
	fdvm_virtio_backend_stop(&r->be);
}

static void rng_destroy(struct fdvm_virtio_model *m)
{
	free(m->opaque);
}

int fdvm_virtio_rng_create(struct fdvm_vm *vm, enum fdvm_doorbell_mode notify,
			   struct fdvm_virtio_pci **out)
{
	struct rng *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->ops = (struct fdvm_virtio_dev_ops){
		.name = "virtio-rng", .device_id = 4, .pci_class = 0x00ff00, .num_queues = 1,
		.queue_max_size = 64, .features = FDVM_VIRTIO_VQ_FEATURES, .start = start, .stop = stop,
	};
	r->be = (struct fdvm_virtio_backend){ .handle = handle, .opaque = r, .name = "virtio-rng" };
	r->model = (struct fdvm_virtio_model){ .ops = &r->ops, .opaque = r, .destroy = rng_destroy };
	return fdvm_virtio_pci_add_model(vm, &r->model, notify, out);
}
