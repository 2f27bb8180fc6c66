/* From the PVH start info to guest_main. */
#include "rt.h"

/* The PVH boot ABI's start info (version 1 adds the memory map). */
struct hvm_start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
#define HVM_START_MAGIC 0x336ec578

void rt_cpu_init(void);

static const char *cmdline = "";
static const struct hvm_start_info *start_info;

unsigned rt_memmap(unsigned i, uint64_t *addr, uint64_t *size, uint32_t *type)
{
	const struct {
		uint64_t addr, size;
		uint32_t type, reserved;
	} *map;
	if (!start_info || start_info->version < 1 || !start_info->memmap_paddr ||
	    start_info->memmap_paddr >= FDVM_HIGH_RAM_START)
		return 0;
	map = (const void *)(uintptr_t)start_info->memmap_paddr;
	if (i < start_info->memmap_entries) {
		*addr = map[i].addr;
		*size = map[i].size;
		*type = map[i].type;
	}
	return start_info->memmap_entries;
}

const char *rt_cmdline(void) { return cmdline; }

uint64_t rt_cmdline_u64(const char *key, uint64_t def)
{
	size_t n = strlen(key);
	for (const char *p = cmdline; *p; p++) {
		if ((p == cmdline || p[-1] == ' ') && !strncmp(p, key, n) && p[n] == '=') {
			uint64_t v = 0;
			for (p += n + 1; *p >= '0' && *p <= '9'; p++)
				v = v * 10 + (uint64_t)(*p - '0');
			return v;
		}
	}
	return def;
}

uint64_t rt_rsdp_paddr(void)
{
	return start_info && start_info->version >= 1 ? start_info->rsdp_paddr : 0;
}

bool rt_cmdline_has(const char *word)
{
	size_t n = strlen(word);
	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ' ')
			e++;
		if ((size_t)(e - p) == n && !strncmp(p, word, n))
			return true;
		p = e;
	}
	return false;
}

void rt_start(uint32_t start_info_paddr)
{
	const struct hvm_start_info *si =
		(const struct hvm_start_info *)(uintptr_t)start_info_paddr;

	rt_cpu_init();
	if (!si || si->magic != HVM_START_MAGIC) {
		rt_printf("rt: no PVH start info (magic 0x%x)\n", si ? si->magic : 0);
		rt_exit(2);
	}
	start_info = si;
	if (si->cmdline_paddr && si->cmdline_paddr < FDVM_HIGH_RAM_START)
		cmdline = (const char *)(uintptr_t)si->cmdline_paddr;
	rt_exit(guest_main(cmdline));
}
