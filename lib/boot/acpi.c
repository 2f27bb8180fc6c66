/*
 * ACPI tables for the guest, in fdvm's boot area, found through the PVH
 * start info's rsdp_paddr: RSDP, XSDT (and an RSDT for 32-bit readers),
 * FADT with its FACS and DSDT, MADT (a local APIC per vCPU, the IOAPIC)
 * and MCFG (the ECAM window, bus 0). They describe what fdvm builds:
 * the PM1a control register at FDVM_PORT_ACPI_PM1A_CNT (power-off with
 * SLP_TYP 0, which the DSDT's \_S5 names), its event block below it, the
 * reset register at FDVM_PORT_RESET, the CMOS RTC's century byte, the
 * LAPIC and IOAPIC at their architectural addresses. Layouts are the ACPI
 * 6.0 specification's; every table is checksummed.
 */
#include <errno.h>
#include <string.h>

#include "fdvm/abi.h"
#include "../vm_priv.h"

#define OEM_ID "FDVM  "		/* 6 bytes */
#define OEM_TABLE_ID "FDVMACPI"	/* 8 bytes */
#define CREATOR_ID "FDVM"

/* Where each table goes: [FDVM_ACPI_START, FDVM_ACPI_END) of the boot area. */
#define RSDP_GPA (FDVM_ACPI_START + 0x000)
#define XSDT_GPA (FDVM_ACPI_START + 0x040)
#define RSDT_GPA (FDVM_ACPI_START + 0x0c0)
#define FADT_GPA (FDVM_ACPI_START + 0x100)
#define FACS_GPA (FDVM_ACPI_START + 0x240) /* 64-byte aligned */
#define DSDT_GPA (FDVM_ACPI_START + 0x280)
#define MCFG_GPA (FDVM_ACPI_START + 0x300)
#define MADT_GPA (FDVM_ACPI_START + 0x400)

#define HDR 36
#define MADT_MAX (HDR + 8 + 8 * FDVM_MAX_CPUS + 12 + 2 * 10 + 6)
_Static_assert(MADT_GPA + MADT_MAX <= FDVM_ACPI_END, "ACPI area layout");

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;
	while (len--)
		sum = (uint8_t)(sum + *p++);
	return (uint8_t)-sum;
}

/* The common header; length and checksum are set by finish(). */
static void header(uint8_t *t, const char *sig, uint8_t revision)
{
	memcpy(t, sig, 4);
	t[8] = revision;
	memcpy(t + 10, OEM_ID, 6);
	memcpy(t + 16, OEM_TABLE_ID, 8);
	put32(t + 24, 1);
	memcpy(t + 28, CREATOR_ID, 4);
	put32(t + 32, 1);
}

static void finish(uint8_t *t, uint32_t len)
{
	put32(t + 4, len);
	t[9] = 0;
	t[9] = checksum(t, len);
}

/* A Generic Address Structure in system I/O space. */
static void gas_io(uint8_t *p, uint8_t bits, uint8_t access, uint64_t port)
{
	p[0] = 1; /* system I/O */
	p[1] = bits;
	p[2] = 0;
	p[3] = access; /* 1 byte, 2 word, 3 dword */
	put64(p + 4, port);
}

static uint32_t build_fadt(uint8_t *t)
{
	header(t, "FACP", 6);
	put32(t + 36, (uint32_t)FACS_GPA);
	put32(t + 40, (uint32_t)DSDT_GPA);
	t[45] = 0;			/* preferred PM profile: unspecified */
	put16(t + 46, 9);		/* SCI: ISA IRQ 9 (nothing raises it) */
	put32(t + 48, 0);		/* no SMI command port: always in ACPI mode */
	put32(t + 56, FDVM_PORT_ACPI_PM1A_EVT);
	put32(t + 64, FDVM_PORT_ACPI_PM1A_CNT);
	t[88] = 4;			/* PM1 event block: status, enable */
	t[89] = 2;			/* PM1 control block */
	put16(t + 96, 101);		/* no C2 */
	put16(t + 98, 1001);		/* no C3 */
	t[108] = FDVM_CMOS_CENTURY;	/* the RTC's century byte */
	/* IA-PC boot architecture: no VGA; no 8042 to probe (the i8042's
	 * reset command works all the same). */
	put16(t + 109, 1u << 2);
	/* WBINVD works; C1 on all processors; power and sleep buttons are not
	 * fixed features; the reset register works. */
	put32(t + 112, 1u << 0 | 1u << 2 | 1u << 4 | 1u << 5 | 1u << 10);
	gas_io(t + 116, 8, 1, FDVM_PORT_RESET);
	t[128] = FDVM_RESET_VALUE;
	t[131] = 0;			/* minor version: ACPI 6.0 */
	put64(t + 132, FACS_GPA);
	put64(t + 140, DSDT_GPA);
	gas_io(t + 148, 32, 2, FDVM_PORT_ACPI_PM1A_EVT);
	gas_io(t + 172, 16, 2, FDVM_PORT_ACPI_PM1A_CNT);
	memcpy(t + 268, "FDVM    ", 8); /* hypervisor vendor */
	finish(t, 276);
	return 276;
}

static uint32_t build_facs(uint8_t *t)
{
	memcpy(t, "FACS", 4);
	put32(t + 4, 64);
	t[32] = 2; /* version */
	return 64; /* no checksum: the FACS has none */
}

/*
 * The DSDT's only content: Name (\_S5, Package (4) {0, 0, 0, 0}): S5
 * (soft off) is SLP_TYP 0 in PM1a_CNT, which powers fdvm off.
 */
static uint32_t build_dsdt(uint8_t *t)
{
	static const uint8_t aml[] = {
		0x08, '_', 'S', '5', '_',	/* NameOp, "_S5_" */
		0x12, 0x06, 0x04,		/* PackageOp, PkgLength 6, 4 elements */
		0x00, 0x00, 0x00, 0x00,		/* ZeroOp x 4 */
	};
	header(t, "DSDT", 2);
	memcpy(t + HDR, aml, sizeof(aml));
	finish(t, HDR + sizeof(aml));
	return HDR + sizeof(aml);
}

static uint32_t build_madt(uint8_t *t, unsigned ncpus)
{
	uint32_t n = HDR;

	header(t, "APIC", 5);
	put32(t + n, (uint32_t)FDVM_LAPIC_BASE);
	put32(t + n + 4, 1); /* PCAT_COMPAT: the 8259s are there (KVM's) */
	n += 8;
	for (unsigned i = 0; i < ncpus; i++) {
		uint8_t *e = t + n;
		e[0] = 0;		/* processor local APIC */
		e[1] = 8;
		e[2] = (uint8_t)i;	/* ACPI processor UID */
		e[3] = (uint8_t)i;	/* APIC id = vCPU index */
		put32(e + 4, 1);	/* enabled */
		n += 8;
	}
	uint8_t *io = t + n;
	io[0] = 1;			/* I/O APIC */
	io[1] = 12;
	io[2] = 0;			/* its id, as KVM's IOAPIC has it */
	io[3] = 0;
	put32(io + 4, (uint32_t)FDVM_IOAPIC_BASE);
	put32(io + 8, 0);		/* GSI base */
	n += 12;
	/* ISA overrides as on a PC: the timer's IRQ 0 on pin 2; the SCI,
	 * IRQ 9, level-triggered and active high. */
	static const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } iso[] = {
		{ 0, 2, 0 },
		{ 9, 9, 0x000d },
	};
	for (unsigned i = 0; i < sizeof(iso) / sizeof(iso[0]); i++) {
		uint8_t *e = t + n;
		e[0] = 2;
		e[1] = 10;
		e[2] = 0; /* ISA */
		e[3] = iso[i].irq;
		put32(e + 4, iso[i].gsi);
		put16(e + 8, iso[i].flags);
		n += 10;
	}
	uint8_t *nmi = t + n;		/* LINT1 is NMI on every processor */
	nmi[0] = 4;
	nmi[1] = 6;
	nmi[2] = 0xff;
	put16(nmi + 3, 0);
	nmi[5] = 1;
	n += 6;
	finish(t, n);
	return n;
}

static uint32_t build_mcfg(uint8_t *t)
{
	header(t, "MCFG", 1);
	uint8_t *a = t + HDR + 8;
	put64(a, FDVM_PCI_ECAM_BASE);
	put16(a + 8, 0);		/* segment group */
	a[10] = 0;			/* first bus */
	a[11] = (uint8_t)(FDVM_PCI_ECAM_SIZE / (1u << 20) - 1); /* last bus */
	finish(t, HDR + 8 + 16);
	return HDR + 8 + 16;
}

int fdvm_acpi_build(struct fdvm_vm *vm, uint64_t *rsdp_gpa)
{
	uint8_t *area = fdvm_gpa(vm, FDVM_ACPI_START, FDVM_ACPI_END - FDVM_ACPI_START);
	if (!area)
		return -ERANGE; /* unreachable: RAM >= FDVM_MEM_MIN */
	memset(area, 0, FDVM_ACPI_END - FDVM_ACPI_START);
#define AT(gpa) (area + ((gpa) - FDVM_ACPI_START))
	build_fadt(AT(FADT_GPA));
	build_facs(AT(FACS_GPA));
	build_dsdt(AT(DSDT_GPA));
	build_madt(AT(MADT_GPA), vm->ncpus);
	build_mcfg(AT(MCFG_GPA));

	static const uint64_t tables[] = { FADT_GPA, MADT_GPA, MCFG_GPA };
	const unsigned nt = sizeof(tables) / sizeof(tables[0]);
	uint8_t *x = AT(XSDT_GPA), *r = AT(RSDT_GPA);
	header(x, "XSDT", 1);
	header(r, "RSDT", 1);
	for (unsigned i = 0; i < nt; i++) {
		put64(x + HDR + 8 * i, tables[i]);
		put32(r + HDR + 4 * i, (uint32_t)tables[i]);
	}
	finish(x, HDR + 8 * nt);
	finish(r, HDR + 4 * nt);

	uint8_t *p = AT(RSDP_GPA);
	memcpy(p, "RSD PTR ", 8);
	memcpy(p + 9, OEM_ID, 6);
	p[15] = 2;			/* ACPI 2.0+: the XSDT */
	put32(p + 16, (uint32_t)RSDT_GPA);
	put32(p + 20, 36);
	put64(p + 24, XSDT_GPA);
	p[8] = checksum(p, 20);
	p[32] = checksum(p, 36);
#undef AT
	*rsdp_gpa = RSDP_GPA;
	return 0;
}
