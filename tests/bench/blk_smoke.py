#!/usr/bin/env python3
"""Smoke test of `fdvm bench blk`: tiny counts; the table and JSON are
well-formed and no request failed (speed is not checked)."""
import json
import os
import subprocess
import sys
import tempfile

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="fdvm-bench-blk-")
js = os.path.join(tmp, "blk.json")
p = subprocess.run([fdvm, "bench", "blk", "--reps", "2", "--ops", "300", "--size", "16",
                    "--dir", tmp, "--guest", guest, "--json", js],
                   capture_output=True, text=True, timeout=240)
res = [(p.returncode == 0, f"exit 0 (got {p.returncode}: {p.stderr[-300:]!r})")]
rows = json.load(open(js))["rows"] if os.path.exists(js) else []
tests = ["randread qd1", "randread qd32", "randwrite qd1", "randwrite qd32"]
for t in tests:
    for vmm in ["fdvm", "fdvm+poll"]:
        e = [r for r in rows if r["test"] == t and r["vmm"] == vmm]
        res.append((len(e) == 1 and e[0]["iops"] > 0 and e[0]["mean_us"] > 0 and e[0]["p99_us"] > 0
                    and e[0]["errors"] == 0, f"{t} on {vmm}: figures and no errors"))
res.append(("randread qd32" in p.stdout, "table printed"))
res.append((not [f for f in os.listdir(tmp) if f.startswith("fdvm-bench-blk-")], "image removed"))
for i, (ok, what) in enumerate(res, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(res)}")
