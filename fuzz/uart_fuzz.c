/*
 * Fuzz target: the 8250 UART (lib/dev/uart.c) through the VM's port I/O
 * bus (the VM is made once; each input plugs a UART of its own at COM2's
 * ports, its output on a pipe). The input is a sequence of port reads and
 * writes of any size, around and inside the eight registers.
 *
 * Checked against a model of the registers kept here: every read returns
 * what the model says (the receive FIFO fed by loopback, the interrupt
 * identification with its transmitter-empty event, the modem status in
 * loopback), and the output is exactly the bytes written to THR outside
 * the divisor latch and loopback, carriage returns dropped.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_input.h"
#include "fuzz_vm.h"
#include "../lib/vm_priv.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BASE 0x2f8
#define MAX_OPS 1024

static struct fdvm_vm *vm;
static int out[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	vm = fuzz_vm();
	/* Room for every byte one input can write (MAX_OPS of them). */
	if (pipe2(out, O_CLOEXEC | O_NONBLOCK) < 0)
		abort();
	return 0;
}

struct model {
	uint8_t ier, lcr, mcr, scr, dll, dlm, fcr;
	bool thre;
	uint8_t rx[64];
	unsigned rx_head, rx_len;
	uint8_t sent[MAX_OPS];
	size_t nsent;
};

static void model_write(struct model *m, unsigned off, uint8_t v)
{
	bool dlab = m->lcr & 0x80;
	switch (off) {
	case 0:
		if (dlab) {
			m->dll = v;
		} else {
			m->thre = true;
			if (m->mcr & 0x10) {
				if (m->rx_len < 64)
					m->rx[(m->rx_head + m->rx_len++) % 64] = v;
			} else if (v != '\r') {
				m->sent[m->nsent++] = v;
			}
		}
		break;
	case 1:
		if (dlab) {
			m->dlm = v;
		} else {
			if ((v & 2) && !(m->ier & 2))
				m->thre = true;
			m->ier = v & 0x0f;
		}
		break;
	case 2:
		m->fcr = v & 1;
		if (v & 2)
			m->rx_len = 0;
		break;
	case 3: m->lcr = v; break;
	case 4: m->mcr = v & 0x1f; break;
	case 7: m->scr = v; break;
	}
}

static uint8_t model_read(struct model *m, unsigned off)
{
	bool dlab = m->lcr & 0x80;
	uint8_t v;
	switch (off) {
	case 0:
		if (dlab)
			return m->dll;
		if (!m->rx_len)
			return 0;
		v = m->rx[m->rx_head];
		m->rx_head = (m->rx_head + 1) % 64;
		m->rx_len--;
		return v;
	case 1: return dlab ? m->dlm : m->ier;
	case 2:
		if ((m->ier & 1) && m->rx_len) {
			v = 0x04;
		} else if ((m->ier & 2) && m->thre) {
			v = 0x02;
			m->thre = false;
		} else {
			v = 0x01;
		}
		return (uint8_t)(v | (m->fcr ? 0xc0 : 0));
	case 3: return m->lcr;
	case 4: return m->mcr;
	case 5: return (uint8_t)(0x60 | (m->rx_len ? 1 : 0));
	case 6:
		if (m->mcr & 0x10)
			return (uint8_t)((m->mcr & 0x02) << 3 | (m->mcr & 0x01) << 5 | (m->mcr & 0x04) << 4 |
					 (m->mcr & 0x08) << 4);
		return 0xb0;
	default: return m->scr;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct model m;
	struct fdvm_uart *u;
	struct fin in = { data, size };

	if (!vm)
		LLVMFuzzerInitialize(NULL, NULL);
	memset(&m, 0, sizeof(m));
	if (fdvm_uart_init(vm, BASE, out[1], -1, &u))
		abort();
	for (unsigned n = 0; n < MAX_OPS && fin_more(&in); n++) {
		uint8_t op = fin_u8(&in);
		/* Mostly byte accesses to the registers; some wider or beside them. */
		int off = op & 7;
		unsigned sz = 1;
		if ((op & 0xc0) == 0xc0) {
			off = (int)(op & 0xf) - 4;
			sz = 1u << (op >> 4 & 3);
			if (sz == 8)
				sz = 4;
		}
		bool write = op & 0x08 ? (op & 0xc0) != 0xc0 || (op & 0x20) : false;
		bool claimed = off >= 0 && off + (int)sz <= 8;
		if (write) {
			uint32_t v = (uint32_t)fin_bytes(&in, sz);
			fuzz_vm_write(FDVM_SPACE_PIO, (uint64_t)(BASE + off), sz, v);
			if (claimed)
				model_write(&m, (unsigned)off, (uint8_t)v);
		} else {
			uint64_t v = fuzz_vm_read(FDVM_SPACE_PIO, (uint64_t)(BASE + off), sz);
			if (claimed && (uint8_t)v != model_read(&m, (unsigned)off))
				abort();
		}
	}
	fdvm_uart_exit(vm, u); /* flushes */
	uint8_t got[MAX_OPS + 1];
	ssize_t n = read(out[0], got, sizeof(got));
	if (n < 0)
		n = 0;
	if ((size_t)n != m.nsent || memcmp(got, m.sent, m.nsent))
		abort();
	return 0;
}
