/* ACPI tables through the PVH start info's RSDP: lookup by signature, the
 * MADT's processors. Every table's checksum is checked before it is used. */
#include "rt.h"

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

bool rt_acpi_checksum_ok(const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;
	for (uint32_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + b[i]);
	return sum == 0;
}

/* A table at gpa: its length if its header and checksum hold, else 0. */
static uint32_t table_at(uint64_t gpa, const uint8_t **out)
{
	if (!gpa || gpa >= FDVM_MMIO_HOLE_START)
		return 0;
	const uint8_t *t = (const uint8_t *)(uintptr_t)gpa;
	uint32_t len = le32(t + 4);
	if (len < 36 || len > 0x100000 || gpa + len > FDVM_MMIO_HOLE_START || !rt_acpi_checksum_ok(t, len))
		return 0;
	*out = t;
	return len;
}

const uint8_t *rt_acpi_table(const char *sig, uint32_t *len)
{
	uint64_t rsdp = rt_rsdp_paddr();
	if (!rsdp || rsdp >= FDVM_MMIO_HOLE_START)
		return NULL;
	const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
	if (memcmp(r, "RSD PTR ", 8) || r[15] < 2 || !rt_acpi_checksum_ok(r, 20) ||
	    !rt_acpi_checksum_ok(r, 36))
		return NULL;
	const uint8_t *x;
	uint32_t xlen = table_at(le64(r + 24), &x);
	if (!xlen || memcmp(x, "XSDT", 4))
		return NULL;
	if (!memcmp(sig, "XSDT", 4)) {
		*len = xlen;
		return x;
	}
	for (uint32_t off = 36; off + 8 <= xlen; off += 8) {
		const uint8_t *t;
		uint32_t l = table_at(le64(x + off), &t);
		if (l && !memcmp(t, sig, 4)) {
			*len = l;
			return t;
		}
		/* The DSDT and FACS hang off the FADT. */
		if (l && !memcmp(t, "FACP", 4) && l >= 148 && !memcmp(sig, "DSDT", 4)) {
			const uint8_t *d;
			uint32_t dl = table_at(le64(t + 140) ? le64(t + 140) : le32(t + 40), &d);
			if (dl && !memcmp(d, "DSDT", 4)) {
				*len = dl;
				return d;
			}
		}
	}
	return NULL;
}

unsigned rt_acpi_cpus(uint32_t *apic_ids, unsigned max)
{
	uint32_t len;
	const uint8_t *m = rt_acpi_table("APIC", &len);
	unsigned n = 0;
	if (!m)
		return 0;
	for (uint32_t off = 44; off + 2 <= len;) {
		uint8_t type = m[off], elen = m[off + 1];
		if (elen < 2 || off + elen > len)
			break;
		if (type == 0 && elen >= 8 && (le32(m + off + 4) & 1)) {
			if (n < max)
				apic_ids[n] = m[off + 3];
			n++;
		}
		off += elen;
	}
	return n;
}
