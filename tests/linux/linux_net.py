#!/usr/bin/env python3
"""Boots a real Linux guest under QEMU (TCG) on a virtio-net device and talks to it.

The device's backend is either QEMU's own tap netdev (--backend qemu-tap, the
reference) or `fdvm serve net` over vhost-user (--backend fdvm, QEMU as the
vhost-user frontend). The guest is Debian 12's cloud kernel with a busybox
initramfs whose /init (INIT below) loads virtio_net, gives eth0 10.77.0.2/24
and then, with the host at 10.77.0.1:

  1. answers the host's pings;
  2. receives a random file over TCP (busybox `nc -l`) and prints its sha256,
     which the host compares with what it sent;
  3. sends a file it made from /dev/urandom over TCP (busybox `nc`) and prints
     its sha256, which the host compares with what it received;
  4. powers off.

All networking happens in a network namespace of its own, fdvm-lnet-PID: the
script makes it, re-runs itself inside it (`ip netns exec NS python3
linux_net.py --inside NS ...`), so that the tap device, QEMU, the backend and
the host's side of every transfer live there, and removes it afterwards,
whatever happened (what still runs in it is killed first). No packet leaves
it. The guest's files are fetched and cached as for linux_blk.py (see
linuxguest.py), outside the namespace, which has no route anywhere.

Prints TAP. Skips when not root or when QEMU, ip, /dev/net/tun or the
packages are not to be had.
"""
import argparse
import hashlib
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxguest import (INIT_PREAMBLE, QEMU, Guest, Tap, Unavailable, comment, comment_file,  # noqa: E402
                        finish, kill_group, make_initrd, prepare_cache, run, skip,
                        start, stop_backend, wait_socket)

ROOT_MODULES = ["virtio_pci", "virtio_net"]  # virtio_net brings failover, net_failover
TAP_NAME = "fdvmtap0"
HOST_IP, GUEST_IP, PREFIX = "10.77.0.1", "10.77.0.2", 24
TO_GUEST_PORT, TO_HOST_PORT = 5001, 5002
STEP_TIMEOUT = 60  # s for one step of the exchange (a boot, a transfer)

# The guest's /init. Every line meant for the runner starts with "FDVMT ".
# Each nc runs under busybox timeout, and -w bounds its connect or accept, so
# the guest always gets to its poweroff even if the host side went away.
INIT = INIT_PREAMBLE + r"""
say() { echo "FDVMT $*"; }
die() { say "fail $*"; dmesg | tail -40; say "end"; poweroff -f; sleep 10; exit 1; }

mib=8
for w in $(cat /proc/cmdline); do
  case "$w" in fdvmt.mib=*) mib=${w#fdvmt.mib=};; esac
done
say "init mib=$mib"

for m in $(cat /modules/order); do
  insmod /modules/$m.ko || die "insmod $m"
done
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i+1)); [ $i -gt 100 ] && die "no eth0 after 10 s"
  sleep 0.1
done
# From here on only errors reach the console, so that kernel messages are
# less likely to land inside the lines for the runner; dmesg has the rest.
echo 4 > /proc/sys/kernel/printk
ip link set lo up
ip addr add GUEST_IP/PREFIX dev eth0 || die "ip addr add"
ip link set eth0 up || die "ip link set eth0 up"

# Made now, so that making it does not slow the transfers down.
dd if=/dev/urandom of=/tmp/out bs=1M count=$mib iflag=fullblock 2>/dev/null || die "urandom"
say "tx-sha256 $(sha256sum /tmp/out | cut -d' ' -f1)"
say "up mac=$(cat /sys/class/net/eth0/address) driver=$(basename $(readlink /sys/class/net/eth0/device/driver))"

# Host -> guest. With stdin at EOF nc shuts down its sending half at once;
# it ends when the host has sent everything and closed.
timeout 120 nc -w 60 -l -p TO_GUEST_PORT </dev/null >/tmp/in &
ncpid=$!
i=0
until netstat -ltn | grep -q ':TO_GUEST_PORT '; do
  i=$((i+1)); [ $i -gt 100 ] && die "nc not listening after 10 s"
  sleep 0.1
done
say "listening TO_GUEST_PORT"
wait $ncpid
st=$?
say "rx-done bytes=$(stat -c %s /tmp/in) status=$st"
say "rx-sha256 $(sha256sum /tmp/in | cut -d' ' -f1)"
rm /tmp/in

# Guest -> host: the host listens since before the guest started. nc sends
# the file, shuts down its sending half and ends when the host closes.
timeout 120 nc -w 30 HOST_IP TO_HOST_PORT </tmp/out
say "tx-done status=$?"

s=/sys/class/net/eth0/statistics
say "stats rx_packets=$(cat $s/rx_packets) tx_packets=$(cat $s/tx_packets) rx_errors=$(cat $s/rx_errors) tx_errors=$(cat $s/tx_errors) rx_dropped=$(cat $s/rx_dropped)"
say "irq $(grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"
say "end"
poweroff -f
"""
for _k, _v in (("GUEST_IP", GUEST_IP), ("HOST_IP", HOST_IP), ("PREFIX", str(PREFIX)),
               ("TO_GUEST_PORT", str(TO_GUEST_PORT)), ("TO_HOST_PORT", str(TO_HOST_PORT))):
    INIT = INIT.replace(_k, _v)


# ---------------------------------------------------------------- host side

def icmp_checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def ping(dst, count, interval=0.2, wait=2.0):
    """Sends count ICMP echo requests to dst (a raw socket: we are root, and
    need no ping binary); returns the round-trip times of those answered."""
    ident = os.getpid() & 0xffff
    rtts = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        for seq in range(1, count + 1):
            payload = os.urandom(56)
            pkt = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
            pkt = pkt[:2] + struct.pack("!H", icmp_checksum(pkt)) + pkt[4:]
            t0 = time.monotonic()
            s.sendto(pkt, (dst, 0))
            while (left := t0 + wait - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, addr = s.recvfrom(4096)
                except socket.timeout:
                    break
                ihl = (data[0] & 15) * 4
                if len(data) < ihl + 8:
                    continue
                typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
                if (typ == 0 and rid == ident and rseq == seq and addr[0] == dst
                        and data[ihl + 8:] == payload):
                    rtts.append(time.monotonic() - t0)
                    break
            time.sleep(max(0.0, t0 + interval - time.monotonic()))
    return rtts


def send_to_guest(data, timeout, alive):
    """Connects to the guest's nc, sends data, closes our sending half and
    waits for the guest to close. Gives up after timeout s, or soon after
    alive() turns false (QEMU gone). Returns None or what went wrong."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((GUEST_IP, TO_GUEST_PORT))
            break
        except OSError as e:
            s.close()
            # The guest said it listens; a refusal means its nc was not quite there.
            if time.monotonic() + 0.2 >= deadline or not alive():
                return f"connect to {GUEST_IP}:{TO_GUEST_PORT}: {e}"
            time.sleep(0.2)
    with s:
        view, sent, eof = memoryview(data), 0, False
        try:
            while not eof:
                if time.monotonic() >= deadline:
                    return f"not done within {timeout} s ({sent} of {len(data)} bytes sent)"
                try:
                    if sent < len(data):
                        sent += s.send(view[sent:sent + (1 << 20)])
                        if sent == len(data):
                            s.shutdown(socket.SHUT_WR)
                    else:
                        eof = not s.recv(65536)  # the guest sends nothing; wait for its close
                except socket.timeout:
                    if not alive():
                        return f"QEMU exited ({sent} of {len(data)} bytes sent)"
        except OSError as e:
            return f"after {sent} of {len(data)} bytes: {type(e).__name__} {e}"
    return None


def receive_from_guest(listener, timeout, alive):
    """Accepts the guest's connection on listener and reads to its EOF, for
    at most timeout s, or until soon after alive() turns false. Returns
    (what was read, None or what went wrong)."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    listener.settimeout(1.0)
    while True:
        try:
            c, _ = listener.accept()
            break
        except socket.timeout:
            if time.monotonic() >= deadline or not alive():
                return buf, f"no connection from the guest on port {TO_HOST_PORT}"
        except OSError as e:
            return buf, f"accept: {type(e).__name__} {e}"
    with c:
        c.settimeout(1.0)
        while True:
            if time.monotonic() >= deadline:
                return buf, f"no EOF from the guest within {timeout} s"
            try:
                chunk = c.recv(1 << 16)
            except socket.timeout:
                if not alive():
                    return buf, "QEMU exited"
                continue
            except OSError as e:
                return buf, f"receiving: {type(e).__name__} {e}"
            if not chunk:
                return buf, None
            buf += chunk


def setup_tap():
    """The namespace's loopback and tap device; returns None or what failed."""
    for cmd in (["ip", "link", "set", "lo", "up"],
                ["ip", "tuntap", "add", "mode", "tap", "name", TAP_NAME, "vnet_hdr"],
                ["ip", "addr", "add", f"{HOST_IP}/{PREFIX}", "dev", TAP_NAME],
                ["ip", "link", "set", TAP_NAME, "up"]):
        r = run(cmd)
        if r.returncode != 0:
            return f"{' '.join(cmd)}: {r.stdout.strip()}"
    return None


def qemu_cmd(a, vmlinuz, initrd, sock):
    cmd = [a.qemu, "-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot"]
    if a.backend == "qemu-tap":
        cmd += ["-netdev", f"tap,id=n,ifname={TAP_NAME},script=no,downscript=no,vhost=off",
                "-device", "virtio-net-pci,netdev=n"]
    else:
        # vhost-user needs guest RAM the backend can map. vectors=0 (INTx, no
        # MSI-X): QEMU 7.2 under TCG segfaults on virtio-net-pci over a
        # vhost-user netdev with MSI-X (fixed in later QEMU).
        cmd += ["-object", "memory-backend-memfd,id=mem,size=512M,share=on",
                "-machine", "memory-backend=mem",
                "-chardev", f"socket,id=c,path={sock}",
                "-netdev", "vhost-user,id=n,chardev=c",
                "-device", "virtio-net-pci,netdev=n,vectors=0"]
    return cmd + ["-kernel", vmlinuz, "-initrd", initrd,
                  "-append", f"console=ttyS0 panic=-1 fdvmt.mib={a.mib} {a.append}".strip()]


def exchange(a, tap, g, listener):
    """Pings and both transfers with the running guest g (listener: the
    host's socket for the guest's connection); False at the first step that
    failed (the guest is then of no further use)."""
    up = g.wait_for("up", STEP_TIMEOUT)
    r = g.results()
    if not tap.check(up is not None, "guest loaded virtio_net and brought eth0 up",
                     r.get("fail") or ("QEMU exited" if not g.running() else "no 'up' line")):
        return False
    print(f"# guest eth0: {up}")

    # The first answer may wait for ARP and the tap's carrier: allow it 20 s.
    t0 = time.monotonic()
    while not ping(GUEST_IP, 1, wait=0.5) and time.monotonic() - t0 < 20 and g.running():
        pass
    t_first = time.monotonic() - t0
    rtts = ping(GUEST_IP, a.pings)
    print(f"# ping: first answer after {t_first:.1f} s; "
          f"{len(rtts)}/{a.pings} answered"
          + (f", rtt min/avg/max {min(rtts) * 1e3:.1f}/{sum(rtts) / len(rtts) * 1e3:.1f}/"
             f"{max(rtts) * 1e3:.1f} ms" if rtts else ""))
    if not tap.check(len(rtts) == a.pings, f"host pings the guest: {a.pings} of {a.pings} answered",
                     f"{len(rtts)} answered"):
        return False

    size = a.mib << 20
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()
    listening = g.wait_for("listening", STEP_TIMEOUT)
    t0 = time.monotonic()
    why = send_to_guest(data, STEP_TIMEOUT, g.running) if listening else \
        "the guest did not say it listens: " + (g.results().get("fail") or "no 'listening' line")
    secs = time.monotonic() - t0
    if not tap.check(why is None, f"host sent {a.mib} MiB to the guest over TCP", why or ""):
        return False
    got = g.wait_for("rx-sha256", STEP_TIMEOUT)
    print(f"# host -> guest: {size / secs / 1e6:.1f} MB/s; guest: {g.results().get('rx-done')}")
    if not tap.check(got == want, "the guest received what the host sent (sha256)",
                     f"guest {got}, host {want}; {g.results().get('rx-done')}"):
        return False

    t0 = time.monotonic()
    buf, why = receive_from_guest(listener, STEP_TIMEOUT, g.running)
    secs = time.monotonic() - t0
    sent = g.wait_for("tx-sha256", 1)
    got = hashlib.sha256(buf).hexdigest()
    print(f"# guest -> host: {len(buf)} bytes, {len(buf) / secs / 1e6:.1f} MB/s")
    tap.check(why is None and len(buf) == size and got == sent,
              f"host received the guest's {a.mib} MiB over TCP, sha256 as the guest's",
              f"{why + '; ' if why else ''}{len(buf)} bytes, sha256 {got}, guest's {sent}")
    return why is None


def inside(a):
    """The test proper, run inside the namespace a.inside; prints TAP lines
    numbered from a.first, no plan (the outer process prints it)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    tap = Tap(a.first)
    logs = []
    tmp, sock = a.tmp, os.path.join(a.tmp, "net.sock")
    try:
        why = setup_tap()
        if not tap.check(why is None, f"tap {TAP_NAME} with {HOST_IP}/{PREFIX} in namespace {a.inside}",
                         why or ""):
            return finish(tap, logs, plan=False)
        # Listening before the guest starts: the guest connects when it is ready.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST_IP, TO_HOST_PORT))
        listener.listen(1)

        backend = None
        if a.backend == "fdvm":
            bcmd = [os.path.abspath(a.fdvm), "serve", "net", "--socket", sock, "--tap", TAP_NAME]
            bcmd += a.backend_arg
            print("# backend: " + " ".join(bcmd))
            berr_path = os.path.join(tmp, "backend.err")
            berr = open(berr_path, "wb")
            backend = start(bcmd, berr, berr)
            why = wait_socket(sock, backend, 15)
            if not tap.check(why is None, "backend listens on its socket", why or ""):
                stop_backend(backend)
                berr.close()
                comment_file("backend output", berr_path)
                return finish(tap, logs, plan=False)

        try:
            cmd = qemu_cmd(a, a.vmlinuz, a.initrd, sock)
            print("# " + " ".join(cmd))
            with Guest(cmd, tmp, "net", a.timeout, backend) as g:
                logs += [("guest console", g.cons_path), ("QEMU stderr", g.err_path)]
                if not exchange(a, tap, g, listener):
                    g.kill()  # the guest waits for a step that will not come
                status = g.wait()
            r = g.results()
            print(f"# guest ran {g.secs:.1f} s, QEMU status {status}")
            for k in ("tx-done", "stats", "irq"):
                print(f"# guest {k}: {r.get(k, '?')}")
            fail = r.get("fail", "")
            tap.check(status == 0 and "end" in r and not fail and r.get("tx-done") == "status=0",
                      "guest finished and powered off",
                      "killed (timeout, a failed step, or the backend had exited)" if status is None
                      else f"QEMU status {status}, {fail or r.get('tx-done') or 'no end line'}")
            lines = [l for l in g.stderr().splitlines() if l.strip()]
            warns = [l for l in lines if "warning:" in l]
            errs = [l for l in lines if l not in warns]
            tap.check(not errs, "no QEMU error", errs[0] if errs else "")
            # A warning too is a failure: with vhost-user it says that QEMU
            # and the backend disagree about what they offered each other.
            tap.check(not warns, "no QEMU warning", warns[0] if warns else "")
            if backend is not None:
                tap.check(backend.poll() is None, "backend still running after QEMU exited",
                          f"it exited with status {backend.returncode}")
        finally:
            if backend is not None:
                alive = stop_backend(backend)
                berr.close()
        if backend is not None:
            tap.check(alive and backend.returncode == 0 and not os.path.exists(sock),
                      "backend exited 0 on SIGTERM and removed its socket",
                      f"{'' if alive else 'it had already exited before SIGTERM; '}"
                      f"status {backend.returncode}, socket "
                      f"{'still there' if os.path.exists(sock) else 'removed'}")
            # The TCP transfers went as 64 KiB segments both ways: the tap
            # and the guest's driver took the offloads the device offered.
            text = open(berr_path, errors="replace").read()
            m = re.search(r"received (\d+) \((\d+) TSO, \d+ dropped\), sent (\d+) \((\d+) TSO", text)
            tap.check(m and int(m.group(2)) > 0 and int(m.group(4)) > 0,
                      "segmentation offload used both ways (TSO packets in the backend's counters)",
                      m.group(0) if m else "no counters in the backend's output")
            comment_file("backend output", berr_path)
        return finish(tap, logs, plan=False)
    finally:
        run(["ip", "link", "del", TAP_NAME])


# ---------------------------------------------------------------- outside

def remove_netns(ns):
    """Kills whatever still runs in ns, deletes it; returns (gone, notes)."""
    notes = []
    for _ in range(100):
        pids = [int(p) for p in run(["ip", "netns", "pids", ns]).stdout.split() if p.isdigit()]
        if not pids:
            break
        if not notes:
            notes.append(f"killed what still ran in it: {pids}")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    else:
        notes.append("processes would not die")
    r = run(["ip", "netns", "del", ns])
    if r.returncode != 0:
        notes.append(f"ip netns del: {r.stdout.strip()}")
    listed = [l.split()[0] for l in run(["ip", "netns", "list"]).stdout.splitlines() if l.strip()]
    return ns not in listed, notes


def relay(p, tap, limit):
    """Copies p's output (TAP lines) to ours until p exits, at most limit s;
    counts its results into tap. Returns p's status, None if stopped."""
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    buf = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(p.stdout.fileno(), 1 << 16)
            if not chunk:
                return p.wait()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for l in lines:
                line = l.decode(errors="replace")
                m = re.match(r"(not )?ok (\d+)", line)
                if m:
                    tap.n = max(tap.n, int(m.group(2)))
                    tap.failed += bool(m.group(1))
                print(line)
            sys.stdout.flush()
    finally:
        sel.close()
    # Over time: let it unwind (it kills QEMU and the backend), then kill it.
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_group(p)
    rest = p.stdout.read().decode(errors="replace")
    if rest.strip():
        comment("what it printed last", rest)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["qemu-tap", "fdvm"], required=True)
    ap.add_argument("--fdvm", help="the fdvm executable (for --backend fdvm)")
    ap.add_argument("--backend-arg", action="append", default=[],
                    help="extra argument for fdvm serve net, e.g. -v")
    ap.add_argument("--cache", required=True, help="where fetched packages are kept between runs")
    ap.add_argument("--mib", type=int, default=8, help="size of each transfer, MiB")
    ap.add_argument("--pings", type=int, default=10)
    ap.add_argument("--append", default="", help="extra guest kernel command line")
    ap.add_argument("--timeout", type=float, default=180, help="hard limit for the QEMU run, s")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--qemu", default=QEMU)
    # Set by the outer process for the one it runs inside the namespace.
    ap.add_argument("--inside", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--vmlinuz", help=argparse.SUPPRESS)
    ap.add_argument("--initrd", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not 1 <= a.mib <= 64:
        ap.error("--mib: 1..64 (the guest's /tmp holds both files)")
    if a.inside:
        return inside(a)

    t_start = time.monotonic()
    # meson test stops a test that runs too long with SIGTERM: unwind, so
    # that the namespace and everything in it go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    if os.geteuid() != 0:
        skip("not root")
    a.qemu = shutil.which(a.qemu)
    if not a.qemu:
        skip(f"no {QEMU}")
    if not shutil.which("ip"):
        skip("no ip (iproute2)")
    if not os.path.exists("/dev/net/tun"):
        skip("no /dev/net/tun")
    if a.backend == "fdvm" and (not a.fdvm or not os.access(a.fdvm, os.X_OK)):
        print("1..1")
        print(f"not ok 1 - fdvm executable # not found: {a.fdvm}")
        return 1
    try:
        desc = prepare_cache(os.path.abspath(a.cache))
    except Unavailable as e:
        skip(f"cannot fetch the guest's packages: {e}")
    except Exception as e:  # fetched, but not as this script expects
        print("1..1")
        print(f"not ok 1 - guest kernel and modules prepared in {a.cache} "
              f"# {type(e).__name__}: {e}")
        return 1
    cache = os.path.abspath(a.cache)
    t_cache = time.monotonic() - t_start

    tmp = tempfile.mkdtemp(prefix="fdvm-linux-net-")
    tap = Tap()
    ns = f"fdvm-lnet-{os.getpid()}"
    made = False
    try:
        initrd = os.path.join(tmp, "initrd.gz")
        mods = make_initrd(cache, desc, initrd, INIT, ROOT_MODULES)
        print(f"# kernel {desc['kernel']}; modules {' '.join(mods)}; "
              f"cache ready in {t_cache:.1f} s")
        r = run(["ip", "netns", "add", ns])
        made = r.returncode == 0
        if tap.check(made, f"network namespace {ns} created", r.stdout.strip()):
            cmd = ["ip", "netns", "exec", ns, sys.executable, "-u", os.path.abspath(__file__),
                   *sys.argv[1:], "--inside", ns, "--tmp", tmp, "--initrd", initrd,
                   "--vmlinuz", os.path.join(cache, desc["vmlinuz"]), "--qemu", a.qemu,
                   "--first", str(tap.n + 1)]
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            try:
                limit = a.timeout + 60
                status = relay(p, tap, limit)
            finally:
                if p.poll() is None:
                    kill_group(p)
            failed = tap.failed
            if status is None:
                tap.check(False, "the test inside the namespace finished", f"stopped after {limit:.0f} s")
            elif status != 0 and not failed:
                tap.check(False, "the test inside the namespace finished", f"exit status {status}")
    finally:
        if made:
            gone, notes = remove_netns(ns)
            for n in notes:
                print(f"# namespace {ns}: {n}")
            tap.check(gone, f"network namespace {ns} removed", "; ".join(notes))
        if a.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"# whole run {time.monotonic() - t_start:.1f} s")
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
