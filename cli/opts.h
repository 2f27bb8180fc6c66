/* Option parsing for the fdvm command line, kept apart from main() so unit
 * tests can drive it. */
#ifndef FDVM_CLI_OPTS_H
#define FDVM_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fdvm/doorbell.h"
#include "fdvm/sandbox.h"
#include "fdvm/virtio.h"
#include "fdvm/vm.h"

/* Parses "64M", "1G", "512K", "1048576B"; a bare number is MiB (as QEMU's
 * -m). Returns 0 or -EINVAL (garbage, zero, overflow). */
int fdvm_parse_size(const char *s, uint64_t *out);

/* Parses off|log|kill (--seccomp); 0 or -EINVAL. */
int fdvm_parse_seccomp(const char *s, enum fdvm_seccomp_mode *out);

/* Parses stop|warn|ignore. */
int fdvm_parse_unhandled(const char *s, enum fdvm_unhandled *out);

/* A disk as --blk and fdvm serve blk take it: FILE[,ro][,queues=N][,poll=US]. */
struct fdvm_blk_opts {
	char *path; /* owned, unescaped (",," in the spec is a comma) */
	bool ro;
	unsigned queues;
	unsigned poll_us;
	bool lock;	/* lock=on (default) | off */
	bool discard;	/* discard=on (default) | off */
	bool cache_none; /* cache=none | writeback (default) */
	enum fdvm_blk_aio aio; /* aio=auto (default) | sync | io_uring */
};

/* Parses a disk spec (what: the option, for messages). 0, or -EINVAL with
 * a one-line message in err; b->path is then NULL. */
int fdvm_parse_blk(const char *v, struct fdvm_blk_opts *b, const char *what, char *err,
		   size_t errlen);

/* The library's config for a parsed disk (path borrowed from b); notify as
 * --notify gave it (fdvm serve: auto). */
struct fdvm_virtio_blk_config fdvm_blk_opts_config(const struct fdvm_blk_opts *b,
						   enum fdvm_doorbell_mode notify);

/* A MAC address as 52:54:00:12:34:56; 0 or -EINVAL. */
int fdvm_parse_mac(const char *s, size_t len, uint8_t mac[6]);

/* A network device as --net and fdvm serve net take it:
 * tap=NAME[,mac=MAC][,queues=N][,poll=US] (--tap: NAME[,...]). */
struct fdvm_net_opts {
	char *tap; /* owned */
	uint8_t mac[6];
	bool mac_set;
	unsigned queues; /* queue pairs */
	unsigned poll_us;
};
/* The library's config for a parsed network device (tap borrowed from n). */
struct fdvm_virtio_net_config fdvm_net_opts_config(const struct fdvm_net_opts *n,
						   enum fdvm_doorbell_mode notify);
/* bare_name: the first item may be the tap's name alone (--tap). */
int fdvm_parse_net(const char *v, struct fdvm_net_opts *n, bool bare_name, const char *what,
		   char *err, size_t errlen);

/* --vhost-user TYPE,socket=PATH[,queues=N][,reconnect=SECONDS][,mac=MAC] */
struct fdvm_vhost_user_opts {
	uint32_t device_id; /* 1: net, 2: blk */
	char *socket; /* owned */
	unsigned queues; /* 0: the backend's */
	unsigned reconnect_s;
	uint8_t mac[6]; /* net */
	bool mac_set;
};
int fdvm_parse_vhost_user(const char *v, struct fdvm_vhost_user_opts *o, char *err,
			  size_t errlen);

/* Where the guest's COM1 goes (--serial). */
enum fdvm_serial { FDVM_SERIAL_STDIO, FDVM_SERIAL_NONE, FDVM_SERIAL_FILE };

struct fdvm_run_opts {
	uint64_t mem_size;
	unsigned cpus; /* --cpus, default 1 */
	uint64_t cpu_remove; /* --cpu host,-NAME...: fdvm_vm_config.cpu_remove */
	const char *initrd; /* --initrd FILE */
	const char *mem_arg; /* as the user wrote it, for messages */
	enum fdvm_unhandled unhandled_pio, unhandled_mmio;
	const char *kvm_path;
	enum fdvm_doorbell_mode notify; /* --notify */
	enum fdvm_seccomp_mode seccomp; /* --seccomp, default kill */
	const char *guest;
	char *cmdline; /* owned: the guest arguments joined by spaces */
	const char *devices[16]; /* --device NAME, in order */
	unsigned ndevices;
	struct fdvm_blk_opts blk[8];
	unsigned nblk;
	struct fdvm_vhost_user_opts vu[8];
	unsigned nvu;
	struct fdvm_net_opts net[8];
	unsigned nnet;
	enum fdvm_serial serial;
	const char *serial_path; /* FDVM_SERIAL_FILE */
	const char *api_socket;	/* --api-socket PATH, or NULL */
	int verbose;
	int quiet;
	int help;
};

/* stdio | none | file:PATH into o->serial and o->serial_path; 0 or -EINVAL. */
int fdvm_parse_serial(const char *v, struct fdvm_run_opts *o);

/*
 * Parses the arguments after "run". Returns 0 (opts filled, or help set),
 * or -EINVAL with a one-line message in err. Free opts with
 * fdvm_run_opts_free().
 */
int fdvm_parse_run(int argc, char **argv, struct fdvm_run_opts *opts, char *err,
		   size_t errlen);
void fdvm_run_opts_free(struct fdvm_run_opts *opts);

#endif
