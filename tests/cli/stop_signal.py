#!/usr/bin/env python3
"""SIGTERM and SIGINT stop `fdvm run` with status 8 even while the guest idles in HLT:
the signal reaches whichever thread the kernel picks, and the stop request must take
the vCPU thread out of KVM_RUN. Each mode of --seccomp, as the main thread and the
vCPU thread are confined differently in each."""
import os
import signal
import subprocess
import sys
import time

from clitest import read_until

fdvm, guest = sys.argv[1], sys.argv[2]
results = []


def case(sig, seccomp):
    desc = f"{signal.Signals(sig).name} with --seccomp={seccomp}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        results.append((True, f"{desc} # SKIP /dev/kvm is not usable"))
        return
    p = subprocess.Popen([fdvm, "run", f"--seccomp={seccomp}", guest, "--", "hang"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = read_until(p, b"exitcode: hanging", 30)
    if b"exitcode: hanging" not in out:
        p.kill()
        p.wait()
        results.append((False, f"{desc}: the guest never said it hangs: {out!r}"))
        return
    time.sleep(0.2)  # into HLT
    p.send_signal(sig)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        results.append((False, f"{desc}: still running 10 s after the signal"))
        return
    err = p.stderr.read().decode(errors="replace").strip()
    results.append((rc == 8 and "seccomp" not in err, f"{desc}: status {rc} (8 expected), stderr {err!r}"))


for s in (signal.SIGTERM, signal.SIGINT):
    for mode in ("kill", "log", "off"):
        case(s, mode)
for i, (ok, desc) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {desc}")
print(f"1..{len(results)}")
