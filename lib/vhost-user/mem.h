/*
 * Guest memory as a vhost-user frontend shares it: regions of memfds (or
 * other shareable files), each with a guest-physical and a frontend-virtual
 * base. Mapped whole, checked against their file's size (no SIGBUS later),
 * never overlapping, never wrapping.
 */
#ifndef FDVM_VU_MEM_H
#define FDVM_VU_MEM_H

#include <stdint.h>
#include <sys/stat.h>

#include "wire.h"

#define VU_MAX_SLOTS 32

struct vu_mapping {
	struct vu_region r;
	void *map;		/* the mmap, map_len bytes */
	size_t map_len;
	uint8_t *host;		/* guest address r.gpa is here */
	size_t page;		/* its file's page size (huge pages: theirs) */
	/* How many ADD_MEM_REG added this very region: QEMU adds a region
	 * once per queue pair of a multiqueue netdev, all on one connection. */
	unsigned refs;
	dev_t dev;		/* the file's identity */
	ino_t ino;
};

struct vu_mem {
	struct vu_mapping m[VU_MAX_SLOTS];
	unsigned n;
};

/*
 * Maps region r of fd (the fd stays the caller's). Checks it against the
 * regions already in mem (none may overlap in guest or frontend address)
 * and against fd's size. 0, or -errno with *why saying what was wrong.
 */
int vu_mem_map(const struct vu_mem *mem, const struct vu_region *r, int fd,
	       struct vu_mapping *out, const char **why);
void vu_mem_unmap(struct vu_mapping *m);
/* The page size a file is mapped with (st_blksize for hugetlbfs files). */
size_t vu_page_size(const struct stat *st);
void vu_mem_clear(struct vu_mem *mem);
/* Adds a mapping made by vu_mem_map; -ENOSPC when every slot is taken. */
int vu_mem_add(struct vu_mem *mem, const struct vu_mapping *m);
/* The index of the region identical to r (every field) in the same file
 * as fd, or -1. */
int vu_mem_find(const struct vu_mem *mem, const struct vu_region *r, int fd);
/* Removes (and unmaps) the region equal to r; -ENOENT if none. */
int vu_mem_remove(struct vu_mem *mem, const struct vu_region *r);

/* Guest-physical [gpa, gpa + len) -> host pointer, NULL unless inside one
 * region. The virtqueue's translate callback (opaque: the struct vu_mem). */
void *vu_mem_gpa(void *mem, uint64_t gpa, uint64_t len);
/* A frontend-virtual address -> guest-physical; false if in no region. */
bool vu_mem_uva_to_gpa(const struct vu_mem *mem, uint64_t uva, uint64_t *gpa);

#endif
