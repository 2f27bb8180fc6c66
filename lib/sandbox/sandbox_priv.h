/* Inside the sandbox: the compiled filters. */
#ifndef FDVM_SANDBOX_PRIV_H
#define FDVM_SANDBOX_PRIV_H

#include <linux/filter.h>
#include <stdint.h>

#include "fdvm/sandbox.h"

/* Compiles role's list into a BPF program whose answer to anything not on
 * it is deny (a SCMP_ACT_* action); out->filter is malloc'd. -errno. */
int fdvm_sandbox_compile(enum fdvm_thread_role role, uint32_t deny, struct sock_fprog *out);

#endif
