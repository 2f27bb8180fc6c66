/*
 * Trap entry, the CPL3 entry/exit, and the kernel-call gate.
 */
#include "rt_defs.h"

	.text
	.code64

/*
 * 256 stubs, 16 bytes apart from rt_trap_stubs: each pushes a dummy error
 * code where the CPU pushes none, then the vector, then joins trap_common.
 */
	.p2align 4
	.globl rt_trap_stubs
rt_trap_stubs:
	.set vec, 0
	.rept 256
	.p2align 4
	.if vec == 8 || vec == 10 || vec == 11 || vec == 12 || vec == 13 || vec == 14 || vec == 17 || vec == 21 || vec == 29 || vec == 30
	pushq $vec
	.else
	pushq $0
	pushq $vec
	.endif
	jmp trap_common
	.set vec, vec + 1
	.endr

/* Saves the registers in the order of struct rt_frame and calls rt_trap. */
trap_common:
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	cld
	mov %rsp, %rdi
	call rt_trap
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	add $16, %rsp
	iretq

/*
 * long rt_user_enter(long (*fn)(void *), void *arg, uint64_t user_rsp,
 *                    struct rt_kctx *ctx)
 * Saves the callee-saved state in ctx and enters fn(arg) at CPL3. Returns
 * when rt_user_resume(ctx, value) is called from a trap handler.
 */
	.globl rt_user_enter
rt_user_enter:
	pushfq
	pop 56(%rcx)
	mov %rbx, 0(%rcx)
	mov %rbp, 8(%rcx)
	mov %r12, 16(%rcx)
	mov %r13, 24(%rcx)
	mov %r14, 32(%rcx)
	mov %r15, 40(%rcx)
	mov %rsp, 48(%rcx)
	pushq $(SEL_UDATA | 3)
	pushq %rdx
	pushq $0x202		/* IF, IOPL=0 */
	pushq $(SEL_UCODE | 3)
	lea user_trampoline(%rip), %rax
	pushq %rax
	iretq

/* void rt_user_resume(struct rt_kctx *ctx, long value) */
	.globl rt_user_resume
rt_user_resume:
	mov %rsi, %rax
	mov 0(%rdi), %rbx
	mov 8(%rdi), %rbp
	mov 16(%rdi), %r12
	mov 24(%rdi), %r13
	mov 32(%rdi), %r14
	mov 40(%rdi), %r15
	mov 48(%rdi), %rsp
	push 56(%rdi)
	popfq
	ret

/* Runs at CPL3: fn(arg), then hand the result back to CPL0. */
user_trampoline:
	mov %rdi, %rax
	mov %rsi, %rdi
	call *%rax
	mov %rax, %rsi
	mov $KCALL_RETURN, %edi
	call rt_kcall
	ud2

/*
 * long rt_kcall(long nr, long a0, long a1, long a2)
 * The #UD of this ud2 is recognised by rt_trap by its address: the handler
 * runs the call at CPL0, puts the result in %rax and resumes after it.
 */
	.globl rt_kcall, rt_kcall_gate
rt_kcall:
rt_kcall_gate:
	ud2
	ret
