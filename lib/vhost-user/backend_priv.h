/* The backend's message handler alone, for the fuzz target. */
#ifndef FDVM_VU_BACKEND_PRIV_H
#define FDVM_VU_BACKEND_PRIV_H

#include "wire.h"

struct fdvm_vu_backend;

/*
 * Handles one message received on the served connection (replies go to
 * it). Takes fds[0..nfds): each is kept or closed. -1: drop the frontend.
 */
int vu_backend_handle(struct fdvm_vu_backend *be, struct vu_msg *m, int *fds, unsigned nfds);

#endif
