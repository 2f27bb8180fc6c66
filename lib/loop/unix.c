/*
 * Listening Unix sockets, for fdvm's servers (a vhost-user backend, the
 * control socket of fdvm run and fdvm serve).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fdvm/loop.h"
#include "../vm_priv.h"

int fdvm_unix_listen(const char *path, const char *what, fdvm_log_fn log, void *log_opaque,
		     int *out)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct stat st;
	char tmp[sizeof(a.sun_path)];
	int fd, ret;

	if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp)) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "%s %s: the socket path is longer than %zu bytes", what, path,
			    sizeof(a.sun_path) - 16);
		return -ENAMETOOLONG;
	}
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "%s %s: exists and is not a socket; not replacing it", what, path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fdvm_log_to_errno(log, log_opaque, errno, "%s %s: socket", what, path);
	memcpy(a.sun_path, tmp, strlen(tmp) + 1);
	unlink(tmp);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "%s %s: bind", what, tmp);
		goto err_close;
	}
	if (listen(fd, 4) < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "%s %s: listen", what, path);
		goto err_unlink;
	}
	if (rename(tmp, path) < 0) {
		ret = fdvm_log_to_errno(log, log_opaque, errno, "%s %s: rename from %s", what, path, tmp);
		goto err_unlink;
	}
	*out = fd;
	return 0;

err_unlink:
	unlink(tmp);
err_close:
	close(fd);
	return ret;
}
