#!/usr/bin/env python3
"""Runs one guest under fdvm or QEMU and reports in TAP for `meson test`.

The guest's own TAP (printed over its serial console) is passed through; the
runner adds one result of its own for the VMM's exit status and any expected
output, so a guest that dies half-way, hangs, or exits with the wrong status
fails even when every line it printed said "ok". A test skips (TAP "1..0 #
SKIP") when KVM or QEMU is missing.

With --vhost-user fdvm|qsd each --disk is served by its own vhost-user-blk
backend process (`fdvm serve blk` or qemu-storage-daemon): QEMU gets
vhost-user-blk-pci devices on shared (memfd) guest RAM, fdvm gets
--vhost-user blk,socket=... (its RAM is always a memfd). A backend
must still be running when QEMU exits and must exit cleanly on SIGTERM (fdvm:
status 0 and its socket removed); its output is shown as TAP comments.
--kill-backend N SIGKILLs the first disk's backend N times at random moments
of the guest's I/O phase (from --kill-after to --kill-before; a kill outside
it fails the test) and restarts it on the same socket and image each time;
QEMU reconnects (reconnect=1) and the guest must still pass. (QEMU 7.2 does
not recover if the guest resets and restarts the device while the backend is
down, so the kills must avoid the guest's reset tests.) With --kill-for-good
the backend is killed once and not restarted: the VMM must report it and
keep running (use with --expect and --expect-timeout). --runs N boots the
guest N times in a row on the same backends: every run must pass.
"""
import argparse
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time


def skip(why):
    print(f"1..0 # SKIP {why}")
    sys.exit(0)


def killpg(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc}"


class Backend:
    """One vhost-user-blk backend process serving one image on one socket."""

    def __init__(self, kind, fdvm, image, opts, sock, i, extra=()):
        self.kind, self.fdvm, self.image, self.opts, self.sock, self.i = kind, fdvm, image, opts, sock, i
        self.extra = list(extra)
        self.p = None
        self.failed = False  # a start failed: already reported
        self.logs = []  # (generation, stdout file, stderr file)
        self.gen = 0

    def cmd(self):
        if self.kind == "fdvm":
            return [self.fdvm, "serve", "blk", "--socket", self.sock, self.image + self.opts, *self.extra]
        return ["qemu-storage-daemon", "--blockdev",
                f"driver=file,node-name=f,filename={self.image}", "--export",
                f"type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={self.sock},writable=on",
                *self.extra]

    def start(self, wait=10.0):
        """Starts it and waits (bounded) for its socket; returns a problem or None."""
        out = tempfile.TemporaryFile()
        err = tempfile.TemporaryFile()
        self.logs.append((self.gen, out, err))
        self.gen += 1
        self.p = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if stat.S_ISSOCK(os.stat(self.sock).st_mode):
                    return None
            except FileNotFoundError:
                pass
            if self.p.poll() is not None:
                self.failed = True
                return f"backend {self.i} exited before listening ({describe(self.p.returncode)})"
            time.sleep(0.01)
        self.failed = True
        return f"backend {self.i}: no socket {self.sock} after {wait:g} s"

    def connected(self):
        """True once a frontend is connected: the backend holds an accepted
        socket (in /proc/net/unix: connected, state 03, with the listener's
        name; a socketpair has none)."""
        inodes = set()
        try:
            for fd in os.listdir(f"/proc/{self.p.pid}/fd"):
                m = re.match(r"socket:\[(\d+)\]", os.readlink(f"/proc/{self.p.pid}/fd/{fd}"))
                if m:
                    inodes.add(m.group(1))
            with open("/proc/net/unix") as f:
                for l in f:
                    w = l.split()
                    if len(w) >= 8 and w[6] in inodes and w[5] == "03":
                        return True
        except OSError:
            pass
        return False

    def io(self, what="rchar"):
        """Bytes it has read (rchar) or written (wchar), files and sockets
        (/proc/PID/io), or None once gone."""
        try:
            with open(f"/proc/{self.p.pid}/io") as f:
                for l in f:
                    if l.startswith(what + ":"):
                        return int(l.split()[1])
        except OSError:
            pass
        return None

    def sigkill(self):
        killpg(self.p)
        self.p.wait()

    def stop(self, wait=10.0):
        """SIGTERM after QEMU exited; returns a list of problems."""
        problems = []
        if self.failed:
            return problems
        rc = self.p.poll()
        if rc is not None:
            problems.append(f"backend {self.i} ({self.kind}) died while QEMU ran: {describe(rc)}")
            return problems
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            killpg(self.p)
            self.p.wait()
            problems.append(f"backend {self.i} ({self.kind}) still running {wait:g} s after SIGTERM")
            return problems
        if rc != 0:
            problems.append(f"backend {self.i} ({self.kind}) on SIGTERM: {describe(rc)}, expected exit status 0")
        if self.kind == "fdvm" and os.path.exists(self.sock):
            problems.append(f"backend {self.i} (fdvm) left its socket {self.sock} behind")
        return problems

    def stderr_text(self):
        text = ""
        for _, _, err in self.logs:
            err.seek(0)
            text += err.read().decode(errors="replace")
        return text

    def report(self):
        for gen, out, err in self.logs:
            for f, what in ((out, "stdout"), (err, "stderr")):
                f.seek(0)
                for l in f.read().decode(errors="replace").splitlines():
                    print(f"# backend {self.i}.{gen} {what}: {l}")
                f.close()

    def cleanup(self):
        if self.p and self.p.poll() is None:
            killpg(self.p)
            self.p.wait()


class Vmm:
    """The VMM in its own process group; output collected by threads."""

    def __init__(self, cmd):
        self.out, self.err = bytearray(), bytearray()
        self.cond = threading.Condition()
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        self.threads = [threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self, f, buf):
        while True:
            b = os.read(f.fileno(), 65536)
            with self.cond:
                if b:
                    buf += b
                self.cond.notify_all()
            if not b:
                return

    def text(self):
        with self.cond:
            return self.out.decode(errors="replace")

    def wait_for(self, rx, deadline):
        """Waits until stdout matches rx; False at the deadline or when the VMM exits."""
        with self.cond:
            while True:
                if re.search(rx, self.out.decode(errors="replace"), re.M):
                    return True
                if self.p.poll() is not None or time.monotonic() >= deadline:
                    return False
                self.cond.wait(min(0.1, max(0, deadline - time.monotonic())))

    def finish(self, deadline):
        """Waits for exit; kills the process group at the deadline. Returns (status, timed_out)."""
        try:
            status = self.p.wait(timeout=max(0, deadline - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            killpg(self.p)
            self.p.wait()
            status, timed_out = None, True
        for t in self.threads:
            t.join(5)
        return status, timed_out


def chaos(a, vmm, be, deadline, log, problems):
    """Kills the first backend a.kill_backend times during the I/O phase and
    restarts it. The moments are random amounts of data the backend has read
    (or written, --kill-io write):
    the first counted from the line that starts the phase, each later one from
    the restart (so it falls after QEMU reconnected and I/O resumed). The
    guest's stress phase reads 70000 x 512 bytes (36 MB); the defaults keep
    two kills inside it."""
    rng = random.Random(a.seed)
    field, verb = {"read": ("rchar", "read"), "write": ("wchar", "wrote"), "time": (None, "ran")}[a.kill_io]
    unit = "s" if a.kill_io == "time" else "MB"
    lo, hi = (float(x) * 1e6 for x in a.kill_mb.split(","))
    mark = [time.monotonic()]

    def measure():
        """The backend's count (time: microseconds since the mark), None once gone."""
        if field:
            return be.io(field)
        return None if be.p.poll() is not None else (time.monotonic() - mark[0]) * 1e6
    if not vmm.wait_for(a.kill_after, deadline):
        problems.append(f"the guest never printed /{a.kill_after}/: no backend was killed")
        return
    t_phase = mark[0] = time.monotonic()
    base = measure() or 0
    for k in range(a.kill_backend):
        target = rng.uniform(lo, hi)
        t0 = time.monotonic()
        while True:
            got = measure()
            if got is None:
                problems.append(f"backend died by itself before kill {k + 1}: {describe(be.p.poll())}")
                return
            if got - base >= target:
                break
            if vmm.p.poll() is not None:
                problems.append(f"the VMM exited before kill {k + 1}")
                return
            if a.kill_before and re.search(a.kill_before, vmm.text(), re.M):
                problems.append(f"the I/O phase ended before kill {k + 1} (backend {verb} {(got - base) / 1e6:.1f} "
                                f"of {target / 1e6:.1f} {unit})")
                return
            if time.monotonic() > min(deadline, t0 + 30):
                problems.append(f"backend {verb} only {(got - base) / 1e6:.1f} of {target / 1e6:.1f} {unit} "
                                f"in 30 s before kill {k + 1}")
                return
            time.sleep(0.0002)
        be.sigkill()
        if a.kill_before and re.search(a.kill_before, vmm.text(), re.M):
            problems.append(f"kill {k + 1} came after the I/O phase ended (/{a.kill_before}/ already printed)")
        log.append(f"kill {k + 1}: SIGKILL after the backend {verb} {(got - base) / 1e6:.2f} {unit}, "
                   f"{time.monotonic() - t_phase:.2f} s into the I/O phase")
        if a.kill_for_good:
            return
        time.sleep(rng.uniform(0, 0.2))
        why = be.start()
        if why:
            problems.append(f"restart {k + 1}: {why}")
            return
        t0 = time.monotonic()
        while not be.connected() and time.monotonic() < min(deadline, t0 + 15):
            time.sleep(0.005)
        if not be.connected():
            problems.append(f"restart {k + 1}: the VMM did not reconnect within 15 s")
            return
        log.append(f"restart {k + 1}: backend listening, the VMM reconnected {time.monotonic() - t0:.2f} s later")
        base = 0
        mark[0] = time.monotonic()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", choices=["fdvm", "qemu"], default="fdvm")
    ap.add_argument("--fdvm", help="path to the fdvm executable")
    ap.add_argument("--fdvm-arg", action="append", default=[], help="extra fdvm run option")
    ap.add_argument("--runner", help="a test harness to run instead of `fdvm run`")
    ap.add_argument("--qemu-arg", action="append", default=[], help="extra QEMU option")
    ap.add_argument("--mem", type=int, default=128, help="QEMU's guest RAM in MiB")
    ap.add_argument("--guest", required=True)
    ap.add_argument("--append", default="", help="guest command line")
    ap.add_argument("--status", type=int, default=0, help="expected exit status")
    ap.add_argument("--expect", action="append", default=[], help="regex the output must match")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--expect-timeout", action="store_true",
                    help="pass only if the guest is still running at the timeout")
    ap.add_argument("--disk", action="append", type=int, default=[],
                    help="a raw disk of this many MiB (virtio-blk), made for the run")
    ap.add_argument("--disk-opts", default="",
                    help="appended to fdvm's --blk FILE (and to fdvm serve blk's IMAGE)")
    ap.add_argument("--vhost-user", choices=["fdvm", "qsd"],
                    help="with --vmm qemu: serve each disk from a vhost-user-blk backend process")
    ap.add_argument("--vhost-user-opts", default="", help="appended to QEMU's -device vhost-user-blk-pci")
    ap.add_argument("--backend-arg", action="append", default=[], help="extra backend option")
    ap.add_argument("--kill-backend", type=int, default=0,
                    help="SIGKILL and restart the first disk's backend this many times (QEMU reconnects)")
    ap.add_argument("--kill-after", default=r"^ok \d+ - read it back",
                    help="the guest output line that starts the I/O phase for --kill-backend")
    ap.add_argument("--kill-before", default=r"^(not )?ok \d+ - \d+ reads, up to",
                    help="the guest output line that ends it (a kill after it is reported)")
    ap.add_argument("--kill-io", choices=["read", "write", "time"], default="read",
                    help="count the data the backend reads or writes for --kill-mb, or the time "
                         "(then --kill-mb is in seconds: a backend on io_uring does not read(2))")
    ap.add_argument("--kill-mb", default="0.5,12",
                    help="MIN,MAX: each kill comes once the backend has read a random amount of MB in "
                         "this range (from the phase's start, then from its restart)")
    ap.add_argument("--seed", type=int, default=None, help="seed for the kill moments")
    ap.add_argument("--kill-for-good", action="store_true",
                    help="with --kill-backend 1: the backend is not restarted")
    ap.add_argument("--check-vring-calls", action="store_true",
                    help="with --vhost-user fdvm: the daemon's count of SET_VRING_CALL must equal its "
                         "ring setups (SET_VRING_KICK): masking the queue's vector sent it no message")
    ap.add_argument("--guest-tap-as-comments", action="store_true",
                    help="show the guest's own results as comments, not as results: for a guest "
                         "whose verdicts depend on a peer's choices; check with --status and --expect")
    ap.add_argument("--max-stderr-lines", type=int, default=None,
                    help="fail if the VMM writes more lines than this to standard error")
    ap.add_argument("--runs", type=int, default=1,
                    help="boot the guest this many times in a row on the same backends")
    a = ap.parse_args()
    if a.vhost_user == "fdvm" and not a.fdvm:
        ap.error("--vhost-user fdvm needs --fdvm")
    if a.kill_backend and (not a.vhost_user or not a.disk):
        ap.error("--kill-backend needs --vhost-user and a --disk")
    if a.seed is None:
        a.seed = random.randrange(1 << 32)

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("no usable /dev/kvm")
    qemu = None
    if a.vmm == "qemu":
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            skip("qemu-system-x86_64 is not installed")
        if a.vhost_user == "qsd" and not shutil.which("qemu-storage-daemon"):
            skip("qemu-storage-daemon is not installed")
    tmpdir = tempfile.mkdtemp(prefix="fdvm-guest-")
    disks = []
    for mb in a.disk:
        f = tempfile.NamedTemporaryFile(prefix="fdvm-disk-", suffix=".img", delete=False)
        f.truncate(mb << 20)
        f.close()
        disks.append(f.name)
    backends = []
    problems = []
    notes = []
    if a.vhost_user:
        for i, d in enumerate(disks):
            sock = os.path.join(tmpdir, f"vhost-user-blk-{i}.sock")
            backends.append(Backend(a.vhost_user, a.fdvm, d, a.disk_opts if a.vhost_user == "fdvm" else "",
                                    sock, i, a.backend_arg))
    if a.vmm == "fdvm" and not a.runner and a.vhost_user:
        for i, b in enumerate(backends):
            reconnect = ",reconnect=1" if a.kill_backend and not a.kill_for_good and i == 0 else ""
            a.fdvm_arg.append(f"--vhost-user=blk,socket={b.sock}{reconnect}")
    elif a.vmm == "fdvm" and not a.runner:
        a.fdvm_arg += [f"--blk={d}{a.disk_opts}" for d in disks]
    elif a.vmm == "qemu" and a.vhost_user:
        a.qemu_arg += ["-object", f"memory-backend-memfd,id=mem,size={a.mem}M,share=on",
                       "-machine", "memory-backend=mem"]
        for i, b in enumerate(backends):
            reconnect = ",reconnect=1" if a.kill_backend and not a.kill_for_good and i == 0 else ""
            a.qemu_arg += ["-chardev", f"socket,id=c{i},path={b.sock}{reconnect}",
                           "-device", f"vhost-user-blk-pci,chardev=c{i}{a.vhost_user_opts}"]
    elif a.vmm == "qemu":
        for i, d in enumerate(disks):
            a.qemu_arg += ["-drive", f"file={d},format=raw,if=none,id=d{i}",
                           "-device", f"virtio-blk-pci,drive=d{i},serial=qemu-disk-{i}"]
    if a.runner:
        cmd = [a.runner, *a.fdvm_arg, a.guest]
        if a.append:
            cmd += ["--", *a.append.split()]
    elif a.vmm == "fdvm":
        cmd = [a.fdvm, "run", *a.fdvm_arg, a.guest]
        if a.append:
            cmd += ["--", *a.append.split()]
    else:
        cmd = [qemu, "-enable-kvm", "-cpu", "qemu64", "-m", str(a.mem), "-display", "none",
               "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
               "-kernel", a.guest, "-append", a.append, *a.qemu_arg]

    timed_out = False
    out = err = ""
    status = None
    chaos_log = []
    vmm = None
    try:
        for b in backends:
            why = b.start()
            if why:
                problems.append(why)
        for run in range(a.runs):
            if problems:
                break
            if run:
                # The run before passed its checks below: say so, start again.
                notes.append(f"run {run} of {a.runs}: exit status {status}, guest output as expected")
            deadline = time.monotonic() + a.timeout
            vmm = Vmm(cmd)
            if a.kill_backend and not run:
                notes.append(f"kill seed {a.seed}")
                chaos(a, vmm, backends[0], deadline, chaos_log, problems)
            status, timed_out = vmm.finish(deadline)
            out = vmm.out.decode(errors="replace")
            err = vmm.err.decode(errors="replace")
            if run + 1 < a.runs:
                # Earlier runs are judged here; the last one below, in full.
                if timed_out or status != a.status:
                    problems.append(f"run {run + 1} of {a.runs}: exit status {status}, expected {a.status}")
                elif any(re.match(r"^not ok\b", l) for l in out.splitlines()):
                    problems.append(f"run {run + 1} of {a.runs}: the guest reported a failure")
                for b in backends:
                    if b.p and b.p.poll() is not None:
                        problems.append(f"run {run + 1} of {a.runs}: backend {b.i} died: {describe(b.p.poll())}")
        for b in backends:
            if b.p and not (a.kill_for_good and b is backends[0]):
                problems += b.stop()
    finally:
        if vmm and vmm.p.poll() is None:
            killpg(vmm.p)
            vmm.p.wait()
        for b in backends:
            b.cleanup()
        for d in disks:
            os.unlink(d)
        shutil.rmtree(tmpdir, ignore_errors=True)

    # Pass the guest's TAP through; count its tests so ours comes last.
    lines = [l.rstrip("\r") for l in out.splitlines()]
    plan = 0
    for l in lines:
        m = re.match(r"^1\.\.(\d+)", l)
        if m:
            plan = int(m.group(1))
            continue
        if re.match(r"^(not )?ok\b", l) and not a.guest_tap_as_comments:
            print(l)
        else:
            print("# " + l if l else "#")
    for l in err.splitlines():
        print("# stderr: " + l)
    # Before the report, which closes the logs.
    said = re.findall(r"frontend disconnected; messages:(.*)$",
                      backends[0].stderr_text(), re.M) if a.check_vring_calls and backends else []
    for b in backends:
        b.report()
    for l in notes + chaos_log:
        print("# " + l)
    ran = sum(1 for l in lines if re.match(r"^(not )?ok\b", l))
    if a.guest_tap_as_comments:
        ran = 0  # shown, not counted: the checks are --status and --expect
    elif ran != plan and not a.expect_timeout:
        problems.append(f"guest planned {plan} tests and ran {ran}")
    if a.expect_timeout:
        if not timed_out:
            problems.append(f"guest exited with {status} but should have hung")
    elif timed_out:
        problems.append(f"killed after {a.timeout:g} s: guest hung")
    elif status != a.status and status is not None:
        problems.append(f"exit status {status}, expected {a.status}")
    for rx in a.expect:
        if not re.search(rx, out + err, re.M):
            problems.append(f"output does not match /{rx}/")
    if a.max_stderr_lines is not None and len(err.splitlines()) > a.max_stderr_lines:
        problems.append(f"{len(err.splitlines())} lines on stderr, at most {a.max_stderr_lines} expected")
    vmm_name = os.path.basename(a.runner) + " " + " ".join(a.fdvm_arg) if a.runner else a.vmm
    if a.vhost_user:
        vmm_name += f" + vhost-user {a.vhost_user}"
        if a.kill_backend:
            vmm_name += f" (killed {a.kill_backend}x)"
    name = f"{vmm_name.strip()} {os.path.basename(a.guest)} {a.append}".strip()
    last = ran + 1
    if a.check_vring_calls:
        # One conversation per run; each must have set its rings up with
        # one SET_VRING_CALL each, and sent none for the guest's masking.
        counts = [dict((k, int(v)) for k, v in re.findall(r"([A-Z_]+) (\d+)", l)) for l in said]
        calls = [c.get("SET_VRING_CALL", -1) for c in counts]
        kicks = [c.get("SET_VRING_KICK", -1) for c in counts]
        m = re.search(r"masks (\d+)", out)
        masks = int(m.group(1)) if m else -1
        good = len(said) == a.runs and all(k >= 1 and c == k for c, k in zip(calls, kicks)) and masks > 0
        print(("ok" if good else "not ok") + f" {last} - no vhost-user message on mask/unmask: SET_VRING_CALL "
              f"{calls} == ring setups (SET_VRING_KICK) {kicks}, masks {masks}"
              + ("" if len(said) == a.runs else f" ({len(said)} conversations logged, {a.runs} expected)"))
        last += 1
    if problems:
        print(f"not ok {last} - {name}: " + "; ".join(problems))
    else:
        print(f"ok {last} - {name}: " +
              ("hung as expected, killed by the timeout" if a.expect_timeout else f"exit status {status}") +
              ("; backends stopped cleanly" if backends else ""))
    print(f"1..{last}")
    sys.exit(0)


if __name__ == "__main__":
    main()
