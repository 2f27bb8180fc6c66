#!/usr/bin/env python3
"""libfdvm as an embedder gets it: examples/embed.c built by the tree runs the
virtio-blk guest on a disk; then `meson install` into a scratch root, and the same
source compiled against the installed library through pkg-config (C), the C++ header
check likewise (g++, when there is one), both run against the installed shared
library. Prints TAP."""
import os
import shutil
import subprocess
import sys
import tempfile

build_root, embed, guest, source_root = sys.argv[1:5]
results = []
tmp = tempfile.mkdtemp(prefix="fdvm-install-")
have_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)


def check(ok, desc):
    results.append((ok, desc))
    return ok


def run(cmd, env=None, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def run_guest(exe, desc, env=None):
    if not have_kvm:
        check(True, f"{desc} # SKIP no usable /dev/kvm")
        return
    disk = os.path.join(tmp, "disk.img")
    with open(disk, "wb") as f:
        f.truncate(8 << 20)
    p = run([exe, guest, disk], env=env)
    tap_ok = "not ok" not in p.stdout and "\nok " in "\n" + p.stdout
    check(p.returncode == 0 and tap_ok,
          f"{desc}: status {p.returncode}, guest TAP {'passed' if tap_ok else 'failed'}"
          + ("" if p.returncode == 0 else f"; stderr {p.stderr.strip()[-400:]!r}"))


run_guest(embed, "examples/embed.c, built by the tree, runs the virtio-blk guest")

dest = os.path.join(tmp, "root")
p = run(["meson", "install", "-C", build_root, "--no-rebuild", "--quiet", "--destdir", dest])
if check(p.returncode == 0, f"meson install --destdir: status {p.returncode} {p.stderr.strip()[-300:]}"):
    pcs = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f == "fdvm.pc"]
    libs = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f.startswith("libfdvm.so.")]
    headers = [f for d, _, fs in os.walk(dest) for f in fs if d.endswith("include/fdvm")]
    check(len(pcs) == 1 and libs and "vm.h" in headers and "version.h" in headers
          and "testctl_abi.h" not in headers and "bench_abi.h" not in headers,
          f"installed: fdvm.pc {len(pcs)}, libfdvm.so.* {len(libs)}, {len(headers)} headers "
          "(no test-only ones)")
    guests = [f for d, _, fs in os.walk(dest) for f in fs if f.endswith(".elf")]
    check("hello.elf" in guests, f"installed guests: {sorted(guests)}")
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]) if pcs else "",
               PKG_CONFIG_SYSROOT_DIR=dest)
    flags = run(["pkg-config", "--cflags", "--libs", "fdvm"], env=env)
    check(flags.returncode == 0, f"pkg-config --cflags --libs fdvm: {flags.stdout.strip()} {flags.stderr.strip()}")
    rt = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(libs[0]) if libs else "")
    exe = os.path.join(tmp, "embed")
    cc = run(["cc", os.path.join(source_root, "examples", "embed.c"), "-o", exe, *flags.stdout.split()])
    if check(cc.returncode == 0, f"cc embed.c against the installed library: {cc.stderr.strip()[-400:]}"):
        ldd = run(["ldd", exe], env=rt)
        check(dest in ldd.stdout, "embed runs against the installed libfdvm.so")
        run_guest(exe, "embed against the installed library runs the virtio-blk guest", env=rt)
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        check(True, "C++ header check # SKIP no C++ compiler")
    else:
        exe = os.path.join(tmp, "headers")
        c = run([cxx, "-std=c++17", "-Wall", "-Werror", os.path.join(source_root, "examples", "headers.cpp"),
                 "-o", exe, *flags.stdout.split()])
        if check(c.returncode == 0, f"every public header compiles as C++ and links: {c.stderr.strip()[-400:]}"):
            r = run([exe], env=rt)
            check(r.returncode == 0, f"the C++ program runs: {r.stdout.strip()} {r.stderr.strip()}")

shutil.rmtree(tmp, ignore_errors=True)
for i, (ok, desc) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {desc}")
print(f"1..{len(results)}")
