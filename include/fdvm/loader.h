/*
 * The PVH ELF64 loader, as pure functions over a file image so that tests
 * and fuzzers need no KVM. fdvm_vm_load_pvh() (vm.h) is the one-call form.
 */
#ifndef FDVM_LOADER_H
#define FDVM_LOADER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FDVM_ELF_MAX_SEGMENTS 16

struct fdvm_elf_segment {
	uint64_t paddr, memsz, offset, filesz;
};

struct fdvm_elf_image {
	uint64_t pvh_entry; /* from XEN_ELFNOTE_PHYS32_ENTRY */
	unsigned nseg;
	struct fdvm_elf_segment seg[FDVM_ELF_MAX_SEGMENTS];
};

/*
 * Parses and validates an ELF64 x86-64 executable with a PVH entry note.
 * Every offset and size is checked against len before use. Returns 0, or
 * -ENOEXEC with a one-line reason in err.
 */
int fdvm_elf_parse(const void *buf, size_t len, struct fdvm_elf_image *img,
		   char *err, size_t errlen);

/* A guest-physical range [start, end). */
struct fdvm_range {
	uint64_t start, end;
};

/*
 * Checks that every segment lies wholly inside one of the RAM ranges, not in
 * the reserved range, and not on another segment, and that the entry point
 * is inside a loaded segment and below 4 GiB. Returns 0, or -ERANGE with a
 * reason in err.
 */
int fdvm_elf_check_layout(const struct fdvm_elf_image *img,
			  const struct fdvm_range *ram, unsigned nram,
			  struct fdvm_range reserved, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
