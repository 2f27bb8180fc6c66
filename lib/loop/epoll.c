/*
 * The default event loop. Watches live in an array under a mutex; epoll
 * carries a watch id, not a pointer, so an event for a watch deleted while
 * epoll_wait was returning is simply not found. del_watch waits for a
 * callback in flight on another thread to finish.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fdvm/loop.h"
#include "fdvm/sandbox.h"

struct watch {
	uint64_t id;
	int fd;
	fdvm_watch_fn fn;
	void *opaque;
};

struct fdvm_epoll_loop {
	struct fdvm_loop handle;
	int epfd, wakefd;		/* owned */
	pthread_mutex_t lock;		/* guards everything below */
	pthread_cond_t idle;		/* signalled when running_id drops to 0 */
	struct watch *w;
	size_t n, cap;
	uint64_t next_id;
	uint64_t running_id;		/* watch whose fn is running, or 0 */
	pthread_t loop_thread;		/* valid while in_run */
	bool in_run, stop, started;
	pthread_t thread;		/* if started */
};

#define WAKE_ID UINT64_MAX

static struct watch *find_fd(struct fdvm_epoll_loop *l, int fd)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->w[i].fd == fd)
			return &l->w[i];
	return NULL;
}

static int add_watch(void *impl, int fd, uint32_t events, fdvm_watch_fn fn, void *opaque)
{
	struct fdvm_epoll_loop *l = impl;
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	if (find_fd(l, fd)) {
		ret = -EEXIST;
		goto out;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct watch *w = realloc(l->w, cap * sizeof(*w));
		if (!w) {
			ret = -ENOMEM;
			goto out;
		}
		l->w = w;
		l->cap = cap;
	}
	struct watch nw = { ++l->next_id, fd, fn, opaque };
	struct epoll_event ev = { .events = events, .data.u64 = nw.id };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		ret = -errno;
		goto out;
	}
	l->w[l->n++] = nw;
out:
	pthread_mutex_unlock(&l->lock);
	return ret;
}

static int del_watch(void *impl, int fd)
{
	struct fdvm_epoll_loop *l = impl;
	struct watch *w;
	uint64_t id;

	pthread_mutex_lock(&l->lock);
	w = find_fd(l, fd);
	if (!w) {
		pthread_mutex_unlock(&l->lock);
		return -ENOENT;
	}
	id = w->id;
	/* EBADF here means the caller closed fd first; epoll forgot it then. */
	epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
	*w = l->w[--l->n];
	bool self = l->in_run && pthread_equal(l->loop_thread, pthread_self());
	while (!self && l->running_id == id)
		pthread_cond_wait(&l->idle, &l->lock);
	pthread_mutex_unlock(&l->lock);
	return 0;
}

static const struct fdvm_loop_ops epoll_ops = { .add_watch = add_watch, .del_watch = del_watch };

int fdvm_epoll_loop_create(struct fdvm_epoll_loop **out)
{
	struct fdvm_epoll_loop *l = calloc(1, sizeof(*l));
	int ret;

	if (!l)
		return -ENOMEM;
	l->handle = (struct fdvm_loop){ &epoll_ops, l };
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0) {
		ret = -errno;
		goto err_free;
	}
	l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->wakefd < 0) {
		ret = -errno;
		goto err_epoll;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = WAKE_ID };
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &ev) < 0) {
		ret = -errno;
		goto err_wake;
	}
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->idle, NULL);
	*out = l;
	return 0;

err_wake:
	close(l->wakefd);
err_epoll:
	close(l->epfd);
err_free:
	free(l);
	return ret;
}

struct fdvm_loop *fdvm_epoll_loop_handle(struct fdvm_epoll_loop *l) { return &l->handle; }

int fdvm_epoll_loop_run(struct fdvm_epoll_loop *l)
{
	struct epoll_event ev[32];
	int ret = 0;

	pthread_mutex_lock(&l->lock);
	l->loop_thread = pthread_self();
	l->in_run = true;
	while (!l->stop) {
		pthread_mutex_unlock(&l->lock);
		int n = epoll_wait(l->epfd, ev, 32, -1);
		pthread_mutex_lock(&l->lock);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			uint64_t id = ev[i].data.u64;
			if (id == WAKE_ID) {
				uint64_t v;
				if (read(l->wakefd, &v, sizeof(v)) < 0) {
					/* EAGAIN: another wake already drained it */
				}
				continue;
			}
			struct watch *w = NULL;
			for (size_t k = 0; k < l->n; k++)
				if (l->w[k].id == id)
					w = &l->w[k];
			if (!w)
				continue; /* deleted since epoll_wait returned */
			struct watch copy = *w;
			l->running_id = id;
			pthread_mutex_unlock(&l->lock);
			copy.fn(copy.opaque, copy.fd, ev[i].events);
			pthread_mutex_lock(&l->lock);
			l->running_id = 0;
			pthread_cond_broadcast(&l->idle);
		}
	}
	l->in_run = false;
	l->stop = false;
	pthread_mutex_unlock(&l->lock);
	return ret;
}

static void *loop_thread(void *arg)
{
	fdvm_epoll_loop_run(arg);
	return NULL;
}

int fdvm_epoll_loop_start_as(struct fdvm_epoll_loop *l, const char *name,
			     enum fdvm_thread_role role)
{
	int ret = fdvm_thread_create(&l->thread, role, name, loop_thread, l);
	if (ret)
		return ret;
	l->started = true;
	return 0;
}

int fdvm_epoll_loop_start(struct fdvm_epoll_loop *l, const char *name)
{
	return fdvm_epoll_loop_start_as(l, name, FDVM_ROLE_DEVICE);
}

void fdvm_epoll_loop_stop(struct fdvm_epoll_loop *l)
{
	uint64_t one = 1;

	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_mutex_unlock(&l->lock);
	/* Cannot fail short of a counter overflow, which a stop makes moot. */
	if (write(l->wakefd, &one, sizeof(one)) < 0) {
	}
}

void fdvm_epoll_loop_destroy(struct fdvm_epoll_loop *l)
{
	if (!l)
		return;
	if (l->started) {
		fdvm_epoll_loop_stop(l);
		pthread_join(l->thread, NULL);
	}
	free(l->w);
	pthread_cond_destroy(&l->idle);
	pthread_mutex_destroy(&l->lock);
	close(l->wakefd);
	close(l->epfd);
	free(l);
}
