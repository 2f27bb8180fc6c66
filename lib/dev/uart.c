/*
 * An 8250/16550 UART on IRQ 4 (ISA: IOAPIC pin 4 and the PIC's IRQ 4).
 * Output is synchronous (the transmitter is always empty) and
 * line-buffered to a file descriptor. Input, when the VM has an input fd,
 * is read on the VM's service loop into a 64-byte receive FIFO; the loop
 * stops reading while the FIFO is full, so the guest is never more than
 * that far behind and nothing is dropped. The interrupt line follows the
 * registers as a 16550's does: high while received data waits with
 * ERBFI on, or a transmitter-empty event waits with ETBEI on (set by a
 * THR write or by turning ETBEI on, cleared by reading IIR or writing THR);
 * IIR names the higher of the two. The FIFO bits of IIR follow FCR; the
 * modem status loops back MCR in loopback mode, as drivers probe it, and
 * bytes written there come back to the receiver.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "fdvm/loop.h"
#include "../vm_priv.h"

#define UART_THR 0
#define UART_IER 1
#define UART_IIR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7
#define UART_FCR 2 /* write */
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IIR_FIFO 0xc0
#define IER_RDI 0x01
#define IER_THRI 0x02
#define MCR_LOOP 0x10
#define UART_IRQ 4
#define RX_SIZE 64

struct fdvm_uart {
	struct fdvm_vm *vm;
	struct fdvm_io_region *region;
	int fd;
	pthread_mutex_t lock; /* guards everything below */
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	char buf[256];
	size_t len;
	bool write_failed;
	/* Input. */
	int in_fd;			/* -1: none */
	struct fdvm_loop *loop;
	bool watching, in_done;		/* in_fd is on the loop; EOF or error */
	uint8_t rx[RX_SIZE];
	unsigned rx_head, rx_len;
	bool thre_pending;		/* a transmitter-empty event waits */
	bool irq;			/* the level IRQ 4 is driven to */
};

static void on_input(void *opaque, int fd, uint32_t events);

/* Lock held: a received byte into the FIFO, unless it is full (loopback
 * overruns; input is read only while there is room). */
static void rx_push(struct fdvm_uart *u, uint8_t c)
{
	if (u->rx_len < RX_SIZE)
		u->rx[(u->rx_head + u->rx_len++) % RX_SIZE] = c;
}

/* Lock held: IRQ 4 to what the registers say. */
static void update_irq(struct fdvm_uart *u)
{
	bool level = ((u->ier & IER_RDI) && u->rx_len) || ((u->ier & IER_THRI) && u->thre_pending);
	if (level != u->irq && !fdvm_irq_pin_set(u->vm, UART_IRQ, level))
		u->irq = level;
}

/* Lock held: read more input while there is room and it has not ended. */
static void want_input(struct fdvm_uart *u)
{
	bool want = u->in_fd >= 0 && !u->in_done && u->rx_len < RX_SIZE && u->loop;
	if (want && !u->watching)
		u->watching = !fdvm_loop_add(u->loop, u->in_fd, EPOLLIN, on_input, u);
	else if (!want && u->watching)
		u->watching = fdvm_loop_del(u->loop, u->in_fd) != 0;
}

/* The service loop: input is ready. */
static void on_input(void *opaque, int fd, uint32_t events)
{
	struct fdvm_uart *u = opaque;
	uint8_t tmp[RX_SIZE];
	(void)events;
	pthread_mutex_lock(&u->lock);
	size_t room = RX_SIZE - u->rx_len;
	ssize_t n = room ? read(fd, tmp, room) : 0;
	if (n > 0) {
		for (ssize_t i = 0; i < n; i++)
			rx_push(u, tmp[i]);
		update_irq(u);
	} else if (room && (n == 0 || (errno != EINTR && errno != EAGAIN))) {
		if (n < 0)
			fdvm_log_errno(u->vm, errno, "uart: console input fd %d: read", fd);
		u->in_done = true;
	}
	want_input(u);
	pthread_mutex_unlock(&u->lock);
}

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
		/* Sent at once: the transmitter is empty again. In loopback
		 * the byte comes back to the receiver instead. */
		u->thre_pending = true;
		if (u->mcr & MCR_LOOP) {
			rx_push(u, v);
			update_irq(u);
			break;
		}
		update_irq(u);
		if (v == '\r')
			break; /* the host terminal wants bare newlines */
		u->buf[u->len++] = (char)v;
		if (v == '\n' || u->len == sizeof(u->buf))
			flush_locked(u);
		break;
	case UART_IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
			break;
		}
		/* Turning ETBEI on with the transmitter empty is an event. */
		if ((v & IER_THRI) && !(u->ier & IER_THRI))
			u->thre_pending = true;
		u->ier = v & 0x0f;
		update_irq(u);
		break;
	case UART_FCR:
		u->fcr = v & 0x01; /* FIFOs on or off; the clear bits act at once */
		if (v & 0x02) {
			u->rx_len = 0;
			want_input(u);
			update_irq(u);
		}
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
		if (u->lcr & LCR_DLAB) {
			v = u->dll;
			break;
		}
		if (u->rx_len) {
			v = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % RX_SIZE;
			u->rx_len--;
			want_input(u);
			update_irq(u);
		}
		break;
	case UART_IER:
		v = (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
		break;
	case UART_IIR:
		if ((u->ier & IER_RDI) && u->rx_len) {
			v = IIR_RDI;
		} else if ((u->ier & IER_THRI) && u->thre_pending) {
			v = IIR_THRI;
			u->thre_pending = false; /* reading IIR that names it clears it */
			update_irq(u);
		} else {
			v = IIR_NO_INT;
		}
		if (u->fcr & 0x01)
			v |= IIR_FIFO;
		break;
	case UART_LCR:
		v = u->lcr;
		break;
	case UART_MCR:
		v = u->mcr;
		break;
	case UART_LSR:
		/* Output is synchronous: always empty. */
		v = LSR_THRE | LSR_TEMT | (u->rx_len ? LSR_DR : 0);
		break;
	case UART_MSR:
		if (u->mcr & MCR_LOOP) /* RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD */
			v = (uint8_t)((u->mcr & 0x02) << 3 | (u->mcr & 0x01) << 5 | (u->mcr & 0x04) << 4 |
				      (u->mcr & 0x08) << 4);
		else
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

int fdvm_uart_init(struct fdvm_vm *vm, uint16_t base, int out_fd, int in_fd, struct fdvm_uart **out)
{
	struct fdvm_uart *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	u->vm = vm;
	u->fd = out_fd;
	u->in_fd = in_fd;
	pthread_mutex_init(&u->lock, NULL);
	ret = fdvm_io_register(vm, FDVM_SPACE_PIO, base, 8, &uart_ops, u, "uart", &u->region);
	if (ret)
		goto err_free;
	if (in_fd >= 0) {
		if ((ret = fdvm_vm_service_loop(vm, &u->loop)))
			goto err_region;
		pthread_mutex_lock(&u->lock);
		want_input(u);
		bool ok = u->watching;
		pthread_mutex_unlock(&u->lock);
		if (!ok) {
			ret = fdvm_log_errno(vm, EINVAL, "uart: console input fd %d: cannot be watched "
					     "(epoll takes pipes, terminals and sockets, not files)", in_fd);
			goto err_region;
		}
	}
	*out = u;
	return 0;

err_region:
	fdvm_io_unregister(vm, u->region);
err_free:
	pthread_mutex_destroy(&u->lock);
	free(u);
	return ret;
}

void fdvm_uart_exit(struct fdvm_vm *vm, struct fdvm_uart *u)
{
	if (!u)
		return;
	fdvm_io_unregister(vm, u->region);
	/* Off the loop, outside the lock (del waits for a running on_input,
	 * which takes it): on_input will not run again. */
	pthread_mutex_lock(&u->lock);
	u->in_done = true;
	bool watching = u->watching;
	u->watching = false;
	pthread_mutex_unlock(&u->lock);
	if (watching)
		fdvm_loop_del(u->loop, u->in_fd);
	flush_locked(u);
	pthread_mutex_destroy(&u->lock);
	free(u);
}
