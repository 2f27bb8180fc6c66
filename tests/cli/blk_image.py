#!/usr/bin/env python3
"""virtio-blk images as a user has them: discard and write-zeroes (the guest reads zeroes back
and the image's blocks are freed), a read-only disk, an image whose size is not whole sectors,
a comma in the file's name (",,"), a block device (a loop device, root), and image locking: a
second writer is refused, readers share, lock=off overrides, and fdvm and QEMU see each other's
locks (qemu-img, qemu-io, when installed)."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from clitest import check, done, wait_path

fdvm, discard_guest, blk_guest, hello = sys.argv[1:5]


def run(args, timeout=120):
    return subprocess.run([fdvm, "run", *args], capture_output=True, text=True, timeout=timeout)


def image(tmp, name, mib=16):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    return path


def odirect(path):
    """Whether path's file system opens it with O_DIRECT."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
        return True
    except OSError:
        return False


def allocated(path):
    return os.stat(path).st_blocks * 512


def tail(r):
    """What to show of a run: its failed checks, else its last lines."""
    lines = (r.stdout + r.stderr).strip().splitlines()
    return [l for l in lines if l.startswith("not ok")] or lines[-3:]


def ranges(tmp):
    img = image(tmp, "discard.img")
    r = run(["--blk", img, discard_guest])
    check(r.returncode == 0, f"discard and write-zeroes: the guest passes (status {r.returncode}): {tail(r)}")
    a = allocated(img)
    check(a < 256 << 10, f"after the guest wrote 2 MiB and zeroed it with unmap, {a} bytes stay allocated (< 256 KiB)")
    r = run(["--blk", img + ",discard=off", discard_guest, "--", "nodiscard"])
    check(r.returncode == 0, f"discard=off: no range commands offered, both UNSUPP (status {r.returncode}): {tail(r)}")
    r = run(["--blk", img + ",ro", discard_guest, "--", "ro"])
    check(r.returncode == 0, f"ro: read-only offered, writes fail with IOERR (status {r.returncode}): {tail(r)}")
    # cache=none: O_DIRECT where the file system has it (this directory), bounced where the
    # guest's buffers keep to no alignment; refused, with the reason, where it has not.
    if odirect(img):
        r = run(["--blk", img + ",cache=none", discard_guest])
        check(r.returncode == 0 and allocated(img) < 256 << 10,
              f"cache=none: the same, through O_DIRECT (status {r.returncode}): {tail(r)}")
        big = image(tmp, "direct.img", 8)
        r = run(["--blk", big + ",cache=none", blk_guest])
        check(r.returncode == 0,
              f"cache=none: the virtio_blk guest's checks and 70000 reads (status {r.returncode}): {tail(r)}")
    else:
        check(True, f"cache=none # SKIP {tmp} has no O_DIRECT")
    if os.path.isdir("/dev/shm"):
        shm = image("/dev/shm", f"fdvm-test-{os.getpid()}.img", 1)
        try:
            r = run(["--blk", shm + ",cache=none", hello])
            if odirect(shm):  # tmpfs has O_DIRECT since Linux 6.6
                check(r.returncode == 0, f"cache=none on a tmpfs with O_DIRECT: {r.returncode}, {r.stderr.strip()!r}")
            else:
                check(r.returncode == 2 and "does not do direct I/O" in r.stderr,
                      f"cache=none on a tmpfs without O_DIRECT is refused: {r.returncode}, {r.stderr.strip()!r}")
        finally:
            os.unlink(shm)


def bad_size_and_comma(tmp):
    odd = os.path.join(tmp, "odd.img")
    with open(odd, "wb") as f:
        f.truncate((8 << 20) + 100)
    r = run(["--blk", odd, hello])
    check(r.returncode == 2 and "not a whole number of 512-byte sectors" in r.stderr,
          f"an image of 8 MiB + 100 bytes is refused: {r.returncode}, {r.stderr.strip()!r}")
    img = image(tmp, "a,b.img")
    r = run(["--blk", img.replace(",", ",,"), discard_guest])
    check(r.returncode == 0, f"a comma in the image's name, written ,,: status {r.returncode}: {tail(r)}")
    r = run(["--blk", img, hello])
    check(r.returncode == 2 and "unknown option b.img" in r.stderr,
          f"the same name unescaped is an unknown option: {r.stderr.strip()!r}")


def serve(tmp, spec):
    sock = os.path.join(tmp, "vu.sock")
    p = subprocess.Popen([fdvm, "serve", "blk", "--socket", sock, "-q", spec],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not wait_path(sock, p):
        p.kill()
        p.wait()
        return None
    return p


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def qemu_io(img, *opts):
    return subprocess.run(["qemu-io", "-f", "raw", *opts, "-c", "read 0 512", img],
                          capture_output=True, text=True, timeout=30)


def locking(tmp):
    img = image(tmp, "locked.img")
    d = serve(tmp, img)
    if check(d, "fdvm serve blk holds the image as a writer"):
        r = run(["--blk", img, hello])
        check(r.returncode == 2 and "in use" in r.stderr and "lock=off" in r.stderr,
              f"a second writer is refused: {r.returncode}, {r.stderr.strip()!r}")
        r = run(["--blk", img + ",ro", hello])
        check(r.returncode == 2 and "in use" in r.stderr, f"a reader is refused while a writer has it: {r.returncode}")
        r = run(["--blk", img + ",lock=off", hello])
        check(r.returncode == 0, f"lock=off overrides: {r.returncode}, {r.stderr.strip()!r}")
        if shutil.which("qemu-io"):
            q = qemu_io(img)
            q2 = qemu_io(img, "-r")
            check(q.returncode != 0 and "lock" in q.stderr and q2.returncode != 0,
                  f"QEMU sees fdvm's writer: qemu-io fails to open it read-write and read-only: {q.stderr.strip()!r}")
        else:
            check(True, "QEMU sees fdvm's writer # SKIP qemu-io is not installed")
        stop(d)
    d = serve(tmp, img + ",ro")
    if check(d, "fdvm serve blk holds the image read-only"):
        r = run(["--blk", img + ",ro", hello])
        check(r.returncode == 0, f"a second reader is allowed: {r.returncode}, {r.stderr.strip()!r}")
        r = run(["--blk", img, hello])
        check(r.returncode == 2 and "in use" in r.stderr, f"a writer is refused while a reader has it: {r.returncode}")
        if shutil.which("qemu-io"):
            q = qemu_io(img)
            q2 = qemu_io(img, "-r")
            check(q.returncode != 0 and "lock" in q.stderr and q2.returncode == 0,
                  f"QEMU sees fdvm's reader: qemu-io cannot write ({q.stderr.strip()!r}) but reads ({q2.returncode})")
        else:
            check(True, "QEMU sees fdvm's reader # SKIP qemu-io is not installed")
        stop(d)
    r = run(["--blk", img, hello])
    check(r.returncode == 0, f"the locks go with the process that held them: {r.returncode}")
    if shutil.which("qemu-io"):
        # QEMU as the writer: qemu-io holds the image open read-write while it sleeps.
        q = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 4000", img],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        r = run(["--blk", img, hello])
        r2 = run(["--blk", img + ",ro", hello])
        q.wait(timeout=30)
        check(r.returncode == 2 and "in use" in r.stderr and r2.returncode == 2,
              f"fdvm sees QEMU's lock (qemu-io has the image): writer {r.returncode}, reader {r2.returncode}")
    else:
        check(True, "fdvm sees QEMU's lock # SKIP qemu-io is not installed")


def block_device(tmp):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        check(True, "a block device # SKIP needs root and losetup")
        return
    img = image(tmp, "loop.img")
    lo = subprocess.run(["losetup", "-f", "--show", "--sector-size", "4096", img],
                        capture_output=True, text=True)
    if lo.returncode != 0:
        check(True, f"a block device # SKIP losetup: {lo.stderr.strip()}")
        return
    dev = lo.stdout.strip()
    try:
        r = run(["--blk", dev, blk_guest])
        check(r.returncode == 0 and "32768 sectors" in r.stdout,
              f"a loop device (4096-byte sectors) as the disk: {r.returncode}: {tail(r)}")
        r = run(["-v", "--blk", dev + ",ro", hello])
        check(r.returncode == 0, f"and read-only: {r.returncode}")
    finally:
        subprocess.run(["losetup", "-d", dev])


if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP /dev/kvm is not usable")
    sys.exit(0)
with tempfile.TemporaryDirectory(dir=os.environ.get("FDVM_TEST_DIR", "/var/tmp")) as tmp:
    ranges(tmp)
    bad_size_and_comma(tmp)
    locking(tmp)
    block_device(tmp)
done()
