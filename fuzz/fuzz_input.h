/*
 * Reads a fuzz input as a stream of little-endian fields. Past the end
 * every field reads 0, so a truncated input is still a valid (shorter)
 * sequence of operations.
 */
#ifndef FDVM_FUZZ_INPUT_H
#define FDVM_FUZZ_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fin {
	const uint8_t *p;
	size_t n;
};

static inline bool fin_more(const struct fin *f) { return f->n > 0; }

static inline uint64_t fin_bytes(struct fin *f, unsigned len)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < len && f->n; i++, f->p++, f->n--)
		v |= (uint64_t)*f->p << (8 * i);
	return v;
}

static inline uint8_t fin_u8(struct fin *f) { return (uint8_t)fin_bytes(f, 1); }
static inline uint16_t fin_u16(struct fin *f) { return (uint16_t)fin_bytes(f, 2); }
static inline uint32_t fin_u32(struct fin *f) { return (uint32_t)fin_bytes(f, 4); }
static inline uint64_t fin_u64(struct fin *f) { return fin_bytes(f, 8); }

/* An access size, 1, 2, 4 or 8, from two bits. */
static inline unsigned fin_size(struct fin *f) { return 1u << (fin_u8(f) & 3); }

#endif
