#!/usr/bin/env python3
"""Smoke test of `fdvm bench doorbell`: tiny counts, then checks that the
table, the JSON and the PNG are well-formed (not how fast anything is)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chart import png_ok  # noqa: E402

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="fdvm-bench-")
js, png = os.path.join(tmp, "b.json"), os.path.join(tmp, "b.png")
p = subprocess.run([fdvm, "bench", "doorbell", "--rounds", "2", "--reps", "2", "--ops", "50", "--fast-ops", "200",
                    "--irq-ops", "20", "--guest", guest, "--json", js, "--png", png],
                   capture_output=True, text=True, timeout=240)
out = p.stdout
results = []


def check(ok, what):
    results.append((bool(ok), what))


check(p.returncode == 0, f"fdvm bench exits 0 (got {p.returncode}; stderr {p.stderr[-300:]!r})")
rows = ["mmio-exit", "mmio-wildcard", "mmio-datamatch", "pio-exit", "pio-wildcard",
        "pio-datamatch", "irq-irqfd", "irq-signal-msi", "irq-userspace", "roundtrip-kernel",
        "roundtrip-userspace", "roundtrip-kernel-poll", "roundtrip-userspace-poll", "pingpong"]
floor_rows = [r for r in rows if "datamatch" not in r]
qemu_rows = rows[:6] + ["irq-signal-msi"]
irq_rows = rows[6:11]
# The VMMs take turns, the order turning one place a round.
vmms = ["fdvm", "floor"] + ([] if "QEMU rows skipped" in out else ["qemu"])
check(f"round 1/2: {' '.join(vmms)}\n" in out and f"round 2/2: {' '.join(vmms[1:] + vmms[:1])}\n" in out,
      f"two rounds, the order turning: {vmms}")
for r in rows:
    check(any(l.startswith(r + " ") for l in out.splitlines()), f"table has row {r}")
try:
    data = json.load(open(js))
except Exception as e:  # noqa: BLE001 - any failure to read is the finding
    data = None
    check(False, f"JSON readable: {e}")


def spread_ok(s, n):
    vals = [v for v in s["rounds"] if v is not None]
    return (len(s["rounds"]) == n and len(vals) == n
            and s["min"] == min(vals) and s["max"] == max(vals)
            and s["min"] <= s["median"] <= s["max"])


if data is not None:
    check(data.get("tsc_hz", 0) > 1e8 and data.get("rounds") == 2 and data.get("reps") == 2,
          "JSON: TSC frequency, rounds, reps")
    by = {(e["row"], e["vmm"]): e for e in data["rows"]}
    for r in rows:
        e = by.get((r, "fdvm"))
        check(e and e["reps"] == 4 and spread_ok(e["us"], 2) and e["us"]["min"] > 0
              and abs(e["ops_per_s"] - 1e6 / e["us"]["median"]) < 1 + 1e-3 * e["ops_per_s"],
              f"JSON: {r} on fdvm: 2 rounds of 2, median within its spread")
    for r in floor_rows:
        check((r, "floor") in by and spread_ok(by[(r, "floor")]["us"], 2), f"JSON: {r} on the floor")
    # Every interrupt row's guest rings once per operation; a polling row
    # rings at most that often.
    for r in irq_rows:
        for v in ("fdvm", "floor"):
            e = by.get((r, v))
            check(e and e["doorbells"] == e["ops"] * e["reps"], f"JSON: {r} on {v}: a write per interrupt")
    for r in rows[11:]:
        for v in ("fdvm", "floor"):
            e = by.get((r, v))
            check(e and 1 <= e["doorbells"] <= e["ops"] * e["reps"],
                  f"JSON: {r} on {v}: between one doorbell and one per request")
    ratios = {(e["row"], e["ratio"]): e["value"] for e in data["ratios"]}
    for r in floor_rows:
        check((r, "fdvm_over_floor_minus_1") in ratios
              and spread_ok(ratios[(r, "fdvm_over_floor_minus_1")], 2),
              f"JSON: {r}: fdvm/floor per round, median within its spread")
    if "QEMU rows skipped" not in out:
        for r in qemu_rows:
            check((r, "qemu") in by and (r, "qemu_over_fdvm") in ratios
                  and spread_ok(ratios[(r, "qemu_over_fdvm")], 2), f"JSON: {r} on QEMU, ratio per round")
        check(("irq-irqfd", "qemu") not in by, "JSON: no QEMU figure for a row with no QEMU twin")
# Several vCPUs: the same rows, the bench on vCPU 0 (QEMU: -smp 2).
js2 = os.path.join(tmp, "b2.json")
p2 = subprocess.run([fdvm, "bench", "doorbell", "--cpus", "2", "--rounds", "1", "--reps", "1", "--ops", "50",
                     "--fast-ops", "200", "--irq-ops", "20", "--guest", guest, "--json", js2, "--png",
                     os.path.join(tmp, "b2.png")], capture_output=True, text=True, timeout=240)
try:
    rows2 = {(e["row"], e["vmm"]) for e in json.load(open(js2))["rows"]}
except Exception:  # noqa: BLE001 - any failure to read is the finding
    rows2 = set()
check(p2.returncode == 0 and "2 vCPUs" in p2.stdout and all((r, "fdvm") in rows2 for r in rows)
      and ("QEMU rows skipped" in p2.stdout or all((r, "qemu") in rows2 for r in qemu_rows)),
      f"--cpus 2: every row (exit {p2.returncode}; {p2.stderr[-300:]!r})")
check(png_ok(png), "PNG written")
shutil.rmtree(tmp, ignore_errors=True)
for i, (ok, what) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(results)}")
