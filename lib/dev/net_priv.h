/*
 * virtio-net without a tap or threads, for the fuzz target: the model on
 * datagram sockets that stand in for tap queues, doing its work only when
 * asked, on the caller's thread, so every run is the same.
 */
#ifndef FDVM_DEV_NET_PRIV_H
#define FDVM_DEV_NET_PRIV_H

#include "fdvm/virtio.h"

/* cfg->num_pairs fds (taken over); cfg->tap only names it in messages. */
int fdvm_virtio_net_model_on_fds(const struct fdvm_virtio_net_config *cfg, const int *fds,
				 fdvm_log_fn log, void *log_opaque, struct fdvm_virtio_model **out);
/* One pass over every started queue: transmit, receive, control. */
void fdvm_virtio_net_run_once(struct fdvm_virtio_model *m);

#endif
