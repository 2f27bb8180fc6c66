/* Constants shared by the guest runtime's assembly and C. */
#ifndef RT_DEFS_H
#define RT_DEFS_H

#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100

#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_U 0x4
#define PTE_PS 0x80

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS 0x28
#define SEL_KCODE32 0x38	/* 32-bit code: an application processor's way up */

#define MSR_GS_BASE 0xc0000101

/* Application processors: at most this many CPUs are run; each starts in
 * real mode at RT_AP_TRAMPOLINE (copied there; the SIPI vector is its page). */
#define RT_MAX_CPUS 16
#define RT_AP_TRAMPOLINE 0x8000

#define RT_STACK_SIZE 0x4000

/* Kernel calls a CPL3 body makes through rt_kcall(). */
#define KCALL_RETURN 1 /* leave the user body: a0 = its result */
#define KCALL_WRITE 2  /* console write: a0 = buffer, a1 = length */
#define KCALL_EXIT 3   /* end the VM: a0 = code */
#define KCALL_CALL 4   /* run a0(a1) at CPL0 and return its result */
#define KCALL_SET_IF 5 /* set (a0 = 1) or clear (0) the caller's IF */

#endif
