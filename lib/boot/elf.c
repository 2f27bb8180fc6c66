/*
 * ELF64 parsing for PVH guests. The file is untrusted: every header, table
 * and note is bounds-checked against the buffer before it is read.
 */
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fdvm/loader.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -ENOEXEC;
}

/* True if [off, off + len) lies inside a buffer of size total. */
static int in_bounds(uint64_t off, uint64_t len, uint64_t total)
{
	return off <= total && len <= total - off;
}

static uint64_t align4(uint64_t v) { return (v + 3) & ~3ull; }

/* Looks for the PVH entry note in one PT_NOTE segment. 1 found, 0 not. */
static int find_pvh_note(const uint8_t *p, uint64_t len, uint64_t *entry)
{
	uint64_t off = 0;

	while (len - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		memcpy(&nh, p + off, sizeof(nh));
		off += sizeof(nh);
		uint64_t name_len = align4(nh.n_namesz), desc_len = align4(nh.n_descsz);
		if (name_len > len - off || desc_len > len - off - name_len)
			return 0;
		const uint8_t *name = p + off, *desc = p + off + name_len;
		if (nh.n_namesz == 4 && !memcmp(name, "Xen", 4) &&
		    nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY) {
			if (nh.n_descsz == 4) {
				uint32_t v;
				memcpy(&v, desc, 4);
				*entry = v;
				return 1;
			}
			if (nh.n_descsz == 8) {
				memcpy(entry, desc, 8);
				return 1;
			}
		}
		off += name_len + desc_len;
	}
	return 0;
}

int fdvm_elf_parse(const void *buf, size_t len, struct fdvm_elf_image *img,
		   char *err, size_t errlen)
{
	const uint8_t *p = buf;
	Elf64_Ehdr eh;
	bool have_entry = false;

	memset(img, 0, sizeof(*img));
	if (len < EI_NIDENT || memcmp(p, ELFMAG, SELFMAG))
		return fail(err, errlen, "not an ELF file");
	if (p[EI_CLASS] != ELFCLASS64)
		return fail(err, errlen, "not an ELF64 file (class %u)", p[EI_CLASS]);
	if (len < sizeof(eh))
		return fail(err, errlen, "truncated ELF header");
	memcpy(&eh, p, sizeof(eh));
	if (p[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
		return fail(err, errlen, "not a little-endian x86-64 ELF (machine %u)",
			    eh.e_machine);
	if (eh.e_type == ET_DYN)
		return fail(err, errlen, "a position-independent executable or shared object (ET_DYN); "
			    "fdvm loads fixed-address executables: link the guest with -no-pie");
	if (eh.e_type != ET_EXEC)
		return fail(err, errlen, "not an executable ELF (e_type %u%s; an ELF64 PVH image is "
			    "ET_EXEC)", eh.e_type, eh.e_type == ET_REL ? ", an object file" :
			    eh.e_type == ET_CORE ? ", a core dump" : "");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 ||
	    !in_bounds(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), len))
		return fail(err, errlen, "bad program header table (offset %llu, %u entries)",
			    (unsigned long long)eh.e_phoff, eh.e_phnum);

	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, p + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_NOTE) {
			if (!in_bounds(ph.p_offset, ph.p_filesz, len))
				return fail(err, errlen, "note segment %u lies outside the file", i);
			if (!have_entry)
				have_entry = find_pvh_note(p + ph.p_offset, ph.p_filesz,
							   &img->pvh_entry);
			continue;
		}
		if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
			continue;
		if (ph.p_filesz > ph.p_memsz)
			return fail(err, errlen, "segment %u: file size exceeds memory size", i);
		if (!in_bounds(ph.p_offset, ph.p_filesz, len))
			return fail(err, errlen, "segment %u lies outside the file", i);
		if (ph.p_paddr + ph.p_memsz < ph.p_paddr)
			return fail(err, errlen, "segment %u wraps around the address space", i);
		if (img->nseg == FDVM_ELF_MAX_SEGMENTS)
			return fail(err, errlen, "more than %d loadable segments",
				    FDVM_ELF_MAX_SEGMENTS);
		img->seg[img->nseg++] = (struct fdvm_elf_segment){
			ph.p_paddr, ph.p_memsz, ph.p_offset, ph.p_filesz };
	}
	if (!have_entry)
		return fail(err, errlen,
			    "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): not a PVH-bootable image");
	if (img->nseg == 0)
		return fail(err, errlen, "no loadable segments");
	return 0;
}

int fdvm_elf_check_layout(const struct fdvm_elf_image *img,
			  const struct fdvm_range *ram, unsigned nram,
			  struct fdvm_range reserved, char *err, size_t errlen)
{
	bool entry_loaded = false;

	for (unsigned i = 0; i < img->nseg; i++) {
		const struct fdvm_elf_segment *s = &img->seg[i];
		uint64_t end = s->paddr + s->memsz; /* no wrap: checked by parse */
		bool inside = false;

		for (unsigned r = 0; r < nram; r++)
			inside |= s->paddr >= ram[r].start && end <= ram[r].end;
		if (!inside) {
			snprintf(err, errlen,
				 "segment [0x%llx, 0x%llx) lies outside guest memory",
				 (unsigned long long)s->paddr, (unsigned long long)end);
			return -ERANGE;
		}
		if (s->paddr < reserved.end && end > reserved.start) {
			snprintf(err, errlen,
				 "segment [0x%llx, 0x%llx) overlaps fdvm's boot area [0x%llx, 0x%llx)",
				 (unsigned long long)s->paddr, (unsigned long long)end,
				 (unsigned long long)reserved.start,
				 (unsigned long long)reserved.end);
			return -ERANGE;
		}
		for (unsigned j = 0; j < i; j++) {
			const struct fdvm_elf_segment *o = &img->seg[j];
			if (s->paddr < o->paddr + o->memsz && o->paddr < end) {
				snprintf(err, errlen, "segments at 0x%llx and 0x%llx overlap",
					 (unsigned long long)o->paddr,
					 (unsigned long long)s->paddr);
				return -ERANGE;
			}
		}
		entry_loaded |= img->pvh_entry >= s->paddr && img->pvh_entry < end;
	}
	if (!entry_loaded || img->pvh_entry >= (1ull << 32)) {
		snprintf(err, errlen, "PVH entry 0x%llx is not inside a loaded segment below 4 GiB",
			 (unsigned long long)img->pvh_entry);
		return -ERANGE;
	}
	return 0;
}
