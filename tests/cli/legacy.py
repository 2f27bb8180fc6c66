#!/usr/bin/env python3
"""The legacy devices and boot inputs a Linux guest needs: the legacy guest's checks
(CMOS RTC, PIT, the initrd as a PVH module, the FADT's reset register), its RTC
against the host's clock, a reset through the i8042 and through 0xcf9 (exit 12), bad
--initrd and --cpu values; and COM1's receiver: a line written to fdvm's standard
input reaches the uart_rx guest through IRQ 4, from a pipe and from a terminal, which
fdvm makes raw while it runs and puts back as it was."""
import datetime
import fcntl
import os
import pty
import re
import select
import subprocess
import time
import sys
import tempfile
import termios

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clitest import check, done  # noqa: E402

fdvm, guest, uart_guest = sys.argv[1], sys.argv[2], sys.argv[3]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP no usable /dev/kvm")
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="fdvm-legacy-")


def run(*args, timeout=60):
    return subprocess.run([fdvm, "run", *args], capture_output=True, text=True, timeout=timeout)


initrd = os.path.join(tmp, "initrd")
with open(initrd, "wb") as f:
    f.write(b"fdvm-initrd-" + os.urandom(8).hex().encode() + b"\n" + os.urandom(300000))
magic = open(initrd, "rb").read().split(b"\n")[0].decode()
p = run("--initrd", initrd, guest, "--", f"initrd={magic}")
fails = [l for l in p.stdout.splitlines() if l.startswith("not ok")]
check(p.returncode == 0 and "1..7" in p.stdout and not fails,
      f"legacy guest: RTC, CMOS, PIT, the initrd module, the FADT (exit {p.returncode}; {fails} {p.stderr[-200:]!r})")
m = re.search(r"# rtc (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", p.stdout)
if m:
    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds())
else:
    skew = None
check(skew is not None and skew < 120, f"the RTC reads the host's UTC time ({m.group(1) if m else None}, off by {skew} s)")

for how in ("kbd", "cf9"):
    p = run(guest, "--", f"reset={how}")
    check(p.returncode == 12 and "reset" in p.stderr and "no reset happened" not in p.stdout,
          f"reset through {'the i8042' if how == 'kbd' else 'the reset register 0xcf9'}: exit 12 "
          f"(got {p.returncode}; {p.stderr.strip()[-120:]!r})")

p = run("--initrd", os.path.join(tmp, "missing"), guest)
check(p.returncode == 2 and "missing" in p.stderr, f"--initrd of a missing file: exit 2, named ({p.stderr.strip()[-100:]!r})")
p = run("--initrd", tmp, guest)
check(p.returncode == 2 and "directory" in p.stderr, f"--initrd of a directory: exit 2 ({p.stderr.strip()[-100:]!r})")
big = os.path.join(tmp, "big")
with open(big, "wb") as f:
    f.truncate(3 << 20)
p = run("--mem", "4M", "--initrd", big, guest)
check(p.returncode == 2 and "do not fit" in p.stderr,
      f"--initrd too large for --mem: exit 2 with the reason ({p.stderr.strip()[-160:]!r})")
p = run("--initrd", initrd, "--initrd", initrd, guest)
check(p.returncode == 2, "--initrd given twice: exit 2")

for bad, why in (("kvm64", "expected host"), ("host,-nosuch", "no feature 'nosuch'"), ("host,xsave", "expected -FEATURE"),
                 ("host,-", "expected -FEATURE"), ("", "expected host")):
    p = run("--cpu", bad, guest)
    check(p.returncode == 2 and why in p.stderr, f"--cpu {bad!r}: exit 2, {why} ({p.stderr.strip()[:120]!r})")
p = run("-v", "--cpu", "host,-cx16,-xsave,+cx16", guest, "--", f"initrd=x")
check("without xsave (and, as they need those, osxsave, avx" in p.stderr and "cx16" not in p.stderr.split("CPUID")[1].split("\n")[0],
      "-v prints the CPUID policy: xsave and what needs it removed, cx16 put back by +cx16")
# COM1's receiver: standard input (a pipe here) through IRQ 4.
p = subprocess.Popen([fdvm, "run", uart_guest], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
out, t0 = b"", time.monotonic()
while b"# ready" not in out and time.monotonic() - t0 < 30 and p.poll() is None:
    r, _, _ = select.select([p.stdout], [], [], 0.5)
    if r:
        out += os.read(p.stdout.fileno(), 4096)
try:
    p.stdin.write(b"hello fdvm\n")
    p.stdin.flush()
    rest, err = p.communicate(timeout=60)
except (BrokenPipeError, subprocess.TimeoutExpired):
    p.kill()
    rest, err = p.communicate()
text = (out + rest).decode(errors="replace")
err = err.decode(errors="replace")
fails = [l for l in text.splitlines() if l.startswith("not ok")]
check(p.returncode == 0 and "1..4" in text and not fails,
      f"COM1 receives standard input through IRQ 4; THRE and loopback (exit {p.returncode}; {fails} {err[-200:]!r})")
# The terminal in the foreground (a pty made fdvm's controlling terminal):
# raw while fdvm runs, so the guest gets each key unechoed; as it was after.
master, slave = pty.openpty()
before = termios.tcgetattr(slave)


def own_terminal():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


p = subprocess.Popen([fdvm, "run", uart_guest], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                     preexec_fn=own_terminal)


def read_master(until, limit):
    got, t0 = b"", time.monotonic()
    while until(got) and time.monotonic() - t0 < limit:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            got += os.read(master, 4096)
    return got


out = read_master(lambda b: b"# ready" not in b and p.poll() is None, 30)
during = termios.tcgetattr(slave)
os.write(master, b"hello fdvm\n")
out += read_master(lambda b: p.poll() is None, 60)
if p.poll() is None:
    p.kill()
err = p.communicate()[1].decode(errors="replace")
out += read_master(lambda b: True, 0.5)
after = termios.tcgetattr(slave)
os.close(master)
os.close(slave)
text = out.decode(errors="replace")
fails = [l for l in text.splitlines() if l.startswith("not ok")]
raw = (not during[3] & (termios.ICANON | termios.ECHO) and not during[0] & termios.ICRNL
       and during[6][termios.VSUSP] == b"\0" and during[6][termios.VINTR] == before[6][termios.VINTR])
check(p.returncode == 0 and "1..4" in text and not fails and raw and b"hello fdvm\r\n" not in out,
      f"the terminal as standard input: raw while the guest runs (no line editing, echo or CR "
      f"translation, ^Z the guest's, ^C fdvm's), the line reaches the guest (exit {p.returncode}; raw {raw}; {fails} {err[-200:]!r})")
check(after == before, "the terminal's settings are as before once fdvm exits")
# With /dev/null as standard input the receiver stays empty and nothing waits on it.
p = subprocess.run([fdvm, "run", guest], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
check(p.returncode == 0, f"standard input /dev/null: no input, the guest runs (exit {p.returncode})")
done()
