/*
 * virtio-console (virtio 1.x, 5.3), one port, no multiport: what the guest
 * puts on transmitq0 goes to an output fd (fdvm's stdout). receiveq0 stays
 * empty: there is no input.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "../virtio/backend.h"
#include "../vm_priv.h"

#define RECEIVEQ 0
#define TRANSMITQ 1

struct console {
	struct fdvm_virtio_model model;
	struct fdvm_virtio_dev_ops ops;
	struct fdvm_virtio_backend be;
	int out_fd;
	uint8_t config[12]; /* cols, rows, max_nr_ports, emerg_wr: all 0 */
};

static void config_read(void *opaque, uint32_t off, void *buf, uint32_t len)
{
	struct console *c = opaque;
	for (uint32_t i = 0; i < len; i++)
		((uint8_t *)buf)[i] = c->config[off + i];
}

static bool handle(void *opaque, unsigned queue, struct fdvm_vq_elem *e, uint32_t *written)
{
	struct console *c = opaque;
	*written = 0;
	if (queue != TRANSMITQ)
		return true; /* an input buffer: nothing to put in it, ever */
	for (unsigned i = 0; i < e->nout; i++) {
		size_t done = 0;
		while (done < e->out[i].iov_len) {
			ssize_t n = write(c->out_fd, (char *)e->out[i].iov_base + done,
					  e->out[i].iov_len - done);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return true; /* the output is gone: drop the rest */
			done += (size_t)n;
		}
	}
	return true;
}

static int start(void *opaque, const struct fdvm_virtio_start *s)
{
	struct console *c = opaque;
	return fdvm_virtio_backend_start(&c->be, s);
}

static void stop(void *opaque)
{
	struct console *c = opaque;
	fdvm_virtio_backend_stop(&c->be);
}

static void console_destroy(struct fdvm_virtio_model *m)
{
	free(m->opaque);
}

int fdvm_virtio_console_create(struct fdvm_vm *vm, int out_fd, enum fdvm_doorbell_mode notify,
			       struct fdvm_virtio_pci **out)
{
	struct console *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->out_fd = out_fd;
	c->ops = (struct fdvm_virtio_dev_ops){
		.name = "virtio-console", .device_id = 3, .pci_class = 0x078000, .num_queues = 2,
		.queue_max_size = 64, .config_size = sizeof(c->config), .config_read = config_read,
		.features = FDVM_VIRTIO_VQ_FEATURES, .start = start, .stop = stop,
	};
	c->be = (struct fdvm_virtio_backend){ .handle = handle, .opaque = c, .name = "virtio-console" };
	c->model = (struct fdvm_virtio_model){ .ops = &c->ops, .opaque = c, .destroy = console_destroy };
	return fdvm_virtio_pci_add_model(vm, &c->model, notify, out);
}
