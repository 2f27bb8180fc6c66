"""What the real-Linux-guest tests (linux_blk.py, linux_net.py) share.

  - the guest's files: Debian 12's cloud kernel and busybox-static, fetched
    with `apt-get download` into a cache directory once (prepare_cache), and
    the kernel modules the guest needs, in dependency order (load_order);
  - the initramfs, written here in the newc format (newc, make_initrd), so
    neither cpio nor root is needed to make it (device nodes included);
  - running QEMU with its serial console in a file the runner reads while the
    guest runs (Guest), and the guest's "FDVMT key value" lines (results);
  - the backend daemons' start and stop (start, wait_socket, stop_backend);
  - TAP output (Tap, comment, finish, skip).
"""
import fcntl
import gzip
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
# Debian 12's cloud kernel has ext4 (which also mounts ext2), jbd2, mbcache,
# crc16 and crc32c built in; only the virtio stack is modular. The cache
# holds these modules and everything they depend on (from their .modinfo
# depends=); each test loads the part it needs (load_order).
CACHE_MODULES = ["virtio_pci", "virtio_blk", "virtio_net"]
CACHE_FORMAT = 2  # 2: all of CACHE_MODULES, with "depends" in ready.json
BACKEND_GONE_GRACE = 10  # s that QEMU may go on after the backend exited
# How every guest's /init starts: busybox's applets, /proc, /sys, /dev, /tmp.
INIT_PREAMBLE = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=400m tmp /tmp
"""


def skip(why):
    """Prints a TAP plan that skips the whole test and exits 0."""
    print("1..0 # SKIP " + " | ".join(l.strip() for l in why.splitlines() if l.strip())[:300])
    sys.exit(0)


class Unavailable(Exception):
    """Something needed from outside (apt, the network) cannot be had."""


# ---------------------------------------------------------------- cache

def run(cmd, **kw):
    """Runs cmd to completion; stdout and stderr together in .stdout."""
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
    """The key=value strings of a kernel module's .modinfo ELF section, and the
    module's (decompressed) bytes."""
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


def dependency_order(roots, depends):
    """roots and everything they depend on (depends(name) -> [names]),
    dependencies first."""
    order, seen = [], set()

    def visit(name, stack):
        if name in seen:
            return
        if name in stack:
            raise ValueError(f"module dependency loop: {' -> '.join(stack + [name])}")
        for dep in depends(name):
            visit(dep, stack + [name])
        seen.add(name)
        order.append(name)

    for r in roots:
        visit(r, [])
    return order


def module_files(moddir, roots):
    """({name: module bytes}, {name: [its depends]}) for roots and what they need."""
    paths = {}
    for dirpath, _, files in os.walk(moddir):
        for f in files:
            m = re.match(r"(.*)\.ko(\.xz)?$", f)
            if m:
                paths[m.group(1).replace("-", "_")] = os.path.join(dirpath, f)
    data, deps = {}, {}

    def depends(name):
        if name not in deps:
            if name not in paths:
                raise ValueError(f"module {name} not in the kernel package")
            info, data[name] = modinfo(paths[name])
            deps[name] = [d.replace("-", "_") for d in info.get("depends", "").split(",") if d]
        return deps[name]

    order = dependency_order(roots, depends)
    return {n: data[n] for n in order}, {n: deps[n] for n in order}


def load_order(desc, roots):
    """The cached modules to insmod for roots, dependencies first."""
    return dependency_order(roots, lambda n: desc["depends"][n])


def prepare_cache(cache):
    """Fetches and unpacks the kernel, the modules and busybox into cache once.

    Returns the ready description ({"vmlinuz", "busybox", "modules": [names],
    "depends": {name: [names]}, "kernel", "kver"}); the modules are in
    cache/modules/NAME.ko. Safe to run from several processes at once: the
    first takes the lock and fills the cache, the others wait for it and
    reuse what it made. A filled cache is used as it is, without apt (so
    offline too); remove it to pick up a newer kernel. Raises Unavailable
    when apt cannot provide the packages.
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
            mods, deps = module_files(os.path.join(kx, "lib", "modules", kver), CACHE_MODULES)
            for name, data in mods.items():
                with open(os.path.join(out, "modules", name + ".ko"), "wb") as f:
                    f.write(data)
            desc = {"format": CACHE_FORMAT, "kernel": kpkg, "kver": kver,
                    "vmlinuz": "vmlinuz", "busybox": "busybox",
                    "modules": list(mods), "depends": deps}
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


def make_initrd(cache, desc, path, init, roots):
    """Writes a gzipped initramfs to path: busybox, init as /init, and the
    modules roots need in /modules with their load order in /modules/order."""
    d, f, lnk, chr_ = stat.S_IFDIR | 0o755, stat.S_IFREG, stat.S_IFLNK | 0o777, stat.S_IFCHR
    mods = load_order(desc, roots)
    entries = [(n, d, b"", (0, 0)) for n in ("bin", "dev", "proc", "sys", "tmp", "mnt", "modules")]
    entries += [
        ("dev/console", chr_ | 0o600, b"", (5, 1)),
        ("dev/null", chr_ | 0o666, b"", (1, 3)),
        ("bin/busybox", f | 0o755, open(os.path.join(cache, desc["busybox"]), "rb").read(), (0, 0)),
        ("bin/sh", lnk, b"busybox", (0, 0)),
        ("init", f | 0o755, init.encode(), (0, 0)),
        ("modules/order", f | 0o644, "".join(m + "\n" for m in mods).encode(), (0, 0)),
    ]
    for m in mods:
        entries.append((f"modules/{m}.ko", f | 0o644,
                        open(os.path.join(cache, "modules", m + ".ko"), "rb").read(), (0, 0)))
    with open(path, "wb") as out:
        out.write(gzip.compress(newc(entries), 6))
    return mods


# ---------------------------------------------------------------- processes

def start(cmd, out, err):
    """Starts cmd in a new process group (so a timeout can kill all of it)."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=True)


def kill_group(p):
    """SIGKILLs p's process group (see start) and reaps p."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def wait_socket(path, proc, timeout):
    """None once a Unix socket exists at path, else why not (proc exited, timeout)."""
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


def stop_backend(backend, grace=15):
    """SIGTERMs backend if it still runs and waits up to grace s (then kills it).

    Returns whether it was still running when asked to stop.
    """
    alive = backend.poll() is None
    if alive:
        backend.send_signal(signal.SIGTERM)
        try:
            backend.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(backend)
            print(f"# backend did not exit within {grace} s of SIGTERM; killed")
    return alive


def results(console):
    """The guest's FDVMT lines as {key: value} (the first value for each key).

    The guest starts every line meant for the runner with "FDVMT "; they are
    found anywhere in a console line, in case a kernel message got in first.
    Only whole lines count: the console is read while QEMU writes it, and
    a line caught half-written (a sha256 cut short) is not yet its value.
    """
    r = {}
    for m in re.finditer(r"FDVMT (\S+) ?([^\n]*)\n", console):
        r.setdefault(m.group(1), m.group(2).strip())
    return r


class Guest:
    """One QEMU run, its serial console in TMP/console-TAG.txt and its stderr
    in TMP/qemu-TAG.err, which the runner may read while the guest runs.

    QEMU is killed timeout s after its start, and BACKEND_GONE_GRACE s after
    backend (a Popen, or None) has exited: the guest's I/O then hangs for
    ever. Use it in a with statement so that an exception kills QEMU too.
    """

    def __init__(self, cmd, tmp, tag, timeout, backend=None):
        self.cons_path = os.path.join(tmp, f"console-{tag}.txt")
        self.err_path = os.path.join(tmp, f"qemu-{tag}.err")
        self.backend = backend
        self.status = None  # QEMU's exit status; None while it runs or if killed
        self.killed = False
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout
        self.t_end = None
        with open(self.cons_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = start(cmd, out, err)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.running():
            self.kill()
        return False

    def kill(self):
        kill_group(self.proc)
        self.killed = True
        self.t_end = time.monotonic()

    def running(self):
        """Whether QEMU still runs; kills it when past its deadline."""
        if self.t_end is not None:
            return False
        if self.proc.poll() is not None:
            self.status, self.t_end = self.proc.returncode, time.monotonic()
            return False
        now = time.monotonic()
        if self.backend is not None and self.backend.poll() is not None:
            self.deadline = min(self.deadline, now + BACKEND_GONE_GRACE)
        if now >= self.deadline:
            self.kill()
            return False
        return True

    def wait(self):
        """Waits for QEMU to exit (or be killed); returns its status, None if killed."""
        while self.running():
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
        return self.status

    def wait_for(self, key, timeout):
        """Waits up to timeout s for the guest's line "FDVMT key ..." and
        returns its value; None if it did not come, the guest said "fail", or
        QEMU is gone."""
        end = time.monotonic() + timeout
        while True:
            alive = self.running()
            r = self.results()
            if key in r:
                return r[key]
            if not alive or "fail" in r or time.monotonic() >= end:
                return None
            time.sleep(0.1)

    @property
    def secs(self):
        return (self.t_end or time.monotonic()) - self.t0

    def console(self):
        return open(self.cons_path, "rb").read().decode(errors="replace").replace("\r", "")

    def stderr(self):
        return open(self.err_path, "rb").read().decode(errors="replace")

    def results(self):
        return results(self.console())


# ---------------------------------------------------------------- TAP

class Tap:
    """Numbered TAP results; the plan comes last (finish)."""

    def __init__(self, first=1):
        self.n = first - 1
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
        sys.stdout.flush()


def comment(title, text, limit=400):
    """Prints text as TAP comments under a title line (its last limit lines)."""
    lines = text.rstrip("\n").split("\n") if text.strip() else ["(empty)"]
    print(f"# --- {title} ({len(lines)} lines{', last %d' % limit if len(lines) > limit else ''}) ---")
    for l in lines[-limit:]:
        # No terminal escapes (SeaBIOS clears the screen) in the TAP stream.
        print("# " + re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]", "", l))
    sys.stdout.flush()


def comment_file(title, path):
    try:
        comment(title, open(path, "rb").read().decode(errors="replace").replace("\r", ""))
    except OSError:
        pass


def finish(tap, logs, plan=True):
    """Prints logs [(title, path)] when something failed, then the plan;
    returns the exit status."""
    if tap.failed:
        for title, path in logs:
            comment_file(title, path)
    if plan:
        print(f"1..{tap.n}")
    return 1 if tap.failed else 0
