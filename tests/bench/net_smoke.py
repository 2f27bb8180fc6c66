#!/usr/bin/env python3
"""Smoke test of `fdvm bench net`: small counts; the tables, the goal lines
and the JSON are well-formed, every row has figures above zero (speed is not
checked). All four rows with QEMU installed (fdvm --net, fdvm + fdvm serve
net, QEMU + fdvm serve net, QEMU tap), else --no-qemu; then --no-qemu
--no-vhost-user leaves fdvm --net alone. Afterwards no tap fdvmb0 is in
this namespace (the benchmark's own went with its namespace), no backend
socket directory is left, and no VMM or backend it started still runs.
Needs root (the benchmark makes a network namespace), KVM, ip and
/dev/net/tun: skips otherwise. Prints TAP."""
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


def skip(why):
    print(f"1..0 # SKIP {why}")
    sys.exit(0)


if os.geteuid() != 0:
    skip("not root (fdvm bench net makes a network namespace)")
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    skip("no usable /dev/kvm")
if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
    skip("no /dev/net/tun")
if shutil.which("ip") is None:
    skip("no ip (iproute2)")
qemu = shutil.which("qemu-system-x86_64") is not None

ROWS = ["fdvm --net", "fdvm + fdvm serve net", "QEMU + fdvm serve net", "QEMU tap"]
TESTS = ["rtt", "tx64", "tx1500"]
TITLES = {"tx64": "tx, 64-byte frames", "tx1500": "tx, 1500-byte packets"}
REPS, COUNT = 2, 300
tmp = tempfile.mkdtemp(prefix="fdvm-bench-net-smoke-")
res = []
comments = []


def ours():
    """Processes on the benchmark's tap (the VMMs and backends it starts)."""
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"fdvmb0" in f.read():
                    pids.add(pid)
        except OSError:
            pass
    return pids


def sockdirs():
    return {d for d in os.listdir("/tmp") if d.startswith("fdvm-bench-net-") and "smoke" not in d}


before_pids, before_dirs = ours(), sockdirs()


def run(js, *extra):
    try:
        return subprocess.run([fdvm, "bench", "net", "--rounds", str(REPS), "--count", str(COUNT),
                               "--guest", guest, "--json", js, "--png", chart_of(js), *extra],
                              capture_output=True, text=True, timeout=280)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", f"timed out: {e.stderr!r}")


def load(js):
    try:
        with open(js) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check(label, p, doc, rows):
    res.append((p.returncode == 0, f"{label}: exit 0 (got {p.returncode}: {p.stderr[-600:]!r})"))
    res.append((doc.get("failed") == [], f"{label}: no row failed ({doc.get('failed')!r})"))
    res.append((doc.get("count") == COUNT and doc.get("rounds") == REPS, f"{label}: count and rounds in the JSON"))
    got = doc.get("rows", [])
    for vmm in rows:
        for t in TESTS:
            e = [r for r in got if r.get("vmm") == vmm and r.get("test") == t]
            if t == "rtt":
                ok = (len(e) == 1 and num(e[0].get("mean_us")) and num(e[0].get("p99_us"))
                      and e[0]["mean_us"] > 0 and e[0]["p99_us"] >= e[0]["mean_us"] * 0.5
                      and num(e[0].get("lost")))
            else:
                ok = (len(e) == 1 and all(num(e[0].get(k)) for k in
                                          ("guest_pps", "tap_pps", "completed", "tap_packets", "drops"))
                      and e[0]["guest_pps"] > 0 and e[0]["completed"] > 0 and e[0]["tap_packets"] > 0
                      and e[0]["completed"] <= REPS * COUNT)
            res.append((ok, f"{label}: {t} on {vmm}: figures above zero ({e!r})"))
            if e and (e[0].get("lost") or e[0].get("drops")):
                comments.append(f"{label}: {t} on {vmm}: lost {e[0].get('lost')} drops {e[0].get('drops')}")
            # Ratios against each reference that ran, and only those.
            refs = [k for k, ref in (("x_qemu_tap", "QEMU tap"), ("x_qemu_vhost_user", "QEMU + fdvm serve net"))
                    if ref in rows and ref != vmm]
            res.append((len(e) == 1 and all(num(e[0].get(k)) and e[0][k] > 0 for k in refs)
                        and not ({"x_qemu_tap", "x_qemu_vhost_user"} - set(refs)) & set(e[0]),
                        f"{label}: {t} on {vmm}: ratios {refs}"))
            # Each ratio taken within the rounds: the median is within them.
            res.append((len(e) == 1 and all(len(e[0][k + "_rounds"]["rounds"]) == REPS
                                            and e[0][k + "_rounds"]["min"] <= e[0][k] <= e[0][k + "_rounds"]["max"]
                                            for k in refs), f"{label}: {t} on {vmm}: ratios per round"))
        # In the table: under each heading, the row with its numbers.
        res.append((re.search(rf"^{re.escape(vmm)} +[0-9.]+ +[0-9.]+ +[0-9]+", p.stdout, re.M) is not None,
                    f"{label}: {vmm} in the tables"))
    res.append(({r.get("vmm") for r in got} == set(rows), f"{label}: rows for {rows} only"))
    for title in ["UDP round trip"] + list(TITLES.values()):
        res.append((re.search(rf"^{re.escape(title)} ", p.stdout, re.M) is not None, f"{label}: table '{title}'"))
    goal = re.compile(r"^goal: fdvm >= 2x QEMU's packet rate and a shorter p99 round trip: "
                      r"(met|not met) \(tx64 [0-9.]+x, tx1500 [0-9.]+x, p99 [0-9.]+ vs [0-9.]+ us\)$", re.M)
    if "QEMU tap" in rows:
        goals = doc.get("goals", [])
        res.append((goal.search(p.stdout) is not None, f"{label}: the goal line"))
        res.append((len(goals) == sum(r in rows for r in ROWS[:2])
                    and all(isinstance(g.get("met"), bool) and all(num(g.get(k)) and g[k] > 0
                                                                for k in ("tx64_x", "tx1500_x", "p99_x"))
                            for g in goals), f"{label}: goals in the JSON ({goals!r})"))
    else:
        res.append(("goal: fdvm >= 2x QEMU's packet rate and a shorter p99 round trip: not measured" in p.stdout
                    and doc.get("goals") == [], f"{label}: the goal not measured without QEMU"))


js = os.path.join(tmp, "net.json")
if qemu:
    p = run(js)
    check("all rows", p, load(js), ROWS)
    res.append((png_ok(chart_of(js)) and "chart: " + chart_of(js) in p.stdout,
                "all rows: the chart written"))
else:
    comments.append("no qemu-system-x86_64: the QEMU rows are left out (--no-qemu)")
    p = run(js, "--no-qemu")
    check("--no-qemu", p, load(js), ROWS[:2])

js2 = os.path.join(tmp, "net2.json")
p = run(js2, "--no-qemu", "--no-vhost-user")
check("--no-qemu --no-vhost-user", p, load(js2), ROWS[:1])
res.append((png_ok(chart_of(js2)) and "chart: " + chart_of(js2) in p.stdout,
            "--no-qemu --no-vhost-user: the chart (round trip and rates with error bars) written"))

res.append((subprocess.run(["ip", "link", "show", "fdvmb0"], capture_output=True).returncode != 0,
            "no tap fdvmb0 in this namespace"))
res.append((not (sockdirs() - before_dirs), "backend socket directories removed"))
left = ours() - before_pids
res.append((not left, f"no VMM or backend left running ({sorted(left)})"))
shutil.rmtree(tmp, ignore_errors=True)
for c in comments:
    print(f"# {c}")
for i, (ok, what) in enumerate(res, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {what}")
print(f"1..{len(res)}")
