/* Guest memory shared by a vhost-user frontend (see mem.h). */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"

/* [a, a + alen) and [b, b + blen) intersect (neither wraps). */
static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a < b + blen && b < a + alen;
}

size_t vu_page_size(const struct stat *st)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), b = (size_t)st->st_blksize;
	return b > page && !(b & (b - 1)) ? b : page;
}

int vu_mem_map(const struct vu_mem *mem, const struct vu_region *r, int fd,
	       struct vu_mapping *out, const char **why)
{
	struct stat st;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	if (!r->size) {
		*why = "empty region";
		return -EINVAL;
	}
	if (r->gpa + r->size < r->gpa || r->uva + r->size < r->uva ||
	    r->mmap_offset + r->size < r->mmap_offset || r->size > SIZE_MAX / 2) {
		*why = "region wraps around the address space";
		return -EINVAL;
	}
	for (unsigned i = 0; i < mem->n; i++) {
		const struct vu_region *o = &mem->m[i].r;
		if (overlap(r->gpa, r->size, o->gpa, o->size) ||
		    overlap(r->uva, r->size, o->uva, o->size)) {
			*why = "region overlaps another";
			return -EINVAL;
		}
	}
	if (fstat(fd, &st) < 0) {
		*why = "fstat of its fd failed";
		return -errno;
	}
	/* Only a file has a size to check; past its end a mapping would
	 * fault (SIGBUS) on the first touch. */
	if (!S_ISREG(st.st_mode)) {
		*why = "its fd is not a shareable memory file";
		return -EINVAL;
	}
	if (r->mmap_offset + r->size > (uint64_t)st.st_size) {
		*why = "region ends past the end of its file";
		return -EINVAL;
	}
	uint64_t start = r->mmap_offset & ~(page - 1);
	size_t len = (size_t)(r->mmap_offset - start + r->size);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
		       (off_t)start);
	if (p == MAP_FAILED) {
		*why = "mmap failed";
		return -errno;
	}
	*out = (struct vu_mapping){ .r = *r, .map = p, .map_len = len,
				    .host = (uint8_t *)p + (r->mmap_offset - start),
				    .page = vu_page_size(&st), .refs = 1, .dev = st.st_dev,
				    .ino = st.st_ino };
	return 0;
}

void vu_mem_unmap(struct vu_mapping *m)
{
	if (m->map)
		munmap(m->map, m->map_len);
	m->map = NULL;
}

void vu_mem_clear(struct vu_mem *mem)
{
	for (unsigned i = 0; i < mem->n; i++)
		vu_mem_unmap(&mem->m[i]);
	mem->n = 0;
}

int vu_mem_add(struct vu_mem *mem, const struct vu_mapping *m)
{
	if (mem->n == VU_MAX_SLOTS)
		return -ENOSPC;
	mem->m[mem->n++] = *m;
	return 0;
}

int vu_mem_find(const struct vu_mem *mem, const struct vu_region *r, int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	for (unsigned i = 0; i < mem->n; i++) {
		const struct vu_mapping *m = &mem->m[i];
		if (m->r.gpa == r->gpa && m->r.size == r->size && m->r.uva == r->uva &&
		    m->r.mmap_offset == r->mmap_offset && m->dev == st.st_dev && m->ino == st.st_ino)
			return (int)i;
	}
	return -1;
}

int vu_mem_remove(struct vu_mem *mem, const struct vu_region *r)
{
	for (unsigned i = 0; i < mem->n; i++) {
		const struct vu_region *o = &mem->m[i].r;
		if (o->gpa == r->gpa && o->size == r->size && o->uva == r->uva) {
			vu_mem_unmap(&mem->m[i]);
			mem->m[i] = mem->m[--mem->n];
			return 0;
		}
	}
	return -ENOENT;
}

void *vu_mem_gpa(void *opaque, uint64_t gpa, uint64_t len)
{
	const struct vu_mem *mem = opaque;
	for (unsigned i = 0; i < mem->n; i++) {
		const struct vu_mapping *m = &mem->m[i];
		uint64_t off = gpa - m->r.gpa;
		if (gpa >= m->r.gpa && off < m->r.size && len <= m->r.size - off)
			return m->host + off;
	}
	return NULL;
}

bool vu_mem_uva_to_gpa(const struct vu_mem *mem, uint64_t uva, uint64_t *gpa)
{
	for (unsigned i = 0; i < mem->n; i++) {
		const struct vu_region *r = &mem->m[i].r;
		if (uva >= r->uva && uva - r->uva < r->size) {
			*gpa = r->gpa + (uva - r->uva);
			return true;
		}
	}
	return false;
}
