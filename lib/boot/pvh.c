/*
 * Loading a PVH guest: read the file, check its layout against this VM's
 * RAM, copy the segments, write the start info, memory map, command line
 * and ACPI tables (acpi.c) into the boot area, and point vCPU 0 at the
 * entry.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdvm/abi.h"
#include "fdvm/loader.h"
#include "../vm_priv.h"

/* The PVH boot ABI's structures (version 1). */
struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct hvm_memmap_table_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};
struct hvm_modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
#define HVM_START_MAGIC 0x336ec578
#define E820_RAM 1
#define E820_RESERVED 2

/* Where fdvm puts them, inside [FDVM_BOOT_AREA_START, FDVM_BOOT_AREA_END). */
#define START_INFO_GPA 0x1000ull
#define MEMMAP_GPA 0x1100ull
#define MEMMAP_MAX 8
#define MODLIST_GPA 0x1200ull
#define CMDLINE_GPA 0x2000ull

_Static_assert(MEMMAP_GPA + MEMMAP_MAX * sizeof(struct hvm_memmap_table_entry) <= MODLIST_GPA,
	       "boot area layout");
_Static_assert(MODLIST_GPA + sizeof(struct hvm_modlist_entry) <= CMDLINE_GPA, "boot area layout");
_Static_assert(CMDLINE_GPA + FDVM_CMDLINE_MAX <= FDVM_ACPI_START, "boot area layout");
_Static_assert(FDVM_ACPI_END <= FDVM_BOOT_AREA_END, "boot area layout");

/* Reads a whole file of at most max bytes into a new buffer. */
static int read_file(struct fdvm_vm *vm, const char *path, uint64_t max,
		     uint8_t **bufp, size_t *lenp)
{
	struct stat st;
	uint8_t *buf;
	size_t done = 0;
	int fd, ret;

	/* O_NONBLOCK: opening a FIFO for reading would wait for a writer
	 * before the type check below could refuse it. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fdvm_log_errno(vm, errno, "%s: open", path);
	if (fstat(fd, &st) < 0) {
		ret = fdvm_log_errno(vm, errno, "%s: fstat", path);
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		const char *kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" :
				   S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" :
				   S_ISSOCK(st.st_mode) ? "a socket" : "not a file";
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: %s; a guest is a regular file (an ELF64 PVH image)",
			 path, kind);
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto out_close;
	}
	if ((uint64_t)st.st_size > max) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: %lld bytes is larger than guest memory",
			 path, (long long)st.st_size);
		ret = -EFBIG;
		goto out_close;
	}
	buf = malloc(st.st_size ? st.st_size : 1);
	if (!buf) {
		ret = -ENOMEM;
		goto out_close;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = fdvm_log_errno(vm, n < 0 ? errno : EIO, "%s: read", path);
			free(buf);
			goto out_close;
		}
		done += (size_t)n;
	}
	*bufp = buf;
	*lenp = done;
	ret = 0;
out_close:
	close(fd);
	return ret;
}

/* The initrd (a module), where write_boot_info reports it; size 0: none. */
struct module {
	uint64_t gpa, size;
};

static int write_boot_info(struct fdvm_vm *vm, const char *cmdline, const struct module *mod)
{
	size_t cmdlen = cmdline ? strlen(cmdline) : 0;
	struct hvm_memmap_table_entry map[MEMMAP_MAX];
	unsigned n = 0;

	if (cmdlen >= FDVM_CMDLINE_MAX) {
		fdvm_log(vm, FDVM_LOG_ERROR, "command line: %zu bytes, at most %d allowed",
			 cmdlen, FDVM_CMDLINE_MAX - 1);
		return -E2BIG;
	}
	/* The boot area is fdvm's until the guest runs; then it is the guest's RAM. */
	map[n++] = (struct hvm_memmap_table_entry){ 0, vm->ram[0].size, E820_RAM, 0 };
	if (vm->nram > 1)
		map[n++] = (struct hvm_memmap_table_entry){ vm->ram[1].gpa, vm->ram[1].size,
							    E820_RAM, 0 };

	uint64_t rsdp;
	int ret = fdvm_acpi_build(vm, &rsdp);
	if (ret)
		return ret;
	struct hvm_start_info si = {
		.magic = HVM_START_MAGIC,
		.version = 1,
		.rsdp_paddr = rsdp,
		.nr_modules = mod->size ? 1 : 0,
		.modlist_paddr = mod->size ? MODLIST_GPA : 0,
		.cmdline_paddr = CMDLINE_GPA,
		.memmap_paddr = MEMMAP_GPA,
		.memmap_entries = n,
	};
	void *psi = fdvm_gpa(vm, START_INFO_GPA, sizeof(si));
	void *pmap = fdvm_gpa(vm, MEMMAP_GPA, n * sizeof(map[0]));
	char *pcmd = fdvm_gpa(vm, CMDLINE_GPA, FDVM_CMDLINE_MAX);
	if (!psi || !pmap || !pcmd)
		return -ERANGE; /* unreachable: RAM >= FDVM_MEM_MIN */
	memcpy(psi, &si, sizeof(si));
	if (mod->size) {
		struct hvm_modlist_entry m = { .paddr = mod->gpa, .size = mod->size };
		void *pm = fdvm_gpa(vm, MODLIST_GPA, sizeof(m));
		if (!pm)
			return -ERANGE;
		memcpy(pm, &m, sizeof(m));
	}
	memcpy(pmap, map, n * sizeof(map[0]));
	memset(pcmd, 0, FDVM_CMDLINE_MAX);
	if (cmdlen)
		memcpy(pcmd, cmdline, cmdlen);
	return 0;
}

/* Reads the initrd to the top of the RAM below 4 GiB, above image_end. */
static int load_initrd(struct fdvm_vm *vm, const char *path, uint64_t image_end, struct module *mod)
{
	const struct fdvm_ram *low = &vm->ram[0];
	uint8_t *buf;
	size_t len;
	int ret = read_file(vm, path, low->size, &buf, &len);
	if (ret)
		return ret;
	uint64_t top = low->gpa + low->size;
	uint64_t at = len <= top ? (top - len) & ~0xfffull : 0;
	if (!len || at < image_end || at < FDVM_BOOT_AREA_END) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: %zu bytes do not fit between the image (ends at "
			 "0x%llx) and the end of RAM below 4 GiB (0x%llx): give the guest more memory",
			 path, len, (unsigned long long)image_end, (unsigned long long)top);
		free(buf);
		return len ? -ENOSPC : -EINVAL;
	}
	memcpy(fdvm_gpa(vm, at, len), buf, len); /* inside ram[0], checked above */
	free(buf);
	*mod = (struct module){ at, len };
	return 0;
}

int fdvm_vm_load_pvh(struct fdvm_vm *vm, const char *path, const char *cmdline)
{
	return fdvm_vm_load_pvh_initrd(vm, path, cmdline, NULL);
}

int fdvm_vm_load_pvh_initrd(struct fdvm_vm *vm, const char *path, const char *cmdline,
			    const char *initrd)
{
	struct module mod = { 0, 0 };
	struct fdvm_elf_image img;
	struct fdvm_range ram[FDVM_MAX_RAM_REGIONS];
	const struct fdvm_range boot_area = { FDVM_BOOT_AREA_START, FDVM_BOOT_AREA_END };
	char err[256];
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret;

	ret = read_file(vm, path, vm->mem_size, &buf, &len);
	if (ret)
		return ret;
	ret = fdvm_elf_parse(buf, len, &img, err, sizeof(err));
	if (ret) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: %s", path, err);
		goto out_free;
	}
	for (unsigned i = 0; i < vm->nram; i++)
		ram[i] = (struct fdvm_range){ vm->ram[i].gpa, vm->ram[i].gpa + vm->ram[i].size };
	ret = fdvm_elf_check_layout(&img, ram, vm->nram, boot_area, err, sizeof(err));
	if (ret) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: %s (guest memory: %llu MiB)", path, err,
			 (unsigned long long)(vm->mem_size >> 20));
		goto out_free;
	}
	for (unsigned i = 0; i < img.nseg; i++) {
		const struct fdvm_elf_segment *s = &img.seg[i];
		uint8_t *dst = fdvm_gpa(vm, s->paddr, s->memsz); /* checked above */
		memcpy(dst, buf + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	if (initrd) {
		uint64_t end = 0;
		for (unsigned i = 0; i < img.nseg; i++)
			if (img.seg[i].paddr + img.seg[i].memsz > end)
				end = img.seg[i].paddr + img.seg[i].memsz;
		ret = load_initrd(vm, initrd, end, &mod);
		if (ret)
			goto out_free;
	}
	ret = write_boot_info(vm, cmdline, &mod);
	if (ret)
		goto out_free;
	ret = fdvm_vcpu_set_pvh_entry(&vm->vcpus[0], (uint32_t)img.pvh_entry, START_INFO_GPA);
out_free:
	free(buf);
	return ret;
}
