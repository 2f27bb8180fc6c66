/*
 * Unit tests for the PVH ELF loader (lib/boot/elf.c): fdvm_elf_parse() and
 * fdvm_elf_check_layout(). No KVM needed.
 *
 * Images are built in memory by a small builder (ELF header, program header
 * table, PT_LOAD data, PT_NOTE data), and every parse is done on a heap copy
 * of exactly the image's length, so that under ASan any read past the end is
 * caught. The truncation and byte-flip tests are a small deterministic fuzz.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdvm/loader.h"

#define XEN_ELFNOTE_ENTRY 1
#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* uint64_t, so that they can be passed to image()'s variadic arguments. */
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)

/* ---- error text checks ---------------------------------------------------- */

#define assert_contains(hay, needle)                                          \
	do {                                                                  \
		const char *h_ = (hay), *n_ = (needle);                       \
		if (!strstr(h_, n_))                                          \
			fail_msg("\"%s\" does not contain \"%s\"", h_, n_);   \
	} while (0)

/* ---- note builder ---------------------------------------------------------- */

struct notes {
	uint8_t buf[1024];
	size_t len;
};

static void notes_bytes(struct notes *n, const void *p, size_t len)
{
	size_t padded = (len + 3) & ~(size_t)3;

	assert_true(n->len + padded <= sizeof(n->buf));
	memset(n->buf + n->len, 0, padded);
	if (len)
		memcpy(n->buf + n->len, p, len);
	n->len += padded;
}

/* A raw note: header fields as given, then name_bytes and desc_bytes of data
 * (each padded to 4), which need not agree with namesz/descsz. */
static void notes_put(struct notes *n, uint32_t namesz, uint32_t descsz, uint32_t type,
		      const void *name, size_t name_bytes, const void *desc, size_t desc_bytes)
{
	Elf64_Nhdr nh = { .n_namesz = namesz, .n_descsz = descsz, .n_type = type };

	notes_bytes(n, &nh, sizeof(nh));
	notes_bytes(n, name, name_bytes);
	notes_bytes(n, desc, desc_bytes);
}

static void notes_add(struct notes *n, const char *name, uint32_t type, const void *desc,
		      uint32_t descsz)
{
	size_t namesz = strlen(name) + 1;

	notes_put(n, (uint32_t)namesz, descsz, type, name, namesz, desc, descsz);
}

/* The PVH entry note with a 4- or 8-byte little-endian descriptor. */
static void notes_add_pvh(struct notes *n, uint64_t entry, unsigned descsz)
{
	uint8_t desc[8];

	for (unsigned i = 0; i < 8; i++)
		desc[i] = (uint8_t)(entry >> (8 * i));
	notes_add(n, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, desc, descsz);
}

/* ---- ELF builder ----------------------------------------------------------- */

/*
 * File layout: the ELF header at 0, room for PH_MAX program headers at 64
 * (only e_phnum of them are meaningful), then the body: segment data and
 * note data appended in the order they are added, each 8-byte aligned.
 */
#define PH_MAX 24
#define BODY_OFF (sizeof(Elf64_Ehdr) + PH_MAX * sizeof(Elf64_Phdr))

struct builder {
	Elf64_Ehdr eh;
	Elf64_Phdr ph[PH_MAX];
	uint8_t body[16384];
	size_t body_len;
};

static void b_init(struct builder *b)
{
	memset(b, 0, sizeof(*b));
	memcpy(b->eh.e_ident, ELFMAG, SELFMAG);
	b->eh.e_ident[EI_CLASS] = ELFCLASS64;
	b->eh.e_ident[EI_DATA] = ELFDATA2LSB;
	b->eh.e_ident[EI_VERSION] = EV_CURRENT;
	b->eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
	b->eh.e_type = ET_EXEC;
	b->eh.e_machine = EM_X86_64;
	b->eh.e_version = EV_CURRENT;
	b->eh.e_entry = 0xffffffff81000000ull; /* the 64-bit entry: not what PVH uses */
	b->eh.e_phoff = sizeof(Elf64_Ehdr);
	b->eh.e_ehsize = sizeof(Elf64_Ehdr);
	b->eh.e_phentsize = sizeof(Elf64_Phdr);
	b->eh.e_phnum = 0;
}

static size_t b_len(const struct builder *b)
{
	return BODY_OFF + b->body_len;
}

/* Appends data to the body; returns its file offset. */
static uint64_t b_data(struct builder *b, const void *p, size_t len)
{
	b->body_len = (b->body_len + 7) & ~(size_t)7;
	assert_true(b->body_len + len <= sizeof(b->body));
	uint64_t off = BODY_OFF + b->body_len;
	memcpy(b->body + b->body_len, p, len);
	b->body_len += len;
	return off;
}

static unsigned b_phdr(struct builder *b, uint32_t type, uint64_t offset, uint64_t filesz,
		       uint64_t paddr, uint64_t memsz)
{
	unsigned i = b->eh.e_phnum++;

	assert_true(i < PH_MAX);
	b->ph[i] = (Elf64_Phdr){
		.p_type = type,
		.p_flags = type == PT_LOAD ? PF_R | PF_W | PF_X : PF_R,
		.p_offset = offset,
		.p_vaddr = paddr ? paddr + 0xffffffff80000000ull : 0,
		.p_paddr = paddr,
		.p_filesz = filesz,
		.p_memsz = memsz,
		.p_align = type == PT_LOAD ? 0x1000 : 4,
	};
	return i;
}

/* A PT_LOAD of filesz bytes of a recognisable pattern. */
static unsigned b_load(struct builder *b, uint64_t paddr, uint64_t memsz, size_t filesz)
{
	uint8_t data[4096];

	assert_true(filesz <= sizeof(data));
	for (size_t i = 0; i < filesz; i++)
		data[i] = (uint8_t)(i * 7 + paddr);
	return b_phdr(b, PT_LOAD, b_data(b, data, filesz), filesz, paddr, memsz);
}

static unsigned b_notes(struct builder *b, const struct notes *n)
{
	return b_phdr(b, PT_NOTE, b_data(b, n->buf, n->len), n->len, 0, 0);
}

/* The file image, on the heap, exactly b_len() bytes long. */
static uint8_t *b_image(const struct builder *b)
{
	size_t len = b_len(b);
	uint8_t *p = malloc(len);

	assert_non_null(p);
	memset(p, 0, len);
	memcpy(p, &b->eh, sizeof(b->eh));
	memcpy(p + sizeof(b->eh), b->ph, sizeof(b->ph));
	memcpy(p + BODY_OFF, b->body, b->body_len);
	return p;
}

/* Parses the first len bytes of the built image from an exact-size heap
 * buffer (so ASan sees any overread). */
static int parse_n(const struct builder *b, size_t len, struct fdvm_elf_image *img, char *err,
		   size_t errlen)
{
	uint8_t *full = b_image(b);
	uint8_t *p = malloc(len); /* even 0 bytes: ASan flags any read */

	if (len) {
		assert_non_null(p);
		memcpy(p, full, len);
	}
	free(full);
	int r = fdvm_elf_parse(p, len, img, err, errlen);
	free(p);
	return r;
}

static int parse(const struct builder *b, struct fdvm_elf_image *img, char *err, size_t errlen)
{
	return parse_n(b, b_len(b), img, err, errlen);
}

/* Expects -ENOEXEC with an error text containing what. */
static void expect_reject(const struct builder *b, const char *what)
{
	struct fdvm_elf_image img;
	char err[256] = "";

	assert_int_equal(parse(b, &img, err, sizeof(err)), -ENOEXEC);
	assert_contains(err, what);
}

/*
 * The standard valid image. Program headers: [0] PT_LOAD A, [1] PT_LOAD B,
 * [2] PT_NOTE. In the file the note comes last, so a note read past its
 * segment is also a read past the buffer.
 */
#define SEG_A 0
#define SEG_B 1
#define SEG_NOTE 2
#define A_PADDR (1 * MiB)
#define A_MEMSZ 0x3000ull
#define A_FILESZ 0x180ull
#define B_PADDR (2 * MiB)
#define B_MEMSZ 0x200ull
#define B_FILESZ 0x200ull
#define ENTRY (A_PADDR + 0x40)

static void make_valid(struct builder *b, unsigned descsz, uint64_t entry)
{
	struct notes n = { .len = 0 };

	b_init(b);
	assert_int_equal(b_load(b, A_PADDR, A_MEMSZ, A_FILESZ), SEG_A);
	assert_int_equal(b_load(b, B_PADDR, B_MEMSZ, B_FILESZ), SEG_B);
	notes_add_pvh(&n, entry, descsz);
	assert_int_equal(b_notes(b, &n), SEG_NOTE);
}

/* An image with only one PT_LOAD and a PT_NOTE, nothing else. */
static void make_minimal(struct builder *b)
{
	struct notes n = { .len = 0 };

	b_init(b);
	b_load(b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_add_pvh(&n, ENTRY, 4);
	b_notes(b, &n);
}

/* ---- parse: valid images ---------------------------------------------------- */

static void check_valid_segments(const struct builder *b, const struct fdvm_elf_image *img)
{
	assert_int_equal(img->nseg, 2);
	assert_int_equal(img->seg[0].paddr, A_PADDR);
	assert_int_equal(img->seg[0].memsz, A_MEMSZ);
	assert_int_equal(img->seg[0].filesz, A_FILESZ);
	assert_int_equal(img->seg[0].offset, b->ph[SEG_A].p_offset);
	assert_int_equal(img->seg[1].paddr, B_PADDR);
	assert_int_equal(img->seg[1].memsz, B_MEMSZ);
	assert_int_equal(img->seg[1].filesz, B_FILESZ);
	assert_int_equal(img->seg[1].offset, b->ph[SEG_B].p_offset);
	/* The offsets point at the data the builder wrote. */
	assert_true(img->seg[0].offset >= BODY_OFF);
	assert_true(img->seg[1].offset >= img->seg[0].offset + A_FILESZ);
}

static void test_parse_valid_desc4(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	make_valid(&b, 4, ENTRY);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, ENTRY);
	check_valid_segments(&b, &img);
}

static void test_parse_valid_desc8(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	/* All eight bytes matter: a 4-byte read would give 0x89abcdef. */
	make_valid(&b, 8, 0x0000004589abcdefull);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, 0x0000004589abcdefull);
	check_valid_segments(&b, &img);
}

static void test_parse_valid_desc4_high_bit(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	/* A 4-byte entry is zero-extended, not sign-extended. */
	make_valid(&b, 4, 0xfff00010ull);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, 0xfff00010ull);
}

static void test_parse_result_overwrites_img(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	memset(&img, 0xa5, sizeof(img));
	make_minimal(&b);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.nseg, 1);
	assert_int_equal(img.pvh_entry, ENTRY);
	assert_int_equal(img.seg[0].paddr, A_PADDR);
}

static void test_parse_note_among_others(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };
	struct fdvm_elf_image img;
	char err[256] = "";
	uint8_t build_id[20], decoy8[8], decoy2[2] = { 0x11, 0x22 };
	const uint64_t real = 0x00123456ull;

	memset(build_id, 0xee, sizeof(build_id));
	memset(decoy8, 0x77, sizeof(decoy8));

	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	/* Notes that must not be taken for the PVH entry: */
	notes_add(&n, "GNU", NT_GNU_BUILD_ID, build_id, sizeof(build_id));
	notes_add(&n, "Xen", XEN_ELFNOTE_ENTRY, decoy8, 8);           /* other type */
	notes_add(&n, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, decoy2, 2);    /* bad desc size */
	notes_add(&n, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, build_id, 16); /* bad desc size */
	notes_add(&n, "XenX", XEN_ELFNOTE_PHYS32_ENTRY, decoy8, 8);   /* other name */
	notes_add(&n, "Linux", XEN_ELFNOTE_PHYS32_ENTRY, decoy8, 8);  /* other name */
	notes_put(&n, 3, 8, XEN_ELFNOTE_PHYS32_ENTRY, "Xe", 3, decoy8, 8); /* "Xe" */
	notes_add(&n, "", 0, NULL, 0);                                 /* empty name */
	notes_add_pvh(&n, real, 4);
	notes_add(&n, "GNU", NT_GNU_ABI_TAG, build_id, 16);
	b_notes(&b, &n);

	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, real);
	assert_int_equal(img.nseg, 1);
}

static void test_parse_note_in_second_note_segment(void **state)
{
	(void)state;
	struct builder b;
	struct notes n1 = { .len = 0 }, n2 = { .len = 0 };
	struct fdvm_elf_image img;
	char err[256] = "";
	uint8_t build_id[20];

	memset(build_id, 0x42, sizeof(build_id));
	b_init(&b);
	notes_add(&n1, "GNU", NT_GNU_BUILD_ID, build_id, sizeof(build_id));
	b_notes(&b, &n1);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_add_pvh(&n2, ENTRY + 4, 8);
	b_notes(&b, &n2);

	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, ENTRY + 4);
	assert_int_equal(img.nseg, 1);
}

static void test_parse_note_in_first_note_segment(void **state)
{
	(void)state;
	struct builder b;
	struct notes n1 = { .len = 0 }, n2 = { .len = 0 };
	struct fdvm_elf_image img;
	char err[256] = "";
	uint8_t build_id[20];

	/* A later PT_NOTE without the PVH note does not undo the first. */
	memset(build_id, 0x42, sizeof(build_id));
	b_init(&b);
	notes_add_pvh(&n1, ENTRY + 8, 4);
	b_notes(&b, &n1);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_add(&n2, "GNU", NT_GNU_BUILD_ID, build_id, sizeof(build_id));
	b_notes(&b, &n2);

	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.pvh_entry, ENTRY + 8);
}

static void test_parse_ignores_other_phdrs(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	make_valid(&b, 4, ENTRY);
	b_phdr(&b, PT_GNU_STACK, 0, 0, 0, 0);
	b_phdr(&b, PT_NULL, 0, 0, 0, 0);
	/* Not loadable: offsets past the end of the file are irrelevant. */
	b_phdr(&b, PT_GNU_RELRO, 1ull << 40, 0x1000, 0x5000, 0x1000);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	check_valid_segments(&b, &img);
}

static void test_parse_bss_only_segment(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	make_valid(&b, 4, ENTRY);
	b_phdr(&b, PT_LOAD, 0, 0, 4 * MiB, 0x8000); /* filesz 0: all bss */
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.nseg, 3);
	assert_int_equal(img.seg[2].paddr, 4 * MiB);
	assert_int_equal(img.seg[2].memsz, 0x8000);
	assert_int_equal(img.seg[2].filesz, 0);
}

static void test_parse_max_segments_ok(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };
	struct fdvm_elf_image img;
	char err[256] = "";

	b_init(&b);
	for (unsigned i = 0; i < FDVM_ELF_MAX_SEGMENTS; i++)
		b_load(&b, MiB + i * 0x1000ull, 0x1000, 16);
	notes_add_pvh(&n, MiB, 4);
	b_notes(&b, &n);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.nseg, FDVM_ELF_MAX_SEGMENTS);
	for (unsigned i = 0; i < FDVM_ELF_MAX_SEGMENTS; i++) {
		assert_int_equal(img.seg[i].paddr, MiB + i * 0x1000ull);
		assert_int_equal(img.seg[i].offset, b.ph[i].p_offset);
	}
}

static void test_parse_segment_ending_at_top_of_address_space(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	/* [UINT64_MAX - 0x1000, UINT64_MAX) does not wrap. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_B].p_paddr = UINT64_MAX - 0x1000;
	b.ph[SEG_B].p_memsz = 0x1000;
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.seg[1].paddr, UINT64_MAX - 0x1000);
}

/* ---- parse: header rejections --------------------------------------------- */

static void test_reject_short(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;

	make_valid(&b, 4, ENTRY);
	for (size_t len = 0; len < EI_NIDENT; len++) {
		char err[256] = "";
		assert_int_equal(parse_n(&b, len, &img, err, sizeof(err)), -ENOEXEC);
		assert_contains(err, "not an ELF file");
	}
	/* Past e_ident but short of a full header. */
	for (size_t len = EI_NIDENT; len < sizeof(Elf64_Ehdr); len++) {
		char err[256] = "";
		assert_int_equal(parse_n(&b, len, &img, err, sizeof(err)), -ENOEXEC);
		assert_contains(err, "truncated ELF header");
	}
}

static void test_reject_bad_magic(void **state)
{
	(void)state;
	struct builder b;

	for (unsigned i = 0; i < SELFMAG; i++) {
		make_valid(&b, 4, ENTRY);
		b.eh.e_ident[i] ^= 0x20;
		expect_reject(&b, "not an ELF file");
	}
}

static void test_reject_class32(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_ident[EI_CLASS] = ELFCLASS32;
	expect_reject(&b, "not an ELF64 file (class 1)");

	make_valid(&b, 4, ENTRY);
	b.eh.e_ident[EI_CLASS] = ELFCLASSNONE;
	expect_reject(&b, "not an ELF64 file");
}

static void test_reject_big_endian(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_ident[EI_DATA] = ELFDATA2MSB;
	expect_reject(&b, "little-endian");

	make_valid(&b, 4, ENTRY);
	b.eh.e_ident[EI_DATA] = ELFDATANONE;
	expect_reject(&b, "little-endian");
}

static void test_reject_wrong_machine(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_machine = EM_386;
	expect_reject(&b, "x86-64 ELF (machine 3)");

	make_valid(&b, 4, ENTRY);
	b.eh.e_machine = EM_AARCH64;
	expect_reject(&b, "x86-64");
}

static void test_reject_not_exec(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_type = ET_DYN;
	expect_reject(&b, "a position-independent executable or shared object (ET_DYN); fdvm loads "
			  "fixed-address executables: link the guest with -no-pie");

	make_valid(&b, 4, ENTRY);
	b.eh.e_type = ET_REL;
	expect_reject(&b, "not an executable ELF (e_type 1, an object file; an ELF64 PVH image is "
			  "ET_EXEC)");

	make_valid(&b, 4, ENTRY);
	b.eh.e_type = ET_CORE;
	expect_reject(&b, "not an executable ELF");
}

static void test_reject_phentsize(void **state)
{
	(void)state;
	struct builder b;
	const uint16_t bad[] = { 0, 32 /* Elf32_Phdr */, 55, 57, 64 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_valid(&b, 4, ENTRY);
		b.eh.e_phentsize = bad[i];
		expect_reject(&b, "bad program header table");
	}
}

static void test_reject_phnum_zero(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_phnum = 0;
	expect_reject(&b, "bad program header table (offset 64, 0 entries)");
}

/* The valid image with a copy of its program header table moved to the very
 * end of the file. */
static void make_valid_table_at_end(struct builder *b)
{
	make_valid(b, 4, ENTRY);
	b->eh.e_phoff = b_data(b, b->ph, b->eh.e_phnum * sizeof(Elf64_Phdr));
	assert_int_equal(b->eh.e_phoff + 3 * sizeof(Elf64_Phdr), b_len(b));
}

static void test_reject_phdrs_past_end(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	/* Control: a table ending exactly at the end of the file is fine. */
	make_valid_table_at_end(&b);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	check_valid_segments(&b, &img);

	/* The file one byte shorter. */
	err[0] = '\0';
	assert_int_equal(parse_n(&b, b_len(&b) - 1, &img, err, sizeof(err)), -ENOEXEC);
	assert_contains(err, "bad program header table");

	/* The table one byte later. */
	make_valid_table_at_end(&b);
	b.eh.e_phoff += 1;
	expect_reject(&b, "bad program header table");

	/* One entry more than the file holds. */
	make_valid_table_at_end(&b);
	b.eh.e_phnum += 1;
	expect_reject(&b, "bad program header table");

	/* The table starts past the end. */
	make_valid(&b, 4, ENTRY);
	b.eh.e_phoff = b_len(&b) + 8;
	expect_reject(&b, "bad program header table");

	/* Far too many entries for the file. */
	make_valid(&b, 4, ENTRY);
	b.eh.e_phnum = 0xffff;
	expect_reject(&b, "bad program header table (offset 64, 65535 entries)");
}

static void test_reject_phoff_overflow(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.eh.e_phoff = UINT64_MAX - 10;
	expect_reject(&b, "bad program header table");

	make_valid(&b, 4, ENTRY);
	b.eh.e_phoff = UINT64_MAX;
	b.eh.e_phnum = 1;
	expect_reject(&b, "bad program header table");

	/* phoff + phnum * 56 wraps to a small number. */
	make_valid(&b, 4, ENTRY);
	b.eh.e_phnum = 0xffff;
	b.eh.e_phoff = 0 - (uint64_t)0xffff * sizeof(Elf64_Phdr) + 64;
	expect_reject(&b, "bad program header table");
}

/* ---- parse: segment rejections -------------------------------------------- */

static void test_reject_filesz_gt_memsz(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_B].p_memsz = B_FILESZ - 1;
	expect_reject(&b, "segment 1: file size exceeds memory size");
}

static void test_reject_load_past_end(void **state)
{
	(void)state;
	struct builder b;

	/* One byte too many. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_A].p_offset = b_len(&b) - A_FILESZ + 1;
	expect_reject(&b, "segment 0 lies outside the file");

	/* Starting past the end. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_B].p_offset = b_len(&b) + 1;
	b.ph[SEG_B].p_filesz = 0;
	expect_reject(&b, "segment 1 lies outside the file");

	/* offset + filesz wraps around. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_A].p_offset = UINT64_MAX - 0x10;
	expect_reject(&b, "segment 0 lies outside the file");

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_A].p_offset = 0x100;
	b.ph[SEG_A].p_filesz = UINT64_MAX - 0x80;
	b.ph[SEG_A].p_memsz = UINT64_MAX - 0x80;
	b.ph[SEG_A].p_paddr = 0;
	expect_reject(&b, "segment 0 lies outside the file");

	/* Control: ending exactly at the end of the file is fine. */
	struct fdvm_elf_image img;
	char err[256] = "";
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_A].p_offset = b_len(&b) - A_FILESZ;
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	assert_int_equal(img.seg[0].offset, b_len(&b) - A_FILESZ);
}

static void test_reject_paddr_wrap(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_B].p_paddr = UINT64_MAX - 0xfff;
	b.ph[SEG_B].p_memsz = 0x2000;
	expect_reject(&b, "segment 1 wraps around the address space");

	/* End exactly at 2^64: not representable, so rejected too. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_B].p_paddr = UINT64_MAX - 0xfff;
	b.ph[SEG_B].p_memsz = 0x1000;
	expect_reject(&b, "wraps around");

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_A].p_paddr = 0x1000;
	b.ph[SEG_A].p_memsz = UINT64_MAX;
	expect_reject(&b, "segment 0 wraps around");
}

static void test_reject_too_many_segments(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };

	b_init(&b);
	notes_add_pvh(&n, MiB, 4);
	b_notes(&b, &n);
	for (unsigned i = 0; i < FDVM_ELF_MAX_SEGMENTS + 1; i++)
		b_load(&b, MiB + i * 0x1000ull, 0x1000, 16);
	expect_reject(&b, "more than 16 loadable segments");
}

static void test_reject_no_pvh_note(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };
	uint8_t d8[8] = { 0x40, 0, 0x10, 0, 0, 0, 0, 0 };

	/* No PT_NOTE at all. */
	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	expect_reject(&b, "no PVH entry note");

	/* Only notes that look alike. */
	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_add(&n, "Xen", XEN_ELFNOTE_ENTRY, d8, 8);
	notes_add(&n, "Xen", XEN_ELFNOTE_PHYS32_ENTRY, d8, 6);
	notes_add(&n, "XEN", XEN_ELFNOTE_PHYS32_ENTRY, d8, 4);
	notes_add(&n, "GNU", XEN_ELFNOTE_PHYS32_ENTRY, d8, 4);
	b_notes(&b, &n);
	expect_reject(&b, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");

	/* An empty PT_NOTE. */
	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	b_phdr(&b, PT_NOTE, BODY_OFF, 0, 0, 0);
	expect_reject(&b, "no PVH entry note");

	/* The note is there, but in a segment that is not PT_NOTE. */
	make_valid(&b, 4, ENTRY);
	b.ph[SEG_NOTE].p_type = PT_NULL;
	expect_reject(&b, "no PVH entry note");
}

static void test_reject_truncated_note(void **state)
{
	(void)state;
	struct builder b;
	struct notes n;
	const uint8_t desc[4] = { 0x40, 0x00, 0x10, 0x00 };

	/* namesz runs past the segment (and the file: the note is last). */
	const uint32_t bad_namesz[] = { 5, 13, 100, 0x7fffffff, 0xfffffffd, 0xffffffff };
	for (size_t i = 0; i < sizeof(bad_namesz) / sizeof(bad_namesz[0]); i++) {
		n.len = 0;
		b_init(&b);
		b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
		notes_put(&n, bad_namesz[i], 4, XEN_ELFNOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
		b_notes(&b, &n);
		expect_reject(&b, "no PVH entry note");
	}

	/* descsz runs past the segment. */
	const uint32_t bad_descsz[] = { 5, 8, 100, 0xfffffffd, 0xffffffff };
	for (size_t i = 0; i < sizeof(bad_descsz) / sizeof(bad_descsz[0]); i++) {
		n.len = 0;
		b_init(&b);
		b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
		notes_put(&n, 4, bad_descsz[i], XEN_ELFNOTE_PHYS32_ENTRY, "Xen", 4, desc, 4);
		b_notes(&b, &n);
		expect_reject(&b, "no PVH entry note");
	}

	/* A good note, but the segment's filesz cuts into it: the note may not
	 * be read from the bytes beyond the segment even though they are in the
	 * file. */
	for (uint64_t cut = 1; cut <= 20; cut++) {
		make_valid(&b, 4, ENTRY);
		b_load(&b, 8 * MiB, 0x1000, 64); /* file data after the note */
		b.ph[SEG_NOTE].p_filesz -= cut;
		expect_reject(&b, "no PVH entry note");
	}

	/* A bad note before the PVH note hides it: the walk stops. */
	n.len = 0;
	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_put(&n, 4, 200, XEN_ELFNOTE_ENTRY, "Xen", 4, desc, 4);
	notes_add_pvh(&n, ENTRY, 4);
	b_notes(&b, &n);
	expect_reject(&b, "no PVH entry note");

	/* Sizes whose 4-byte rounding needs 33 bits: rounded in 32 bits they
	 * would become 0 and the walk would step onto the PVH note after. */
	const uint32_t wrap[] = { 0xfffffffd, 0xffffffff };
	for (size_t i = 0; i < 2; i++) {
		n.len = 0;
		b_init(&b);
		b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
		notes_put(&n, wrap[i], 0, XEN_ELFNOTE_ENTRY, NULL, 0, NULL, 0);
		notes_add_pvh(&n, ENTRY, 4);
		b_notes(&b, &n);
		expect_reject(&b, "no PVH entry note");

		n.len = 0;
		b_init(&b);
		b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
		notes_put(&n, 0, wrap[i], XEN_ELFNOTE_ENTRY, NULL, 0, NULL, 0);
		notes_add_pvh(&n, ENTRY, 4);
		b_notes(&b, &n);
		expect_reject(&b, "no PVH entry note");
	}
}

static void test_reject_note_past_end(void **state)
{
	(void)state;
	struct builder b;

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_NOTE].p_filesz += 1;
	expect_reject(&b, "note segment 2 lies outside the file");

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_NOTE].p_offset = b_len(&b) + 4;
	b.ph[SEG_NOTE].p_filesz = 0;
	expect_reject(&b, "note segment 2 lies outside the file");

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_NOTE].p_offset = UINT64_MAX - 8;
	expect_reject(&b, "note segment 2 lies outside the file");

	make_valid(&b, 4, ENTRY);
	b.ph[SEG_NOTE].p_filesz = UINT64_MAX;
	expect_reject(&b, "note segment 2 lies outside the file");
}

static void test_reject_no_load(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };

	b_init(&b);
	notes_add_pvh(&n, ENTRY, 4);
	b_notes(&b, &n);
	expect_reject(&b, "no loadable segments");

	/* A PT_LOAD of memsz 0 loads nothing. */
	n.len = 0;
	b_init(&b);
	b_phdr(&b, PT_LOAD, BODY_OFF, 0, A_PADDR, 0);
	notes_add_pvh(&n, ENTRY, 4);
	b_notes(&b, &n);
	expect_reject(&b, "no loadable segments");
}

static void test_err_truncated_to_errlen(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[16];

	make_valid(&b, 4, ENTRY);
	b.eh.e_type = ET_DYN;
	memset(err, 'Z', sizeof(err));
	assert_int_equal(parse(&b, &img, err, 8), -ENOEXEC);
	assert_int_equal(strlen(err), 7);
	assert_memory_equal(err, "a posit", 7);
	assert_int_equal(err[8], 'Z'); /* nothing written past errlen */
}

/* ---- parse: mini fuzz ----------------------------------------------------- */

/* Checks what a successful parse promises. */
static void check_sane(const struct fdvm_elf_image *img, size_t len)
{
	assert_in_range(img->nseg, 1, FDVM_ELF_MAX_SEGMENTS);
	for (unsigned i = 0; i < img->nseg; i++) {
		const struct fdvm_elf_segment *s = &img->seg[i];
		assert_true(s->memsz > 0);
		assert_true(s->filesz <= s->memsz);
		assert_true(s->offset <= len && s->filesz <= len - s->offset);
		assert_true(s->paddr + s->memsz > s->paddr);
	}
}

static void truncate_all(const struct builder *b)
{
	size_t full = b_len(b);
	struct fdvm_elf_image img;
	char err[256];

	for (size_t len = 0; len < full; len++) {
		err[0] = '\0';
		int r = parse_n(b, len, &img, err, sizeof(err));
		if (r != -ENOEXEC)
			fail_msg("length %zu of %zu: got %d", len, full, r);
		/* Every byte of these images is needed, so every cut fails, and says why. */
		assert_true(err[0] != '\0');
	}
	err[0] = '\0';
	assert_int_equal(parse_n(b, full, &img, err, sizeof(err)), 0);
	check_sane(&img, full);
}

static void test_truncate_everywhere(void **state)
{
	(void)state;
	struct builder b;
	struct notes n = { .len = 0 };
	uint8_t gnu[20] = { 1, 2, 3 };

	make_valid(&b, 4, ENTRY);
	truncate_all(&b);
	make_valid(&b, 8, ENTRY);
	truncate_all(&b);

	/* Several notes; the PVH note ends the file. */
	b_init(&b);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	notes_add(&n, "GNU", NT_GNU_BUILD_ID, gnu, sizeof(gnu));
	notes_add(&n, "Xen", XEN_ELFNOTE_ENTRY, gnu, 8);
	notes_add_pvh(&n, ENTRY, 8);
	b_notes(&b, &n);
	truncate_all(&b);

	/* Loads after the note: a load ends the file. */
	n.len = 0;
	b_init(&b);
	notes_add_pvh(&n, ENTRY, 4);
	b_notes(&b, &n);
	b_load(&b, A_PADDR, A_MEMSZ, A_FILESZ);
	b_load(&b, B_PADDR, B_MEMSZ, B_FILESZ);
	truncate_all(&b);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Corrupts the headers and notes of a valid image and parses each variant:
 * the result must be 0 (with sane segments) or -ENOEXEC, never a crash. */
static void test_corrupt_bytes(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256];
	const uint8_t masks[] = { 0x01, 0x10, 0x80, 0xff };

	make_valid(&b, 8, ENTRY);
	size_t len = b_len(&b);
	uint8_t *orig = b_image(&b);
	uint8_t *p = malloc(len);
	assert_non_null(p);

	/* The bytes worth flipping: ELF header, the 3 phdrs, the note. */
	size_t hdr_end = sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr);
	size_t note_off = b.ph[SEG_NOTE].p_offset, note_end = note_off + b.ph[SEG_NOTE].p_filesz;
	unsigned ok = 0, bad = 0;

	for (size_t i = 0; i < len; i++) {
		if (!(i < hdr_end || (i >= note_off && i < note_end)))
			continue;
		for (size_t m = 0; m < sizeof(masks); m++) {
			memcpy(p, orig, len);
			p[i] ^= masks[m];
			int r = fdvm_elf_parse(p, len, &img, err, sizeof(err));
			if (r == 0) {
				check_sane(&img, len);
				ok++;
			} else if (r == -ENOEXEC) {
				bad++;
			} else {
				fail_msg("byte %zu ^ 0x%x: got %d", i, masks[m], r);
			}
		}
	}
	/* Some flips are harmless (e_entry, p_vaddr), many are not. */
	assert_true(ok > 0);
	assert_true(bad > 0);

	/* Random multi-byte corruption, including random 64-bit values. */
	for (unsigned it = 0; it < 20000; it++) {
		memcpy(p, orig, len);
		unsigned nflip = 1 + (unsigned)(rng() % 6);
		for (unsigned k = 0; k < nflip; k++) {
			uint64_t pick = rng();
			size_t i = (pick & 1) ? (size_t)(pick >> 8) % hdr_end
					      : note_off + (size_t)(pick >> 8) % (note_end - note_off);
			if (pick & 2) {
				uint64_t v = rng();
				size_t n = len - i < 8 ? len - i : 8;
				memcpy(p + i, &v, n);
			} else {
				p[i] = (uint8_t)rng();
			}
		}
		int r = fdvm_elf_parse(p, len, &img, err, sizeof(err));
		if (r == 0)
			check_sane(&img, len);
		else if (r != -ENOEXEC)
			fail_msg("random iteration %u: got %d", it, r);
	}
	free(p);
	free(orig);
}

/* ---- layout ---------------------------------------------------------------- */

static const struct fdvm_range reserved = { 0, 0x10000 };
static const struct fdvm_range ram64m[] = { { 0, 64 * MiB } };
static const struct fdvm_range ram_hole[] = { { 0, 3 * GiB }, { 4 * GiB, 5 * GiB } };

static struct fdvm_elf_image image(uint64_t entry, unsigned nseg, ...)
{
	struct fdvm_elf_image img = { .pvh_entry = entry, .nseg = nseg };
	va_list ap;

	va_start(ap, nseg);
	for (unsigned i = 0; i < nseg; i++) {
		img.seg[i].paddr = va_arg(ap, uint64_t);
		img.seg[i].memsz = va_arg(ap, uint64_t);
		img.seg[i].filesz = img.seg[i].memsz / 2;
		img.seg[i].offset = 0x1000 * (i + 1);
	}
	va_end(ap);
	return img;
}

static int layout(const struct fdvm_elf_image *img, const struct fdvm_range *ram, unsigned nram,
		  char *err)
{
	return fdvm_elf_check_layout(img, ram, nram, reserved, err, 256);
}

static void expect_layout_ok(const struct fdvm_elf_image *img, const struct fdvm_range *ram,
			     unsigned nram)
{
	char err[256] = "";
	int r = layout(img, ram, nram, err);
	if (r)
		fail_msg("layout rejected (%d): %s", r, err);
}

static void expect_layout_bad(const struct fdvm_elf_image *img, const struct fdvm_range *ram,
			      unsigned nram, const char *what)
{
	char err[256] = "";

	assert_int_equal(layout(img, ram, nram, err), -ERANGE);
	assert_contains(err, what);
}

static void test_layout_inside_ram(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(MiB + 0x40, 1, (uint64_t)MiB, (uint64_t)0x2000);
	expect_layout_ok(&img, ram64m, 1);

	/* Right after the reserved range, right up to the end of RAM. */
	img = image(0x10000, 2, (uint64_t)0x10000, (uint64_t)0x1000,
		    64 * MiB - 0x1000, (uint64_t)0x1000);
	expect_layout_ok(&img, ram64m, 1);

	/* Entry on the last byte of a segment. */
	img = image(MiB + 0x1fff, 1, (uint64_t)MiB, (uint64_t)0x2000);
	expect_layout_ok(&img, ram64m, 1);

	/* Adjacent segments do not overlap. */
	img = image(MiB, 3, (uint64_t)MiB, (uint64_t)0x1000, MiB + 0x1000, (uint64_t)0x1000,
		    MiB - 0x1000, (uint64_t)0x1000);
	expect_layout_ok(&img, ram64m, 1);
}

static void test_layout_outside_ram(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(128 * MiB, 1, 128 * MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "segment [0x8000000, 0x8001000) lies outside guest memory");

	/* Starting exactly at the end of RAM. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x1000, 64 * MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "[0x4000000, 0x4001000) lies outside guest memory");

	/* No RAM at all. */
	img = image(MiB, 1, (uint64_t)MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 0, "outside guest memory");
}

static void test_layout_straddles_end_of_ram(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(64 * MiB - 0x1000, 1, 64 * MiB - 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram64m, 1, "segment [0x3fff000, 0x4001000) lies outside guest memory");

	/* One byte over. */
	img = image(64 * MiB - 0x1000, 1, 64 * MiB - 0x1000, (uint64_t)0x1001);
	expect_layout_bad(&img, ram64m, 1, "outside guest memory");

	/* A huge segment starting in RAM. */
	img = image(MiB, 1, (uint64_t)MiB, UINT64_MAX - MiB);
	expect_layout_bad(&img, ram64m, 1, "outside guest memory");
}

static void test_layout_second_ram_range(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	/* The entry must be below 4 GiB, so one segment low and one above 4 GiB. */
	img = image(MiB + 0x40, 2, (uint64_t)MiB, (uint64_t)0x2000, 4 * GiB + MiB,
		    (uint64_t)0x10000);
	expect_layout_ok(&img, ram_hole, 2);

	/* Filling the second range exactly. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 4 * GiB, (uint64_t)GiB);
	expect_layout_ok(&img, ram_hole, 2);

	/* Ending exactly at the hole. */
	img = image(3 * GiB - 0x10, 1, 3 * GiB - 0x1000, (uint64_t)0x1000);
	expect_layout_ok(&img, ram_hole, 2);

	/* The second range does not exist when only one range is passed. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 4 * GiB + MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram_hole, 1, "outside guest memory");
}

static void test_layout_straddles_hole(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 3 * GiB - 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram_hole, 2, "[0xbffff000, 0xc0001000) lies outside guest memory");

	/* In the hole. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 3 * GiB + MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram_hole, 2, "outside guest memory");

	/* Starting in the hole, ending in the second range. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 4 * GiB - 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram_hole, 2, "outside guest memory");

	/* Spanning the hole from one range into the other: each end is in RAM,
	 * but the segment is not inside any one range. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 3 * GiB - 0x1000,
		    GiB + 0x2000);
	expect_layout_bad(&img, ram_hole, 2, "outside guest memory");

	/* Past the end of the second range. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, 5 * GiB - 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram_hole, 2, "outside guest memory");
}

static void test_layout_overlaps_reserved(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(0x9000, 1, (uint64_t)0x8000, (uint64_t)0x10000);
	expect_layout_bad(&img, ram64m, 1,
			  "segment [0x8000, 0x18000) overlaps fdvm's boot area [0x0, 0x10000)");

	/* Inside it. */
	img = image(0x1000, 1, (uint64_t)0x1000, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "overlaps fdvm's boot area");

	/* Its last byte. */
	img = image(0xffff, 1, (uint64_t)0xffff, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "overlaps fdvm's boot area");

	/* Covering it whole, in the second of two segments. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x1000, (uint64_t)0, (uint64_t)0x20000);
	expect_layout_bad(&img, ram64m, 1, "segment [0x0, 0x20000) overlaps fdvm's boot area");

	/* A reserved range elsewhere is honoured too. */
	char err[256] = "";
	img = image(MiB, 1, (uint64_t)MiB, (uint64_t)0x2000);
	struct fdvm_range high = { MiB + 0x1000, MiB + 0x3000 };
	assert_int_equal(fdvm_elf_check_layout(&img, ram64m, 1, high, err, sizeof(err)), -ERANGE);
	assert_contains(err, "overlaps fdvm's boot area [0x101000, 0x103000)");
}

static void test_layout_segments_overlap(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, MiB + 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram64m, 1, "segments at 0x100000 and 0x101000 overlap");

	/* The later segment below the earlier one. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x2000, MiB - 0x1000, (uint64_t)0x1001);
	expect_layout_bad(&img, ram64m, 1, "segments at 0x100000 and 0xff000 overlap");

	/* One inside the other. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x10000, MiB + 0x4000, (uint64_t)0x10);
	expect_layout_bad(&img, ram64m, 1, "overlap");

	/* Identical. */
	img = image(MiB, 2, (uint64_t)MiB, (uint64_t)0x1000, (uint64_t)MiB, (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "overlap");

	/* The overlap is between the first and the third. */
	img = image(MiB, 3, (uint64_t)MiB, (uint64_t)0x1000, 2 * MiB, (uint64_t)0x1000,
		    MiB + 0xfff, (uint64_t)0x10);
	expect_layout_bad(&img, ram64m, 1, "segments at 0x100000 and 0x100fff overlap");
}

static void test_layout_entry_not_in_segment(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	/* Just past the end of the segment. */
	img = image(MiB + 0x2000, 1, (uint64_t)MiB, (uint64_t)0x2000);
	expect_layout_bad(&img, ram64m, 1,
			  "PVH entry 0x102000 is not inside a loaded segment below 4 GiB");

	/* Just below it. */
	img = image(MiB - 1, 1, (uint64_t)MiB, (uint64_t)0x2000);
	expect_layout_bad(&img, ram64m, 1, "PVH entry 0xfffff is not inside a loaded segment");

	/* In the gap between two segments. */
	img = image(MiB + 0x3000, 2, (uint64_t)MiB, (uint64_t)0x1000, MiB + 0x8000,
		    (uint64_t)0x1000);
	expect_layout_bad(&img, ram64m, 1, "PVH entry 0x103000");

	/* Zero, which is in RAM but not loaded. */
	img = image(0, 1, (uint64_t)MiB, (uint64_t)0x2000);
	expect_layout_bad(&img, ram64m, 1, "PVH entry 0x0 is not inside");

	/* No segments at all. */
	img = image(MiB, 0);
	expect_layout_bad(&img, ram64m, 1, "is not inside a loaded segment");
}

static void test_layout_entry_above_4g(void **state)
{
	(void)state;
	struct fdvm_elf_image img;

	/* Inside a segment, but at or above 4 GiB. */
	img = image(4 * GiB + 0x40, 1, 4 * GiB, (uint64_t)0x2000);
	expect_layout_bad(&img, ram_hole, 2,
			  "PVH entry 0x100000040 is not inside a loaded segment below 4 GiB");

	img = image(4 * GiB, 1, 4 * GiB, (uint64_t)0x2000);
	expect_layout_bad(&img, ram_hole, 2, "below 4 GiB");

	/* A segment straddling 4 GiB in flat RAM: its low half is fine for the
	 * entry, its high half is not. */
	static const struct fdvm_range ram8g[] = { { 0, 8 * GiB } };
	img = image(4 * GiB - 0x10, 1, 4 * GiB - 0x1000, (uint64_t)0x2000);
	expect_layout_ok(&img, ram8g, 1);
	img = image(4 * GiB + 0x10, 1, 4 * GiB - 0x1000, (uint64_t)0x2000);
	expect_layout_bad(&img, ram8g, 1, "below 4 GiB");
}

static void test_layout_of_parsed_image(void **state)
{
	(void)state;
	struct builder b;
	struct fdvm_elf_image img;
	char err[256] = "";

	make_valid(&b, 4, ENTRY);
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	expect_layout_ok(&img, ram64m, 1);

	/* The same image with 2 MiB of RAM: segment B ends at 2 MiB + 0x200. */
	static const struct fdvm_range ram2m[] = { { 0, 2 * MiB } };
	expect_layout_bad(&img, ram2m, 1, "segment [0x200000, 0x200200) lies outside guest memory");

	/* An 8-byte entry above 4 GiB parses, but does not lay out. */
	make_valid(&b, 8, 4 * GiB + 0x40);
	b.ph[SEG_A].p_paddr = 4 * GiB;
	assert_int_equal(parse(&b, &img, err, sizeof(err)), 0);
	expect_layout_bad(&img, ram_hole, 2, "below 4 GiB");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid_desc4),
		cmocka_unit_test(test_parse_valid_desc8),
		cmocka_unit_test(test_parse_valid_desc4_high_bit),
		cmocka_unit_test(test_parse_result_overwrites_img),
		cmocka_unit_test(test_parse_note_among_others),
		cmocka_unit_test(test_parse_note_in_second_note_segment),
		cmocka_unit_test(test_parse_note_in_first_note_segment),
		cmocka_unit_test(test_parse_ignores_other_phdrs),
		cmocka_unit_test(test_parse_bss_only_segment),
		cmocka_unit_test(test_parse_max_segments_ok),
		cmocka_unit_test(test_parse_segment_ending_at_top_of_address_space),
		cmocka_unit_test(test_reject_short),
		cmocka_unit_test(test_reject_bad_magic),
		cmocka_unit_test(test_reject_class32),
		cmocka_unit_test(test_reject_big_endian),
		cmocka_unit_test(test_reject_wrong_machine),
		cmocka_unit_test(test_reject_not_exec),
		cmocka_unit_test(test_reject_phentsize),
		cmocka_unit_test(test_reject_phnum_zero),
		cmocka_unit_test(test_reject_phdrs_past_end),
		cmocka_unit_test(test_reject_phoff_overflow),
		cmocka_unit_test(test_reject_filesz_gt_memsz),
		cmocka_unit_test(test_reject_load_past_end),
		cmocka_unit_test(test_reject_paddr_wrap),
		cmocka_unit_test(test_reject_too_many_segments),
		cmocka_unit_test(test_reject_no_pvh_note),
		cmocka_unit_test(test_reject_truncated_note),
		cmocka_unit_test(test_reject_note_past_end),
		cmocka_unit_test(test_reject_no_load),
		cmocka_unit_test(test_err_truncated_to_errlen),
		cmocka_unit_test(test_truncate_everywhere),
		cmocka_unit_test(test_corrupt_bytes),
		cmocka_unit_test(test_layout_inside_ram),
		cmocka_unit_test(test_layout_outside_ram),
		cmocka_unit_test(test_layout_straddles_end_of_ram),
		cmocka_unit_test(test_layout_second_ram_range),
		cmocka_unit_test(test_layout_straddles_hole),
		cmocka_unit_test(test_layout_overlaps_reserved),
		cmocka_unit_test(test_layout_segments_overlap),
		cmocka_unit_test(test_layout_entry_not_in_segment),
		cmocka_unit_test(test_layout_entry_above_4g),
		cmocka_unit_test(test_layout_of_parsed_image),
	};

	return cmocka_run_group_tests_name("loader", tests, NULL, NULL);
}
