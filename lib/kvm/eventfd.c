/* Eventfds as the lines and doorbells take them: made here, or checked and
 * duplicated from the caller's. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../vm_priv.h"

bool fdvm_fd_is_eventfd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return !strcmp(target, "anon_inode:[eventfd]");
}

int fdvm_eventfd_get(struct fdvm_vm *vm, int fd, bool borrow, const char *what, int *out)
{
	int nfd;

	if (fd < 0) {
		nfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (nfd < 0)
			return fdvm_log_errno(vm, errno, "%s: eventfd", what);
		*out = nfd;
		return 0;
	}
	if (fcntl(fd, F_GETFD) < 0)
		return fdvm_log_errno(vm, errno, "%s: fd %d", what, fd);
	if (!fdvm_fd_is_eventfd(fd)) {
		fdvm_log(vm, FDVM_LOG_ERROR, "%s: fd %d is not an eventfd", what, fd);
		return -EINVAL;
	}
	if (borrow) {
		*out = fd;
		return 0;
	}
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0)
		return fdvm_log_errno(vm, errno, "%s: duplicating fd %d", what, fd);
	*out = nfd;
	return 0;
}

int fdvm_eventfd_drain(int fd, uint64_t *count)
{
	ssize_t n;

	*count = 0;
	do
		n = read(fd, count, sizeof(*count));
	while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN)
		return 0;
	return n == sizeof(*count) ? 0 : (n < 0 ? -errno : -EIO);
}

int fdvm_eventfd_signal(int fd)
{
	uint64_t one = 1;
	ssize_t n;

	do
		n = write(fd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
	/* EAGAIN: the counter is at its maximum, a signal is pending anyway. */
	if (n < 0 && errno == EAGAIN)
		return 0;
	return n == sizeof(one) ? 0 : (n < 0 ? -errno : -EIO);
}
