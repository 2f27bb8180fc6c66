#!/usr/bin/env python3
"""Several vCPUs (fdvm run --cpus N): the smp guest with 1, 2, 4 and 6 vCPUs (more than
this machine's cores), its ACPI tables dumped from guest memory and disassembled by
ACPICA's iasl with no errors, pause and resume and a stop reaching every vCPU, bad
--cpus values."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import Api, check, done, read_until, wait_path  # noqa: E402

fdvm, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="fdvm-smp-")


def run(cpus, *extra, timeout=120):
    return subprocess.run([fdvm, "run", "--cpus", str(cpus), guest, "--", f"cpus={cpus}", *extra],
                          capture_output=True, text=True, timeout=timeout)


def tap_ok(out):
    plan = re.search(r"^1\.\.(\d+)$", out, re.M)
    oks = re.findall(r"^ok \d+", out, re.M)
    return plan is not None and len(oks) == int(plan.group(1)) and "not ok" not in out


for n in (1, 2, 4, 6):
    p = run(n)
    check(p.returncode == 0 and tap_ok(p.stdout),
          f"--cpus {n}: every CPU up, CPL3 on each, IPIs exact (exit {p.returncode}; "
          f"{[l for l in p.stdout.splitlines() if l.startswith('not ok')]} {p.stderr[-300:]!r})")

# The tables as the guest sees them in its memory, disassembled by iasl.
p = run(4, "dump")
tables = {}
for m in re.finditer(r"^# acpi-hex (\S{4}) (\d+) ([0-9a-f]+)$", p.stdout, re.M):
    tables.setdefault(m.group(1), bytearray()).extend(bytes.fromhex(m.group(3)))
sizes = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^# acpi (\S{4}) (\d+)$", p.stdout, re.M))
check(p.returncode == 0 and set(tables) == {"XSDT", "FACP", "DSDT", "APIC", "MCFG"}
      and all(len(tables[t]) == sizes.get(t) for t in tables),
      f"dump: XSDT, FADT, DSDT, MADT, MCFG from guest memory ({sorted(tables)})")
iasl = shutil.which("iasl")
if not iasl:
    check(False, "iasl (Debian acpica-tools, scripts/deps.sh installs it) is missing")
else:
    dsl = {}
    for sig, data in tables.items():
        f = os.path.join(tmp, sig.lower() + ".dat")
        with open(f, "wb") as fh:
            fh.write(data)
        d = subprocess.run([iasl, "-d", f], capture_output=True, text=True, cwd=tmp, timeout=60)
        text = open(f[:-4] + ".dsl").read() if os.path.exists(f[:-4] + ".dsl") else ""
        dsl[sig] = text
        bad = [l for l in (d.stdout + d.stderr + text).splitlines()
               if re.search(r"\b(Error|Warning|Invalid|invalid|mismatch|Incorrect)\b", l)]
        check(d.returncode == 0 and text and not bad,
              f"iasl -d {sig}: no errors or warnings (exit {d.returncode}; {bad[:3]})")
    madt = dsl.get("APIC", "")
    lapics = re.findall(r"Local Apic ID : ([0-9A-F]+)", madt)
    check(lapics == ["00", "01", "02", "03"] and "Address : FEC00000" in madt,
          f"MADT (iasl): local APICs {lapics}, IOAPIC at FEC00000")
    fadt = dsl.get("FACP", "")
    check(re.search(r"PM1A Control Block Address : 0+604", fadt) is not None
          and re.search(r"PM1A Event Block Address : 0+600", fadt) is not None,
          "FADT (iasl): PM1a control 0x604, event 0x600")
    check(re.search(r"Base Address : 00000000E0000000", dsl.get("MCFG", "")) is not None,
          "MCFG (iasl): ECAM base E0000000")
    check("_S5_" in dsl.get("DSDT", "") or "_S5" in dsl.get("DSDT", ""), "DSDT (iasl): \\_S5")

# Pause and resume with every vCPU running: the guest still passes.
sock = os.path.join(tmp, "api.sock")
proc = subprocess.Popen([fdvm, "run", "--cpus", "4", "--api-socket", sock, guest, "--", "cpus=4", "hold=2"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out = read_until(proc, b"# holding", 60)
paused = False
if b"# holding" in out and wait_path(sock, proc):
    api = Api(sock)
    r1 = api.call("pause")
    st = api.call("status").get("return", {}).get("state")
    time.sleep(0.5)
    r2 = api.call("resume")
    api.close()
    paused = "return" in r1 and st == "paused" and "return" in r2
try:
    rest, err = proc.communicate(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    rest, err = proc.communicate()
full = (out + rest).decode(errors="replace")
check(paused and proc.returncode == 0 and tap_ok(full),
      f"--cpus 4: paused (every vCPU out) and resumed mid-run, the guest passes (exit {proc.returncode})")

# A stop reaches every vCPU, those in guest code and those halted.
proc = subprocess.Popen([fdvm, "run", "--cpus", "4", guest, "--", "cpus=4", "hold=100"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out = read_until(proc, b"# holding", 60)
t0 = time.monotonic()
proc.send_signal(signal.SIGTERM)
try:
    proc.communicate(timeout=20)
except subprocess.TimeoutExpired:
    proc.kill()
    proc.communicate()
check(b"# holding" in out and proc.returncode == 8 and time.monotonic() - t0 < 10,
      f"--cpus 4: SIGTERM stops every vCPU, exit 8 (got {proc.returncode} in {time.monotonic() - t0:.1f} s)")

# A guest that never starts the others: they wait for a SIPI, and still stop.
p = subprocess.run([fdvm, "run", "--cpus", "8", guest, "--", "cpus=9"], capture_output=True, text=True,
                   timeout=60)
check(p.returncode != 0 and "not ok 5 - MADT: 8 local APICs" in p.stdout,
      f"--cpus 8 against a guest told 9: the MADT says 8, the guest fails and exits (exit {p.returncode})")

for bad in ("0", "65", "abc", "-1", "2x", ""):
    p = subprocess.run([fdvm, "run", "--cpus", bad, guest], capture_output=True, text=True, timeout=30)
    check(p.returncode == 2 and "--cpus" in p.stderr, f"--cpus {bad!r}: exit 2 naming --cpus ({p.stderr.strip()[:80]!r})")
p = subprocess.run([fdvm, "run", "--cpus", "2", "--cpus", "3", guest], capture_output=True, text=True, timeout=30)
check(p.returncode == 2, "--cpus given twice: exit 2")

shutil.rmtree(tmp, ignore_errors=True)
done()
