/* The guest's side of the test harness's control device (testabi/testctl_abi.h). */
#ifndef RT_TESTCTL_H
#define RT_TESTCTL_H

#include "testctl_abi.h"
#include "io.h"

/* Runs one harness command with up to three arguments; its result. */
static inline int64_t tc(uint64_t cmd, uint64_t a0, uint64_t a1, uint64_t a2)
{
	mmio_write64(FDVM_TESTCTL_MMIO + TC_REG_ARG0, a0);
	mmio_write64(FDVM_TESTCTL_MMIO + TC_REG_ARG1, a1);
	mmio_write64(FDVM_TESTCTL_MMIO + TC_REG_ARG2, a2);
	mmio_write64(FDVM_TESTCTL_MMIO + TC_REG_CMD, cmd);
	return (int64_t)mmio_read64(FDVM_TESTCTL_MMIO + TC_REG_RESULT);
}

#endif
