/*
 * The control socket of fdvm run and fdvm serve (--api-socket PATH): JSON
 * over a Unix stream socket, one request and one answer per line, as QMP
 * and Firecracker's API are one request, one response:
 *
 *   -> {"execute": "status"}
 *   <- {"return": {...}}         or   {"error": {"class": C, "desc": TEXT}}
 *
 * The server runs on an fd-watch loop (fdvm/loop.h) of the caller's; the
 * commands are the caller's handler's. Up to API_MAX_CLIENTS at once; a
 * line longer than API_MAX_LINE, or a client that does not read its
 * answers, is dropped with one line in the log.
 */
#ifndef FDVM_CLI_API_H
#define FDVM_CLI_API_H

#include <jansson.h>

#include "fdvm/loop.h"

#define API_MAX_CLIENTS 8
#define API_MAX_LINE 4096

struct api;

/*
 * Answers cmd (args: the request's "arguments" object, or NULL): a new
 * reference to the "return" value, or NULL with *err_class and err set.
 */
typedef json_t *(*api_handler_fn)(void *ctx, const char *cmd, json_t *args,
				  const char **err_class, char *err, size_t errlen);

/* Listens at path (fdvm_unix_listen) and serves on loop. */
int api_create(const char *path, struct fdvm_loop *loop, api_handler_fn handle, void *ctx,
	       struct api **out);
/* Stops serving, closes every client and removes path. unwatch: the loop
 * is alive (call from its thread, or once it stopped running) and the
 * watches go; false: the loop was destroyed, and its watches with it. */
void api_destroy(struct api *a, bool unwatch);

/* For clients (fdvm stat, fdvm api): connects to path; the fd, or -1
 * after a line on stderr that starts with prog and says why. */
int api_connect(const char *prog, const char *path);
/* Sends {"execute": cmd} and reads the answer line: its "return" value (a
 * new reference), or NULL with a message in err. */
json_t *api_call(int fd, const char *cmd, char *err, size_t errlen);

/* The counters of a virtio-pci device or of a vhost-user backend's rings,
 * as the counters command returns them. */
struct fdvm_virtio_pci_stats;
struct fdvm_virtio_queue_stats;
json_t *api_device_json(const struct fdvm_virtio_pci_stats *s);
/* The counters command's answer: devices (taken) and the time they were
 * read (CLOCK_MONOTONIC), which rates are computed from. */
json_t *api_counters(json_t *devices);
json_t *api_queue_json(const struct fdvm_virtio_queue_stats *q);

#endif
