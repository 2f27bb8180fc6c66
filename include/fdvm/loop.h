/*
 * The fd-watch interface that backends and fdvm's own service thread wait
 * on, and a default implementation on epoll. An embedder with its own event
 * loop supplies a struct fdvm_loop with its own ops instead.
 */
#ifndef FDVM_LOOP_H
#define FDVM_LOOP_H

#include <stdint.h>

#include "fdvm/sandbox.h"
#include "fdvm/vm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* events: EPOLLIN, EPOLLOUT, ... as in epoll(7). Runs on the loop's thread. */
typedef void (*fdvm_watch_fn)(void *opaque, int fd, uint32_t events);

struct fdvm_loop_ops {
	/* Starts calling fn(opaque, fd, events) whenever fd is ready.
	 * -EEXIST if fd is already watched. */
	int (*add_watch)(void *impl, int fd, uint32_t events, fdvm_watch_fn fn, void *opaque);
	/*
	 * Stops watching fd. When it returns, fn is not running and will not
	 * run again for this watch, except when called from fn itself (then
	 * the current call finishes and no other follows).
	 */
	int (*del_watch)(void *impl, int fd);
};

struct fdvm_loop {
	const struct fdvm_loop_ops *ops;
	void *impl;
};

static inline int fdvm_loop_add(struct fdvm_loop *l, int fd, uint32_t events,
				fdvm_watch_fn fn, void *opaque)
{
	return l->ops->add_watch(l->impl, fd, events, fn, opaque);
}

static inline int fdvm_loop_del(struct fdvm_loop *l, int fd)
{
	return l->ops->del_watch(l->impl, fd);
}

/* The default loop: epoll, level-triggered, run on a thread of its own or
 * on the caller's. */
struct fdvm_epoll_loop;

/* Creates a loop; *out is owned by the caller. */
int fdvm_epoll_loop_create(struct fdvm_epoll_loop **out);
/* The generic handle for this loop (valid until destroy). */
struct fdvm_loop *fdvm_epoll_loop_handle(struct fdvm_epoll_loop *loop);
/* Runs the loop on the calling thread until fdvm_epoll_loop_stop. */
int fdvm_epoll_loop_run(struct fdvm_epoll_loop *loop);
/* Starts a thread that runs the loop; joined by destroy. The thread has the
 * device role (fdvm/sandbox.h): the loop runs backends. */
int fdvm_epoll_loop_start(struct fdvm_epoll_loop *loop, const char *thread_name);
/* The same with another role. */
int fdvm_epoll_loop_start_as(struct fdvm_epoll_loop *loop, const char *thread_name,
			     enum fdvm_thread_role role);
/* Makes run return (any thread, also from a callback). */
void fdvm_epoll_loop_stop(struct fdvm_epoll_loop *loop);
/* Stops and joins the thread (if started), drops every watch, frees. */
void fdvm_epoll_loop_destroy(struct fdvm_epoll_loop *loop);

/*
 * A listening socket at path, for a server of kind what ("vhost-user",
 * "api": it names the socket in messages). It is bound under a temporary
 * name and renamed, so that path appears only once it accepts
 * connections; a stale socket at path is replaced, any other kind of file
 * is refused (-EEXIST). *out is the caller's; unlink path when done.
 */
int fdvm_unix_listen(const char *path, const char *what, fdvm_log_fn log, void *log_opaque,
		     int *out);

#ifdef __cplusplus
}
#endif

#endif
