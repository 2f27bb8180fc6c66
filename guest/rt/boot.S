/*
 * PVH entry and the switch to long mode.
 *
 * A PVH loader (fdvm, QEMU's pvh.bin, Xen) enters pvh_start32 in 32-bit
 * protected mode, paging off, flat segments, with %ebx = the guest-physical
 * address of struct hvm_start_info. We turn on PAE paging with the static
 * identity map below, enter 64-bit mode and call rt_start(start_info).
 *
 * Every instruction here runs at CPL0, which some nested hypervisors emulate
 * one instruction at a time: the page tables are built by the assembler, not
 * by a loop.
 */
#include "rt_defs.h"

/* In 64-bit mode at CPL0: the flat kernel data segment, FS and GS null. */
.macro data_segments64
	mov $SEL_KDATA, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	xor %ax, %ax
	mov %ax, %fs
	mov %ax, %gs
.endm

/* The PVH entry note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18). */
	.section .note.Xen, "a"
	.p2align 2
	.long 4, 4, 18
	.asciz "Xen"
	.long pvh_start32

	.section .boot32, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	mov %ebx, %esi
	lgdt gdt_ptr
	mov $bsp_entry64, %edi
	jmp long_mode

/*
 * From 32-bit protected mode, paging off, to the 64-bit code the far
 * pointer at %edi names (not %edx: rdmsr takes it): PAE, the static page
 * tables, EFER.LME, paging (and caching: CD and NW go, as an application
 * processor has them set after INIT); then a far jump through that
 * pointer into the 64-bit code segment. No stack: the PVH entry gives none.
 */
long_mode:
	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	and $0x9fffffff, %eax
	or $(CR0_PG | CR0_PE), %eax
	mov %eax, %cr0
	ljmp *(%edi)

/* The far pointers (offset, selector) long_mode jumps through. */
	.p2align 3
bsp_entry64:
	.long start64
	.word SEL_KCODE
	.p2align 3
ap_entry64:
	.long rt_ap_start64
	.word SEL_KCODE

	.code64
start64:
	data_segments64
	lea rt_boot_stack_top(%rip), %rsp
	xor %ebp, %ebp
	mov %esi, %edi
	call rt_start
1:	cli
	hlt
	jmp 1b

/*
 * An application processor's way up. rt_smp copies the real-mode part to
 * RT_AP_TRAMPOLINE and sends the SIPI for that page: it loads rt_gdt,
 * enters protected mode at rt_ap_start32, which goes to long mode as
 * pvh_start32 does (long_mode, the same page tables), at rt_ap_start64 with the stack
 * in rt_ap_stack, then rt_ap_main (smp.c).
 */
	.section .rodata.trampoline, "a"
	.code16
	.globl rt_ap_trampoline, rt_ap_trampoline_end
rt_ap_trampoline:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl ap_gdt_ptr - rt_ap_trampoline
	mov %cr0, %eax
	or $CR0_PE, %eax
	mov %eax, %cr0
	ljmpl $SEL_KCODE32, $rt_ap_start32
	.p2align 3
ap_gdt_ptr:
	.word rt_gdt_end - rt_gdt - 1
	.long rt_gdt
rt_ap_trampoline_end:

	.section .boot32, "ax"
	.code32
rt_ap_start32:
	mov $SEL_KDATA, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $ap_entry64, %edi
	jmp long_mode

	.text
	.code64
rt_ap_start64:
	data_segments64
	mov rt_ap_stack(%rip), %rsp
	xor %ebp, %ebp
	call rt_ap_main
2:	cli
	hlt
	jmp 2b

/*
 * GDT: null, kernel code/data, user data/code (in the order SYSRET would
 * want), and a 16-byte TSS descriptor that rt_cpu_init fills in.
 */
	.section .data.gdt, "aw"
	.p2align 4
	.globl rt_gdt
rt_gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* SEL_KCODE: 64-bit, DPL0 */
	.quad 0x00cf92000000ffff	/* SEL_KDATA */
	.quad 0x00cff2000000ffff	/* SEL_UDATA: DPL3 */
	.quad 0x00affa000000ffff	/* SEL_UCODE: 64-bit, DPL3 */
	.quad 0, 0			/* SEL_TSS */
	.quad 0x00cf9a000000ffff	/* SEL_KCODE32: 32-bit, DPL0 */
	.globl rt_gdt_end
rt_gdt_end:
	.p2align 3
gdt_ptr:
	.word rt_gdt_end - rt_gdt - 1
	.quad rt_gdt

/*
 * Identity map of the first 4 GiB with 2 MiB pages, user-accessible so that
 * test bodies can run at CPL3. Everything above 4 GiB is unmapped.
 */
	.section .data.pagetables, "aw"
	.p2align 12
pml4:
	.quad pdpt + PTE_P + PTE_W + PTE_U
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x0000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x1000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x2000 + PTE_P + PTE_W + PTE_U
	.quad pd + 0x3000 + PTE_P + PTE_W + PTE_U
	.fill 508, 8, 0
pd:
	.set page, 0
	.rept 2048
	.quad (page << 21) + PTE_P + PTE_W + PTE_U + PTE_PS
	.set page, page + 1
	.endr

	.section .bss.stacks, "aw", @nobits
	.p2align 12
	.space RT_STACK_SIZE
	.globl rt_boot_stack_top
rt_boot_stack_top:
	.space RT_STACK_SIZE
	.globl rt_trap_stack_top
rt_trap_stack_top:
	.space RT_STACK_SIZE
	.globl rt_user_stack_top
rt_user_stack_top:
