/* The control socket (see api.h): its server, its client side, and the
 * JSON form of fdvm's counters. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "fdvm/virtio.h"

struct client {
	struct api *api;
	int fd;			/* -1: free slot */
	size_t len;
	char buf[API_MAX_LINE + 1];
};

struct api {
	char *path;
	struct fdvm_loop *loop;
	int listen_fd;
	api_handler_fn handle;
	void *ctx;
	struct client c[API_MAX_CLIENTS];
};

static void api_log(const char *path, const char *fmt, const char *detail)
{
	fprintf(stderr, "fdvm: api %s: ", path);
	fprintf(stderr, fmt, detail);
	fputc('\n', stderr);
}

static void client_close(struct client *c, bool unwatch)
{
	if (c->fd < 0)
		return;
	if (unwatch)
		fdvm_loop_del(c->api->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

/* msg as one line on fd (sendmsg: the call the serve role's filter has);
 * 0 or -errno. */
static int send_json_line(int fd, json_t *msg, int flags)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text), off = 0;
	text[n] = '\n'; /* replaces the terminator: sent as n + 1 bytes */
	int ret = 0;
	while (off < n + 1) {
		struct iovec iov = { text + off, n + 1 - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | flags);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ret = w < 0 ? -errno : -EIO;
			break;
		}
		off += (size_t)w;
	}
	free(text);
	return ret;
}

/* Sends one line; false if the client cannot take it now (dropped). */
static bool send_line(struct client *c, json_t *msg)
{
	int ret = send_json_line(c->fd, msg, MSG_DONTWAIT);
	if (ret == -EAGAIN)
		api_log(c->api->path, "a client that does not read its answers: %s", "dropped");
	return !ret;
}

static json_t *error(const char *cls, const char *desc)
{
	return json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
}

/* One request line: always one answer. */
static json_t *answer(struct api *a, const char *line)
{
	json_error_t je;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &je), *resp;
	char err[256];

	if (!req) {
		snprintf(err, sizeof(err), "not JSON: %s (column %d)", je.text, je.column);
		return error("GenericError", err);
	}
	json_t *cmd = json_object_get(req, "execute"), *args = json_object_get(req, "arguments");
	if (!json_is_object(req) || !json_is_string(cmd) || (args && !json_is_object(args))) {
		json_decref(req);
		return error("GenericError",
			     "expected {\"execute\": COMMAND} with an optional \"arguments\" object");
	}
	const char *cls = "GenericError";
	err[0] = 0;
	json_t *ret = a->handle(a->ctx, json_string_value(cmd), args, &cls, err, sizeof(err));
	resp = ret ? json_pack("{s:o}", "return", ret) : error(cls, err);
	json_decref(req);
	return resp;
}

static void on_client(void *opaque, int fd, uint32_t events)
{
	struct client *c = opaque;

	(void)events;
	for (;;) {
		ssize_t r = read(fd, c->buf + c->len, API_MAX_LINE - c->len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return;
		if (r <= 0) {
			client_close(c, true);
			return;
		}
		c->len += (size_t)r;
		char *nl;
		while ((nl = memchr(c->buf, '\n', c->len))) {
			*nl = 0;
			json_t *resp = answer(c->api, c->buf);
			bool ok = resp && send_line(c, resp);
			json_decref(resp);
			size_t used = (size_t)(nl + 1 - c->buf);
			memmove(c->buf, nl + 1, c->len - used);
			c->len -= used;
			if (!ok) {
				client_close(c, true);
				return;
			}
		}
		if (c->len == API_MAX_LINE) {
			json_t *e = error("GenericError", "request longer than 4096 bytes");
			send_line(c, e);
			json_decref(e);
			api_log(c->api->path, "a request longer than 4096 bytes: %s", "client dropped");
			client_close(c, true);
			return;
		}
	}
}

static void on_accept(void *opaque, int fd, uint32_t events)
{
	struct api *a = opaque;

	(void)events;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			api_log(a->path, "accept: %s", strerror(errno));
		return;
	}
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++) {
		struct client *c = &a->c[i];
		if (c->fd >= 0)
			continue;
		c->fd = cfd;
		c->len = 0;
		int ret = fdvm_loop_add(a->loop, cfd, EPOLLIN, on_client, c);
		if (ret) {
			api_log(a->path, "watching a client: %s", strerror(-ret));
			close(cfd);
			c->fd = -1;
		}
		return;
	}
	json_t *e = error("GenericError", "too many clients (at most 8 at once)");
	struct client tmp = { .api = a, .fd = cfd };
	send_line(&tmp, e);
	json_decref(e);
	close(cfd);
}

int api_create(const char *path, struct fdvm_loop *loop, api_handler_fn handle, void *ctx,
	       struct api **out)
{
	struct api *a = calloc(1, sizeof(*a));
	int ret;

	if (!a || !(a->path = strdup(path))) {
		free(a);
		return -ENOMEM;
	}
	a->loop = loop;
	a->handle = handle;
	a->ctx = ctx;
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
		a->c[i] = (struct client){ .api = a, .fd = -1 };
	ret = fdvm_unix_listen(path, "api", NULL, NULL, &a->listen_fd);
	if (ret)
		goto err_free;
	ret = fdvm_loop_add(loop, a->listen_fd, EPOLLIN, on_accept, a);
	if (ret) {
		api_log(path, "watching the socket: %s", strerror(-ret));
		close(a->listen_fd);
		unlink(path);
		goto err_free;
	}
	*out = a;
	return 0;

err_free:
	free(a->path);
	free(a);
	return ret;
}

void api_destroy(struct api *a, bool unwatch)
{
	if (!a)
		return;
	for (unsigned i = 0; i < API_MAX_CLIENTS; i++)
		client_close(&a->c[i], unwatch);
	if (unwatch)
		fdvm_loop_del(a->loop, a->listen_fd);
	close(a->listen_fd);
	if (unlink(a->path) < 0 && errno != ENOENT)
		api_log(a->path, "removing the socket: %s", strerror(errno));
	free(a->path);
	free(a);
}

int api_connect(const char *prog, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = -1, err = ENAMETOOLONG;

	if (strlen(path) < sizeof(sa.sun_path)) {
		memcpy(sa.sun_path, path, strlen(path) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		err = errno;
		if (fd >= 0)
			close(fd);
	}
	fprintf(stderr, "%s: %s: %s%s\n", prog, path, strerror(err),
		err == ENOENT || err == ECONNREFUSED ? " (is fdvm running with --api-socket here?)" : "");
	return -1;
}

json_t *api_counters(json_t *devices)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return json_pack("{s:I,s:o}", "time_ns",
			 (json_int_t)t.tv_sec * 1000000000 + (json_int_t)t.tv_nsec, "devices", devices);
}

json_t *api_call(int fd, const char *cmd, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:s}", "execute", cmd);
	size_t len = 0, cap = 0;
	json_t *resp = NULL, *ret = NULL;

	int sret = req ? send_json_line(fd, req, 0) : -ENOMEM;
	if (sret) {
		snprintf(err, errlen, "sending: %s", strerror(-sret));
		goto out;
	}
	/* One line back: the server answers each request before reading the
	 * next, so nothing follows it. */
	char *line = NULL;
	for (;;) {
		if (len + 1 >= cap) {
			cap = cap ? cap * 2 : 65536;
			char *b = realloc(line, cap);
			if (!b) {
				snprintf(err, errlen, "out of memory");
				free(line);
				goto out;
			}
			line = b;
		}
		ssize_t r = read(fd, line + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, r < 0 ? "reading: %s" : "the server closed the connection%s",
				 r < 0 ? strerror(errno) : "");
			free(line);
			goto out;
		}
		char *nl = memchr(line + len, '\n', (size_t)r);
		len += (size_t)r;
		if (nl) {
			len = (size_t)(nl - line);
			break;
		}
	}
	line[len] = 0;
	json_error_t je;
	resp = json_loads(line, 0, &je);
	free(line);
	json_t *e;
	if (!resp) {
		snprintf(err, errlen, "the answer is not JSON: %s", je.text);
	} else if ((ret = json_object_get(resp, "return"))) {
		json_incref(ret);
	} else if ((e = json_object_get(resp, "error"))) {
		snprintf(err, errlen, "%s: %s", json_string_value(json_object_get(e, "class")),
			 json_string_value(json_object_get(e, "desc")));
	} else {
		snprintf(err, errlen, "an answer with neither return nor error");
	}
out:
	json_decref(resp);
	json_decref(req);
	return ret;
}

static const char *kick_path_name(enum fdvm_kick_path p)
{
	switch (p) {
	case FDVM_KICK_NONE: return "none";
	case FDVM_KICK_IOEVENTFD: return "ioeventfd";
	case FDVM_KICK_EXIT: return "exit";
	case FDVM_KICK_FRONTEND: return "frontend";
	}
	return "?";
}

json_t *api_queue_json(const struct fdvm_virtio_queue_stats *q)
{
	const struct fdvm_queue_stats *s = &q->s;
	json_t *o = json_object();

	json_object_set_new(o, "index", json_integer(q->index));
	json_object_set_new(o, "enabled", json_boolean(q->enabled));
	json_object_set_new(o, "size", json_integer(q->size));
	if (q->vector != 0xffff)
		json_object_set_new(o, "vector", json_integer(q->vector));
	json_object_set_new(o, "kick_path", json_string(kick_path_name(q->kick_path)));
#define U(name, v) json_object_set_new(o, name, json_integer((json_int_t)(v)))
	U("kicks", s->kicks);
	if (q->kick_path != FDVM_KICK_FRONTEND) {
		U("doorbells_ioeventfd", q->doorbells_ioeventfd);
		U("doorbells_exit", q->doorbells_exit);
	}
	U("kicks_suppressed", s->kicks_suppressed);
	U("requests", s->requests);
	U("out_bytes", s->out_bytes);
	U("in_bytes", s->in_bytes);
	U("irqs", s->irqs);
	U("irqs_suppressed", s->irqs_suppressed);
	U("poll_hits", s->poll_hits);
	U("poll_misses", s->poll_misses);
#undef U
	return o;
}

json_t *api_device_json(const struct fdvm_virtio_pci_stats *s)
{
	json_t *d = json_object(), *qs = json_array(), *vs = json_array();

	json_object_set_new(d, "name", json_string(s->name));
	json_object_set_new(d, "slot", json_integer(s->slot));
	json_object_set_new(d, "status", json_integer(s->status));
	json_object_set_new(d, "counting", json_boolean(s->counting));
	json_object_set_new(d, "remote", json_boolean(s->remote));
	for (unsigned i = 0; i < s->nq; i++)
		json_array_append_new(qs, api_queue_json(&s->q[i]));
	for (unsigned i = 0; i < s->nvec; i++) {
		const struct fdvm_irq_stats *v = &s->v[i].s;
		json_array_append_new(vs, json_pack("{s:i,s:b,s:b,s:b,s:I,s:I}", "vector",
						    (int)s->v[i].vector, "kernel", v->kernel,
						    "masked", v->masked, "pending", v->pending,
						    "masked_signals", (json_int_t)v->masked_signals,
						    "unmask_deliveries",
						    (json_int_t)v->unmask_deliveries));
	}
	json_object_set_new(d, "queues", qs);
	json_object_set_new(d, "vectors", vs);
	return d;
}
