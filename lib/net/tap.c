/* A tap device's queues (see tap.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"
#include "../vm_priv.h"

static int tap_err(struct fdvm_tap *t, int err, const char *op)
{
	return fdvm_log_to_errno(t->log, t->log_opaque, err, "tap %s: %s", t->name, op);
}

/* Why TUNSETIFF failed, in a user's words. */
static int attach_error(struct fdvm_tap *t, int err, bool existed, unsigned queues)
{
	const char *why = NULL;
	if (err == EPERM && existed)
		why = "it belongs to another user (ip tuntap add ... user NAME), or needs CAP_NET_ADMIN";
	else if (err == EPERM)
		why = "creating a tap needs CAP_NET_ADMIN (or make it first: ip tuntap add mode tap name NAME)";
	else if (err == EBUSY)
		why = "another process has it open (a tap that is not multi_queue takes one)";
	else if (err == EINVAL && existed)
		why = queues > 1 ? "it is not multi-queue (ip tuntap add ... multi_queue), or is a tun"
				 : "it is multi-queue or a tun device: try queues=N, or another tap";
	if (!why)
		return tap_err(t, err, "TUNSETIFF");
	fdvm_log_to(t->log, t->log_opaque, FDVM_LOG_ERROR, "tap %s: TUNSETIFF: %s: %s", t->name,
		    strerror(err), why);
	return -err;
}

int fdvm_tap_open(const char *name, unsigned queues, fdvm_log_fn log, void *log_opaque,
		  struct fdvm_tap **out)
{
	struct fdvm_tap *t;
	int ret;

	if (!name || !*name || strlen(name) >= IFNAMSIZ || strchr(name, '/') ||
	    !queues || queues > FDVM_TAP_MAX_QUEUES) {
		fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
			    "tap '%s': a tap needs a name of 1..%d characters and 1..%d queues",
			    name ? name : "", IFNAMSIZ - 1, FDVM_TAP_MAX_QUEUES);
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	strcpy(t->name, name);
	t->log = log;
	t->log_opaque = log_opaque;
	bool existed = if_nametoindex(name) != 0;
	for (unsigned i = 0; i < queues; i++) {
		int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			ret = tap_err(t, errno, "open /dev/net/tun");
			goto err;
		}
		t->fd[t->n++] = fd;
		if (i == 0) {
			unsigned features;
			if (ioctl(fd, TUNGETFEATURES, &features) < 0) {
				ret = tap_err(t, errno, "TUNGETFEATURES");
				goto err;
			}
			if (!(features & IFF_VNET_HDR) || (queues > 1 && !(features & IFF_MULTI_QUEUE))) {
				fdvm_log_to(log, log_opaque, FDVM_LOG_ERROR,
					    "tap %s: this kernel's tun driver lacks %s", name,
					    features & IFF_VNET_HDR ? "multi-queue taps" : "virtio headers");
				ret = -EOPNOTSUPP;
				goto err;
			}
		}
		struct ifreq ifr = { 0 };
		strcpy(ifr.ifr_name, name);
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | (queues > 1 ? IFF_MULTI_QUEUE : 0);
		if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
			ret = attach_error(t, errno, existed, queues);
			goto err;
		}
		t->attached[i] = true;
	}
	t->created = !existed;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s >= 0) {
		struct ifreq ifr = { 0 };
		strcpy(ifr.ifr_name, name);
		if (ioctl(s, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu > 0)
			t->mtu = (unsigned)ifr.ifr_mtu;
		close(s);
	}
	if (!t->mtu)
		t->mtu = 1500;
	if (t->created)
		fdvm_log_to(log, log_opaque, FDVM_LOG_INFO,
			    "tap %s: created (down, no address; it goes away when fdvm exits)", name);
	*out = t;
	return 0;
err:
	fdvm_tap_close(t);
	return ret;
}

int fdvm_tap_wrap(const char *name, const int *fds, unsigned n, fdvm_log_fn log,
		  void *log_opaque, struct fdvm_tap **out)
{
	if (!n || n > FDVM_TAP_MAX_QUEUES || strlen(name) >= IFNAMSIZ)
		return -EINVAL;
	struct fdvm_tap *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	strcpy(t->name, name);
	t->log = log;
	t->log_opaque = log_opaque;
	t->wrapped = true;
	t->mtu = 1500;
	for (unsigned i = 0; i < n; i++) {
		t->fd[i] = fds[i];
		t->attached[i] = true;
	}
	t->n = n;
	*out = t;
	return 0;
}

/* An ioctl a wrapped fd that is no tap does not know is not an error. */
static bool not_a_tap(const struct fdvm_tap *t, int err)
{
	return t->wrapped && (err == ENOTTY || err == EINVAL);
}

int fdvm_tap_set_vnet(struct fdvm_tap *t, unsigned hdr_len, unsigned offloads)
{
	int len = (int)hdr_len;
	for (unsigned i = 0; i < t->n; i++) {
		if (ioctl(t->fd[i], TUNSETVNETHDRSZ, &len) < 0 && !not_a_tap(t, errno))
			return tap_err(t, errno, "TUNSETVNETHDRSZ");
		if (ioctl(t->fd[i], TUNSETOFFLOAD, (unsigned long)offloads) < 0 && !not_a_tap(t, errno))
			return tap_err(t, errno, "TUNSETOFFLOAD");
	}
	return 0;
}

int fdvm_tap_set_active(struct fdvm_tap *t, unsigned n)
{
	if (t->n == 1)
		return 0; /* nothing to steer */
	/* Attach first, so that some queue always takes packets. */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < t->n; i++) {
			bool want = i < n;
			if (want != (pass == 0) || t->attached[i] == want)
				continue;
			struct ifreq ifr = { .ifr_flags = want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE };
			if (ioctl(t->fd[i], TUNSETQUEUE, &ifr) < 0 && !not_a_tap(t, errno))
				return tap_err(t, errno, want ? "attach queue" : "detach queue");
			t->attached[i] = want;
		}
	}
	return 0;
}

void fdvm_tap_close(struct fdvm_tap *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->n; i++)
		close(t->fd[i]);
	free(t);
}
