/* fdvm run: boot one guest and exit with its status. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "api.h"
#include "cli.h"
#include "fdvm/devices.h"
#include "fdvm/sandbox.h"
#include "fdvm/vhost_user.h"
#include "fdvm/virtio.h"
#include "fdvm/version.h"
#include "fdvm/vm.h"
#include "opts.h"

static struct fdvm_vm *running_vm;

static void close_console(int fd)
{
	if (fd > 2)
		close(fd);
}

/* What the control socket reaches (--api-socket). */
struct run_ctl {
	struct fdvm_vm *vm;
	struct fdvm_virtio_pci *dev[40];
	unsigned ndev;
};

/* The commands of fdvm run's control socket (api.h), on its thread. */
static json_t *run_api(void *opaque, const char *cmd, json_t *args, const char **cls, char *err,
		       size_t errlen)
{
	struct run_ctl *c = opaque;
	int ret;

	(void)args;
	if (!strcmp(cmd, "status"))
		return json_pack("{s:s,s:i,s:I,s:s}", "state",
				 fdvm_vm_state_name(fdvm_vm_state(c->vm)), "vcpus", 1, "mem_bytes",
				 (json_int_t)fdvm_vm_mem_size(c->vm), "version", fdvm_version());
	if (!strcmp(cmd, "pause") || !strcmp(cmd, "resume")) {
		ret = cmd[0] == 'p' ? fdvm_vm_pause(c->vm) : fdvm_vm_resume(c->vm);
		if (ret) {
			snprintf(err, errlen, "the guest is stopping");
			return NULL;
		}
		return json_pack("{s:s}", "state", fdvm_vm_state_name(fdvm_vm_state(c->vm)));
	}
	if (!strcmp(cmd, "power-off")) {
		fdvm_vm_power_off(c->vm);
		return json_object();
	}
	if (!strcmp(cmd, "counters")) {
		struct fdvm_virtio_pci_stats *st = malloc(sizeof(*st));
		json_t *devs = json_array();
		if (!st) {
			snprintf(err, errlen, "out of memory");
			json_decref(devs);
			return NULL;
		}
		for (unsigned i = 0; i < c->ndev; i++) {
			fdvm_virtio_pci_stats(c->dev[i], st);
			json_array_append_new(devs, api_device_json(st));
		}
		free(st);
		return api_counters(devs);
	}
	*cls = "CommandNotFound";
	snprintf(err, errlen, "unknown command '%s' (status, pause, resume, power-off, counters)", cmd);
	return NULL;
}

static void on_signal(int sig)
{
	(void)sig;
	if (running_vm)
		fdvm_vm_request_stop(running_vm);
}

/*
 * Standard input as COM1's receiver (--serial stdio): a pipe or a socket,
 * or the terminal when fdvm runs in its foreground (a background job that
 * read it would be stopped by SIGTTIN); not a file or /dev/null, which
 * have nothing to wait for. -1: no input.
 */
static int stdin_for_guest(void)
{
	struct stat st;
	if (fstat(0, &st) < 0)
		return -1;
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
		return 0;
	if (isatty(0) && tcgetpgrp(0) == getpgrp())
		return 0;
	return -1;
}

/* The terminal's settings before console_raw changed them. */
static struct termios saved_tio;
static bool tio_saved;

static void console_restore(void)
{
	if (tio_saved && tcsetattr(0, TCSANOW, &saved_tio) < 0)
		fprintf(stderr, "fdvm run: standard input: putting the terminal's settings back: %s\n",
			strerror(errno));
	tio_saved = false;
}

/*
 * The terminal as the guest's serial line, as QEMU's stdio character
 * device has it: each key goes to the guest at once, not echoed here and
 * untranslated (Enter is a CR; the guest's own tty does the rest). ^C
 * still stops fdvm; ^Z goes to the guest. Undone when fdvm exits.
 */
static void console_raw(int fd)
{
	struct termios t;

	if (fd < 0 || !isatty(fd))
		return;
	if (tcgetattr(fd, &saved_tio) < 0) {
		fprintf(stderr, "fdvm run: standard input: reading the terminal's settings: %s\n",
			strerror(errno));
		return;
	}
	t = saved_tio;
	t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO | ECHONL | IEXTEN);
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	/* ^Z to the guest: fdvm stopped by it would leave the terminal raw. */
	t.c_cc[VSUSP] = _POSIX_VDISABLE;
	if (tcsetattr(fd, TCSANOW, &t) < 0) {
		fprintf(stderr, "fdvm run: standard input: making the terminal raw: %s (input stays line by line)\n",
			strerror(errno));
		return;
	}
	tio_saved = true;
	atexit(console_restore);
}

static void run_usage(FILE *f)
{
	fprintf(f,
		"usage: fdvm run [OPTIONS] GUEST.elf [-- ARGS...]\n"
		"\n"
		"Boots GUEST.elf, an ELF64 image with a PVH entry note (the format QEMU's\n"
		"-kernel and Xen accept), with ARGS joined by spaces as its command line.\n"
		"fdvm's options go before GUEST.elf, the guest's arguments after --.\n"
		"The guest's COM1 goes to standard output, fdvm's messages to standard error.\n"
		"fdvm exits with the guest's status (see fdvm --help).\n"
		"\n"
		"options:\n"
		"  -m, --mem SIZE           guest RAM: 64M (default), 1G, 512K; a bare number\n"
		"                           is MiB. At least 2M, at most this host's RAM.\n"
		"  --cpu host[,-FEATURE]... the CPUID: what KVM supports (host), minus features\n"
		"                           by name (cx16, xsave, avx, x2apic, ...; -v prints\n"
		"                           the result): host,-cx16,-xsave boots Linux further\n"
		"                           on a KVM that cannot emulate those at CPL0\n"
		"  --initrd FILE            an initramfs for a Linux guest: a PVH module\n"
		"  --cpus N                 vCPUs (default 1, at most 64 and what KVM allows):\n"
		"                           vCPU N has APIC id N; vCPU 0 boots the guest, the\n"
		"                           others wait for its INIT/SIPI (the MADT lists them)\n"
		"  --unhandled-pio POLICY   a port nothing claims: stop (default: report the\n"
		"                           access and the registers, exit 4), warn (report,\n"
		"                           then go on), or ignore (reads return all-ones,\n"
		"                           writes are dropped, as on real hardware)\n"
		"  --unhandled-mmio POLICY  the same for an MMIO address with nothing there\n"
		"  -d, --device NAME        add a device (repeatable):\n"
		"                           pci-testdev     QEMU's PCI test device (1b36:0005),\n"
		"                                           its eventfd tests backed by doorbells\n"
		"                           virtio-rng      entropy from getrandom(2)\n"
		"                           virtio-console  a console port to standard output\n"
		"  --blk FILE[,ro][,queues=N][,poll=US][,lock=on|off][,discard=on|off]\n"
		"        [,cache=writeback|none]\n"
		"                           a virtio-blk disk on a raw image or a block device\n"
		"                           (repeatable; ,, for a comma in FILE); its backend\n"
		"                           thread watches a queue that ran dry for US\n"
		"                           microseconds (default 50) before sleeping; the image\n"
		"                           is locked as QEMU locks it (a writer alone, readers\n"
		"                           together; lock=off: not); discard and write-zeroes\n"
		"                           are offered unless discard=off or ro; cache=none:\n"
		"                           O_DIRECT, around the host's page cache\n"
		"  --net tap=NAME[,mac=MAC][,queues=N][,poll=US]\n"
		"                           a virtio-net device on the tap NAME (repeatable),\n"
		"                           which fdvm opens (and creates, down and without an\n"
		"                           address, if it does not exist: it goes at exit);\n"
		"                           mac: the guest's (default 52:54:00 and three bytes\n"
		"                           from NAME); queues: queue pairs, one tap queue each\n"
		"                           (N > 1: a multi_queue tap); poll as for --blk\n"
		"  --vhost-user blk,socket=PATH[,queues=N][,reconnect=SECONDS]\n"
		"  --vhost-user net,socket=PATH[,mac=MAC][,reconnect=SECONDS]\n"
		"                           a virtio-blk or virtio-net device served by a\n"
		"                           vhost-user backend at PATH (fdvm serve blk|net,\n"
		"                           qemu-storage-daemon, ...): it gets guest RAM and\n"
		"                           the queues' eventfds and talks to the guest through\n"
		"                           them alone; queues: how many of the backend's to\n"
		"                           use (default all); reconnect: a backend that goes\n"
		"                           away is tried again every SECONDS, requests in\n"
		"                           flight resubmitted (default 0: the device then\n"
		"                           needs a reset)\n"
		"  --notify MODE            devices' doorbells and interrupt lines: auto (KVM's\n"
		"                           ioeventfd/irqfd where it has them; default), kernel\n"
		"                           (or fail), or userspace (fdvm's fallbacks: for tests\n"
		"                           and comparisons)\n"
		"  --kvm PATH               the KVM device (default /dev/kvm)\n"
		"  --seccomp MODE           system call filters per thread (vCPU, devices,\n"
		"                           fdvm's service loops, this main thread): kill\n"
		"                           (default: a call outside a thread's list ends fdvm\n"
		"                           with a line naming the thread and the call, exit\n"
		"                           10), log (report each such call once, allow it),\n"
		"                           or off\n"
		"  --serial WHERE           the guest's COM1: stdio (default: standard output,\n"
		"                           and standard input as what COM1 receives when it is\n"
		"                           a pipe, a socket, or the terminal in the foreground,\n"
		"                           which is then raw until fdvm exits: keys go to the\n"
		"                           guest unechoed, ^C stops fdvm, ^Z is the guest's;\n"
		"                           IRQ 4), file:PATH (made or truncated), or none\n"
		"  --cmdline ARGS           the guest's command line, as one argument (or give\n"
		"                           the arguments after --)\n"
		"  --api-socket PATH        a control socket at PATH: JSON, one request per\n"
		"                           line ({\"execute\": \"status\"}): status, pause,\n"
		"                           resume, power-off, counters (fdvm stat PATH shows\n"
		"                           them); removed at exit\n"
		"  -v, --verbose            more messages from fdvm\n"
		"  -q, --quiet              errors only\n"
		"  -h, --help               this text\n");
}

int fdvm_cmd_run(int argc, char **argv)
{
	struct fdvm_run_opts o;
	struct fdvm_vm_config cfg;
	struct fdvm_vm *vm;
	struct fdvm_stop stop;
	char err[256];
	int ret, status;

	if (fdvm_parse_run(argc, argv, &o, err, sizeof(err))) {
		fprintf(stderr, "fdvm run: %s\n", err);
		return FDVM_EXIT_USAGE;
	}
	if (o.help) {
		run_usage(stdout);
		return 0;
	}
	if (fdvm_mem_size_check(o.mem_size, err, sizeof(err))) {
		fprintf(stderr, "fdvm run: --mem %s: %s\n", o.mem_arg, err);
		fdvm_run_opts_free(&o);
		return FDVM_EXIT_USAGE;
	}

	/* The guest's COM1: opened here, as no confined thread may open files. */
	int console = o.serial == FDVM_SERIAL_NONE ? -1 : 1;
	if (o.serial == FDVM_SERIAL_FILE) {
		console = open(o.serial_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (console < 0) {
			fprintf(stderr, "fdvm run: --serial file:%s: %s\n", o.serial_path,
				strerror(errno));
			fdvm_run_opts_free(&o);
			return FDVM_EXIT_USAGE;
		}
	}

	/* Before the VM: every thread fdvm makes from here on is confined. */
	if ((ret = fdvm_sandbox_init(o.seccomp))) {
		fprintf(stderr, "fdvm run: --seccomp: cannot set up the filters: %s\n",
			strerror(-ret));
		fdvm_run_opts_free(&o);
		close_console(console);
		return 6;
	}

	fdvm_vm_config_init(&cfg);
	cfg.console_fd = console;
	cfg.console_in_fd = o.serial == FDVM_SERIAL_STDIO ? stdin_for_guest() : -1;
	cfg.mem_size = o.mem_size;
	cfg.cpus = o.cpus;
	cfg.cpu_remove = o.cpu_remove;
	if (o.verbose) {
		uint64_t all = fdvm_cpu_remove_closure(o.cpu_remove);
		fprintf(stderr, "fdvm: vcpu: CPUID: what KVM supports");
		const char *sep = " without ";
		for (unsigned k = 0; fdvm_cpu_feature_name(k); k++)
			if (o.cpu_remove >> k & 1) {
				fprintf(stderr, "%s%s", sep, fdvm_cpu_feature_name(k));
				sep = ", ";
			}
		sep = " (and, as they need those, ";
		for (unsigned k = 0; fdvm_cpu_feature_name(k); k++)
			if ((all & ~o.cpu_remove) >> k & 1) {
				fprintf(stderr, "%s%s", sep, fdvm_cpu_feature_name(k));
				sep = ", ";
			}
		fprintf(stderr, "%s\n", strcmp(sep, ", ") ? "" : ")");
	}
	cfg.unhandled_pio = o.unhandled_pio;
	cfg.unhandled_mmio = o.unhandled_mmio;
	cfg.kvm_path = o.kvm_path;
	cfg.log_level = o.verbose ? FDVM_LOG_DEBUG : o.quiet ? FDVM_LOG_ERROR : FDVM_LOG_WARN;

	ret = fdvm_vm_create(&cfg, &vm);
	if (ret) {
		fdvm_run_opts_free(&o);
		close_console(console);
		return FDVM_EXIT_USAGE;
	}
	/* Devices belong to the VM: fdvm_vm_destroy removes them. The
	 * control socket keeps the virtio ones' handles for their counters. */
	struct run_ctl ctl = { .vm = vm };
	struct fdvm_virtio_pci **next = ctl.dev;
	for (unsigned i = 0; i < o.ndevices && !ret; i++) {
		struct fdvm_pci_testdev *td;
		if (!strcmp(o.devices[i], "pci-testdev"))
			ret = fdvm_pci_testdev_create(vm, o.notify, &td);
		else if (!strcmp(o.devices[i], "virtio-rng"))
			ret = fdvm_virtio_rng_create(vm, o.notify, next++);
		else
			ret = fdvm_virtio_console_create(vm, 1, o.notify, next++);
	}
	for (unsigned i = 0; i < o.nblk && !ret; i++) {
		struct fdvm_virtio_blk_config bc = fdvm_blk_opts_config(&o.blk[i], o.notify);
		ret = fdvm_virtio_blk_create(vm, &bc, next++);
	}
	for (unsigned i = 0; i < o.nnet && !ret; i++) {
		struct fdvm_virtio_net_config nc = fdvm_net_opts_config(&o.net[i], o.notify);
		ret = fdvm_virtio_net_create(vm, &nc, next++);
	}
	for (unsigned i = 0; i < o.nvu && !ret; i++) {
		struct fdvm_vu_frontend_config vc;
		fdvm_vu_frontend_config_init(&vc);
		vc.socket = o.vu[i].socket;
		vc.device_id = o.vu[i].device_id;
		vc.num_queues = o.vu[i].queues;
		vc.reconnect_s = o.vu[i].reconnect_s;
		vc.notify = o.notify;
		vc.mac_set = o.vu[i].mac_set;
		memcpy(vc.mac, o.vu[i].mac, 6);
		ret = fdvm_vhost_user_create(vm, &vc, next++);
	}
	ctl.ndev = (unsigned)(next - ctl.dev);
	if (!ret)
		ret = fdvm_vm_load_pvh_initrd(vm, o.guest, o.cmdline, o.initrd);
	/* The control socket: served on a thread of its own (the serve role:
	 * connections on a listening socket), opened before the filters. */
	struct fdvm_epoll_loop *api_loop = NULL;
	struct api *api = NULL;
	if (!ret && o.api_socket) {
		ret = fdvm_epoll_loop_create(&api_loop);
		if (ret)
			fprintf(stderr, "fdvm run: --api-socket: event loop: %s\n", strerror(-ret));
		else
			ret = api_create(o.api_socket, fdvm_epoll_loop_handle(api_loop), run_api, &ctl,
					 &api);
	}
	fdvm_run_opts_free(&o);
	if (ret) {
		status = FDVM_EXIT_USAGE;
		goto out;
	}

	running_vm = vm;
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	console_raw(cfg.console_in_fd);

	/* The vCPU runs on a thread of its own role; this thread waits, then
	 * takes the VM down, within the control role's list. */
	if ((ret = fdvm_vm_start(vm, "fdvm-vcpu0"))) {
		running_vm = NULL;
		status = 6;
		goto out;
	}
	if (api_loop && (ret = fdvm_epoll_loop_start_as(api_loop, "fdvm-api", FDVM_ROLE_SERVE))) {
		fprintf(stderr, "fdvm run: --api-socket: starting its thread: %s\n", strerror(-ret));
		fdvm_vm_request_stop(vm);
	}
	if ((ret = fdvm_sandbox_enter(FDVM_ROLE_CONTROL, NULL)))
		fprintf(stderr, "fdvm run: --seccomp: main thread: %s\n", strerror(-ret));
	fdvm_vm_join(vm, &stop);

	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	running_vm = NULL;

	status = fdvm_stop_exit_status(&stop);
	if (stop.reason == FDVM_STOP_RESET)
		fdvm_log(vm, FDVM_LOG_WARN, "the guest asked for a reset: fdvm does not restart a guest; "
			 "exit status %d (a supervisor may start it again)", status);
	else
		fdvm_log(vm, FDVM_LOG_INFO, "guest stopped: %s, exit status %d",
			 fdvm_stop_reason_name(stop.reason), status);
out:
	console_restore();
	/* The socket's thread first: it reaches into the VM. */
	fdvm_epoll_loop_destroy(api_loop);
	api_destroy(api, false);
	fdvm_vm_destroy(vm);
	close_console(console);
	return status;
}
