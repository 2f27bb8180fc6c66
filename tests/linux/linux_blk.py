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
newc format (below, `newc`), so neither cpio nor root is needed to make it
(device nodes included). Prints TAP; skips when QEMU or the packages are not
to be had.
"""
import argparse
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

QEMU = "qemu-system-x86_64"
QSD = "qemu-storage-daemon"
# Debian 12's cloud kernel has ext4 (which also mounts ext2), jbd2, mbcache,
# crc16 and crc32c built in; only the virtio stack is modular. The modules
# below and everything they depend on (from their .modinfo depends=) are
# loaded, dependencies first.
ROOT_MODULES = ["virtio_pci", "virtio_blk"]
CACHE_FORMAT = 1
BACKEND_GONE_GRACE = 10  # s that QEMU may go on after the backend exited

# The guest's /init. Every line meant for the runner starts with "FDVMT ";
# the runner finds them anywhere in a console line, in case a kernel message
# got in first.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=400m tmp /tmp

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


def skip(why):
    print("1..0 # SKIP " + " | ".join(l.strip() for l in why.splitlines() if l.strip())[:300])
    sys.exit(0)


class Unavailable(Exception):
    """Something needed from outside (apt, the network) cannot be had."""


# ---------------------------------------------------------------- cache

def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, **kw)


def kernel_package():
    """The current linux-image-*-cloud-amd64, from the apt lists on this machine."""
    if not shutil.which("apt-cache"):
        raise Unavailable("no apt-cache")
    r = run(["apt-cache", "depends", "linux-image-cloud-amd64"])
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)\s", r.stdout)
    if m:
        return m.group(1)
    r = run(["apt-cache", "search", "--names-only", r"^linux-image-[0-9.]+-[0-9]+-cloud-amd64$"])
    names = [l.split()[0] for l in r.stdout.splitlines() if l.strip()]
    if not names:
        raise Unavailable("apt-cache knows no linux-image-*-cloud-amd64 (apt-get update not run?)")
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])


def apt_download(pkg, where):
    if not shutil.which("apt-get"):
        raise Unavailable("no apt-get")
    r = run(["apt-get", "download", pkg], cwd=where)
    debs = [f for f in os.listdir(where) if f.startswith(pkg + "_") and f.endswith(".deb")]
    if r.returncode != 0 or not debs:
        errs = [l for l in r.stdout.splitlines() if l.startswith("E:")] or r.stdout.splitlines()[-1:]
        raise Unavailable(f"apt-get download {pkg} failed: {' '.join(errs)}")
    return os.path.join(where, debs[0])


def modinfo(path):
    """The key=value strings of a kernel module's .modinfo ELF section."""
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError(f"{path}: not an ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)

    def section(i):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end] == b".modinfo":
            info = {}
            for s in data[off:off + size].split(b"\0"):
                if b"=" in s:
                    k, v = s.decode(errors="replace").split("=", 1)
                    info.setdefault(k, v)
            return info, data
    raise ValueError(f"{path}: no .modinfo section")


def module_order(moddir, roots):
    """[(name, module bytes)] for roots and their depends=, dependencies first."""
    paths = {}
    for dirpath, _, files in os.walk(moddir):
        for f in files:
            m = re.match(r"(.*)\.ko(\.xz)?$", f)
            if m:
                paths[m.group(1).replace("-", "_")] = os.path.join(dirpath, f)
    order, seen = [], set()

    def visit(name, stack):
        if name in seen:
            return
        if name in stack:
            raise ValueError(f"module dependency loop: {' -> '.join(stack + [name])}")
        if name not in paths:
            raise ValueError(f"module {name} not in the kernel package")
        info, data = modinfo(paths[name])
        for dep in filter(None, info.get("depends", "").split(",")):
            visit(dep.replace("-", "_"), stack + [name])
        seen.add(name)
        order.append((name, data))

    for r in roots:
        visit(r, [])
    return order


def prepare_cache(cache):
    """Fetches and unpacks the kernel, the modules and busybox into cache once.

    Returns the ready description ({"vmlinuz", "busybox", "modules": [names],
    "kernel"}); the modules are in cache/modules/NAME.ko. Safe to run from
    several processes at once: the first takes the lock and fills the cache,
    the others wait for it and reuse what it made. A filled cache is used as
    it is, without apt (so offline too); remove it to pick up a newer kernel.
    """
    os.makedirs(cache, exist_ok=True)
    ready = os.path.join(cache, "ready.json")
    with open(os.path.join(cache, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            desc = json.load(open(ready))
            files = [desc["vmlinuz"], desc["busybox"]] + [f"modules/{m}.ko" for m in desc["modules"]]
            if desc.get("format") == CACHE_FORMAT and all(
                    os.path.exists(os.path.join(cache, f)) for f in files):
                return desc
        except (OSError, ValueError, KeyError):
            pass
        work = tempfile.mkdtemp(prefix="prep-", dir=cache)
        os.chmod(work, 0o755)  # apt-get download, as root, hands the download to user _apt
        try:
            kpkg = kernel_package()
            kdeb = apt_download(kpkg, work)
            bdeb = apt_download("busybox-static", work)
            kx, bx = os.path.join(work, "k"), os.path.join(work, "b")
            for deb, dest in ((kdeb, kx), (bdeb, bx)):
                r = run(["dpkg-deb", "-x", deb, dest])
                if r.returncode != 0:
                    raise RuntimeError(f"dpkg-deb -x {deb}: {r.stdout}")
            vmlinuz = [f for f in os.listdir(os.path.join(kx, "boot")) if f.startswith("vmlinuz-")]
            if len(vmlinuz) != 1:
                raise RuntimeError(f"{kpkg}: expected one boot/vmlinuz-*, found {vmlinuz}")
            kver = vmlinuz[0][len("vmlinuz-"):]
            out = os.path.join(work, "out")
            os.makedirs(os.path.join(out, "modules"))
            shutil.copy(os.path.join(kx, "boot", vmlinuz[0]), os.path.join(out, "vmlinuz"))
            shutil.copy(os.path.join(bx, "bin", "busybox"), os.path.join(out, "busybox"))
            mods = module_order(os.path.join(kx, "lib", "modules", kver), ROOT_MODULES)
            for name, data in mods:
                with open(os.path.join(out, "modules", name + ".ko"), "wb") as f:
                    f.write(data)
            desc = {"format": CACHE_FORMAT, "kernel": kpkg, "kver": kver,
                    "vmlinuz": "vmlinuz", "busybox": "busybox",
                    "modules": [n for n, _ in mods]}
            with open(os.path.join(out, "ready.json"), "w") as f:
                json.dump(desc, f, indent=1)
            # Replace what was there (an older format, a half-made cache) and
            # keep only what the guest needs: the unpacked kernel is ~100 MiB.
            for n in ("vmlinuz", "busybox", "modules", "ready.json"):
                p = os.path.join(cache, n)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.unlink(p)
            for n in ("vmlinuz", "busybox", "modules"):
                os.rename(os.path.join(out, n), os.path.join(cache, n))
            os.rename(os.path.join(out, "ready.json"), ready)  # last: marks the cache complete
            return desc
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- initramfs

def newc(entries):
    """A newc ("070701") cpio archive of entries (path, mode, data, rdev).

    Written here rather than with cpio(1): no package to install, and device
    nodes need no root.
    """
    out = bytearray()

    def pad():
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (path, mode, data, rdev) in enumerate(entries + [("TRAILER!!!", 0, b"", (0, 0))], 1):
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0)
        out += b"070701" + b"".join(b"%08x" % v for v in fields) + name
        pad()
        out += data
        pad()
    return bytes(out)


def make_initrd(cache, desc, path):
    d, f, lnk, chr_ = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777, stat.S_IFCHR
    entries = [(n, d, b"", (0, 0)) for n in ("bin", "dev", "proc", "sys", "tmp", "mnt", "modules")]
    entries += [
        ("dev/console", chr_ | 0o600, b"", (5, 1)),
        ("dev/null", chr_ | 0o666, b"", (1, 3)),
        ("bin/busybox", f | 0o755, open(os.path.join(cache, desc["busybox"]), "rb").read(), (0, 0)),
        ("bin/sh", lnk, b"busybox", (0, 0)),
        ("init", f | 0o755, INIT.encode(), (0, 0)),
        ("modules/order", f | 0o644, "".join(m + "\n" for m in desc["modules"]).encode(), (0, 0)),
    ]
    for m in desc["modules"]:
        entries.append((f"modules/{m}.ko", f | 0o644,
                        open(os.path.join(cache, "modules", m + ".ko"), "rb").read(), (0, 0)))
    with open(path, "wb") as out:
        out.write(gzip.compress(newc(entries), 6))


# ---------------------------------------------------------------- running

def start(cmd, out, err):
    """Starts cmd in a new process group (so a timeout can kill all of it)."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=True)


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def wait_socket(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return None
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return f"backend exited with status {proc.returncode} before listening"
        time.sleep(0.05)
    return f"no socket at {path} after {timeout} s"


def run_qemu(a, tmp, tag, sock, vmlinuz, initrd, mode, backend):
    """Runs one guest; returns (console text, stderr text, status or None on timeout, seconds).

    QEMU is killed at the timeout, and also BACKEND_GONE_GRACE seconds after
    the backend has exited: the guest's I/O then hangs for ever.
    """
    cons_path, err_path = os.path.join(tmp, f"console-{tag}.txt"), os.path.join(tmp, f"qemu-{tag}.err")
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
    t0 = time.monotonic()
    with open(cons_path, "wb") as out, open(err_path, "wb") as err:
        p = start(cmd, out, err)
        deadline, status = t0 + a.timeout, None
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    kill_group(p)
                    break
                try:
                    status = p.wait(timeout=min(0.5, deadline - now))
                    break
                except subprocess.TimeoutExpired:
                    pass
                if backend.poll() is not None:
                    deadline = min(deadline, time.monotonic() + BACKEND_GONE_GRACE)
        except BaseException:
            kill_group(p)
            raise
    secs = time.monotonic() - t0
    cons = open(cons_path, "rb").read().decode(errors="replace").replace("\r", "")
    return cons, open(err_path, "rb").read().decode(errors="replace"), status, secs


def results(console):
    """The guest's FDVMT lines as {key: value} (the first value for each key)."""
    r = {}
    for m in re.finditer(r"FDVMT (\S+) ?([^\n]*)", console):
        r.setdefault(m.group(1), m.group(2).strip())
    return r


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, ok, what, why=""):
        self.n += 1
        self.failed += not ok
        print(f"{'ok' if ok else 'not ok'} {self.n} - {what}" + (f" # {why}" if why and not ok else ""))
        sys.stdout.flush()
        return ok

    def skip(self, what, why):
        self.n += 1
        print(f"ok {self.n} - {what} # SKIP {why}")


def comment(title, text, limit=400):
    lines = text.rstrip("\n").split("\n") if text.strip() else ["(empty)"]
    print(f"# --- {title} ({len(lines)} lines{', last %d' % limit if len(lines) > limit else ''}) ---")
    for l in lines[-limit:]:
        # No terminal escapes (SeaBIOS clears the screen) in the TAP stream.
        print("# " + re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]", "", l))


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
        print(f"# kernel {desc['kernel']}; modules {' '.join(desc['modules'])}; "
              f"cache ready in {t_cache:.1f} s")
        initrd = os.path.join(tmp, "initrd.gz")
        make_initrd(cache, desc, initrd)
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
            alive = backend.poll() is None
            if alive:
                backend.send_signal(signal.SIGTERM)
                try:
                    backend.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    kill_group(backend)
                    print("# backend did not exit within 15 s of SIGTERM; killed")
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


def finish(tap, logs):
    if tap.failed:
        for title, path in logs:
            try:
                comment(title, open(path, "rb").read().decode(errors="replace").replace("\r", ""))
            except OSError:
                pass
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
