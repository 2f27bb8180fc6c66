#!/usr/bin/env python3
"""Smoke test of `fdvm bench blk`: tiny counts; the table and JSON are
well-formed and no request failed (speed is not checked). With QEMU
installed, its rows too, and the vhost-user rows (QEMU + `fdvm serve blk`,
QEMU + qemu-storage-daemon) with their ratios; --no-vhost-user and
--no-qemu leave them out."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
qemu = shutil.which("qemu-system-x86_64") is not None
qsd = qemu and shutil.which("qemu-storage-daemon") is not None
tmp = tempfile.mkdtemp(prefix="fdvm-bench-blk-")


def run(js, *extra):
    return subprocess.run([fdvm, "bench", "blk", "--reps", "2", "--ops", "300", "--size", "16",
                           "--dir", tmp, "--guest", guest, "--json", js, *extra],
                          capture_output=True, text=True, timeout=240)


js = os.path.join(tmp, "blk.json")
p = run(js)
res = [(p.returncode == 0, f"exit 0 (got {p.returncode}: {p.stderr[-600:]!r})")]
doc = json.load(open(js)) if os.path.exists(js) else {}
rows = doc.get("rows", [])
tests = ["randread qd1", "randread qd32", "randwrite qd1", "randwrite qd32"]
vmms = ["fdvm", "fdvm+poll"]
if qemu:
    vmms += ["QEMU", "QEMU + fdvm serve blk"]
if qsd:
    vmms += ["QEMU + qemu-storage-daemon"]
for t in tests:
    for vmm in vmms:
        e = [r for r in rows if r["test"] == t and r["vmm"] == vmm]
        res.append((len(e) == 1 and e[0]["iops"] > 0 and e[0]["mean_us"] > 0 and e[0]["p99_us"] > 0
                    and e[0]["errors"] == 0, f"{t} on {vmm}: figures and no errors"))
res.append(("randread qd32" in p.stdout, "table printed"))
ratios = doc.get("ratios")
want = 8 if qsd else 4 if qemu else 0
res.append((isinstance(ratios, list) and len(ratios) == want
            and all(r["value"] > 0 for r in ratios), f"{want} ratios in the JSON"))
if qsd:
    res.append(("fdvm serve / qemu-storage-daemon IOPS" in p.stdout and "goal >= 2" in p.stdout,
                "the vhost-user goals printed"))
res.append((not [f for f in os.listdir(tmp) if f.startswith("fdvm-bench-blk-")], "image removed"))
res.append((not [f for f in os.listdir("/tmp") if f.startswith("fdvm-bench-vu-") and
                 os.stat(os.path.join("/tmp", f)).st_mtime > os.stat(tmp).st_mtime],
            "backend sockets removed"))

js2 = os.path.join(tmp, "blk2.json")
p = run(js2, "--no-vhost-user", "--no-qemu")
rows = json.load(open(js2))["rows"] if os.path.exists(js2) else []
res.append((p.returncode == 0 and rows and {r["vmm"] for r in rows} == {"fdvm", "fdvm+poll"},
            f"--no-vhost-user --no-qemu: fdvm rows only (exit {p.returncode})"))
shutil.rmtree(tmp, ignore_errors=True)
for i, (ok, what) in enumerate(res, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(res)}")
