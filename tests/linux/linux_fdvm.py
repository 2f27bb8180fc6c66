#!/usr/bin/env python3
"""Boots Debian 12's cloud kernel under fdvm itself: the vmlinux inside the
package's vmlinuz (it carries the PVH note, so fdvm enters it as it enters
its own guests), a busybox initramfs as the PVH module (--initrd), two vCPUs,
a virtio-blk disk, and the kernel's log checked on the way:

  - the banner and the command line fdvm gave;
  - the memory map fdvm gave (one RAM range, [0, --mem)) and the initrd
    found where fdvm put it;
  - the ACPI tables found through the RSDP (FACP, DSDT, FACS, APIC, MCFG),
    the MADT's two CPUs and its IOAPIC;
  - no port or MMIO access that nothing in fdvm claims (fdvm stops on one).

Then, where KVM runs guest code at CPL0 natively, the kernel goes on to
/init, which finds fdvm's PCI devices (the virtio-blk disk, vendor 1af4
device 1042), reads the disk's known first sector and powers off through
the FADT; the test requires all that. On a host whose KVM emulates CPL0
and cannot emulate int3 (this project's development machine) the kernel
stops at its own int3 self-test: the test recognises that emulation failure
(the instruction bytes fdvm reports start with 0xcc), says so, and skips
what lies beyond. The same kernel and arguments then boot under QEMU + KVM
for comparison: how far each got, and in what guest time.

The kernel and busybox come from the same cache as the QEMU rigs
(linuxguest.prepare_cache). Prints TAP.
"""
import argparse
import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxguest import (INIT_PREAMBLE, QEMU, Tap, Unavailable, finish, make_initrd,  # noqa: E402
                        prepare_cache, skip, start, kill_group)

MEM_MIB = 512
CPUS = 2
DISK_MAGIC = b"FDVM-LINUX-DISK\n"
# noxsave: this machine's nested KVM shows XSAVE to the guest whatever CPUID
# fdvm sets, and cannot emulate xrstor at CPL0; harmless elsewhere.
ARGS = "console=ttyS0 earlyprintk=serial,ttyS0 noxsave reboot=k panic=-1"

INIT = INIT_PREAMBLE + r"""echo "FDVMT init"
for m in $(cat /modules/order); do insmod /modules/$m.ko; done
for d in /sys/bus/pci/devices/*; do echo "FDVMT pci $(basename $d) $(cat $d/vendor) $(cat $d/device)"; done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
echo "FDVMT disk $(head -c 16 /dev/vda | od -An -c | tr -d ' \n')"
echo "FDVMT end"
poweroff -f
"""


def extract_vmlinux(vmlinuz, out):
    """The ELF inside a bzImage: its payload (setup header's payload_offset and
    payload_length), decompressed by its magic."""
    d = open(vmlinuz, "rb").read()
    setup_sects = d[0x1f1] or 4
    base = (setup_sects + 1) * 512
    off, length = struct.unpack_from("<II", d, 0x248)
    p = d[base + off:base + off + length]
    if p[:2] == b"\x1f\x8b":
        elf = gzip.decompress(p)
    elif p[:6] == b"\xfd7zXZ\x00":
        elf = lzma.decompress(p)
    else:
        tool = {b"\x02\x21\x4c\x18": "lz4", b"\x28\xb5\x2f\xfd": "zstd"}.get(p[:4])
        if not tool or not shutil.which(tool):
            raise Unavailable(f"vmlinuz payload {p[:4].hex()}: no decompressor ({tool or 'unknown format'})")
        r = subprocess.run([tool, "-dc"], input=p, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0 and not r.stdout.startswith(b"\x7fELF"):
            raise RuntimeError(f"{tool} -dc: {r.stderr.decode(errors='replace')[:200]}")
        elf = r.stdout
    if not elf.startswith(b"\x7fELF"):
        raise RuntimeError("the decompressed payload is not an ELF file")
    with open(out + ".tmp", "wb") as f:
        f.write(elf)
    os.rename(out + ".tmp", out)


def run_vm(cmd, log, err, limit_s, pauses=False):
    """Runs cmd (stdout: the console, into log) until it exits, or limit_s;
    pauses: it stops at an emulation failure without exiting (QEMU), so that
    ends the run too. Returns (exit status or None, seconds)."""
    with open(log, "wb") as out, open(err, "wb") as e:
        t0 = time.monotonic()
        p = start(cmd, out, e)
        rc = None
        while time.monotonic() - t0 < limit_s:
            rc = p.poll()
            if rc is not None:
                break
            if pauses and b"emulation failure" in open(err, "rb").read():
                time.sleep(1)
                break
            time.sleep(0.5)
        if rc is None:
            kill_group(p)
            p.wait()
        return rc, time.monotonic() - t0


def last_printk(text):
    """(seconds, message) of the kernel's last timestamped line."""
    m = re.findall(r"^\[\s*(\d+\.\d+)\] (.*)$", text, re.M)
    return (float(m[-1][0]), m[-1][1]) if m else (0.0, "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdvm", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--limit", type=int, default=420, help="seconds a boot may take")
    a = ap.parse_args()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("no usable /dev/kvm")
    try:
        desc = prepare_cache(a.cache)
        vmlinux = os.path.join(a.cache, "vmlinux")
        if not os.path.exists(vmlinux):
            extract_vmlinux(os.path.join(a.cache, desc["vmlinuz"]), vmlinux)
    except Unavailable as e:
        skip(f"the kernel package cannot be had here: {e}")
    tmp = tempfile.mkdtemp(prefix="fdvm-linux-")
    initrd = os.path.join(tmp, "initrd.gz")
    make_initrd(a.cache, desc, initrd, INIT, ["virtio_pci", "virtio_blk"])
    disk = os.path.join(tmp, "disk.img")
    with open(disk, "wb") as f:
        f.write(DISK_MAGIC)
        f.truncate(8 << 20)
    tap = Tap()
    log, err = os.path.join(tmp, "fdvm.log"), os.path.join(tmp, "fdvm.err")
    cmd = [a.fdvm, "run", "--mem", f"{MEM_MIB}M", "--cpus", str(CPUS), "--cpu", "host,-cx16,-xsave",
           "--initrd", initrd, "--blk", disk, vmlinux, "--", ARGS]
    print("# " + " ".join(cmd))
    rc, secs = run_vm(cmd, log, err, a.limit)
    out = open(log, "rb").read().decode(errors="replace").replace("\r", "")
    errs = open(err, "rb").read().decode(errors="replace")
    t, last = last_printk(out)
    print(f"# fdvm: exit {rc} after {secs:.0f} s; the kernel's last line at {t:.1f} s of guest time: {last}")

    tap.check(re.search(r"Linux version 6\.\d+\S* .*Debian", out), "the banner")
    tap.check(f"Kernel command line: {ARGS}" in out, "the command line fdvm gave")
    # fdvm gives one RAM range; Linux takes the ISA hole [640 KiB, 1 MiB)
    # out of it, as it does from any firmware's map.
    ram = re.findall(r"BIOS-e820: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\] usable", out)
    end = f"0x{(MEM_MIB << 20) - 1:016x}"
    tap.check(ram in ([("0x0000000000000000", end)],
                      [("0x0000000000000000", "0x000000000009ffff"), ("0x0000000000100000", end)]),
              f"the memory map fdvm gave: [0, {MEM_MIB} MiB) usable, less the ISA hole ({ram})")
    rd = re.search(r"RAMDISK: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", out)
    size = os.path.getsize(initrd)
    tap.check(rd and int(rd.group(1), 16) % 4096 == 0 and int(rd.group(2), 16) < MEM_MIB << 20
              and int(rd.group(2), 16) - int(rd.group(1), 16) + 1 >= size,
              f"the initrd ({size} bytes) found where fdvm put it ({rd.group(0) if rd else 'no RAMDISK line'})")
    tables = set(re.findall(r"ACPI: (RSDP|XSDT|FACP|DSDT|FACS|APIC|MCFG) 0x", out))
    tap.check(tables == {"RSDP", "XSDT", "FACP", "DSDT", "FACS", "APIC", "MCFG"},
              f"ACPI tables found through the RSDP: {sorted(tables)}")
    tap.check(f"smpboot: Allowing {CPUS} CPUs" in out and "IOAPIC[0]: apic_id 0" in out
              and "address 0xfec00000, GSI 0-23" in out,
              f"the MADT's {CPUS} CPUs and its IOAPIC")
    tap.check("unhandled" not in errs, "no port or MMIO access fdvm does not claim",
              "; ".join(l for l in errs.splitlines() if "unhandled" in l)[:300])

    limit = re.search(r"emulation failure\)?\n(?:.*\n)*?.*data\[1\] = 0x([0-9a-f]+)", errs)
    insn = limit and f"{int(limit.group(1), 16):016x}"
    at_int3 = rc == 4 and insn and insn[-4:-2] == "cc"
    if at_int3:
        print("# fdvm stopped at this hypervisor's known limit: KVM here emulates CPL0 and cannot "
              "emulate int3 (the kernel's int3 self-test); /init, PCI and the disk lie beyond it")
        tap.check(True, "reached this machine's limit (int3 at CPL0) # SKIP /init, PCI and the disk "
                        "need a KVM that runs CPL0 natively")
    else:
        res = dict(m for m in re.findall(r"FDVMT (\S+) ?([^\n]*)", out))
        pcis = re.findall(r"FDVMT pci (\S+) (0x[0-9a-f]+) (0x[0-9a-f]+)", out)
        tap.check("init" in res, "the kernel ran /init", errs[-300:].replace("\n", " | "))
        tap.check(("0x1af4", "0x1042") in [(v, d) for _, v, d in pcis],
                  f"fdvm's virtio-blk enumerated as 1af4:1042 ({pcis})")
        want = "".join(chr(c) if c != 10 else "\\n" for c in DISK_MAGIC)
        tap.check(res.get("disk") == want, f"the disk's first bytes read back ({res.get('disk')!r})")
        tap.check(rc == 0, f"powered off through the FADT (exit {rc})")

    # The same kernel, arguments and initrd under QEMU + KVM, side by side.
    if shutil.which(QEMU):
        qlog, qerr = os.path.join(tmp, "qemu.log"), os.path.join(tmp, "qemu.err")
        qcmd = [QEMU, "-accel", "kvm", "-cpu", "qemu64,-cx16", "-m", str(MEM_MIB), "-smp", str(CPUS),
                "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio",
                "-kernel", vmlinux, "-initrd", initrd, "-append", ARGS,
                "-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0"]
        qrc, qsecs = run_vm(qcmd, qlog, qerr, a.limit, pauses=True)
        qout = open(qlog, "rb").read().decode(errors="replace").replace("\r", "")
        qt, qlast = last_printk(qout)
        print(f"# QEMU + KVM: exit {qrc} after {qsecs:.0f} s; the kernel's last line at {qt:.1f} s of "
              f"guest time: {qlast}")
        qerrs = open(qerr, "rb").read().decode(errors="replace")
        same = qlast == last and at_int3 == ("emulation failure" in qerrs)
        tap.check(same or (not at_int3 and qrc == 0),
                  f"QEMU + KVM got as far: fdvm {t:.1f} s '{last[:60]}', QEMU {qt:.1f} s '{qlast[:60]}'")
    else:
        print("# QEMU not installed: no side-by-side boot")
    status = finish(tap, [("fdvm console", log), ("fdvm stderr", err)])
    if not tap.failed:
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
