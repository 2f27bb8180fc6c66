/*
 * The CPUID a vCPU gets: what KVM supports (KVM_GET_SUPPORTED_CPUID), with
 * the vCPU's APIC id, the VM's topology, and the features the user took
 * out (fdvm_vm_config.cpu_remove, fdvm run --cpu host,-NAME) cleared, with
 * the features that cannot work without them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../vm_priv.h"

enum { EAX, EBX, ECX, EDX };

/* A feature: its bit, and the index of a feature it needs (-1: none). */
static const struct feature {
	const char *name;
	uint32_t leaf, subleaf;
	uint8_t reg, bit;
	int needs;
} features[] = {
#define F(name, leaf, sub, reg, bit, needs) { name, leaf, sub, reg, bit, needs }
	/* 0 */ F("cx16", 1, 0, ECX, 13, -1),
	/* 1 */ F("xsave", 1, 0, ECX, 26, -1),
	/* 2 */ F("osxsave", 1, 0, ECX, 27, 1),
	/* 3 */ F("avx", 1, 0, ECX, 28, 1),
	/* 4 */ F("fma", 1, 0, ECX, 12, 3),
	/* 5 */ F("f16c", 1, 0, ECX, 29, 3),
	/* 6 */ F("avx2", 7, 0, EBX, 5, 3),
	/* 7 */ F("avx512f", 7, 0, EBX, 16, 3),
	/* 8 */ F("x2apic", 1, 0, ECX, 21, -1),
	/* 9 */ F("tsc-deadline", 1, 0, ECX, 24, -1),
	/* 10 */ F("pcid", 1, 0, ECX, 17, -1),
	/* 11 */ F("rdrand", 1, 0, ECX, 30, -1),
	/* 12 */ F("hypervisor", 1, 0, ECX, 31, -1),
	/* 13 */ F("movbe", 1, 0, ECX, 22, -1),
	/* 14 */ F("popcnt", 1, 0, ECX, 23, -1),
	/* 15 */ F("aes", 1, 0, ECX, 25, -1),
	/* 16 */ F("sse4.2", 1, 0, ECX, 20, -1),
	/* 17 */ F("fsgsbase", 7, 0, EBX, 0, -1),
	/* 18 */ F("smep", 7, 0, EBX, 7, -1),
	/* 19 */ F("smap", 7, 0, EBX, 20, -1),
	/* 20 */ F("invpcid", 7, 0, EBX, 10, -1),
	/* 21 */ F("rdseed", 7, 0, EBX, 18, -1),
	/* 22 */ F("umip", 7, 0, ECX, 2, -1),
	/* 23 */ F("pku", 7, 0, ECX, 3, -1),
	/* 24 */ F("la57", 7, 0, ECX, 16, -1),
	/* 25 */ F("rdtscp", 0x80000001, 0, EDX, 27, -1),
	/* 26 */ F("pdpe1gb", 0x80000001, 0, EDX, 26, -1),
	/* 27 */ F("xsaveopt", 0xd, 1, EAX, 0, 1),
	/* 28 */ F("xsavec", 0xd, 1, EAX, 1, 1),
	/* 29 */ F("xsaves", 0xd, 1, EAX, 3, 1),
	/* 30 */ F("kvmclock", 0x40000001, 0, EAX, 3, -1),
#undef F
};
#define NFEATURES (sizeof(features) / sizeof(features[0]))
_Static_assert(NFEATURES <= 64, "cpu_remove is a 64-bit mask");

int fdvm_cpu_feature(const char *name)
{
	for (unsigned i = 0; i < NFEATURES; i++)
		if (!strcmp(features[i].name, name))
			return (int)i;
	return -ENOENT;
}

const char *fdvm_cpu_feature_name(unsigned index)
{
	return index < NFEATURES ? features[index].name : NULL;
}

/* remove, and every feature that needs one removed. */
uint64_t fdvm_cpu_remove_closure(uint64_t remove)
{
	for (bool grew = true; grew;) {
		grew = false;
		for (unsigned i = 0; i < NFEATURES; i++)
			if (features[i].needs >= 0 && (remove >> features[i].needs & 1) && !(remove >> i & 1)) {
				remove |= 1ull << i;
				grew = true;
			}
	}
	return remove;
}

static uint32_t *reg_of(struct kvm_cpuid_entry2 *e, unsigned reg)
{
	return reg == EAX ? &e->eax : reg == EBX ? &e->ebx : reg == ECX ? &e->ecx : &e->edx;
}

/* Clears the removed features' bits; without XSAVE, leaf 0xd goes. */
static void apply_removals(struct kvm_cpuid2 *cpuid, uint64_t remove)
{
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		for (unsigned f = 0; f < NFEATURES; f++)
			if ((remove >> f & 1) && e->function == features[f].leaf &&
			    (e->index == features[f].subleaf ||
			     !(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX)))
				*reg_of(e, features[f].reg) &= ~(1u << features[f].bit);
		if ((remove >> 1 & 1) && e->function == 0xd)
			e->eax = e->ebx = e->ecx = e->edx = 0;
	}
}

/*
 * The VM's CPUID table, made once for all its vCPUs: every leaf KVM
 * supports, with the VM's topology (one package of ncpus cores, one thread
 * each) and the removals; the per-vCPU APIC ids are set by
 * fdvm_vcpu_set_cpuid. *out is the caller's (free).
 */
int fdvm_cpuid_build(struct fdvm_vm *vm, struct kvm_cpuid2 **out)
{
	struct kvm_cpuid2 *cpuid = NULL;
	int nent = 64;

	for (;;) {
		free(cpuid);
		/* Room for the topology leaves added below. */
		cpuid = calloc(1, sizeof(*cpuid) + (nent + 3) * sizeof(cpuid->entries[0]));
		if (!cpuid)
			return -ENOMEM;
		cpuid->nent = nent;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
			break;
		if (errno != E2BIG || nent >= 4096) {
			int ret = fdvm_log_errno(vm, errno, "kvm: KVM_GET_SUPPORTED_CPUID");
			free(cpuid);
			return ret;
		}
		nent *= 2;
	}
	unsigned n = vm->ncpus ? vm->ncpus : 1, shift = 0;
	uint32_t max_basic = 0;
	while ((1u << shift) < n)
		shift++; /* APIC id bits for the cores */
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		if (e->function == 0)
			max_basic = e->eax;
		if (e->function == 1) {
			/* Logical processors addressable in the package; HTT:
			 * that field is valid. */
			e->ebx = (e->ebx & 0xff00ffff) | ((1u << shift) & 0xff) << 16;
			if (n > 1)
				e->edx |= 1u << 28;
		} else if (e->function == 4) {
			/* Cores per package - 1; threads sharing this cache - 1:
			 * the core's own (level 1, 2) or the package's (3). */
			unsigned level = (e->eax >> 5) & 7;
			e->eax &= 0x00003fff;
			e->eax |= ((1u << shift) - 1) << 26;
			if (level >= 3)
				e->eax |= ((1u << shift) - 1) << 14;
		}
	}
	/* Leaf 0xb, extended topology, whatever KVM listed (it may list none,
	 * or level 0 alone): level 0 the threads (one a core), level 1 the
	 * cores, level 2 the end of the list. Leaf 0x1f is left out, so that
	 * 0xb is what the guest reads. */
	unsigned kept = 0;
	for (unsigned i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function != 0xb && cpuid->entries[i].function != 0x1f)
			cpuid->entries[kept++] = cpuid->entries[i];
	cpuid->nent = kept;
	if (max_basic >= 0xb) {
		const uint32_t eax[3] = { 0, shift, 0 }, ebx[3] = { 1, n, 0 }, type[3] = { 1, 2, 0 };
		for (uint32_t level = 0; level < 3; level++)
			cpuid->entries[cpuid->nent++] = (struct kvm_cpuid_entry2){
				.function = 0xb, .index = level,
				.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
				.eax = eax[level], .ebx = ebx[level], .ecx = type[level] << 8 | level,
			};
	}
	apply_removals(cpuid, fdvm_cpu_remove_closure(vm->cfg.cpu_remove));
	*out = cpuid;
	return 0;
}

/* The VM's table with this vCPU's APIC id (leaf 1's initial APIC id, leaf
 * 0xb's x2APIC id), given to KVM. */
int fdvm_vcpu_set_cpuid(struct fdvm_vcpu *vcpu, struct kvm_cpuid2 *cpuid)
{
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffff) | (uint32_t)vcpu->id << 24;
		else if (e->function == 0xb)
			e->edx = (uint32_t)vcpu->id;
	}
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0)
		return fdvm_log_errno(vcpu->vm, errno, "vcpu %d: KVM_SET_CPUID2", vcpu->id);
	return 0;
}
