/*
 * Several CPUs. The ACPI tables fdvm builds (checksums, the FADT's PM1a
 * blocks, the DSDT's \_S5, the MCFG's ECAM window, the MADT's processors
 * and IOAPIC); every CPU the MADT lists started through INIT and SIPI,
 * with its APIC id in its LAPIC and its CPUID; each running CPL3 code at
 * once with its own counter advancing; IPIs from CPU 0 to each CPU and
 * back, every one delivered exactly once.
 *
 * Command line: cpus=N (how many vCPUs the host gave: the MADT must list
 * as many), dump (print every table in hex for the host to disassemble),
 * hold=S (before the end, CPU 0 says "# holding" and waits about S x 2^31
 * TSC cycles while the others go on counting: time for the host to pause,
 * resume or stop the VM).
 */
#include "io.h"
#include "rt.h"
#include "rt_defs.h"

#define IPI_VECTOR 0x60
#define IPIS_EACH 50

static volatile uint64_t counter[RT_MAX_CPUS], ipis[RT_MAX_CPUS];
static volatile uint32_t cpl_seen[RT_MAX_CPUS], apic_seen[RT_MAX_CPUS], cpuid_apic[RT_MAX_CPUS];
static volatile unsigned started, done;
static volatile int stop;
static uint32_t ids[RT_MAX_CPUS];

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

/* Every IPI is counted on the CPU that takes it; an AP answers CPU 0. */
static void on_ipi(struct rt_frame *f, void *opaque)
{
	(void)f;
	(void)opaque;
	unsigned i = rt_cpu_index();
	ipis[i]++;
	if (i)
		rt_send_ipi(ids[0], IPI_VECTOR);
}

/* CPL3, interrupts on: count until told to stop. */
static long ap_body(void *arg)
{
	(void)arg;
	unsigned i = rt_cpu_index();
	cpl_seen[i] = (uint32_t)rt_cpl();
	while (!stop)
		counter[i]++;
	return 0;
}

static void ap_main(unsigned i)
{
	uint32_t r[4];
	apic_seen[i] = rt_lapic_id();
	cpuid(1, 0, r);
	cpuid_apic[i] = r[1] >> 24;
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	rt_user_call(ap_body, 0);
	__atomic_add_fetch(&done, 1, __ATOMIC_SEQ_CST);
}

/* CPL3: waits (5 s at most) until *p reaches want. */
struct wait {
	volatile uint64_t *p;
	uint64_t want;
};

static long wait_body(void *arg)
{
	struct wait *w = arg;
	for (uint64_t t0 = rt_rdtsc(); *w->p < w->want && rt_rdtsc() - t0 < 10000000000ull;)
		__asm__ volatile("pause");
	return *w->p >= w->want;
}

static void dump(const char *sig)
{
	uint32_t len;
	const uint8_t *t = rt_acpi_table(sig, &len);
	if (!t)
		return;
	rt_printf("# acpi %s %u\n", sig, len);
	for (uint32_t off = 0; off < len; off += 32) {
		char line[80];
		unsigned n = 0;
		for (uint32_t k = off; k < len && k < off + 32; k++) {
			static const char hex[] = "0123456789abcdef";
			line[n++] = hex[t[k] >> 4];
			line[n++] = hex[t[k] & 15];
		}
		line[n] = 0;
		rt_printf("# acpi-hex %s %u %s\n", sig, off, line);
	}
}

int guest_main(const char *cmdline)
{
	(void)cmdline;
	unsigned want = (unsigned)rt_cmdline_u64("cpus", 1);
	rt_tap_plan(13);

	uint32_t len, flen, dlen, mlen;
	rt_tap_ok(rt_rsdp_paddr() && rt_acpi_table("XSDT", &len), "RSDP from the start info, XSDT checksums");
	const uint8_t *fadt = rt_acpi_table("FACP", &flen);
	rt_tap_ok(fadt && flen >= 184 && le32(fadt + 64) == FDVM_PORT_ACPI_PM1A_CNT &&
		  le32(fadt + 56) == FDVM_PORT_ACPI_PM1A_EVT && fadt[89] == 2 &&
		  le32(fadt + 172 + 4) == FDVM_PORT_ACPI_PM1A_CNT,
		  "FADT: PM1a control at 0x604, event block at 0x600 (and in the X_ fields)");
	const uint8_t *dsdt = rt_acpi_table("DSDT", &dlen);
	bool s5 = false;
	for (uint32_t i = 36; dsdt && i + 4 <= dlen; i++)
		s5 |= !memcmp(dsdt + i, "_S5_", 4);
	rt_tap_ok(s5, "DSDT through the FADT, with \\_S5");
	const uint8_t *mcfg = rt_acpi_table("MCFG", &mlen);
	rt_tap_ok(mcfg && mlen >= 60 && le32(mcfg + 44) == (uint32_t)FDVM_PCI_ECAM_BASE &&
		  mcfg[54] == 0 && mcfg[55] == 0, "MCFG: ECAM at 0x%x, bus 0", (unsigned)FDVM_PCI_ECAM_BASE);
	uint32_t apic[64];
	unsigned listed = rt_acpi_cpus(apic, 64);
	bool ids_ok = listed == want;
	for (unsigned i = 0; ids_ok && i < listed; i++)
		ids_ok = apic[i] == i;
	rt_tap_ok(ids_ok, "MADT: %u local APICs, ids 0..%u (want %u)", listed, listed ? listed - 1 : 0, want);
	if (rt_cmdline_has("dump")) {
		static const char *const sigs[] = { "XSDT", "FACP", "DSDT", "APIC", "MCFG" };
		for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			dump(sigs[i]);
	}

	rt_irq_set_handler(IPI_VECTOR, on_ipi, 0);
	unsigned n = rt_smp_start(ap_main, ids);
	/* Each AP counts itself in just after it came up: give the last one
	 * a moment (a loaded host runs vCPUs late). */
	for (uint64_t t0 = rt_rdtsc(); started < n - 1 && rt_rdtsc() - t0 < 20000000000ull;)
		__asm__ volatile("pause");
	rt_tap_ok(n == want && started == want - 1, "%u CPUs running (%u started)", n, started);
	bool apic_ok = true;
	uint32_t r[4];
	cpuid(1, 0, r);
	apic_ok = (r[1] >> 24) == ids[0] && rt_lapic_id() == ids[0];
	for (unsigned i = 1; i < n; i++)
		apic_ok &= apic_seen[i] == ids[i] && cpuid_apic[i] == ids[i];
	rt_tap_ok(apic_ok, "each CPU's LAPIC and CPUID give the APIC id the MADT lists");
	cpuid(1, 0, r);
	rt_printf("# cpuid 1: ecx 0x%x edx 0x%x\n", r[2], r[3]);
	cpuid(0, 0, r);
	uint32_t max_leaf = r[0];
	bool topo = true;
	uint32_t b1 = 0, c1 = 0;
	if (max_leaf >= 0xb) {
		cpuid(0xb, 1, r);
		b1 = r[1];
		c1 = r[2];
		topo = (r[1] & 0xffff) == want && ((r[2] >> 8) & 0xff) == 2;
	}
	cpuid(1, 0, r);
	topo &= ((r[1] >> 16) & 0xff) >= want && (want == 1 || (r[3] >> 28 & 1));
	rt_tap_ok(topo, "CPUID topology: %u cores (leaf 1 ebx 0x%x edx 0x%x; leaf 0xb.1 ebx 0x%x ecx 0x%x, max leaf 0x%x)",
		  want, r[1], r[3], b1, c1, max_leaf);

	/* Every AP counts at CPL3 at once. */
	uint64_t before[RT_MAX_CPUS];
	for (unsigned i = 1; i < n; i++) {
		struct wait w = { &counter[i], 1 };
		rt_user_call(wait_body, &w);
		before[i] = counter[i];
	}
	bool all = true, cpl3 = true;
	for (unsigned i = 1; i < n; i++) {
		struct wait w = { &counter[i], before[i] + 1000 };
		all &= rt_user_call(wait_body, &w) == 1;
		cpl3 &= cpl_seen[i] == 3;
	}
	rt_tap_ok(all && cpl3, "every application processor runs CPL3 code, its own counter advancing");

	/* IPIs: CPU 0 to each, one at a time, the next only once the answer
	 * came (two IPIs of one vector pending at once coalesce, as any
	 * interrupt does). */
	bool exact = true, back = true;
	for (unsigned i = 1; i < n; i++) {
		for (unsigned k = 0; k < IPIS_EACH; k++) {
			uint64_t b = ipis[i], b0 = ipis[0];
			rt_send_ipi(ids[i], IPI_VECTOR);
			struct wait w = { &ipis[i], b + 1 }, w0 = { &ipis[0], b0 + 1 };
			exact &= rt_user_call(wait_body, &w) == 1;
			back &= rt_user_call(wait_body, &w0) == 1;
		}
	}
	for (unsigned i = 1; i < n; i++)
		exact &= ipis[i] == IPIS_EACH;
	rt_tap_ok(exact, "IPIs to every CPU: %u each, each delivered once", IPIS_EACH);
	rt_tap_ok(back && ipis[0] == (uint64_t)IPIS_EACH * (n - 1), "IPIs back to CPU 0: %lu of %lu",
		  (unsigned long)ipis[0], (unsigned long)IPIS_EACH * (n - 1));

	uint64_t hold = rt_cmdline_u64("hold", 0);
	if (hold) {
		uint64_t b1 = counter[n > 1 ? 1 : 0];
		rt_printf("# holding\n");
		for (uint64_t t0 = rt_rdtsc(); rt_rdtsc() - t0 < hold << 31;)
			__asm__ volatile("pause");
		rt_printf("# held; CPU 1 counted %lu meanwhile\n", (unsigned long)(counter[n > 1 ? 1 : 0] - b1));
	}
	stop = 1;
	static volatile uint64_t done64;
	for (uint64_t t0 = rt_rdtsc(); done < n - 1 && rt_rdtsc() - t0 < 10000000000ull;)
		__asm__ volatile("pause");
	done64 = done;
	rt_tap_ok(done64 == n - 1, "every application processor left CPL3 (%u)", done);
	rt_tap_ok(rt_cpu_index() == 0, "CPU 0 is index 0");
	return rt_tap_done();
}
