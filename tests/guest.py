#!/usr/bin/env python3
"""Runs one guest under fdvm or QEMU and reports in TAP for `meson test`.

The guest's own TAP (printed over its serial console) is passed through; the
runner adds one result of its own for the VMM's exit status and any expected
output, so a guest that dies half-way, hangs, or exits with the wrong status
fails even when every line it printed said "ok". A test skips (TAP "1..0 #
SKIP") when KVM or QEMU is missing.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys


def skip(why):
    print(f"1..0 # SKIP {why}")
    sys.exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmm", choices=["fdvm", "qemu"], default="fdvm")
    ap.add_argument("--fdvm", help="path to the fdvm executable")
    ap.add_argument("--fdvm-arg", action="append", default=[], help="extra fdvm run option")
    ap.add_argument("--runner", help="a test harness to run instead of `fdvm run`")
    ap.add_argument("--qemu-arg", action="append", default=[], help="extra QEMU option")
    ap.add_argument("--guest", required=True)
    ap.add_argument("--append", default="", help="guest command line")
    ap.add_argument("--status", type=int, default=0, help="expected exit status")
    ap.add_argument("--expect", action="append", default=[], help="regex the output must match")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--expect-timeout", action="store_true",
                    help="pass only if the guest is still running at the timeout")
    ap.add_argument("--disk", action="append", type=int, default=[],
                    help="a raw disk of this many MiB (virtio-blk), made for the run")
    ap.add_argument("--disk-opts", default="", help="appended to fdvm's --blk FILE")
    a = ap.parse_args()

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("no usable /dev/kvm")
    import tempfile
    disks = []
    for mb in a.disk:
        f = tempfile.NamedTemporaryFile(prefix="fdvm-disk-", suffix=".img", delete=False)
        f.truncate(mb << 20)
        f.close()
        disks.append(f.name)
    if a.vmm == "fdvm" and not a.runner:
        a.fdvm_arg += [f"--blk={d}{a.disk_opts}" for d in disks]
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
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            skip("qemu-system-x86_64 is not installed")
        cmd = [qemu, "-enable-kvm", "-cpu", "qemu64", "-m", "128", "-display", "none",
               "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
               "-kernel", a.guest, "-append", a.append, *a.qemu_arg]

    timed_out = False
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=a.timeout)
        out, err, status = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        timed_out = True
        out = (e.stdout or b"").decode(errors="replace")
        err = (e.stderr or b"").decode(errors="replace")
        status = None

    for d in disks:
        os.unlink(d)
    # Pass the guest's TAP through; count its tests so ours comes last.
    lines = [l.rstrip("\r") for l in out.splitlines()]
    plan = 0
    for l in lines:
        m = re.match(r"^1\.\.(\d+)", l)
        if m:
            plan = int(m.group(1))
            continue
        if re.match(r"^(not )?ok\b", l):
            print(l)
        else:
            print("# " + l if l else "#")
    for l in err.splitlines():
        print("# stderr: " + l)
    ran = sum(1 for l in lines if re.match(r"^(not )?ok\b", l))
    problems = []
    if ran != plan:
        problems.append(f"guest planned {plan} tests and ran {ran}")
    if a.expect_timeout:
        if not timed_out:
            problems.append(f"guest exited with {status} but should have hung")
    elif timed_out:
        problems.append(f"killed after {a.timeout:g} s: guest hung")
    elif status != a.status:
        problems.append(f"exit status {status}, expected {a.status}")
    for rx in a.expect:
        if not re.search(rx, out + err, re.M):
            problems.append(f"output does not match /{rx}/")
    vmm = os.path.basename(a.runner) + " " + " ".join(a.fdvm_arg) if a.runner else a.vmm
    name = f"{vmm.strip()} {os.path.basename(a.guest)} {a.append}".strip()
    if problems:
        print(f"not ok {ran + 1} - {name}: " + "; ".join(problems))
    else:
        print(f"ok {ran + 1} - {name}: " +
              ("hung as expected, killed by the timeout" if a.expect_timeout else f"exit status {status}"))
    print(f"1..{ran + 1}")
    sys.exit(0)


if __name__ == "__main__":
    main()
