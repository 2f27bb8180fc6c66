/*
 * fdvm guest <-> host contract.
 *
 * Shared verbatim by the host (lib/, cli/) and the freestanding guest (guest/).
 * Everything a guest may rely on when booted by fdvm is here; where QEMU has an
 * equivalent, the numbers are QEMU's so one guest binary runs on both.
 *
 * Only fixed-width integers and macros: no host or libc types.
 */
#ifndef FDVM_ABI_H
#define FDVM_ABI_H

#ifdef __cplusplus
extern "C" {
#endif

#define FDVM_ABI_VERSION 1

/* 8250/16550 UART, COM1. */
#define FDVM_PORT_COM1 0x3f8

/*
 * Exit port with QEMU isa-debug-exit semantics (-device isa-debug-exit,
 * iobase=0xf4,iosize=4): writing V ends the VM with process status
 * (V << 1) | 1.
 */
#define FDVM_PORT_DEBUG_EXIT 0xf4

/*
 * ACPI PM1a control register, where SeaBIOS puts it on QEMU's pc and q35
 * machines. A 16-bit write with SLP_EN set (SLP_TYP 0) powers the machine off
 * and the VMM exits with status 0: the way for a guest to exit 0. QEMU acts
 * on it asynchronously, so the guest must wait a moment before doing
 * anything else.
 */
#define FDVM_PORT_ACPI_PM1A_CNT 0x604
#define FDVM_ACPI_PM1_SLP_EN (1u << 13)
#define FDVM_ACPI_PM1_SCI_EN (1u << 0)	/* reads 1: always in ACPI mode */
/* The PM1a event block the FADT names: status (reads 0), enable. */
#define FDVM_PORT_ACPI_PM1A_EVT 0x600
/* The FADT's reset register: a byte write of 6 to 0xcf9, the reset
 * control register inside the PCI host's config ports (as on a PC's
 * chipset); fdvm stops with the reset status (12). */
#define FDVM_PORT_RESET 0xcf9
#define FDVM_RESET_VALUE 0x06
/* The i8042's command port (0x64): command 0xfe (pulse reset) resets, as
 * Linux's reboot=k does; its data port 0x60 reads 0. */
#define FDVM_PORT_I8042_DATA 0x60
#define FDVM_PORT_I8042_CMD 0x64
/* The CMOS RTC (index 0x70, data 0x71): the host's UTC time, BCD, 24-hour,
 * century at 0x32, a valid checksum over 0x10-0x2d. */
#define FDVM_PORT_CMOS_INDEX 0x70
#define FDVM_PORT_CMOS_DATA 0x71
#define FDVM_CMOS_CENTURY 0x32

/* Local APIC and IOAPIC, at their architectural default bases. */
#define FDVM_LAPIC_BASE 0xfee00000ull
#define FDVM_IOAPIC_BASE 0xfec00000ull

/*
 * Guest-physical memory fdvm keeps for its boot structures (PVH start info,
 * memory map, command line). A guest image may not load into it.
 */
#define FDVM_BOOT_AREA_START 0x0ull
#define FDVM_BOOT_AREA_END 0x10000ull
#define FDVM_CMDLINE_MAX 4096

/*
 * ACPI tables (RSDP, XSDT, RSDT, FADT, FACS, DSDT, MADT, MCFG), inside the
 * boot area; the PVH start info's rsdp_paddr points at the RSDP. The MADT
 * has one local APIC per vCPU (APIC id = vCPU index) and the IOAPIC.
 */
#define FDVM_ACPI_START 0x3000ull
#define FDVM_ACPI_END 0x4000ull

/*
 * Guest RAM below 4 GiB ends at most here; [FDVM_MMIO_HOLE_START, 4 GiB) is
 * for devices. RAM beyond that continues at 4 GiB.
 */
#define FDVM_MMIO_HOLE_START 0xc0000000ull
#define FDVM_HIGH_RAM_START 0x100000000ull

/*
 * PCI: configuration space through ports 0xcf8/0xcfc (as on QEMU's pc and
 * q35), and, on fdvm, also through ECAM (memory-mapped, bus 0 only) at
 * FDVM_PCI_ECAM_BASE, so that code at CPL3 can reach it. fdvm assigns BARs
 * at boot from these windows, as firmware would.
 */
#define FDVM_PCI_CONFIG_ADDRESS 0xcf8
#define FDVM_PCI_CONFIG_DATA 0xcfc
#define FDVM_PCI_ECAM_BASE 0xe0000000ull
#define FDVM_PCI_ECAM_SIZE 0x100000ull
#define FDVM_PCI_MMIO_START 0xc0000000ull
#define FDVM_PCI_MMIO_END 0xe0000000ull
#define FDVM_PCI_IO_START 0xc000
#define FDVM_PCI_IO_END 0x10000

#ifdef __cplusplus
}
#endif

#endif
