/*
 * Fuzz target: the PVH ELF loader's parser and layout check on any bytes.
 * Built as a libFuzzer target (clang, -Dfuzzing=true) or with replay.c as a
 * plain program that CI runs over seeds and their mutations.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fdvm/loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdvm_elf_image img;
	char err[256];
	/* An exact-size copy, so a sanitizer sees any read past the input. */
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	int r = fdvm_elf_parse(copy, size, &img, err, sizeof(err));
	if (r != 0 && r != -ENOEXEC)
		abort();
	if (r == 0) {
		if (img.nseg == 0 || img.nseg > FDVM_ELF_MAX_SEGMENTS)
			abort();
		for (unsigned i = 0; i < img.nseg; i++) {
			const struct fdvm_elf_segment *s = &img.seg[i];
			if (s->filesz > s->memsz || s->offset > size || s->filesz > size - s->offset)
				abort();
		}
		const struct fdvm_range ram[] = { { 0, 64 << 20 }, { 4ull << 30, 5ull << 30 } };
		r = fdvm_elf_check_layout(&img, ram, 2, (struct fdvm_range){ 0, 0x10000 }, err, sizeof(err));
		if (r != 0 && r != -ERANGE)
			abort();
	}
	free(copy);
	return 0;
}
