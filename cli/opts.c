/* fdvm's option parsing: no globals, no exits, so tests can call it. */
#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "opts.h"
#include "fdvm/virtio.h"

int fdvm_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, shift = 20;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (toupper((unsigned char)*p)) {
	case '\0':
		break;
	case 'B':
		shift = 0;
		p++;
		break;
	case 'K':
		shift = 10;
		p++;
		break;
	case 'M':
		shift = 20;
		p++;
		break;
	case 'G':
		shift = 30;
		p++;
		break;
	case 'T':
		shift = 40;
		p++;
		break;
	default:
		return -EINVAL;
	}
	if (shift && (!strcasecmp(p, "iB") || !strcasecmp(p, "B")))
		p += strlen(p);
	if (*p || v == 0 || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

int fdvm_parse_unhandled(const char *s, enum fdvm_unhandled *out)
{
	if (!strcmp(s, "stop"))
		*out = FDVM_UNHANDLED_STOP;
	else if (!strcmp(s, "warn"))
		*out = FDVM_UNHANDLED_WARN;
	else if (!strcmp(s, "ignore"))
		*out = FDVM_UNHANDLED_IGNORE;
	else
		return -EINVAL;
	return 0;
}

/* Matches "--name VALUE" or "--name=VALUE" (and the short form if given). */
static int take_value(int argc, char **argv, int *i, const char *name, const char *shrt,
		      const char **value, char *err, size_t errlen)
{
	const char *a = argv[*i];
	size_t n = strlen(name);

	if (!strncmp(a, name, n) && a[n] == '=') {
		*value = a + n + 1;
		return 1;
	}
	/* A short option takes its value attached, as getopt does: -m128M. */
	if (shrt && !strncmp(a, shrt, strlen(shrt)) && a[strlen(shrt)]) {
		*value = a + strlen(shrt);
		return 1;
	}
	if (strcmp(a, name) && !(shrt && !strcmp(a, shrt)))
		return 0;
	if (*i + 1 >= argc) {
		snprintf(err, errlen, "option %s needs a value", a);
		return -EINVAL;
	}
	*value = argv[++*i];
	return 1;
}

static char *join(int argc, char **argv)
{
	size_t len = 1;
	for (int i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	char *s = calloc(1, len);
	if (!s)
		return NULL;
	for (int i = 0; i < argc; i++) {
		if (i)
			strcat(s, " ");
		strcat(s, argv[i]);
	}
	return s;
}

/*
 * The next item of a comma-separated option value, from *p on: up to a
 * comma that is not doubled (",," is a comma inside the item, as in QEMU's
 * syntax), unescaped into a new string. *p moves past it (NULL after the
 * last). NULL when there is none left, or with errno ENOMEM.
 */
static char *next_item(const char **p)
{
	const char *s = *p;
	if (!s)
		return NULL;
	char *item = malloc(strlen(s) + 1), *o = item;
	if (!item)
		return NULL;
	for (;;) {
		if (*s == ',' && s[1] == ',') {
			*o++ = ',';
			s += 2;
		} else if (*s == ',' || !*s) {
			*p = *s ? s + 1 : NULL;
			*o = 0;
			return item;
		} else {
			*o++ = *s++;
		}
	}
}

/* item is name=VALUE: VALUE, else NULL. */
static const char *value_of(const char *item, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(item, name, n) && item[n] == '=' ? item + n + 1 : NULL;
}

/* Parses N in [lo, hi] from the whole of s; false if it is not that. */
static bool parse_num(const char *s, unsigned long lo, unsigned long hi, unsigned *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || errno || v < lo || v > hi)
		return false;
	*out = (unsigned)v;
	return true;
}

int fdvm_parse_blk(const char *v, struct fdvm_blk_opts *b, const char *what, char *err,
		   size_t errlen)
{
	static const char usage[] =
		"FILE[,ro][,queues=N][,poll=US][,lock=on|off][,discard=on|off][,cache=writeback|none]"
		"[,aio=auto|sync|io_uring]";
	const char *p = v, *val;
	char *item;

	*b = (struct fdvm_blk_opts){ .queues = 1, .poll_us = FDVM_VIRTIO_POLL_US_DEFAULT,
				     .lock = true, .discard = true };
	b->path = next_item(&p);
	if (!b->path)
		return -ENOMEM;
	while ((item = next_item(&p))) {
		bool ok = true;
		if (!strcmp(item, "ro"))
			b->ro = true;
		else if ((val = value_of(item, "poll")))
			ok = parse_num(val, 0, 10000, &b->poll_us);
		else if ((val = value_of(item, "queues")))
			ok = parse_num(val, 1, 16, &b->queues);
		else if ((val = value_of(item, "lock")) || (val = value_of(item, "discard"))) {
			bool on = !strcmp(val, "on"), *field = item[0] == 'l' ? &b->lock : &b->discard;
			ok = on || !strcmp(val, "off");
			*field = on;
		} else if ((val = value_of(item, "aio"))) {
			b->aio = !strcmp(val, "sync") ? FDVM_BLK_AIO_SYNC
				 : !strcmp(val, "io_uring") ? FDVM_BLK_AIO_IO_URING : FDVM_BLK_AIO_AUTO;
			ok = b->aio != FDVM_BLK_AIO_AUTO || !strcmp(val, "auto");
		} else if ((val = value_of(item, "cache"))) {
			b->cache_none = !strcmp(val, "none");
			ok = b->cache_none || !strcmp(val, "writeback");
		} else {
			snprintf(err, errlen, "%s %s: unknown option %s (%s; ,, for a comma in FILE)",
				 what, v, item, usage);
			free(item);
			goto err;
		}
		if (!ok) {
			snprintf(err, errlen, "%s %s: %s", what, v,
				 item[0] == 'p' ? "poll must be 0..10000 (us)"
				 : item[0] == 'q' ? "queues must be 1..16"
				 : item[0] == 'l' ? "lock must be on or off"
				 : item[0] == 'c' ? "cache must be writeback or none"
				 : item[0] == 'a' ? "aio must be auto, sync or io_uring"
				 : "discard must be on or off");
			free(item);
			goto err;
		}
		free(item);
	}
	if (p) {
		snprintf(err, errlen, "%s: out of memory", v);
		goto err;
	}
	if (!*b->path) {
		snprintf(err, errlen, "%s %s: no file", what, v);
		goto err;
	}
	return 0;
err:
	free(b->path);
	b->path = NULL;
	return -EINVAL;
}

int fdvm_parse_mac(const char *s, size_t len, uint8_t mac[6])
{
	/* Six pairs of hex digits with colons: exactly 17 characters. */
	if (len != 17)
		return -EINVAL;
	for (unsigned i = 0; i < 6; i++) {
		const char *p = s + 3 * i;
		if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) ||
		    (i < 5 && p[2] != ':'))
			return -EINVAL;
		char hex[3] = { p[0], p[1], 0 };
		mac[i] = (uint8_t)strtoul(hex, NULL, 16);
	}
	/* A multicast address cannot be a NIC's. */
	return mac[0] & 1 ? -EINVAL : 0;
}

int fdvm_parse_net(const char *v, struct fdvm_net_opts *n, bool bare_name, const char *what,
		   char *err, size_t errlen)
{
	const char *usage = bare_name ? "NAME[,mac=MAC][,queues=N][,poll=US]"
				      : "tap=NAME[,mac=MAC][,queues=N][,poll=US]";
	const char *p = v, *val;
	char *item;

	*n = (struct fdvm_net_opts){ .queues = 1, .poll_us = FDVM_VIRTIO_POLL_US_DEFAULT };
	for (bool first = true; (item = next_item(&p)); first = false) {
		const char *msg = NULL;
		if ((val = value_of(item, "tap")) || (bare_name && first && !strchr(item, '='))) {
			if (!val)
				val = item;
			if (!*val || strlen(val) >= 16)
				msg = "a tap name has 1..15 characters";
			else if (!(free(n->tap), n->tap = strdup(val)))
				msg = "out of memory";
		} else if ((val = value_of(item, "mac"))) {
			if (fdvm_parse_mac(val, strlen(val), n->mac))
				msg = "mac must look like 52:54:00:12:34:56 (not multicast)";
			n->mac_set = true;
		} else if ((val = value_of(item, "queues"))) {
			if (!parse_num(val, 1, 16, &n->queues))
				msg = "queues (pairs) must be 1..16";
		} else if ((val = value_of(item, "poll"))) {
			if (!parse_num(val, 0, 10000, &n->poll_us))
				msg = "poll must be 0..10000 (us)";
		} else {
			snprintf(err, errlen, "%s %s: unknown option %s (%s)", what, v, item, usage);
			free(item);
			goto err;
		}
		free(item);
		if (msg) {
			snprintf(err, errlen, "%s %s: %s", what, v, msg);
			goto err;
		}
	}
	if (p) {
		snprintf(err, errlen, "%s: out of memory", v);
		goto err;
	}
	if (!n->tap) {
		snprintf(err, errlen, "%s %s: no tap (%s)", what, v, usage);
		return -EINVAL;
	}
	return 0;
err:
	free(n->tap);
	n->tap = NULL;
	return -EINVAL;
}

int fdvm_parse_vhost_user(const char *v, struct fdvm_vhost_user_opts *o, char *err,
			  size_t errlen)
{
	static const char usage[] = "blk,socket=PATH[,queues=N][,reconnect=SECONDS] or "
				    "net,socket=PATH[,mac=MAC][,reconnect=SECONDS]";
	const char *p = v, *val;
	char *item = next_item(&p);

	*o = (struct fdvm_vhost_user_opts){ 0 };
	if (item && !strcmp(item, "blk"))
		o->device_id = 2;
	else if (item && !strcmp(item, "net"))
		o->device_id = 1;
	free(item);
	if (!o->device_id) {
		snprintf(err, errlen, "--vhost-user %s: unknown device type (%s)", v, usage);
		return -EINVAL;
	}
	while ((item = next_item(&p))) {
		const char *msg = NULL;
		if ((val = value_of(item, "socket"))) {
			if (!*val)
				msg = "no socket=PATH";
			else if (!(free(o->socket), o->socket = strdup(val)))
				msg = "out of memory";
		} else if ((val = value_of(item, "mac")) && o->device_id == 1) {
			if (fdvm_parse_mac(val, strlen(val), o->mac))
				msg = "mac must look like 52:54:00:12:34:56 (not multicast)";
			o->mac_set = true;
		} else if ((val = value_of(item, "queues")) && o->device_id == 2) {
			if (!parse_num(val, 1, 16, &o->queues))
				msg = "queues must be 1..16";
		} else if ((val = value_of(item, "reconnect"))) {
			if (!parse_num(val, 0, 3600, &o->reconnect_s))
				msg = "reconnect must be 0..3600 (seconds)";
		} else {
			snprintf(err, errlen, "--vhost-user %s: unknown option %s (%s)", v, item, usage);
			free(item);
			goto err;
		}
		free(item);
		if (msg) {
			snprintf(err, errlen, "--vhost-user %s: %s", v, msg);
			goto err;
		}
	}
	if (p) {
		snprintf(err, errlen, "%s: out of memory", v);
		goto err;
	}
	if (!o->socket) {
		snprintf(err, errlen, "--vhost-user %s: no socket=PATH", v);
		return -EINVAL;
	}
	return 0;
err:
	free(o->socket);
	o->socket = NULL;
	return -EINVAL;
}

int fdvm_parse_seccomp(const char *s, enum fdvm_seccomp_mode *out)
{
	if (!strcmp(s, "off"))
		*out = FDVM_SECCOMP_OFF;
	else if (!strcmp(s, "log"))
		*out = FDVM_SECCOMP_LOG;
	else if (!strcmp(s, "kill"))
		*out = FDVM_SECCOMP_KILL;
	else
		return -EINVAL;
	return 0;
}

/* A single-valued option given again is an error, not "the last wins". */
static int once(unsigned *seen, unsigned bit, const char *name, char *err, size_t errlen)
{
	if (*seen & bit) {
		snprintf(err, errlen, "%s given twice (it takes one value)", name);
		return -EINVAL;
	}
	*seen |= bit;
	return 0;
}

enum {
	SEEN_MEM = 1 << 0, SEEN_PIO = 1 << 1, SEEN_MMIO = 1 << 2, SEEN_NOTIFY = 1 << 3,
	SEEN_SECCOMP = 1 << 4, SEEN_KVM = 1 << 5, SEEN_SERIAL = 1 << 6, SEEN_CMDLINE = 1 << 7,
	SEEN_API = 1 << 8, SEEN_CPUS = 1 << 9, SEEN_CPU = 1 << 10, SEEN_INITRD = 1 << 11,
};

int fdvm_parse_serial(const char *v, struct fdvm_run_opts *o)
{
	if (!strcmp(v, "stdio"))
		o->serial = FDVM_SERIAL_STDIO;
	else if (!strcmp(v, "none"))
		o->serial = FDVM_SERIAL_NONE;
	else if (!strncmp(v, "file:", 5) && v[5])
		o->serial = FDVM_SERIAL_FILE;
	else
		return -EINVAL;
	o->serial_path = o->serial == FDVM_SERIAL_FILE ? v + 5 : NULL;
	return 0;
}

/* --cpu host[,-FEATURE|,+FEATURE]...: what KVM supports, minus features. */
static int parse_cpu(const char *v, uint64_t *remove, char *err, size_t errlen)
{
	size_t first = strcspn(v, ",");
	if (first != 4 || strncmp(v, "host", 4)) {
		snprintf(err, errlen, "--cpu %s: expected host, then ,-FEATURE or ,+FEATURE (e.g. "
			 "host,-cx16,-xsave)", v);
		return -EINVAL;
	}
	*remove = 0;
	for (const char *p = v + first; *p == ',';) {
		p++;
		size_t l = strcspn(p, ",");
		char name[32];
		if ((p[0] != '-' && p[0] != '+') || l < 2 || l - 1 >= sizeof(name)) {
			snprintf(err, errlen, "--cpu %s: '%.*s': expected -FEATURE or +FEATURE", v, (int)l, p);
			return -EINVAL;
		}
		memcpy(name, p + 1, l - 1);
		name[l - 1] = 0;
		int f = fdvm_cpu_feature(name);
		if (f < 0) {
			int n = snprintf(err, errlen, "--cpu %s: no feature '%s' (known:", v, name);
			for (unsigned k = 0; fdvm_cpu_feature_name(k) && n > 0 && (size_t)n < errlen; k++)
				n += snprintf(err + n, errlen - (size_t)n, " %s", fdvm_cpu_feature_name(k));
			if (n > 0 && (size_t)n < errlen)
				snprintf(err + n, errlen - (size_t)n, ")");
			return -EINVAL;
		}
		if (p[0] == '-')
			*remove |= 1ull << f;
		else
			*remove &= ~(1ull << f);
		p += l;
	}
	return 0;
}

int fdvm_parse_run(int argc, char **argv, struct fdvm_run_opts *o, char *err,
		   size_t errlen)
{
	unsigned seen = 0;
	const char *cmdline = NULL;

	int i;

	memset(o, 0, sizeof(*o));
	o->mem_size = 64ull << 20;
	o->mem_arg = "64M";
	o->cpus = 1;
	o->kvm_path = "/dev/kvm";
	o->seccomp = FDVM_SECCOMP_KILL;
	for (i = 0; i < argc; i++) {
		const char *a = argv[i], *v;
		int r;

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			o->help = 1;
			return 0;
		}
		if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			o->verbose++;
			continue;
		}
		if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--mem", "-m", &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_MEM, "--mem", err, errlen)))
				return r;
			o->mem_arg = v;
			if (fdvm_parse_size(v, &o->mem_size)) {
				snprintf(err, errlen, "--mem %s: %s (try 64M or 1G)", v,
					 v[0] == '0' && strspn(v, "0") == strcspn(v, "bBkKmMgGtT") ?
					 "guest RAM cannot be zero" : "not a size");
				return -EINVAL;
			}
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--cpus", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_CPUS, "--cpus", err, errlen)))
				return r;
			char *end;
			errno = 0;
			unsigned long n = strtoul(v, &end, 10);
			if (!*v || *end || errno || n < 1 || n > FDVM_MAX_CPUS || v[0] == '-') {
				snprintf(err, errlen, "--cpus %s: expected a number of vCPUs from 1 to %d",
					 v, FDVM_MAX_CPUS);
				return -EINVAL;
			}
			o->cpus = (unsigned)n;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--cpu", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_CPU, "--cpu", err, errlen)))
				return r;
			if ((r = parse_cpu(v, &o->cpu_remove, err, errlen)))
				return r;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--initrd", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_INITRD, "--initrd", err, errlen)))
				return r;
			o->initrd = v;
			continue;
		}
		static const struct {
			const char *name;
			size_t field;
			unsigned bit;
		} policies[] = {
			{ "--unhandled-pio", offsetof(struct fdvm_run_opts, unhandled_pio), SEEN_PIO },
			{ "--unhandled-mmio", offsetof(struct fdvm_run_opts, unhandled_mmio), SEEN_MMIO },
		};
		for (size_t k = 0; !r && k < sizeof(policies) / sizeof(policies[0]); k++) {
			r = take_value(argc, argv, &i, policies[k].name, NULL, &v, err, errlen);
			if (r > 0 && once(&seen, policies[k].bit, policies[k].name, err, errlen))
				return -EINVAL;
			if (r > 0 && fdvm_parse_unhandled(v, (enum fdvm_unhandled *)((char *)o + policies[k].field))) {
				snprintf(err, errlen, "%s %s: expected stop, warn or ignore",
					 policies[k].name, v);
				return -EINVAL;
			}
		}
		if (r < 0)
			return r;
		if (r)
			continue;
		if ((r = take_value(argc, argv, &i, "--device", "-d", &v, err, errlen))) {
			if (r < 0)
				return r;
			if (strcmp(v, "pci-testdev") && strcmp(v, "virtio-rng") && strcmp(v, "virtio-console")) {
				snprintf(err, errlen,
					 "--device %s: unknown device (known: pci-testdev, virtio-rng, virtio-console)", v);
				return -EINVAL;
			}
			if (o->ndevices == sizeof(o->devices) / sizeof(o->devices[0])) {
				snprintf(err, errlen, "--device %s: too many devices (at most %zu)", v,
					 sizeof(o->devices) / sizeof(o->devices[0]));
				return -EINVAL;
			}
			o->devices[o->ndevices++] = v;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--blk", NULL, &v, err, errlen))) {
			if (r < 0)
				return r;
			if (o->nblk == sizeof(o->blk) / sizeof(o->blk[0])) {
				snprintf(err, errlen, "--blk %s: too many disks (at most %zu)", v,
					 sizeof(o->blk) / sizeof(o->blk[0]));
				return -EINVAL;
			}
			r = fdvm_parse_blk(v, &o->blk[o->nblk], "--blk", err, errlen);
			if (r)
				return r;
			o->nblk++;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--vhost-user", NULL, &v, err, errlen))) {
			if (r < 0)
				return r;
			if (o->nvu == sizeof(o->vu) / sizeof(o->vu[0])) {
				snprintf(err, errlen, "--vhost-user %s: too many devices (at most %zu)", v,
					 sizeof(o->vu) / sizeof(o->vu[0]));
				return -EINVAL;
			}
			r = fdvm_parse_vhost_user(v, &o->vu[o->nvu], err, errlen);
			if (r)
				return r;
			o->nvu++;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--net", NULL, &v, err, errlen))) {
			if (r < 0)
				return r;
			if (o->nnet == sizeof(o->net) / sizeof(o->net[0])) {
				snprintf(err, errlen, "--net %s: too many network devices (at most %zu)", v,
					 sizeof(o->net) / sizeof(o->net[0]));
				return -EINVAL;
			}
			r = fdvm_parse_net(v, &o->net[o->nnet], false, "--net", err, errlen);
			if (r)
				return r;
			o->nnet++;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--notify", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_NOTIFY, "--notify", err, errlen)))
				return r;
			if (!strcmp(v, "auto"))
				o->notify = FDVM_DOORBELL_AUTO;
			else if (!strcmp(v, "kernel"))
				o->notify = FDVM_DOORBELL_KERNEL;
			else if (!strcmp(v, "userspace"))
				o->notify = FDVM_DOORBELL_USERSPACE;
			else {
				snprintf(err, errlen, "--notify %s: expected auto, kernel or userspace", v);
				return -EINVAL;
			}
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--seccomp", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_SECCOMP, "--seccomp", err, errlen)))
				return r;
			if (fdvm_parse_seccomp(v, &o->seccomp)) {
				snprintf(err, errlen, "--seccomp %s: expected off, log or kill", v);
				return -EINVAL;
			}
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--kvm", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_KVM, "--kvm", err, errlen)))
				return r;
			o->kvm_path = v;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--serial", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_SERIAL, "--serial", err, errlen)))
				return r;
			if (fdvm_parse_serial(v, o)) {
				snprintf(err, errlen, "--serial %s: expected stdio, none or file:PATH", v);
				return -EINVAL;
			}
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--api-socket", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_API, "--api-socket", err, errlen)))
				return r;
			if (!*v) {
				snprintf(err, errlen, "--api-socket needs a path");
				return -EINVAL;
			}
			o->api_socket = v;
			continue;
		}
		if ((r = take_value(argc, argv, &i, "--cmdline", NULL, &v, err, errlen))) {
			if (r < 0 || (r = once(&seen, SEEN_CMDLINE, "--cmdline", err, errlen)))
				return r;
			cmdline = v;
			continue;
		}
		if (!strcmp(a, "--")) {
			i++; /* the end of fdvm's options: the guest file is next */
			break;
		}
		if (a[0] == '-' && a[1]) {
			snprintf(err, errlen, "unknown option %s (try fdvm run --help)", a);
			return -EINVAL;
		}
		break;
	}
	if (i >= argc) {
		snprintf(err, errlen, "no guest given (fdvm run [OPTIONS] GUEST.elf [-- ARGS...])");
		return -EINVAL;
	}
	if (o->quiet && o->verbose) {
		snprintf(err, errlen, "-q and -v: choose one");
		return -EINVAL;
	}
	o->guest = argv[i++];
	/* After the guest file: nothing, or -- and the guest's arguments. */
	if (i < argc && strcmp(argv[i], "--")) {
		if (argv[i][0] == '-' && argv[i][1])
			snprintf(err, errlen, "option %s after the guest file %s: fdvm's options go "
				 "before it, the guest's arguments after --", argv[i], o->guest);
		else
			snprintf(err, errlen, "%s after the guest file %s: the guest's arguments go "
				 "after -- (fdvm run [OPTIONS] GUEST.elf -- ARGS...)", argv[i], o->guest);
		return -EINVAL;
	}
	if (i < argc)
		i++;
	if (cmdline && i < argc) {
		snprintf(err, errlen, "--cmdline and arguments after --: give the guest's command "
			 "line one way");
		return -EINVAL;
	}
	o->cmdline = cmdline ? strdup(cmdline) : join(argc - i, argv + i);
	if (!o->cmdline) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

void fdvm_run_opts_free(struct fdvm_run_opts *o)
{
	for (unsigned i = 0; i < o->nblk; i++)
		free(o->blk[i].path);
	o->nblk = 0;
	for (unsigned i = 0; i < o->nvu; i++)
		free(o->vu[i].socket);
	o->nvu = 0;
	for (unsigned i = 0; i < o->nnet; i++)
		free(o->net[i].tap);
	o->nnet = 0;
	free(o->cmdline);
	o->cmdline = NULL;
}

struct fdvm_virtio_blk_config fdvm_blk_opts_config(const struct fdvm_blk_opts *b,
						   enum fdvm_doorbell_mode notify)
{
	/* Every field from the spec: nothing left to a default (this file
	 * stays free of libfdvm for its unit test). */
	return (struct fdvm_virtio_blk_config){ .path = b->path, .read_only = b->ro,
						.num_queues = b->queues, .poll_us = b->poll_us,
						.notify = notify, .no_lock = !b->lock,
						.no_discard = !b->discard,
						.cache = b->cache_none ? FDVM_BLK_CACHE_NONE
								       : FDVM_BLK_CACHE_WRITEBACK,
						.aio = b->aio };
}

struct fdvm_virtio_net_config fdvm_net_opts_config(const struct fdvm_net_opts *n,
						   enum fdvm_doorbell_mode notify)
{
	struct fdvm_virtio_net_config c = { .tap = n->tap, .mac_set = n->mac_set,
					    .num_pairs = n->queues, .poll_us = n->poll_us,
					    .notify = notify };
	memcpy(c.mac, n->mac, sizeof(c.mac));
	return c;
}
