#!/usr/bin/env python3
"""Runs a guest under `fdvm run --vhost-user blk,...` against `fdvm serve blk`
and reports in TAP for `meson test`.

It starts `fdvm serve blk` on a temporary zeroed image, waits (bounded) for
its socket to appear, runs the guest, stops the daemon with SIGTERM and checks:
the guest's own TAP (passed through; every planned test must have run), fdvm's
exit status, the daemon's clean exit (status 0, socket removed), and the
daemon's "frontend disconnected; messages: ..." line: SET_VRING_CALL must have
been sent exactly once per ring set up (SET_VRING_KICK), so masking and
unmasking the queue's MSI-X vector (the guest's "masks N") sent no vhost-user
message at all. A test skips (TAP "1..0 # SKIP") when /dev/kvm is unusable.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def killpg(p, sig=signal.SIGKILL):
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fdvm", required=True)
    ap.add_argument("--guest", required=True)
    ap.add_argument("--fdvm-arg", action="append", default=[], help="extra `fdvm run` option")
    ap.add_argument("--disk", type=int, default=8, help="image size in MiB")
    ap.add_argument("--disk-opts", default="", help="appended to the daemon's IMAGE argument")
    ap.add_argument("--append", default="", help="guest command line")
    ap.add_argument("--timeout", type=float, default=150)
    a = ap.parse_args()

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("1..0 # SKIP no usable /dev/kvm")
        return
    tmpdir = tempfile.mkdtemp(prefix="fdvm-vu-storm-")
    image = os.path.join(tmpdir, "disk.img")
    sock = os.path.join(tmpdir, "blk.sock")
    with open(image, "wb") as f:
        f.truncate(a.disk << 20)
    problems = []
    out = err = ""
    status = None
    d_out = tempfile.TemporaryFile()
    d_err = tempfile.TemporaryFile()
    daemon = None
    try:
        daemon = subprocess.Popen([a.fdvm, "serve", "blk", "--socket", sock, image + a.disk_opts],
                                  stdin=subprocess.DEVNULL, stdout=d_out, stderr=d_err,
                                  start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and daemon.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not os.path.exists(sock):
            problems.append("the daemon's socket did not appear" +
                            (f" (it exited with {daemon.returncode})" if daemon.poll() is not None else ""))
        else:
            cmd = [a.fdvm, "run", f"--vhost-user=blk,socket={sock}", *a.fdvm_arg, a.guest]
            if a.append:
                cmd += ["--", *a.append.split()]
            vmm = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True)
            try:
                o, e = vmm.communicate(timeout=a.timeout)
                status = vmm.returncode
            except subprocess.TimeoutExpired:
                killpg(vmm)
                o, e = vmm.communicate()
                problems.append(f"killed after {a.timeout:g} s: guest hung")
            out, err = o.decode(errors="replace"), e.decode(errors="replace")
            if status is not None and status != 0:
                problems.append(f"fdvm exit status {status}, expected 0")
        if daemon.poll() is not None:
            problems.append(f"the daemon died during the run (status {daemon.returncode})")
        else:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=10)
                if daemon.returncode != 0:
                    problems.append(f"the daemon exited with {daemon.returncode} on SIGTERM")
            except subprocess.TimeoutExpired:
                killpg(daemon)
                daemon.wait()
                problems.append("the daemon did not stop within 10 s of SIGTERM")
        if os.path.exists(sock):
            problems.append("the daemon left its socket behind")
    finally:
        if daemon and daemon.poll() is None:
            killpg(daemon)
            daemon.wait()
        shutil.rmtree(tmpdir, ignore_errors=True)
    d_out.seek(0)
    d_err.seek(0)
    dlog = d_out.read().decode(errors="replace") + d_err.read().decode(errors="replace")

    # The guest's TAP, passed through; ours follows.
    lines = [l.rstrip("\r") for l in out.splitlines()]
    plan = 0
    for l in lines:
        m = re.match(r"^1\.\.(\d+)", l)
        if m:
            plan = int(m.group(1))
        elif re.match(r"^(not )?ok\b", l):
            print(l)
        else:
            print("# " + l if l else "#")
    for l in err.splitlines():
        print("# stderr: " + l)
    for l in dlog.splitlines():
        print("# daemon: " + l)
    ran = sum(1 for l in lines if re.match(r"^(not )?ok\b", l))
    if ran != plan or plan == 0:
        problems.append(f"guest planned {plan} tests and ran {ran}")
    name = f"fdvm run {' '.join(a.fdvm_arg)} --vhost-user + fdvm serve blk {os.path.basename(a.guest)}"
    name = re.sub(r" +", " ", name)
    print(("not ok" if problems else "ok") + f" {ran + 1} - {name}: " +
          ("; ".join(problems) if problems else f"exit status {status}, daemon stopped cleanly"))

    # No vhost-user message on mask/unmask.
    said = re.findall(r"frontend disconnected; messages:(.*)$", dlog, re.M)
    counts = {}
    if len(said) == 1:
        for k, v in re.findall(r"([A-Z_]+) (\d+)", said[0]):
            counts[k] = int(v)
    m = re.search(r"# blk storm: .*? masks (\d+)", out)
    masks = int(m.group(1)) if m else -1
    calls, setups = counts.get("SET_VRING_CALL", -1), counts.get("SET_VRING_KICK", -1)
    ok = len(said) == 1 and setups >= 1 and calls == setups and masks > 0
    why = "" if len(said) == 1 else f" (found {len(said)} \"messages:\" lines, expected 1)"
    print(("ok" if ok else "not ok") +
          f" {ran + 2} - no vhost-user message on mask/unmask: SET_VRING_CALL {calls} == ring setups "
          f"(SET_VRING_KICK) {setups}, masks {masks}{why}")
    print(f"1..{ran + 2}")


if __name__ == "__main__":
    main()
