#!/usr/bin/env python3
"""Boots a real Linux guest under QEMU (TCG) on a vhost-user-blk backend.

The backend is `fdvm serve blk` (--backend fdvm) or qemu-storage-daemon
(--backend qsd); QEMU is the vhost-user frontend. The guest is Debian 12's
cloud kernel with a busybox initramfs whose /init (INIT below):

  1. loads the virtio modules and waits for /dev/vda;
  2. makes an ext2 file system on the whole disk (busybox mke2fs; the
     kernel's built-in ext4 driver mounts it), writes files of known
     checksums, syncs, unmounts, remounts and checks them;
  3. writes a random pattern over the whole disk (1 MiB and 4 KiB O_DIRECT
     writes), flushes, and reads it back twice (O_DIRECT, and buffered after
     dropping the page cache), printing the checksum of what it wrote and of
     what it read;
  4. powers off.

The pattern comes last so that the image file, once the guest has stopped,
must equal what the guest wrote: the host checks that too. A second, short
boot (a new QEMU on the same backend process) then reads the disk again, so
the backend must serve a second frontend after the first went away and that
frontend must see the data the first one wrote.

Everything the guest needs comes from Debian packages (linux-image-*-cloud-
amd64 and busybox-static), fetched with `apt-get download` into --cache and
kept there for later runs. The initramfs is written by this script in the
newc format (linuxguest.newc), so neither cpio nor root is needed to make it
(device nodes included). Prints TAP; skips when QEMU or the packages are not
to be had.
"""
import argparse
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from linuxguest import (INIT_PREAMBLE, QEMU, Guest, Tap, Unavailable, finish, make_initrd,  # noqa: E402
                        prepare_cache, results, skip, start, stop_backend, wait_socket)

QSD = "qemu-storage-daemon"
# The modules the guest loads (with what they depend on, dependencies first).
ROOT_MODULES = ["virtio_pci", "virtio_blk"]

# The guest's /init. Every line meant for the runner starts with "FDVMT ";
# the runner finds them anywhere in a console line, in case a kernel message
# got in first.
INIT = INIT_PREAMBLE + r"""
say() { echo "FDVMT $*"; }
die() { say "fail $*"; dmesg | tail -40; say "end"; sync; poweroff -f; sleep 10; exit 1; }

mode=full
for w in $(cat /proc/cmdline); do
  case "$w" in fdvmt.mode=*) mode=${w#fdvmt.mode=};; esac
done
say "init mode=$mode"

for m in $(cat /modules/order); do
  insmod /modules/$m.ko || die "insmod $m"
done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i+1)); [ $i -gt 100 ] && die "no /dev/vda after 10 s"
  sleep 0.1
done
bytes=$(blockdev --getsize64 /dev/vda)
mb=$((bytes / 1048576))
say "disk bytes=$bytes ro=$(blockdev --getro /dev/vda)"
# From here on only errors reach the console, so that kernel messages are
# less likely to land inside the lines above; dmesg has the rest.
echo 4 > /proc/sys/kernel/printk

sum() { md5sum "$1" | cut -d' ' -f1; }
irqs() { say "irq $(grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"; }

if [ "$mode" = verify ]; then
  say "verify $(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
  irqs
  say "end"
  poweroff -f
fi

# --- file system ---
mke2fs -F /dev/vda >/tmp/mkfs.log 2>&1 || { cat /tmp/mkfs.log; die "mkfs"; }
say "mkfs ok"
mkdir -p /mnt
mount -t ext2 /dev/vda /mnt || die "mount"
say "mount ok"
mkdir /tmp/files /mnt/dir
n=0
for spec in a:1048576 b:3145728 c:4194304 d:1234567 e:4096 f:1; do
  name=${spec%%:*}; size=${spec#*:}
  dd if=/dev/urandom of=/tmp/files/$name bs=$size count=1 iflag=fullblock 2>/dev/null || die "urandom $name"
  [ "$(stat -c %s /tmp/files/$name)" = "$size" ] || die "size $name"
  cp /tmp/files/$name /mnt/dir/$name || die "cp $name"
  n=$((n+1))
done
(cd /tmp/files && md5sum * > /tmp/files.md5)
sync
umount /mnt || die "umount"
echo 3 > /proc/sys/vm/drop_caches
mount -t ext2 /dev/vda /mnt || die "remount"
if (cd /mnt/dir && md5sum -c /tmp/files.md5); then
  say "files ok n=$n"
else
  say "files bad"
fi
umount /mnt || die "umount 2"
say "umount ok"

# --- the whole disk ---
dd if=/dev/urandom of=/tmp/pat bs=1M count=$mb iflag=fullblock 2>/dev/null || die "pattern"
say "pattern-written $(sum /tmp/pat)"
big=$((mb - 4))
dd if=/tmp/pat of=/dev/vda bs=1M count=$big oflag=direct conv=notrunc 2>/dev/null || die "write 1M"
dd if=/tmp/pat of=/dev/vda bs=4k skip=$((big * 256)) seek=$((big * 256)) \
  oflag=direct conv=notrunc 2>/dev/null || die "write 4k"
rm /tmp/pat
sync
blockdev --flushbufs /dev/vda
say "pattern-read-direct $(dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
echo 3 > /proc/sys/vm/drop_caches
say "pattern-read-buffered $(sum /dev/vda)"
irqs
say "end"
sync
poweroff -f
"""


def run_qemu(a, tmp, tag, sock, vmlinuz, initrd, mode, backend):
    """Runs one guest; returns (console text, stderr text, status or None on timeout, seconds).

    QEMU is killed at the timeout, and also BACKEND_GONE_GRACE seconds after
    the backend has exited: the guest's I/O then hangs for ever.
    """
    dev = f"vhost-user-blk-pci,chardev=c,num-queues={a.queues}"
    if a.device_opts:
        dev += "," + a.device_opts
    cmd = [a.qemu, "-accel", "tcg", "-m", "512", "-smp", str(max(a.smp, a.queues)),
           "-nographic", "-no-reboot",
           "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
           "-machine", "memory-backend=mem",
           "-chardev", f"socket,id=c,path={sock}", "-device", dev,
           "-kernel", vmlinuz, "-initrd", initrd,
           "-append", f"console=ttyS0 panic=-1 fdvmt.mode={mode} {a.append}".strip()]
    with Guest(cmd, tmp, tag, a.timeout, backend) as g:
        status = g.wait()
    return g.console(), g.stderr(), status, g.secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=["fdvm", "qsd"], required=True)
    ap.add_argument("--fdvm", help="the fdvm executable (for --backend fdvm)")
    ap.add_argument("--image-opts", default="",
                    help="appended to fdvm serve's IMAGE, e.g. ',poll=50' (not ',ro': the guest writes)")
    ap.add_argument("--backend-arg", action="append", default=[],
                    help="extra argument for the backend's command line, e.g. -v for fdvm")
    ap.add_argument("--cache", required=True, help="where fetched packages are kept between runs")
    ap.add_argument("--disk-mib", type=int, default=64)
    ap.add_argument("--queues", type=int, default=1,
                    help="request queues: the backend's (qsd num-queues, fdvm ',queues=N'), "
                         "QEMU's num-queues, and at least as many guest CPUs")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--device-opts", default="",
                    help="extra vhost-user-blk-pci properties, e.g. 'vectors=0' (INTx, no MSI-X)")
    ap.add_argument("--append", default="", help="extra guest kernel command line")
    ap.add_argument("--timeout", type=float, default=240, help="hard limit for one QEMU run, s")
    ap.add_argument("--no-second-boot", action="store_true",
                    help="skip the second guest that re-reads the disk on the same backend")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--qemu", default=QEMU)
    a = ap.parse_args()
    if a.disk_mib < 16:
        ap.error("--disk-mib: at least 16 (the files take ~10 MiB, the last 4 MiB get 4 KiB writes)")
    t_start = time.monotonic()
    # meson test stops a test that runs too long with SIGTERM: unwind, so
    # that QEMU and the backend are killed and the temporary files go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))

    a.qemu = shutil.which(a.qemu)
    if not a.qemu:
        skip(f"no {QEMU}")
    if a.backend == "qsd":
        qsd = shutil.which(QSD)
        if not qsd:
            skip(f"no {QSD} (Debian package qemu-system-common)")
    elif not a.fdvm or not os.access(a.fdvm, os.X_OK):
        print("1..1")
        print(f"not ok 1 - fdvm executable # not found: {a.fdvm}")
        return 1

    try:
        desc = prepare_cache(os.path.abspath(a.cache))
    except Unavailable as e:
        skip(f"cannot fetch the guest's packages: {e}")
    except Exception as e:  # fetched, but not as this script expects
        print("1..1")
        print(f"not ok 1 - guest kernel and modules prepared in {a.cache} "
              f"# {type(e).__name__}: {e}")
        return 1
    cache = os.path.abspath(a.cache)
    t_cache = time.monotonic() - t_start

    tmp = tempfile.mkdtemp(prefix="fdvm-linux-blk-")
    tap = Tap()
    logs = []  # (title, path) to print on failure
    try:
        initrd = os.path.join(tmp, "initrd.gz")
        mods = make_initrd(cache, desc, initrd, INIT, ROOT_MODULES)
        print(f"# kernel {desc['kernel']}; modules {' '.join(mods)}; "
              f"cache ready in {t_cache:.1f} s")
        vmlinuz = os.path.join(cache, desc["vmlinuz"])
        img = os.path.join(tmp, "disk.img")
        with open(img, "wb") as f:
            f.truncate(a.disk_mib << 20)
        sock = os.path.join(tmp, "blk.sock")
        if a.backend == "qsd":
            bcmd = [qsd, "--blockdev", f"driver=file,node-name=f,filename={img}",
                    "--export", "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,"
                    f"addr.path={sock},writable=on,num-queues={a.queues}"]
        else:
            opts = (f",queues={a.queues}" if a.queues != 1 else "") + a.image_opts
            bcmd = [os.path.abspath(a.fdvm), "serve", "blk", "--socket", sock, img + opts]
        bcmd += a.backend_arg
        print("# backend: " + " ".join(bcmd))
        berr_path = os.path.join(tmp, "backend.err")
        logs.append(("backend stderr", berr_path))
        berr = open(berr_path, "wb")
        backend = start(bcmd, berr, berr)
        try:
            why = wait_socket(sock, backend, 15)
            if not tap.check(why is None, "backend listens on its socket", why or ""):
                return finish(tap, logs)

            cons, qerr, status, secs = run_qemu(a, tmp, "1", sock, vmlinuz, initrd, "full", backend)
            logs += [("guest console (boot 1)", os.path.join(tmp, "console-1.txt")),
                     ("QEMU stderr (boot 1)", os.path.join(tmp, "qemu-1.err"))]
            print(f"# boot 1 (full) took {secs:.1f} s, QEMU status {status}")
            tap.check(backend.poll() is None, "backend still running after the first guest",
                      f"it exited with status {backend.returncode}")
            r = results(cons)
            fail = r.get("fail", "")
            print(f"# guest interrupts: {r.get('irq', '?')}")
            tap.check("disk" in r, "guest loaded the virtio modules and found /dev/vda",
                      fail or "no /dev/vda")
            want = f"bytes={a.disk_mib << 20}"
            tap.check(r.get("disk", "").startswith(want), f"guest sees the disk's size ({want})",
                      r.get("disk", "none"))
            tap.check(r.get("mkfs") == "ok", "mkfs.ext2 on /dev/vda", fail)
            tap.check(r.get("files", "").startswith("ok") and r.get("umount") == "ok",
                      "files verified after unmount and remount",
                      r.get("files", "") or fail)
            w = r.get("pattern-written")
            tap.check(w is not None
                      and w == r.get("pattern-read-direct") == r.get("pattern-read-buffered"),
                      "guest read back the pattern it wrote (O_DIRECT and buffered)",
                      f"wrote {w}, read {r.get('pattern-read-direct')} direct, "
                      f"{r.get('pattern-read-buffered')} buffered; {fail}")
            tap.check(status == 0 and "end" in r and not fail, "guest finished and powered off",
                      "killed (timeout, or the backend had exited)" if status is None
                      else f"QEMU status {status}, {fail or 'no end line'}")
            errs = [l for l in qerr.splitlines() if l.strip()]
            tap.check(not errs, "no QEMU error", errs[0] if errs else "")

            # The guest wrote the pattern through the backend, so the file
            # must hold it: the backend wrote it, and nothing is left cached.
            md5 = hashlib.md5()
            with open(img, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    md5.update(chunk)
            h = md5.hexdigest()
            tap.check(w is not None and h == w, "host view of the image equals the guest's",
                      f"image {h}, guest wrote {w}")

            if a.no_second_boot:
                tap.skip("a second frontend on the same backend reads the same disk",
                         "--no-second-boot")
            else:
                cons2, qerr2, status2, secs2 = run_qemu(a, tmp, "2", sock, vmlinuz, initrd,
                                                        "verify", backend)
                logs += [("guest console (boot 2)", os.path.join(tmp, "console-2.txt")),
                         ("QEMU stderr (boot 2)", os.path.join(tmp, "qemu-2.err"))]
                print(f"# boot 2 (verify) took {secs2:.1f} s, QEMU status {status2}")
                r2 = results(cons2)
                print(f"# guest interrupts: {r2.get('irq', '?')}")
                errs2 = [l for l in qerr2.splitlines() if l.strip()]
                tap.check(status2 == 0 and w is not None and r2.get("verify") == w and not errs2,
                          "a second frontend on the same backend reads the same disk",
                          f"read {r2.get('verify')}, want {w}; QEMU status {status2}"
                          + (f"; {errs2[0]}" if errs2 else ""))
        finally:
            alive = stop_backend(backend)
            berr.close()
        bstatus = backend.returncode
        if a.backend == "fdvm":
            tap.check(alive and bstatus == 0 and not os.path.exists(sock),
                      "backend exited 0 on SIGTERM and removed its socket",
                      f"{'' if alive else 'it had already exited before SIGTERM; '}status {bstatus}, "
                      f"socket {'still there' if os.path.exists(sock) else 'removed'}")
        else:
            # qemu-storage-daemon's status on SIGTERM is not fdvm's contract;
            # report it, but only a crash counts.
            tap.check(alive and bstatus is not None and bstatus >= 0, "backend exited on SIGTERM",
                      f"{'' if alive else 'it had already exited before SIGTERM; '}status {bstatus}")
            print(f"# qemu-storage-daemon exit status {bstatus}, socket "
                  f"{'still there' if os.path.exists(sock) else 'removed'}")
        print(f"# whole run {time.monotonic() - t_start:.1f} s")
        return finish(tap, logs)
    finally:
        if a.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
