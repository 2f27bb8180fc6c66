/*
 * Unit tests for fdvm's command-line option parsing (cli/opts.c):
 * fdvm_parse_size(), fdvm_parse_unhandled() and fdvm_parse_run().
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "opts.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define TiB ((uint64_t)1 << 40)

#define assert_contains(hay, needle)                                          \
	do {                                                                  \
		const char *h_ = (hay), *n_ = (needle);                       \
		if (!strstr(h_, n_))                                          \
			fail_msg("\"%s\" does not contain \"%s\"", h_, n_);   \
	} while (0)

/* ---- fdvm_parse_size ------------------------------------------------------ */

static void expect_size(const char *s, uint64_t want)
{
	uint64_t got = 0xdeadbeef;
	int r = fdvm_parse_size(s, &got);

	if (r != 0)
		fail_msg("\"%s\": rejected (%d), expected %llu", s, r, (unsigned long long)want);
	if (got != want)
		fail_msg("\"%s\": got %llu, expected %llu", s, (unsigned long long)got,
			 (unsigned long long)want);
}

static void expect_bad_size(const char *s)
{
	uint64_t got = 0;
	int r = fdvm_parse_size(s, &got);

	if (r != -EINVAL)
		fail_msg("\"%s\": got %d (value %llu), expected -EINVAL", s ? s : "(null)", r,
			 (unsigned long long)got);
}

static void test_size_bare_is_mib(void **state)
{
	(void)state;
	expect_size("1", MiB);
	expect_size("64", 64 * MiB);
	expect_size("512", 512 * MiB);
	expect_size("4096", 4096 * MiB);
	expect_size("007", 7 * MiB);
}

static void test_size_suffixes(void **state)
{
	(void)state;
	expect_size("1048576B", 1048576);
	expect_size("1B", 1);
	expect_size("512K", 512 * KiB);
	expect_size("64M", 64 * MiB);
	expect_size("1G", GiB);
	expect_size("3G", 3 * GiB);
	expect_size("2T", 2 * TiB);
}

static void test_size_case_insensitive(void **state)
{
	(void)state;
	expect_size("1048576b", 1048576);
	expect_size("512k", 512 * KiB);
	expect_size("64m", 64 * MiB);
	expect_size("1g", GiB);
	expect_size("2t", 2 * TiB);
}

static void test_size_long_suffixes(void **state)
{
	(void)state;
	expect_size("1KiB", KiB);
	expect_size("1kib", KiB);
	expect_size("1KIB", KiB);
	expect_size("1KB", KiB);
	expect_size("64MB", 64 * MiB);
	expect_size("64mb", 64 * MiB);
	expect_size("64MiB", 64 * MiB);
	expect_size("2GiB", 2 * GiB);
	expect_size("2Gb", 2 * GiB);
	expect_size("1TiB", TiB);
	expect_size("1TB", TiB);

	/* Only "B", "iB" may follow the multiplier, and nothing may follow B. */
	expect_bad_size("1Ki");
	expect_bad_size("1KiBs");
	expect_bad_size("1KBB");
	expect_bad_size("1MiBB");
	expect_bad_size("1Mb ");
	expect_bad_size("1BB");
	expect_bad_size("1BiB");
	expect_bad_size("1Bi");
	expect_bad_size("1KM");
	expect_bad_size("1GG");
}

static void test_size_rejects_garbage(void **state)
{
	(void)state;
	expect_bad_size(NULL);
	expect_bad_size("");
	expect_bad_size("abc");
	expect_bad_size("M");
	expect_bad_size("G1");
	expect_bad_size("-1");
	expect_bad_size("+1");
	expect_bad_size(" 1");
	expect_bad_size("1 ");
	expect_bad_size("1 G");
	expect_bad_size("12X");
	expect_bad_size("12P");
	expect_bad_size("1.5G");
	expect_bad_size("1,5G");
	expect_bad_size("0x10");
	expect_bad_size("1e3");
	expect_bad_size("64M\n");
}

static void test_size_rejects_zero(void **state)
{
	(void)state;
	expect_bad_size("0");
	expect_bad_size("00");
	expect_bad_size("0B");
	expect_bad_size("0K");
	expect_bad_size("0M");
	expect_bad_size("0G");
	expect_bad_size("0T");
	expect_bad_size("0KiB");
}

static void test_size_rejects_overflow(void **state)
{
	(void)state;
	/* The digits themselves overflow. */
	expect_bad_size("99999999999999999999");
	expect_bad_size("99999999999999999999B");
	expect_bad_size("18446744073709551616B"); /* 2^64 */
	expect_bad_size("100000000000000000000000000000000000000000B");

	/* The number fits but not once scaled. */
	expect_bad_size("17179869184T");   /* 2^34 TiB = 2^74 */
	expect_bad_size("16777216T");      /* 2^24 TiB = 2^64 */
	expect_bad_size("17179869184G");   /* 2^34 GiB = 2^64 */
	expect_bad_size("17592186044416"); /* 2^44 MiB = 2^64, bare */
	expect_bad_size("17592186044416M");
	expect_bad_size("18014398509481984K"); /* 2^54 KiB = 2^64 */

	/* The largest that fit. */
	expect_size("16777215T", 16777215 * TiB);
	expect_size("17179869183G", 17179869183 * GiB);
	expect_size("17592186044415", 17592186044415 * MiB);
	expect_size("18014398509481983K", 18014398509481983 * KiB);
	expect_size("18446744073709551609B", 18446744073709551609u);
}

/* ---- fdvm_parse_unhandled ------------------------------------------------- */

static void test_unhandled(void **state)
{
	(void)state;
	enum fdvm_unhandled u;

	u = FDVM_UNHANDLED_IGNORE;
	assert_int_equal(fdvm_parse_unhandled("stop", &u), 0);
	assert_int_equal(u, FDVM_UNHANDLED_STOP);
	assert_int_equal(fdvm_parse_unhandled("warn", &u), 0);
	assert_int_equal(u, FDVM_UNHANDLED_WARN);
	assert_int_equal(fdvm_parse_unhandled("ignore", &u), 0);
	assert_int_equal(u, FDVM_UNHANDLED_IGNORE);

	const char *bad[] = { "", "sto", "stopp", "stop ", " warn", "warning", "ignored",
			      "ign", "none", "1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		u = FDVM_UNHANDLED_WARN;
		if (fdvm_parse_unhandled(bad[i], &u) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(u, FDVM_UNHANDLED_WARN); /* untouched */
	}
}

/* ---- fdvm_parse_run ------------------------------------------------------- */

#define ARGV(...) ((char *[]){ __VA_ARGS__ })
#define ARGC(...) ((int)(sizeof(ARGV(__VA_ARGS__)) / sizeof(char *)))

/* Parses the arguments, expecting success; the caller frees *o. */
#define RUN_OK(o, ...)                                                        \
	run_ok((o), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))
/* Parses the arguments, expecting -EINVAL and an error containing what. */
#define RUN_BAD(what, ...)                                                    \
	run_bad((what), ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

static void run_ok(struct fdvm_run_opts *o, int argc, char **argv)
{
	char err[256] = "";
	int r = fdvm_parse_run(argc, argv, o, err, sizeof(err));

	if (r) {
		fdvm_run_opts_free(o);
		fail_msg("rejected (%d): %s", r, err);
	}
}

static void run_bad(const char *what, int argc, char **argv)
{
	struct fdvm_run_opts o;
	char err[256] = "";
	int r = fdvm_parse_run(argc, argv, &o, err, sizeof(err));

	fdvm_run_opts_free(&o);
	if (r != -EINVAL)
		fail_msg("expected -EINVAL, got %d (%s)", r, err);
	assert_contains(err, what);
}

static void assert_defaults_except_guest(const struct fdvm_run_opts *o)
{
	assert_int_equal(o->mem_size, 64 * MiB);
	assert_string_equal(o->mem_arg, "64M");
	assert_int_equal(o->unhandled_pio, FDVM_UNHANDLED_STOP);
	assert_int_equal(o->unhandled_mmio, FDVM_UNHANDLED_STOP);
	assert_string_equal(o->kvm_path, "/dev/kvm");
	assert_int_equal(o->verbose, 0);
	assert_int_equal(o->help, 0);
	assert_int_equal(o->ndevices, 0);
	assert_int_equal(o->nblk, 0);
	assert_int_equal(o->seccomp, FDVM_SECCOMP_KILL);
}

static void test_run_defaults(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	memset(&o, 0x5a, sizeof(o)); /* the parser must set every field */
	RUN_OK(&o, "guest.elf");
	assert_defaults_except_guest(&o);
	assert_string_equal(o.guest, "guest.elf");
	assert_non_null(o.cmdline);
	assert_string_equal(o.cmdline, "");
	fdvm_run_opts_free(&o);
	assert_null(o.cmdline);
}

static void test_run_mem(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--mem", "128M", "g.elf");
	assert_int_equal(o.mem_size, 128 * MiB);
	assert_string_equal(o.mem_arg, "128M");
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--mem=1G", "g.elf");
	assert_int_equal(o.mem_size, GiB);
	assert_string_equal(o.mem_arg, "1G");
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "-m", "2G", "g.elf");
	assert_int_equal(o.mem_size, 2 * GiB);
	assert_string_equal(o.mem_arg, "2G");
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "-m", "256", "g.elf"); /* bare number: MiB */
	assert_int_equal(o.mem_size, 256 * MiB);
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "-m512M", "g.elf"); /* attached, as getopt takes it */
	assert_int_equal(o.mem_size, 512 * MiB);
	assert_string_equal(o.mem_arg, "512M");
	fdvm_run_opts_free(&o);
}

static void test_run_unhandled(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--unhandled-pio", "ignore", "g.elf");
	assert_int_equal(o.unhandled_pio, FDVM_UNHANDLED_IGNORE);
	assert_int_equal(o.unhandled_mmio, FDVM_UNHANDLED_STOP);
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--unhandled-mmio=warn", "g.elf");
	assert_int_equal(o.unhandled_pio, FDVM_UNHANDLED_STOP);
	assert_int_equal(o.unhandled_mmio, FDVM_UNHANDLED_WARN);
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--unhandled-mmio", "ignore", "--unhandled-pio=warn", "g.elf");
	assert_int_equal(o.unhandled_pio, FDVM_UNHANDLED_WARN);
	assert_int_equal(o.unhandled_mmio, FDVM_UNHANDLED_IGNORE);
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--unhandled-pio=stop", "g.elf");
	assert_int_equal(o.unhandled_pio, FDVM_UNHANDLED_STOP);
	fdvm_run_opts_free(&o);
}

static void test_run_kvm_path(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--kvm", "/tmp/fake-kvm", "g.elf");
	assert_string_equal(o.kvm_path, "/tmp/fake-kvm");
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--kvm=/dev/other", "g.elf");
	assert_string_equal(o.kvm_path, "/dev/other");
	fdvm_run_opts_free(&o);
}

static void test_run_verbose(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "-v", "g.elf");
	assert_int_equal(o.verbose, 1);
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "-v", "--verbose", "-v", "g.elf");
	assert_int_equal(o.verbose, 3);
	fdvm_run_opts_free(&o);
}

static void test_run_help(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "-h");
	assert_int_equal(o.help, 1);
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--help");
	assert_int_equal(o.help, 1);
	fdvm_run_opts_free(&o);

	/* Help wins over a missing guest and over what follows. */
	RUN_OK(&o, "--mem", "1G", "-h", "--no-such-option");
	assert_int_equal(o.help, 1);
	fdvm_run_opts_free(&o);

	/* After the guest and --, -h is the guest's. */
	RUN_OK(&o, "g.elf", "--", "-h");
	assert_int_equal(o.help, 0);
	assert_string_equal(o.cmdline, "-h");
	fdvm_run_opts_free(&o);
}

static void test_run_cmdline_after_dashdash(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "g.elf", "--", "console=ttyS0", "quiet", "init=/bin/sh");
	assert_string_equal(o.guest, "g.elf");
	assert_string_equal(o.cmdline, "console=ttyS0 quiet init=/bin/sh");
	fdvm_run_opts_free(&o);

	/* Options before the guest, and guest arguments that look like options. */
	RUN_OK(&o, "-m", "1G", "-v", "g.elf", "--", "--mem", "2G", "-v", "a b");
	assert_int_equal(o.mem_size, GiB);
	assert_int_equal(o.verbose, 1);
	assert_string_equal(o.cmdline, "--mem 2G -v a b");
	fdvm_run_opts_free(&o);

	/* Only the first "--" is fdvm's. */
	RUN_OK(&o, "g.elf", "--", "--", "x");
	assert_string_equal(o.cmdline, "-- x");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "g.elf", "--", "one");
	assert_string_equal(o.cmdline, "one");
	fdvm_run_opts_free(&o);
}

static void test_run_after_the_guest(void **state)
{
	(void)state;
	/* Guest arguments only after --: an option after the guest file is not
	 * quietly given to the guest. */
	RUN_BAD("option --mem after the guest file g.elf: fdvm's options go before it, the "
		"guest's arguments after --", "g.elf", "--mem", "128M");
	RUN_BAD("code=5 after the guest file g.elf: the guest's arguments go after --", "g.elf",
		"code=5", "user");
	RUN_BAD("option -v after the guest file", "g.elf", "-v", "--", "x");
}

static void test_run_dashdash_before_the_guest(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	/* -- ends fdvm's options: a guest file whose name starts with a dash. */
	RUN_OK(&o, "-m", "1G", "--", "-odd.elf", "--", "a");
	assert_string_equal(o.guest, "-odd.elf");
	assert_string_equal(o.cmdline, "a");
	assert_int_equal(o.mem_size, GiB);
	fdvm_run_opts_free(&o);
}

static void test_run_repeated_and_attached(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_BAD("--mem given twice (it takes one value)", "--mem", "1G", "-m", "2G", "g.elf");
	RUN_BAD("--kvm given twice", "--kvm", "/a", "--kvm=/b", "g.elf");
	RUN_BAD("--notify given twice", "--notify", "auto", "--notify", "auto", "g.elf");
	RUN_BAD("--seccomp given twice", "--seccomp=log", "--seccomp=log", "g.elf");
	RUN_BAD("--unhandled-pio given twice", "--unhandled-pio=warn", "--unhandled-pio", "stop",
		"g.elf");
	RUN_BAD("--serial given twice", "--serial=none", "--serial=stdio", "g.elf");
	RUN_BAD("--api-socket given twice", "--api-socket", "/a", "--api-socket=/b", "g.elf");
	RUN_BAD("--api-socket needs a path", "--api-socket=", "g.elf");
	RUN_OK(&o, "--api-socket", "/run/vm.sock", "g.elf");
	assert_string_equal(o.api_socket, "/run/vm.sock");
	fdvm_run_opts_free(&o);
	RUN_OK(&o, "g.elf");
	assert_null(o.api_socket);
	fdvm_run_opts_free(&o);
	/* Repeatable ones stay repeatable. */
	RUN_OK(&o, "-m128M", "-dpci-testdev", "-d", "virtio-rng", "g.elf");
	assert_int_equal(o.mem_size, 128 * MiB);
	assert_int_equal(o.ndevices, 2);
	assert_string_equal(o.devices[0], "pci-testdev");
	fdvm_run_opts_free(&o);
}

static void test_run_serial_cmdline_quiet(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "g.elf");
	assert_int_equal(o.serial, FDVM_SERIAL_STDIO);
	assert_int_equal(o.quiet, 0);
	fdvm_run_opts_free(&o);
	RUN_OK(&o, "--serial", "file:/tmp/console.log", "-q", "--cmdline", "code=5 user", "g.elf");
	assert_int_equal(o.serial, FDVM_SERIAL_FILE);
	assert_string_equal(o.serial_path, "/tmp/console.log");
	assert_int_equal(o.quiet, 1);
	assert_string_equal(o.cmdline, "code=5 user");
	fdvm_run_opts_free(&o);
	RUN_OK(&o, "--serial=none", "g.elf");
	assert_int_equal(o.serial, FDVM_SERIAL_NONE);
	assert_null(o.serial_path);
	fdvm_run_opts_free(&o);
	RUN_BAD("--serial file:: expected stdio, none or file:PATH", "--serial", "file:", "g.elf");
	RUN_BAD("--serial tty: expected stdio, none or file:PATH", "--serial", "tty", "g.elf");
	RUN_BAD("--cmdline and arguments after --", "--cmdline", "a", "g.elf", "--", "b");
	RUN_BAD("-q and -v: choose one", "-q", "-v", "g.elf");
}

static void test_run_empty_cmdline(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "g.elf", "--");
	assert_string_equal(o.guest, "g.elf");
	assert_non_null(o.cmdline);
	assert_string_equal(o.cmdline, "");
	fdvm_run_opts_free(&o);

	RUN_OK(&o, "--mem=128M", "g.elf");
	assert_non_null(o.cmdline);
	assert_string_equal(o.cmdline, "");
	fdvm_run_opts_free(&o);
}

static void test_run_all_options(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "-v", "--mem", "3G", "--unhandled-pio=warn", "--unhandled-mmio", "ignore",
	       "--kvm", "/k", "/path/to/guest.elf", "--", "x=1", "y");
	assert_int_equal(o.mem_size, 3 * GiB);
	assert_string_equal(o.mem_arg, "3G");
	assert_int_equal(o.unhandled_pio, FDVM_UNHANDLED_WARN);
	assert_int_equal(o.unhandled_mmio, FDVM_UNHANDLED_IGNORE);
	assert_string_equal(o.kvm_path, "/k");
	assert_int_equal(o.verbose, 1);
	assert_int_equal(o.help, 0);
	assert_string_equal(o.guest, "/path/to/guest.elf");
	assert_string_equal(o.cmdline, "x=1 y");
	fdvm_run_opts_free(&o);
}

static void test_run_devices_and_disks(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--device", "pci-testdev", "-d", "pci-testdev", "--blk", "disk.img",
	       "--blk=ro.img,ro,queues=4", "g.elf");
	assert_int_equal(o.ndevices, 2);
	assert_string_equal(o.devices[0], "pci-testdev");
	assert_string_equal(o.devices[1], "pci-testdev");
	assert_int_equal(o.nblk, 2);
	assert_string_equal(o.blk[0].path, "disk.img");
	assert_false(o.blk[0].ro);
	assert_int_equal(o.blk[0].queues, 1);
	assert_string_equal(o.blk[1].path, "ro.img");
	assert_true(o.blk[1].ro);
	assert_int_equal(o.blk[1].queues, 4);
	assert_string_equal(o.guest, "g.elf");
	fdvm_run_opts_free(&o);
	assert_int_equal(o.nblk, 0);

	RUN_BAD("--device nope: unknown device", "--device", "nope", "g.elf");
	RUN_BAD("queues must be 1..16", "--blk", "d.img,queues=0", "g.elf");
	RUN_BAD("queues must be 1..16", "--blk", "d.img,queues=17", "g.elf");
	RUN_BAD("unknown option", "--blk", "d.img,rw", "g.elf");
	RUN_BAD("no file", "--blk", ",ro", "g.elf");
	/* The disks parsed before the error are freed (ASan/LSan would tell). */
	RUN_BAD("unknown option", "--blk", "a.img", "--blk", "b.img,bogus", "g.elf");
}

static void test_run_vhost_user(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--vhost-user", "blk,socket=/run/a.sock", "--vhost-user=blk,queues=2,socket=b.sock,reconnect=3",
	       "g.elf");
	assert_int_equal(o.nvu, 2);
	assert_int_equal(o.vu[0].device_id, 2);
	assert_string_equal(o.vu[0].socket, "/run/a.sock");
	assert_int_equal(o.vu[0].queues, 0);
	assert_int_equal(o.vu[0].reconnect_s, 0);
	assert_string_equal(o.vu[1].socket, "b.sock");
	assert_int_equal(o.vu[1].queues, 2);
	assert_int_equal(o.vu[1].reconnect_s, 3);
	fdvm_run_opts_free(&o);
	assert_int_equal(o.nvu, 0);

	RUN_BAD("unknown device type", "--vhost-user", "netx,socket=x", "g.elf");
	RUN_BAD("unknown device type", "--vhost-user", "blkx,socket=x", "g.elf");
	RUN_BAD("no socket=PATH", "--vhost-user", "blk", "g.elf");
	RUN_BAD("no socket=PATH", "--vhost-user", "blk,socket=", "g.elf");
	RUN_BAD("queues must be 1..16", "--vhost-user", "blk,socket=x,queues=0", "g.elf");
	RUN_BAD("queues must be 1..16", "--vhost-user", "blk,socket=x,queues=2z", "g.elf");
	RUN_BAD("reconnect must be 0..3600", "--vhost-user", "blk,socket=x,reconnect=", "g.elf");
	RUN_BAD("reconnect must be 0..3600", "--vhost-user", "blk,socket=x,reconnect=9999", "g.elf");
	RUN_BAD("unknown option", "--vhost-user", "blk,socket=x,poll=3", "g.elf");
	/* What was parsed before the error is freed (ASan/LSan would tell). */
	RUN_BAD("unknown option", "--vhost-user", "blk,socket=a", "--vhost-user", "blk,socket=b,x", "g.elf");
	RUN_OK(&o, "--vhost-user", "blk,socket=/run/a,,b.sock,queues=1", "g.elf");
	assert_string_equal(o.vu[0].socket, "/run/a,b.sock");
	fdvm_run_opts_free(&o);
}

static void test_run_vhost_user_net(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--vhost-user", "net,socket=n.sock,mac=02:00:00:aa:BB:0c,reconnect=1", "g.elf");
	assert_int_equal(o.vu[0].device_id, 1);
	assert_string_equal(o.vu[0].socket, "n.sock");
	assert_true(o.vu[0].mac_set);
	const uint8_t mac[6] = { 2, 0, 0, 0xaa, 0xbb, 0x0c };
	assert_memory_equal(o.vu[0].mac, mac, 6);
	assert_int_equal(o.vu[0].reconnect_s, 1);
	fdvm_run_opts_free(&o);
	/* queues= is a blk option; mac= a net one. */
	RUN_BAD("unknown option", "--vhost-user", "net,socket=x,queues=2", "g.elf");
	RUN_BAD("unknown option", "--vhost-user", "blk,socket=x,mac=02:00:00:00:00:01", "g.elf");
	RUN_BAD("mac must look like", "--vhost-user", "net,socket=x,mac=02:00:00:00:00", "g.elf");
}

static void test_run_net(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--net", "tap=tap0", "--net=tap=t1,mac=52:54:00:01:02:03,queues=4,poll=0", "g.elf");
	assert_int_equal(o.nnet, 2);
	assert_string_equal(o.net[0].tap, "tap0");
	assert_false(o.net[0].mac_set);
	assert_int_equal(o.net[0].queues, 1);
	assert_int_equal(o.net[0].poll_us, 50);
	assert_string_equal(o.net[1].tap, "t1");
	assert_true(o.net[1].mac_set);
	assert_int_equal(o.net[1].mac[5], 3);
	assert_int_equal(o.net[1].queues, 4);
	assert_int_equal(o.net[1].poll_us, 0);
	fdvm_run_opts_free(&o);
	assert_int_equal(o.nnet, 0);

	RUN_BAD("no tap", "--net", "mac=52:54:00:01:02:03", "g.elf");
	RUN_BAD("unknown option", "--net", "tap0", "g.elf"); /* --net wants tap=NAME */
	RUN_BAD("a tap name has 1..15 characters", "--net", "tap=", "g.elf");
	RUN_BAD("a tap name has 1..15 characters", "--net", "tap=abcdefghijklmnop", "g.elf");
	RUN_BAD("queues (pairs) must be 1..16", "--net", "tap=t,queues=17", "g.elf");
	RUN_BAD("queues (pairs) must be 1..16", "--net", "tap=t,queues=", "g.elf");
	RUN_BAD("poll must be 0..10000", "--net", "tap=t,poll=-1", "g.elf");
	RUN_BAD("mac must look like", "--net", "tap=t,mac=01:00:5e:00:00:01", "g.elf"); /* multicast */
	RUN_BAD("mac must look like", "--net", "tap=t,mac=52:54:00:01:02:0g", "g.elf");
	RUN_BAD("mac must look like", "--net", "tap=t,mac=52-54-00-01-02-03", "g.elf");
	RUN_BAD("unknown option", "--net", "tap=a", "--net", "tap=b,ro", "g.elf");
}

static void test_parse_net_bare_name(void **state)
{
	(void)state;
	struct fdvm_net_opts n;
	char err[128];

	assert_int_equal(fdvm_parse_net("tap7,queues=2", &n, true, "--tap", err, sizeof(err)), 0);
	assert_string_equal(n.tap, "tap7");
	assert_int_equal(n.queues, 2);
	free(n.tap);
	assert_int_equal(fdvm_parse_net("tap=x", &n, true, "--tap", err, sizeof(err)), 0);
	assert_string_equal(n.tap, "x");
	free(n.tap);
	/* Only the first item may be a bare name. */
	assert_int_equal(fdvm_parse_net("a,b", &n, true, "--tap", err, sizeof(err)), -EINVAL);
	assert_null(n.tap);
	assert_contains(err, "--tap a,b: unknown option");
}

static void test_parse_blk(void **state)
{
	(void)state;
	struct fdvm_blk_opts b;
	char err[128];

	assert_int_equal(fdvm_parse_blk("d.img,poll=0,ro", &b, "serve", err, sizeof(err)), 0);
	assert_string_equal(b.path, "d.img");
	assert_true(b.ro);
	assert_int_equal(b.poll_us, 0);
	assert_int_equal(b.queues, 1);
	struct fdvm_virtio_blk_config bc = fdvm_blk_opts_config(&b, FDVM_DOORBELL_USERSPACE);
	assert_string_equal(bc.path, "d.img");
	assert_true(bc.read_only);
	assert_int_equal(bc.poll_us, 0);
	assert_int_equal(bc.num_queues, 1);
	assert_int_equal(bc.notify, FDVM_DOORBELL_USERSPACE);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,poll=10001", &b, "serve", err, sizeof(err)), -EINVAL);
	assert_null(b.path);
	assert_contains(err, "serve d.img,poll=10001: poll must be 0..10000");

	/* ",," is a comma in the file's name, as in QEMU; defaults: locked,
	 * discard offered. */
	assert_int_equal(fdvm_parse_blk("a,,b,,.img,ro", &b, "serve", err, sizeof(err)), 0);
	assert_string_equal(b.path, "a,b,.img");
	assert_true(b.ro && b.lock && b.discard);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,lock=off,discard=off", &b, "serve", err, sizeof(err)), 0);
	assert_false(b.lock || b.discard);
	bc = fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO);
	assert_true(bc.no_lock && bc.no_discard);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,cache=none", &b, "serve", err, sizeof(err)), 0);
	assert_int_equal(fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO).cache, FDVM_BLK_CACHE_NONE);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,cache=writeback", &b, "serve", err, sizeof(err)), 0);
	assert_int_equal(fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO).cache, FDVM_BLK_CACHE_WRITEBACK);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,aio=io_uring", &b, "serve", err, sizeof(err)), 0);
	assert_int_equal(fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO).aio, FDVM_BLK_AIO_IO_URING);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,aio=sync", &b, "serve", err, sizeof(err)), 0);
	assert_int_equal(fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO).aio, FDVM_BLK_AIO_SYNC);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img", &b, "serve", err, sizeof(err)), 0);
	assert_int_equal(fdvm_blk_opts_config(&b, FDVM_DOORBELL_AUTO).aio, FDVM_BLK_AIO_AUTO);
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,aio=native", &b, "serve", err, sizeof(err)), -EINVAL);
	assert_contains(err, "aio must be auto, sync or io_uring");
	assert_int_equal(fdvm_parse_blk("d.img,cache=directsync", &b, "serve", err, sizeof(err)), -EINVAL);
	assert_contains(err, "cache must be writeback or none");
	assert_int_equal(fdvm_parse_blk("d.img,lock=maybe", &b, "serve", err, sizeof(err)), -EINVAL);
	assert_contains(err, "lock must be on or off");
	assert_int_equal(fdvm_parse_blk("d.img,,", &b, "serve", err, sizeof(err)), 0);
	assert_string_equal(b.path, "d.img,");
	free(b.path);
	assert_int_equal(fdvm_parse_blk("d.img,", &b, "serve", err, sizeof(err)), -EINVAL);
	assert_null(b.path);
}

static void test_run_no_guest(void **state)
{
	(void)state;
	struct fdvm_run_opts o;
	char err[256] = "";

	assert_int_equal(fdvm_parse_run(0, ARGV(NULL), &o, err, sizeof(err)), -EINVAL);
	assert_contains(err, "no guest given");
	fdvm_run_opts_free(&o);

	RUN_BAD("no guest given", "--mem", "1G");
	RUN_BAD("no guest given", "-v", "--");
	RUN_BAD("no guest given", "--kvm=/dev/kvm");
}

static void test_run_unknown_option(void **state)
{
	(void)state;
	RUN_BAD("unknown option --bogus", "--bogus", "g.elf");
	RUN_BAD("unknown option -x", "-x", "g.elf");
	RUN_BAD("unknown option --memory=1G", "--memory=1G", "g.elf"); /* not --mem */
	RUN_BAD("unknown option --mem1G", "--mem1G", "g.elf");
	RUN_BAD("unknown option --kvmx", "--kvmx", "/k", "g.elf");
	RUN_BAD("unknown option --unhandled-pioneer", "--unhandled-pioneer=stop", "g.elf");
	RUN_BAD("unknown option -vv", "-vv", "g.elf");
}

static void test_run_missing_value(void **state)
{
	(void)state;
	RUN_BAD("option --mem needs a value", "--mem");
	RUN_BAD("option -m needs a value", "-m");
	RUN_BAD("option --unhandled-pio needs a value", "--unhandled-pio");
	RUN_BAD("option --unhandled-mmio needs a value", "--unhandled-mmio");
	RUN_BAD("option --kvm needs a value", "--kvm");
	RUN_BAD("option --mem needs a value", "-v", "--mem");
}

static void test_run_bad_mem(void **state)
{
	(void)state;
	RUN_BAD("--mem lots: not a size", "--mem", "lots", "g.elf");
	RUN_BAD("--mem 0: guest RAM cannot be zero", "-m", "0", "g.elf");
	RUN_BAD("--mem 1.5G: not a size", "--mem=1.5G", "g.elf");
	RUN_BAD("--mem : not a size", "--mem=", "g.elf");
	RUN_BAD("--mem 17179869184T: not a size", "--mem", "17179869184T", "g.elf");
	/* The guest name is not a size either. */
	RUN_BAD("--mem g.elf: not a size", "--mem", "g.elf");
}

static void test_run_bad_policy(void **state)
{
	(void)state;
	RUN_BAD("--unhandled-pio maybe: expected stop, warn or ignore", "--unhandled-pio", "maybe",
		"g.elf");
	RUN_BAD("--unhandled-mmio STOP: expected stop, warn or ignore", "--unhandled-mmio=STOP",
		"g.elf");
	RUN_BAD("--unhandled-mmio : expected stop, warn or ignore", "--unhandled-mmio=", "g.elf");
	RUN_BAD("--unhandled-pio g.elf: expected", "--unhandled-pio", "g.elf");
}

static void test_run_seccomp(void **state)
{
	(void)state;
	struct fdvm_run_opts o;

	RUN_OK(&o, "--seccomp", "off", "g.elf");
	assert_int_equal(o.seccomp, FDVM_SECCOMP_OFF);
	fdvm_run_opts_free(&o);
	RUN_OK(&o, "--seccomp=log", "g.elf");
	assert_int_equal(o.seccomp, FDVM_SECCOMP_LOG);
	fdvm_run_opts_free(&o);
	RUN_OK(&o, "--seccomp", "kill", "g.elf");
	assert_int_equal(o.seccomp, FDVM_SECCOMP_KILL);
	fdvm_run_opts_free(&o);
	RUN_BAD("--seccomp Kill: expected off, log or kill", "--seccomp", "Kill", "g.elf");
	RUN_BAD("--seccomp : expected off, log or kill", "--seccomp=", "g.elf");
	RUN_BAD("option --seccomp needs a value", "--seccomp");
}

static void test_run_err_buffer_small(void **state)
{
	(void)state;
	struct fdvm_run_opts o;
	char err[16];

	memset(err, 'Z', sizeof(err));
	assert_int_equal(fdvm_parse_run(2, ARGV("--bogus", "g.elf"), &o, err, 8), -EINVAL);
	fdvm_run_opts_free(&o);
	assert_string_equal(err, "unknown");
	assert_int_equal(err[8], 'Z');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size_bare_is_mib),
		cmocka_unit_test(test_size_suffixes),
		cmocka_unit_test(test_size_case_insensitive),
		cmocka_unit_test(test_size_long_suffixes),
		cmocka_unit_test(test_size_rejects_garbage),
		cmocka_unit_test(test_size_rejects_zero),
		cmocka_unit_test(test_size_rejects_overflow),
		cmocka_unit_test(test_unhandled),
		cmocka_unit_test(test_run_defaults),
		cmocka_unit_test(test_run_mem),
		cmocka_unit_test(test_run_unhandled),
		cmocka_unit_test(test_run_kvm_path),
		cmocka_unit_test(test_run_verbose),
		cmocka_unit_test(test_run_help),
		cmocka_unit_test(test_run_cmdline_after_dashdash),
		cmocka_unit_test(test_run_after_the_guest),
		cmocka_unit_test(test_run_dashdash_before_the_guest),
		cmocka_unit_test(test_run_repeated_and_attached),
		cmocka_unit_test(test_run_serial_cmdline_quiet),
		cmocka_unit_test(test_run_empty_cmdline),
		cmocka_unit_test(test_run_all_options),
		cmocka_unit_test(test_run_devices_and_disks),
		cmocka_unit_test(test_run_vhost_user),
		cmocka_unit_test(test_run_vhost_user_net),
		cmocka_unit_test(test_run_net),
		cmocka_unit_test(test_parse_net_bare_name),
		cmocka_unit_test(test_parse_blk),
		cmocka_unit_test(test_run_no_guest),
		cmocka_unit_test(test_run_unknown_option),
		cmocka_unit_test(test_run_missing_value),
		cmocka_unit_test(test_run_bad_mem),
		cmocka_unit_test(test_run_bad_policy),
		cmocka_unit_test(test_run_seccomp),
		cmocka_unit_test(test_run_err_buffer_small),
	};

	return cmocka_run_group_tests_name("opts", tests, NULL, NULL);
}
