#!/usr/bin/env python3
"""The virtio-net responder guest (guest/tests/virtio_net) against the host,
through a tap, in a network namespace of its own; TAP for `meson test`.

Outside (root): makes the namespace fdvm-net-<pid>, runs this script again
inside it (`ip netns exec NS python3 net_echo.py --inside ...`) with a hard
timeout, numbers the results it prints, and always deletes the namespace
afterwards (any process still in it is killed first). Inside: the tap
fdvmtap0 with 10.77.0.1/24 (multi_queue when there is more than one queue),
the VMM (and the vhost-user backend) started with the guest, then once the
guest prints "# net ready": ICMP echo (raw socket: 20 requests, all must be
answered), UDP echo to 10.77.0.2:7 (--count datagrams of 1..65000 bytes
including 1, 1472, 1473, 8000 and 65000, each of distinct random content and
checked by content, a window of them in flight over several source ports,
lost ones retried a bounded number of times), "bye" to port 9, and the VMM
must exit with status 0 and the guest's TAP (passed through) all ok.

--hostile runs guest/tests/virtio_net_hostile instead, which needs nothing
from the host but the tap's address; no traffic is sent to it.

Targets (--target):
  fdvm        fdvm run --net tap=fdvmtap0[TAP-OPTS] GUEST
  fdvm-serve  fdvm serve net --socket S --tap fdvmtap0[TAP-OPTS];
              fdvm run --vhost-user net,socket=S GUEST
  qemu-serve  the same backend; QEMU with memfd RAM and -netdev vhost-user
  qemu-tap    QEMU's own -netdev tap (vhost=off) and virtio-net-pci
The backend (fdvm serve net) must still run when the VMM exits, stop on
SIGTERM with status 0 and remove its socket (tests/guest.py's rules).
"""
import argparse
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import guest as g  # noqa: E402  (tests/guest.py: Vmm, Backend, killpg, describe)

TAP = "fdvmtap0"


class Abort(Exception):
    """The run cannot go on; the reason was already reported."""

HOST_IP = "10.77.0.1"
GUEST_IP = "10.77.0.2"


def say(ok, text):
    print(("ok - " if ok else "not ok - ") + text.replace("\n", " "), flush=True)
    return ok


def note(text):
    for l in text.splitlines() or [""]:
        print(l if l.startswith("#") else "# " + l, flush=True)


def run(cmd, check=True):
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit status {r.returncode}: {r.stderr.strip()}")
    return r


def queues_of(a):
    m = re.search(r"(?:^|,)queues=(\d+)", a.tap_opts)
    return int(m.group(1)) if m else a.queues


# ---------------------------------------------------------------- outside

def outside(a):
    if os.geteuid() != 0:
        g.skip("not root")
    if not os.path.exists("/dev/net/tun"):
        g.skip("no /dev/net/tun")
    if not shutil.which("ip"):
        g.skip("no ip(8)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        g.skip("no usable /dev/kvm")
    if a.target.startswith("qemu") and not shutil.which("qemu-system-x86_64"):
        g.skip("qemu-system-x86_64 is not installed")
    if a.target != "qemu-tap" and not (a.fdvm and os.access(a.fdvm, os.X_OK)):
        g.skip(f"no fdvm executable ({a.fdvm})")

    ns = f"fdvm-net-{os.getpid()}"
    results = []
    skip_why = None
    lines = []
    try:
        run(["ip", "netns", "add", ns])
    except Exception as e:  # noqa: BLE001
        print("not ok 1 - could not make a network namespace: " + str(e))
        print("1..1")
        return
    timed_out = False
    try:
        cmd = ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--inside"] + a.rest
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + a.timeout
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            r, _, _ = select.select([p.stdout], [], [], min(left, 1.0))
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    l, buf = buf.split(b"\n", 1)
                    lines.append(l.decode(errors="replace"))
        if timed_out:
            g.killpg(p)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            g.killpg(p)
            rc = p.wait()
        if buf:
            lines.append(buf.decode(errors="replace"))
    finally:
        left = cleanup_ns(ns)
    n = 0
    for l in lines:
        m = re.match(r"^(not ok|ok) - (.*)$", l)
        if m:
            n += 1
            print(f"{m.group(1)} {n} - {m.group(2)}")
        elif l.startswith("SKIP "):
            skip_why = l[5:]
        else:
            print("# " + l if not l.startswith("#") else l)
    if skip_why and not n:
        print(f"1..0 # SKIP {skip_why}")
        return
    problems = []
    if timed_out:
        problems.append(f"killed after {a.timeout:g} s")
    elif rc != 0:
        problems.append(f"the inside part ended with {g.describe(rc)}")
    if left:
        problems.append(left)
    if not n:
        problems.append("no results at all")
    if problems:
        n += 1
        print(f"not ok {n} - {a.target}: " + "; ".join(problems))
    print(f"1..{n}")


def cleanup_ns(ns):
    """Kills what still runs in the namespace and deletes it; a problem or ''."""
    problem = ""
    for _ in range(3):
        r = run(["ip", "netns", "pids", ns], check=False)
        pids = [int(x) for x in r.stdout.split() if x.isdigit()]
        if not pids:
            break
        problem = f"processes left in the namespace (killed): {pids}"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    r = run(["ip", "netns", "del", ns], check=False)
    if r.returncode:
        problem += f"; ip netns del {ns}: {r.stderr.strip()}"
    return problem


# ----------------------------------------------------------------- inside

class NetBackend(g.Backend):
    """fdvm serve net on the tap, through tests/guest.py's backend rules."""

    def cmd(self):
        return [self.fdvm, "serve", "net", "--socket", self.sock, "--tap", TAP + self.opts, *self.extra]


def checksum(b):
    if len(b) & 1:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ping(count, interval, wait):
    """ICMP echo through a raw socket: returns (answered, sent, rtts)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xffff
    sent, got, rtts = {}, set(), []
    try:
        next_send = time.monotonic()
        seq = 0
        end = None
        while True:
            now = time.monotonic()
            if seq < count and now >= next_send:
                payload = os.urandom(48)
                h = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                pkt = struct.pack("!BBHHH", 8, 0, checksum(h + payload), ident, seq) + payload
                s.sendto(pkt, (GUEST_IP, 0))
                sent[seq] = (now, payload)
                seq += 1
                next_send = now + interval
                if seq == count:
                    end = now + wait
            if end and (now >= end or len(got) == count):
                break
            r, _, _ = select.select([s], [], [], max(0.0, min(next_send - now if seq < count else 0.05, 0.05)))
            if not r:
                continue
            data, addr = s.recvfrom(65535)
            ihl = (data[0] & 15) * 4
            icmp = data[ihl:]
            if addr[0] != GUEST_IP or len(icmp) < 8:
                continue
            t, c, _, i, q = struct.unpack("!BBHHH", icmp[:8])
            if t == 0 and c == 0 and i == ident and q in sent and q not in got and checksum(icmp) == 0 \
                    and icmp[8:] == sent[q][1]:
                got.add(q)
                rtts.append(time.monotonic() - sent[q][0])
    finally:
        s.close()
    return len(got), count, rtts


def udp_echo(count, window, nsock, per_try, tries, deadline, rng):
    """Echo of count datagrams through nsock sockets; returns a summary dict."""
    sizes = [1, 1472, 1473, 8000, 65000]
    sizes += [rng.choice([rng.randint(1, 1472), rng.randint(1, 9000), rng.randint(1, 65000)])
              for _ in range(max(0, count - len(sizes)))]
    sizes = sizes[:count]
    socks = []
    for _ in range(nsock):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((HOST_IP, 0))
        s.setblocking(False)
        socks.append(s)
    inflight = {}  # (sock index, content) -> [index, sent at, tries]
    todo = list(range(len(sizes)))
    todo.reverse()
    done, retried, lost, bad, nbytes = 0, set(), [], 0, 0
    payload = {}
    try:
        while (todo or inflight) and time.monotonic() < deadline:
            now = time.monotonic()
            while todo and len(inflight) < window:
                i = todo.pop()
                si = i % nsock
                while True:
                    d = os.urandom(sizes[i])
                    if (si, d) not in inflight:
                        break
                payload[i] = d
                inflight[(si, d)] = [i, now, 1]
                socks[si].sendto(d, (GUEST_IP, 7))
            for key, rec in list(inflight.items()):
                if now - rec[1] >= per_try:
                    del inflight[key]
                    if rec[2] >= tries:
                        lost.append(rec[0])
                        continue
                    retried.add(rec[0])
                    si = rec[0] % nsock
                    while True:  # new content: a late first answer must not count
                        d = os.urandom(sizes[rec[0]])
                        if (si, d) not in inflight:
                            break
                    inflight[(si, d)] = [rec[0], now, rec[2] + 1]
                    socks[si].sendto(d, (GUEST_IP, 7))
            r, _, _ = select.select(socks, [], [], 0.05)
            for s in r:
                si = socks.index(s)
                while True:
                    try:
                        d, addr = s.recvfrom(70000)
                    except BlockingIOError:
                        break
                    rec = inflight.pop((si, d), None)
                    if rec is None or addr != (GUEST_IP, 7):
                        bad += 1  # late duplicate of a retried one, or not ours
                        continue
                    done += 1
                    nbytes += len(d)
    finally:
        for s in socks:
            s.close()
    lost += [rec[0] for rec in inflight.values()]
    return {"count": len(sizes), "done": done, "retried": len(retried), "lost": sorted(lost),
            "unmatched": bad, "bytes": nbytes, "sizes": sizes}


def inside(a):
    deadline = time.monotonic() + a.timeout
    nq = queues_of(a)
    rng = random.Random(a.seed)
    note(f"target {a.target}, queues {nq}, seed {a.seed}")
    try:
        with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
            f.write("1")  # no router solicitations on the tap
    except OSError:
        pass
    run(["ip", "link", "set", "lo", "up"])
    run(["ip", "tuntap", "add", "mode", "tap", "name", TAP, "vnet_hdr"] + (["multi_queue"] if nq > 1 else []))
    run(["ip", "addr", "add", HOST_IP + "/24", "dev", TAP])
    run(["ip", "link", "set", TAP, "up"])

    guest = a.guest
    words = list(a.guest_arg)
    if not a.hostile:
        words.append(f"seconds={int(max(30, a.timeout - 30))}")
    if nq > 1 and "mq" not in words and not a.hostile:
        words.append("mq")
    tmp = tempfile.mkdtemp(prefix="fdvm-net-")
    sock = os.path.join(tmp, "net.sock")
    be = None
    qemu = shutil.which("qemu-system-x86_64")
    qemu_base = [qemu, "-enable-kvm", "-cpu", "qemu64", "-m", str(a.mem), "-display", "none",
                 "-no-reboot", "-nodefaults", "-serial", "stdio",
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                 "-kernel", guest, "-append", " ".join(words)]
    mqdev = f",mq=on,vectors={2 * nq + 2}" if nq > 1 else ""
    if a.target == "fdvm":
        cmd = [a.fdvm, "run", f"--net=tap={TAP}{a.tap_opts}", *a.fdvm_arg, guest, "--", *words]
    elif a.target == "fdvm-serve":
        be = NetBackend("fdvm", a.fdvm, TAP, a.tap_opts, sock, 0, a.backend_arg)
        cmd = [a.fdvm, "run", f"--vhost-user=net,socket={sock}", *a.fdvm_arg, guest, "--", *words]
    elif a.target == "qemu-serve":
        be = NetBackend("fdvm", a.fdvm, TAP, a.tap_opts, sock, 0, a.backend_arg)
        cmd = qemu_base + ["-object", f"memory-backend-memfd,id=mem,size={a.mem}M,share=on",
                           "-machine", "memory-backend=mem", "-chardev", f"socket,id=c,path={sock}",
                           "-netdev", "vhost-user,id=n,chardev=c" + (f",queues={nq}" if nq > 1 else ""),
                           "-device", f"virtio-net-pci,netdev=n,disable-legacy=on{mqdev}{a.qemu_dev_opts}",
                           *a.qemu_arg]
    else:
        cmd = qemu_base + ["-netdev", f"tap,id=n,ifname={TAP},script=no,downscript=no,vhost=off"
                                      + (f",queues={nq}" if nq > 1 else ""),
                           "-device", f"virtio-net-pci,netdev=n,disable-legacy=on{mqdev}{a.qemu_dev_opts}",
                           *a.qemu_arg]
    note("VMM: " + " ".join(cmd))
    if be:
        note("backend: " + " ".join(be.cmd()))

    vmm = None
    status = None
    timed_out = False
    problems = []
    try:
        if be:
            why = be.start()
            if why:
                say(False, f"backend: {why}")
                return
        vmm = g.Vmm(cmd)
        ready = vmm.wait_for(r"^# net ready .*\n", min(deadline, time.monotonic() + 90)) or a.hostile
        if not a.hostile:
            m = re.search(r"^# net ready (.*)$", vmm.text(), re.M)
            if not say(ready, "guest says net ready" + (f": {m.group(1).strip()}" if m else
                       f" (VMM {g.describe(vmm.p.poll())})")):
                raise Abort()
            got, sent, rtts = ping(a.pings, 0.05, 2.0)
            say(got == sent, f"ping {GUEST_IP}: {got} of {sent} answered" +
                (f", rtt max {max(rtts) * 1000:.1f} ms" if rtts else ""))
            t0 = time.monotonic()
            nsock = 16 if nq > 1 else 4
            r = udp_echo(a.count, a.window, nsock, a.per_try, a.tries, min(deadline - 20, t0 + a.udp_time), rng)
            dt = time.monotonic() - t0
            big = sum(1 for s in r["sizes"] if s > 1472)
            say(r["done"] == r["count"] and not r["lost"],
                f"UDP echo: {r['done']} of {r['count']} datagrams back with their content "
                f"({big} fragmented, {r['bytes'] / 1e6:.1f} MB in {dt:.1f} s; {r['retried']} needed a retry, "
                f"{r['unmatched']} late duplicates" +
                (f"; never came back: sizes {[r['sizes'][i] for i in r['lost'][:20]]}" if r["lost"] else "") + ")")
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(3):  # UDP: say it more than once, in case one is lost
                s.sendto(b"bye", (GUEST_IP, 9))
                if vmm.wait_for(r"^# counters", time.monotonic() + 3):
                    break
            s.close()
        status, timed_out = vmm.finish(min(deadline, time.monotonic() + (a.timeout if a.hostile else 60)))
    except Abort:
        pass
    finally:
        if vmm and vmm.p.poll() is None:
            g.killpg(vmm.p, signal.SIGTERM)
            status, timed_out = vmm.finish(time.monotonic() + 5)
            timed_out = True
        elif vmm and status is None:
            status, timed_out = vmm.finish(time.monotonic() + 5)
        if be:
            problems += be.stop()
            be.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    out = vmm.out.decode(errors="replace") if vmm else ""
    err = vmm.err.decode(errors="replace") if vmm else ""
    plan, ran, failed = 0, 0, 0
    for l in (x.rstrip("\r") for x in out.splitlines()):
        m = re.match(r"^1\.\.(\d+)", l)
        if m:
            plan = int(m.group(1))
        elif re.match(r"^(not )?ok\b", l):
            ran += 1
            failed += l.startswith("not ok")
            print(re.sub(r"^(not ok|ok) \d+( -)?", r"\1 - guest:", l), flush=True)
        else:
            note(l)
    for l in err.splitlines():
        note("stderr: " + l)
    if be:
        be.report()
    if timed_out:
        problems.append("the VMM did not exit in time (killed)")
    elif status != 0:
        problems.append(f"VMM {g.describe(status)}, expected 0")
    if ran != plan or not plan:
        problems.append(f"guest planned {plan} tests and ran {ran}")
    if failed:
        problems.append(f"{failed} of the guest's tests failed")
    if problems:
        say(False, f"{a.target}: " + "; ".join(problems))
    else:
        say(True, f"{a.target}: VMM exited 0, guest ran its {plan} tests" + ("; backend stopped cleanly" if be else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--target", choices=["fdvm", "fdvm-serve", "qemu-serve", "qemu-tap"], default="qemu-tap")
    ap.add_argument("--fdvm", help="the fdvm executable")
    ap.add_argument("--guest", required=True, help="virtio_net.elf (or virtio_net_hostile.elf with --hostile)")
    ap.add_argument("--hostile", action="store_true", help="the guest is the hostile one: no traffic from here")
    ap.add_argument("--guest-arg", action="append", default=[], help="a word for the guest's command line")
    ap.add_argument("--fdvm-arg", action="append", default=[], help="an extra fdvm run option")
    ap.add_argument("--backend-arg", action="append", default=[], help="an extra fdvm serve net option")
    ap.add_argument("--qemu-arg", action="append", default=[], help="an extra QEMU option")
    ap.add_argument("--qemu-dev-opts", default="", help="appended to -device virtio-net-pci,...")
    ap.add_argument("--tap-opts", default="", help="appended to fdvm's tap=fdvmtap0 / --tap fdvmtap0")
    ap.add_argument("--queues", type=int, default=1, help="queue pairs (default: queues= in --tap-opts, or 1)")
    ap.add_argument("--mem", type=int, default=128, help="QEMU's guest RAM in MiB")
    ap.add_argument("--count", type=int, default=3000, help="UDP datagrams")
    ap.add_argument("--window", type=int, default=8, help="UDP datagrams in flight")
    ap.add_argument("--per-try", type=float, default=2.0, help="seconds to wait for an echo")
    ap.add_argument("--tries", type=int, default=4, help="sends of one datagram at most")
    ap.add_argument("--udp-time", type=float, default=150, help="seconds for the UDP phase at most")
    ap.add_argument("--pings", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=240, help="seconds for everything")
    a = ap.parse_args()
    if a.seed is None:
        a.seed = random.randrange(1 << 32)
    if a.inside:
        try:
            inside(a)
        except Exception as e:  # noqa: BLE001  (a result, not a traceback)
            say(False, f"{type(e).__name__}: {e}")
        sys.exit(0)
    # What the inside part gets: everything but the outer-only bits, with the seed fixed.
    rest = [x for x in sys.argv[1:]]
    if not any(x.startswith("--seed") for x in rest):
        rest += ["--seed", str(a.seed)]
    # The inside part gets a little less time, so that it reports before it is killed.
    rest += ["--timeout", str(max(10, a.timeout - 15))]
    a.rest = rest
    outside(a)


if __name__ == "__main__":
    main()
