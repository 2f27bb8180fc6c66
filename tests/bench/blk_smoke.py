#!/usr/bin/env python3
"""Smoke test of `fdvm bench blk`: tiny counts; the table and JSON are
well-formed and no request failed (speed is not checked). With QEMU
installed, its rows too; the vhost-user rows (QEMU + `fdvm serve blk`,
QEMU + qemu-storage-daemon, and fdvm as the frontend: fdvm + fdvm serve
blk, fdvm + qemu-storage-daemon) with their ratios and goal lines;
--no-qemu leaves out the rows that need QEMU, --no-vhost-user the
vhost-user rows; no backend or QEMU is left running."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chart import chart_of, png_ok  # noqa: E402

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
qemu = shutil.which("qemu-system-x86_64") is not None
qsd = shutil.which("qemu-storage-daemon") is not None
tmp = tempfile.mkdtemp(prefix="fdvm-bench-blk-")
TESTS = ["randread qd1", "randread qd32", "randwrite qd1", "randwrite qd32"]
QD32 = ["randread qd32", "randwrite qd32"]
QD1 = ["randread qd1", "randwrite qd1"]
res = []


def run(js, *extra):
    return subprocess.run([fdvm, "bench", "blk", "--rounds", "2", "--ops", "300", "--size", "16",
                           "--dir", tmp, "--guest", guest, "--json", js, "--png", chart_of(js), *extra],
                          capture_output=True, text=True, timeout=240)


def load(js):
    try:
        with open(js) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def expected(with_qemu):
    """(vmm rows, {(test, ratio): goal or None}) for one run."""
    q, s = with_qemu, with_qemu and qsd
    vmms = ["fdvm", "fdvm+poll", "fdvm + fdvm serve blk"] + (["fdvm + qemu-storage-daemon"] if qsd else [])
    vmms += ["QEMU", "QEMU + fdvm serve blk"] if q else []
    vmms += ["QEMU + qemu-storage-daemon"] if s else []
    ratios = {}
    for t in QD32:
        ratios[(t, "fdvm + fdvm serve / in-process fdvm+poll IOPS")] = ">= 0.9"
        if s:
            ratios[(t, "fdvm serve / qemu-storage-daemon IOPS")] = ">= 2"
        if q:
            ratios[(t, "out-of-process / in-process fdvm+poll IOPS")] = None
            ratios[(t, "out-of-process / in-process fdvm IOPS")] = None
    for t in QD1:
        if s:
            ratios[(t, "qemu-storage-daemon / fdvm serve p99")] = "> 1"
    for t in TESTS:
        if q:
            ratios[(t, "fdvm / QEMU frontend, fdvm serve IOPS")] = ">= 1"
        if s:
            ratios[(t, "fdvm / QEMU frontend, qemu-storage-daemon IOPS")] = ">= 1"
    return vmms, ratios


def check(label, p, doc, with_qemu):
    vmms, want = expected(with_qemu)
    res.append((p.returncode == 0, f"{label}: exit 0 (got {p.returncode}: {p.stderr[-600:]!r})"))
    res.append((doc.get("failed") == [], f"{label}: no row failed ({doc.get('failed')!r})"))
    rows = doc.get("rows", [])
    for t in TESTS:
        for vmm in vmms:
            e = [r for r in rows if r.get("test") == t and r.get("vmm") == vmm]
            res.append((len(e) == 1 and e[0]["iops"] > 0 and e[0]["mean_us"] > 0 and e[0]["p99_us"] > 0
                        and e[0]["errors"] == 0, f"{label}: {t} on {vmm}: figures and no errors"))
            rr = e[0].get("iops_rounds", {}) if len(e) == 1 else {}
            res.append((len(rr.get("rounds", [])) == 2 and None not in rr["rounds"]
                        and rr["min"] <= e[0]["iops"] <= rr["max"]
                        and (vmm == "QEMU" or not with_qemu or "iops_x_qemu" in e[0]),
                        f"{label}: {t} on {vmm}: a figure per round, the median within them"))
            res.append((len(e) == 1 and re.search(rf"^.{{16}}{re.escape(vmm)} +[0-9]", p.stdout, re.M)
                        is not None, f"{label}: {t} on {vmm}: in the table"))
    res.append(({r.get("vmm") for r in rows} == set(vmms), f"{label}: rows for {sorted(vmms)} only"))
    ratios = doc.get("ratios")
    got = {}
    well = isinstance(ratios, list)
    for r in ratios or []:
        key = (r.get("test"), r.get("ratio"))
        v = r.get("value")
        well = well and key not in got and isinstance(v, (int, float)) and math.isfinite(v) and v > 0
        well = well and r.get("min", 0) <= v <= r.get("max", 0) and len(r["per_round"]["rounds"]) == 2
        if "goal" in r or "met" in r:
            well = well and isinstance(r.get("met"), bool)
        got[key] = r.get("goal")
    res.append((well and got == want,
                f"{label}: the {len(want)} ratios in the JSON, each once, with their goals "
                f"(missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))})"))
    # Every goal ratio printed with its goal and verdict, in its section.
    for (t, what), goal in want.items():
        line = re.compile(rf"^  {re.escape(t)} +{re.escape(what)} +[0-9.]+x \[[0-9.]+x\.\.[0-9.]+x\]"
                          + (rf"  goal {re.escape(goal)}: (met|NOT met)$" if goal else "$"), re.M)
        res.append((line.search(p.stdout) is not None, f"{label}: {t}: {what} printed"))
    res.append((("vhost-user (fdvm as the frontend):" in p.stdout)
                and (("vhost-user (QEMU as the frontend):" in p.stdout) == with_qemu),
                f"{label}: the goal sections printed"))


js = os.path.join(tmp, "blk.json")
p = run(js)
check("all rows", p, load(js), qemu)
res.append((png_ok(chart_of(js)) and "chart: " + chart_of(js) in p.stdout,
            "all rows: the chart (IOPS and p99 with error bars) written"))
res.append(("randread qd32" in p.stdout, "table printed"))

if qemu:  # without QEMU the run above was this one
    js3 = os.path.join(tmp, "blk3.json")
    p = run(js3, "--no-qemu")
    check("--no-qemu", p, load(js3), False)

js2 = os.path.join(tmp, "blk2.json")
p = run(js2, "--no-vhost-user", "--no-qemu")
doc = load(js2)
rows = doc.get("rows", [])
res.append((p.returncode == 0 and rows and {r["vmm"] for r in rows} == {"fdvm", "fdvm+poll"}
            and doc.get("ratios") == [] and "vhost-user (" not in p.stdout,
            f"--no-vhost-user --no-qemu: fdvm rows only, no ratios (exit {p.returncode})"))

# --cache none: O_DIRECT on this directory's file system (QEMU: aio=io_uring too), the
# image filled first; the same table and JSON, saying so.
def has_odirect(d):
    probe = os.path.join(d, "odirect-probe")
    try:
        open(probe, "wb").close()
        os.close(os.open(probe, os.O_RDWR | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


js4 = os.path.join(tmp, "blk4.json")
if not has_odirect(tmp):
    res.append((True, f"--cache none # SKIP {tmp} has no O_DIRECT"))
else:
    p = run(js4, "--cache", "none", "--no-vhost-user")
    doc = load(js4)
    rows = doc.get("rows", [])
    want = {"fdvm", "fdvm+poll"} | ({"QEMU"} if qemu else set())
    res.append((p.returncode == 0 and doc.get("cache") == "none" and {r["vmm"] for r in rows} == want
                and all(r["iops"] > 0 and r["errors"] == 0 for r in rows) and len(rows) == 4 * len(want)
                and "cache=none" in p.stdout,
                f"--cache none: rows {sorted(want)} with figures and no errors (exit {p.returncode}: {p.stderr[-300:]!r})"))

# --counters-cost: paired boots with counters on and off, a ratio per kind.
js5 = os.path.join(tmp, "blk5.json")
p = subprocess.run([fdvm, "bench", "blk", "--counters-cost", "2", "--ops", "300", "--size", "16",
                    "--dir", tmp, "--guest", guest, "--json", js5], capture_output=True, text=True,
                   timeout=240)
doc = load(js5)
rows = doc.get("rows", [])
res.append((p.returncode == 0 and doc.get("mode") == "counters-cost" and [r.get("test") for r in rows] == TESTS
            and all(r["rounds"] == 2 and r["ratio_min"] <= r["ratio"] <= r["ratio_max"] and r["iops_on"] > 0
                    and r["iops_off"] > 0 for r in rows) and isinstance(doc.get("met"), bool)
            and "Goal: under" in p.stdout,
            f"--counters-cost 2: a ratio per kind from 2 rounds, the goal line (exit {p.returncode})"))

# Several vCPUs: every row still runs (QEMU's disks keep one queue).
js6 = os.path.join(tmp, "blk6.json")
p = run(js6, "--cpus", "2", "--rounds", "1")
doc = load(js6)
res.append((p.returncode == 0 and doc.get("failed") == [] and len({r["vmm"] for r in doc.get("rows", [])})
            == len(expected(qemu)[0]),
            f"--cpus 2: every row ran (exit {p.returncode}: {p.stderr[-300:]!r})"))

res.append((not [f for f in os.listdir(tmp) if f.startswith("fdvm-bench-blk-")], "image removed"))
res.append((not [f for f in os.listdir("/tmp") if f.startswith("fdvm-bench-vu-") and
                 os.stat(os.path.join("/tmp", f)).st_mtime > os.stat(tmp).st_mtime],
            "backend sockets removed"))
# Backends and QEMU had the image (in tmp) on their command lines.
left = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if tmp.encode() in f.read():
                left.append(pid)
    except OSError:
        pass
res.append((not left, f"no backend or QEMU left running ({left})"))
shutil.rmtree(tmp, ignore_errors=True)
for i, (ok, what) in enumerate(res, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(res)}")
