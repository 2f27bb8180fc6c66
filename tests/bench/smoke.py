#!/usr/bin/env python3
"""Smoke test of `fdvm bench doorbell`: tiny counts, then checks that the
table, the JSON and the PNG are well-formed (not how fast anything is)."""
import json
import os
import subprocess
import sys
import tempfile

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="fdvm-bench-")
js, png = os.path.join(tmp, "b.json"), os.path.join(tmp, "b.png")
p = subprocess.run([fdvm, "bench", "doorbell", "--reps", "3", "--ops", "50", "--fast-ops", "200",
                    "--irq-ops", "20", "--guest", guest, "--json", js, "--png", png],
                   capture_output=True, text=True, timeout=240)
out = p.stdout
results = []


def check(ok, what):
    results.append((bool(ok), what))


check(p.returncode == 0, f"fdvm bench exits 0 (got {p.returncode}; stderr {p.stderr[-300:]!r})")
rows = ["mmio-exit", "mmio-wildcard", "mmio-datamatch", "pio-exit", "pio-wildcard",
        "pio-datamatch", "irq-irqfd", "irq-signal-msi", "irq-userspace", "roundtrip-kernel",
        "roundtrip-userspace"]
for r in rows:
    check(any(l.startswith(r + " ") for l in out.splitlines()), f"table has row {r}")
try:
    data = json.load(open(js))
except Exception as e:  # noqa: BLE001 - any failure to read is the finding
    data = None
    check(False, f"JSON readable: {e}")
if data is not None:
    check(data.get("tsc_hz", 0) > 1e8, "JSON: TSC frequency")
    by = {(e["row"], e["vmm"]): e for e in data["rows"]}
    for r in rows:
        e = by.get((r, "fdvm"))
        check(e and e["reps"] == 3 and 0 < e["min_us"] <= e["median_us"] <= e["max_us"]
              and abs(e["ops_per_s"] - 1e6 / e["median_us"]) < 1 + 1e-3 * e["ops_per_s"],
              f"JSON: {r} on fdvm is consistent")
    for r in ["mmio-exit", "mmio-wildcard", "pio-exit", "pio-wildcard"]:
        check((r, "floor") in by, f"JSON: {r} on the floor")
    if "QEMU rows skipped" not in out:
        for r in rows[:6]:
            check((r, "qemu") in by, f"JSON: {r} on QEMU")
with open(png, "rb") as f:
    check(f.read(8) == b"\x89PNG\r\n\x1a\n", "PNG written")
for i, (ok, what) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(results)}")
