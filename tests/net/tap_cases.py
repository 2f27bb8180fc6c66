#!/usr/bin/env python3
"""How fdvm opens taps: by name, with a clear error when it cannot, and a tap
it had to create gone when it exits.

In a network namespace of its own (made here, deleted afterwards whatever
happens; nothing is sent anywhere):
  - a missing tap is created for `fdvm run --net` and removed when fdvm exits;
  - a tun device of that name, a tap that is not multi-queue with queues=2,
    and a tap another process holds each end fdvm with status 2 and one
    error line that says why;
  - `fdvm serve net` without --tap, or with a second one, is a usage error;
  - `fdvm serve net` on a tap it created exits 0 on SIGTERM, socket and tap
    gone.
Prints TAP; root only (else it skips)."""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

results = []


def ok(cond, what, detail=""):
    results.append(bool(cond))
    print(f"{'ok' if cond else 'not ok'} {len(results)} - {what}")
    if not cond and detail:
        for line in detail.strip().splitlines()[-8:]:
            print(f"# {line}")
    sys.stdout.flush()


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


def link_exists(name):
    return sh("ip", "link", "show", name).returncode == 0


def run_fails(fdvm, args, want, what):
    p = subprocess.run([fdvm, *args], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    ok(p.returncode == 2 and want in p.stderr, f"{what}: status 2, says '{want}'",
       f"status {p.returncode}\n{p.stderr}")


def wait_until(cond, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def inside(a):
    sh("ip", "link", "set", "lo", "up")
    tmp = tempfile.mkdtemp(prefix="fdvm-tap-")

    # A missing tap: created for the guest's lifetime, gone afterwards.
    p = subprocess.Popen([a.fdvm, "run", "-v", "--net", "tap=fdvmnew0", a.guest, "--", "hang"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    created = wait_until(lambda: link_exists("fdvmnew0"), 10)
    ok(created, "a missing tap is created")
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    ok("tap fdvmnew0: created" in err, "fdvm says it created the tap", err)
    ok(wait_until(lambda: not link_exists("fdvmnew0"), 5), "the tap it created is gone after exit")

    # Taps fdvm cannot use.
    sh("ip", "tuntap", "add", "mode", "tun", "name", "fdvmtun0")
    run_fails(a.fdvm, ["run", "--net", "tap=fdvmtun0", a.guest], "is multi-queue or a tun device",
              "a tun device")
    sh("ip", "tuntap", "add", "mode", "tap", "name", "fdvmsq0")
    run_fails(a.fdvm, ["run", "--net", "tap=fdvmsq0,queues=2", a.guest], "it is not multi-queue",
              "queues=2 on a single-queue tap")
    ok(link_exists("fdvmsq0") and link_exists("fdvmtun0"), "taps fdvm did not make are left alone")

    # A tap another process holds: fdvm serve net has it.
    sock = os.path.join(tmp, "net.sock")
    s = subprocess.Popen([a.fdvm, "serve", "net", "--socket", sock, "--tap", "fdvmsq0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listening = wait_until(lambda: os.path.exists(sock), 10)
    ok(listening, "fdvm serve net listens")
    run_fails(a.fdvm, ["run", "--net", "tap=fdvmsq0", a.guest], "another process has it open",
              "a tap in use")
    s.send_signal(signal.SIGTERM)
    try:
        out, err = s.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        s.kill()
        out, err = s.communicate()
    ok(s.returncode == 0 and not os.path.exists(sock),
       "fdvm serve net: SIGTERM ends it with status 0, socket removed", f"status {s.returncode}\n{err}")

    # The daemon on a tap it creates.
    s = subprocess.Popen([a.fdvm, "serve", "net", "--socket", sock, "--tap", "fdvmnew1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ok(wait_until(lambda: os.path.exists(sock) and link_exists("fdvmnew1"), 10),
       "fdvm serve net creates a missing tap")
    s.send_signal(signal.SIGTERM)
    try:
        s.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        s.kill()
        s.communicate()
    ok(s.returncode == 0 and wait_until(lambda: not link_exists("fdvmnew1"), 5),
       "and the tap goes with it")

    # Usage errors.
    run_fails(a.fdvm, ["serve", "net", "--socket", sock], "--tap NAME is missing", "serve net without --tap")
    run_fails(a.fdvm, ["serve", "net", "--socket", sock, "--tap", "a", "--tap", "b"], "one tap only",
              "serve net with two taps")
    run_fails(a.fdvm, ["serve", "net", "--socket", sock, "--tap", "a,queues=99"],
              "queues (pairs) must be 1..16", "serve net with 99 pairs")
    run_fails(a.fdvm, ["serve", "net", "--socket", sock, "a"], "the tap is --tap NAME",
              "serve net with a bare argument")
    os.rmdir(tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdvm", required=True)
    ap.add_argument("--guest", required=True, help="a guest that runs until stopped (exitcode hang)")
    ap.add_argument("--inside", action="store_true")
    a = ap.parse_args()
    if a.inside:
        inside(a)
        sys.exit(0 if all(results) else 1)
    if os.geteuid() != 0:
        print("1..0 # SKIP not root (taps and network namespaces need it)")
        return
    if not os.path.exists("/dev/net/tun") or subprocess.run(["ip", "-V"], capture_output=True).returncode:
        print("1..0 # SKIP no /dev/net/tun or no ip(8)")
        return
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("1..0 # SKIP no /dev/kvm")
        return
    ns = f"fdvm-tapc-{os.getpid()}"
    if sh("ip", "netns", "add", ns).returncode:
        print(f"1..0 # SKIP cannot make a network namespace")
        return
    lines = []
    try:
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                            "--inside", "--fdvm", a.fdvm, "--guest", a.guest],
                           capture_output=True, text=True, timeout=240)
        lines = p.stdout.splitlines()
        if p.returncode and not any(l.startswith("not ok") for l in lines):
            lines.append(f"not ok {len(lines) + 1} - the test itself failed (status {p.returncode})")
            lines += ["# " + l for l in p.stderr.splitlines()[-10:]]
    except subprocess.TimeoutExpired:
        lines.append("not ok 1 - timed out")
    finally:
        for pid in sh("ip", "netns", "pids", ns).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns)
    n = sum(1 for l in lines if l.startswith(("ok", "not ok")))
    print(f"1..{n}")
    for l in lines:
        print(l)
    if ns in sh("ip", "netns", "list").stdout:
        print(f"not ok {n + 1} - namespace {ns} still there")


if __name__ == "__main__":
    main()
