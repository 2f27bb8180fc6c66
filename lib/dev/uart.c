/*
 * An 8250/16550 UART, transmit side only: enough of THR, LSR, IER, LCR and
 * the divisor latch for a polling driver. Output is line-buffered to a file
 * descriptor; there is no input (RBR reads 0, LSR never shows data ready).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "../vm_priv.h"

#define UART_THR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7
#define LCR_DLAB 0x80
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NO_INT 0x01

struct fdvm_uart {
	struct fdvm_vm *vm;
	struct fdvm_io_region *region;
	int fd;
	pthread_mutex_t lock; /* guards everything below */
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	char buf[256];
	size_t len;
	bool write_failed;
};

/* Lock held. */
static void flush_locked(struct fdvm_uart *u)
{
	size_t done = 0;

	while (done < u->len && u->fd >= 0) {
		ssize_t n = write(u->fd, u->buf + done, u->len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!u->write_failed)
				fdvm_log_errno(u->vm, n < 0 ? errno : EIO,
					       "uart: console output fd %d: write", u->fd);
			u->write_failed = true;
			break;
		}
		done += (size_t)n;
	}
	u->len = 0;
}

void fdvm_uart_flush(struct fdvm_uart *u)
{
	pthread_mutex_lock(&u->lock);
	flush_locked(u);
	pthread_mutex_unlock(&u->lock);
}

static void uart_write(void *opaque, uint64_t off, uint64_t value, unsigned size)
{
	struct fdvm_uart *u = opaque;
	uint8_t v = (uint8_t)value;

	(void)size;
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case UART_THR:
		if (u->lcr & LCR_DLAB) {
			u->dll = v;
			break;
		}
		if (v == '\r')
			break; /* the host terminal wants bare newlines */
		u->buf[u->len++] = (char)v;
		if (v == '\n' || u->len == sizeof(u->buf))
			flush_locked(u);
		break;
	case UART_IER:
		if (u->lcr & LCR_DLAB)
			u->dlm = v;
		else
			u->ier = v & 0x0f;
		break;
	case UART_LCR:
		u->lcr = v;
		break;
	case UART_MCR:
		u->mcr = v & 0x1f;
		break;
	case UART_SCR:
		u->scr = v;
		break;
	default: /* FCR and the read-only registers */
		break;
	}
	pthread_mutex_unlock(&u->lock);
}

static uint64_t uart_read(void *opaque, uint64_t off, unsigned size)
{
	struct fdvm_uart *u = opaque;
	uint8_t v = 0;

	(void)size;
	pthread_mutex_lock(&u->lock);
	switch (off) {
	case UART_THR:
		v = (u->lcr & LCR_DLAB) ? u->dll : 0;
		break;
	case UART_IER:
		v = (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
		break;
	case UART_IIR:
		v = IIR_NO_INT;
		break;
	case UART_LCR:
		v = u->lcr;
		break;
	case UART_MCR:
		v = u->mcr;
		break;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT; /* output is synchronous: always empty */
		break;
	case UART_MSR:
		v = 0xb0; /* DCD, DSR, CTS */
		break;
	case UART_SCR:
		v = u->scr;
		break;
	}
	pthread_mutex_unlock(&u->lock);
	return v;
}

static const struct fdvm_io_ops uart_ops = { .read = uart_read, .write = uart_write };

int fdvm_uart_init(struct fdvm_vm *vm, uint16_t base, int out_fd, struct fdvm_uart **out)
{
	struct fdvm_uart *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	u->vm = vm;
	u->fd = out_fd;
	pthread_mutex_init(&u->lock, NULL);
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, base, 8, &uart_ops, u, "uart", &u->region);
	if (ret) {
		pthread_mutex_destroy(&u->lock);
		free(u);
		return ret;
	}
	*out = u;
	return 0;
}

void fdvm_uart_exit(struct fdvm_vm *vm, struct fdvm_uart *u)
{
	if (!u)
		return;
	fdvm_io_unregister(vm, u->region);
	flush_locked(u);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
