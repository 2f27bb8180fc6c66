#!/usr/bin/env python3
"""Bad input to `fdvm run` and `fdvm serve`: each case must end with a non-zero status and
one clear error line on stderr that names the file or the value. Broken ELF
files are made here by patching a good guest image."""
import os
import shutil
import struct
import subprocess
import sys
import tempfile

fdvm, good = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp(prefix="fdvm-bad-")
have_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
results = []


def patched(name, patch):
    data = bytearray(open(good, "rb").read())
    patch(data)
    path = os.path.join(tmp, name)
    open(path, "wb").write(data)
    return path


def phdrs(data):
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phnum, = struct.unpack_from("<H", data, 0x38)
    return [phoff + i * 56 for i in range(phnum)]


def first(data, ptype):
    return next(o for o in phdrs(data) if struct.unpack_from("<I", data, o)[0] == ptype)


def set_class32(d): d[4] = 1
def set_machine(d): struct.pack_into("<H", d, 0x12, 3)  # EM_386
def drop_note(d):
    for o in phdrs(d):
        if struct.unpack_from("<I", d, o)[0] == 4:
            struct.pack_into("<I", d, o, 0x6474e551)  # PT_GNU_STACK: ignored
def load_high(d):  # first PT_LOAD at 1 GiB: outside 64 MiB of RAM
    o = first(d, 1)
    struct.pack_into("<QQ", d, o + 16, 0x40000000, 0x40000000)
def load_low(d):  # first PT_LOAD at 0x8000: inside fdvm's boot area
    o = first(d, 1)
    struct.pack_into("<QQ", d, o + 16, 0x8000, 0x8000)
def phoff_past_end(d): struct.pack_into("<Q", d, 0x20, len(d) + 4096)
def filesz_past_end(d):
    o = first(d, 1)
    struct.pack_into("<QQ", d, o + 32, len(d) * 4, len(d) * 4)


def case(desc, args, needle, needs_kvm=True, cmd="run"):
    if needs_kvm and not have_kvm:
        results.append((True, f"{desc} # SKIP no usable /dev/kvm"))
        return
    p = subprocess.run([fdvm, *cmd.split(), *args], capture_output=True, stdin=subprocess.DEVNULL,
                       timeout=30)
    err = p.stderr.decode(errors="replace").strip().splitlines()
    ok = p.returncode != 0 and len(err) == 1 and needle in err[0]
    results.append((ok, f"{desc}: status {p.returncode}, stderr {err!r}"))


empty = os.path.join(tmp, "empty.elf")
open(empty, "wb").close()
unreadable = patched("unreadable.elf", lambda d: None)
os.chmod(unreadable, 0)

case("missing /dev/kvm", ["--kvm", "/nonexistent/kvm", good], "/nonexistent/kvm", needs_kvm=False)
case("KVM path that is not KVM", ["--kvm", "/dev/null", good], "/dev/null: not a KVM device", needs_kvm=False)
case("missing guest file", [os.path.join(tmp, "nope.elf")], "nope.elf")
case("a directory as guest", [tmp], tmp)
case("empty file", [empty], "empty.elf: not an ELF file")
case("text file", [__file__], "not an ELF file")
case("ELF32", [patched("elf32.elf", set_class32)], "not an ELF64 file")
case("wrong machine", [patched("i386.elf", set_machine)], "not a little-endian x86-64")
case("no PVH note", [patched("nonote.elf", drop_note)], "no PVH entry note")
case("program headers past the end", [patched("phoff.elf", phoff_past_end)], "bad program header table")
case("segment past the end of file", [patched("filesz.elf", filesz_past_end)], "lies outside the file")
case("segment outside guest memory", [patched("high.elf", load_high)], "outside guest memory")
case("segment over fdvm's boot area", [patched("low.elf", load_low)], "overlaps fdvm's boot area")
case("--mem too small", ["--mem", "1M", good], "--mem 1M", needs_kvm=False)
case("--mem 0", ["--mem", "0", good], "--mem 0: guest RAM cannot be zero", needs_kvm=False)
case("--mem given twice", ["--mem", "1G", "--mem", "2G", good], "--mem given twice", needs_kvm=False)
case("an option after the guest file", [good, "--mem", "128M"],
     "option --mem after the guest file", needs_kvm=False)
case("guest arguments without --", [good, "code=5"], "the guest's arguments go after --", needs_kvm=False)
case("--serial into a missing directory", ["--serial", "file:" + os.path.join(tmp, "no", "log"), good],
     "--serial file:", needs_kvm=False)
case("not a command", ["--bogus"], "unknown option --bogus: a command comes first", needs_kvm=False, cmd="")
fifo = os.path.join(tmp, "guest.fifo")
os.mkfifo(fifo)
case("a FIFO as guest (must not wait for a writer)", [fifo], "a FIFO; a guest is a regular file")
pie = shutil.which("true")
case("a PIE executable as guest", [pie], "link the guest with -no-pie")
case("--mem too large for the host", ["--mem", "64T", good], "--mem 64T", needs_kvm=False)
case("--mem not a size", ["--mem", "lots", good], "--mem lots", needs_kvm=False)
case("unknown option", ["--frobnicate", good], "--frobnicate", needs_kvm=False)
case("bad --seccomp", ["--seccomp", "strict", good], "--seccomp strict: expected off, log or kill", needs_kvm=False)
case("no guest", [], "no guest given", needs_kvm=False)
case("command line too long", [good, "--", "x" * 5000], "command line")
# fdvm run --vhost-user, and the daemon (fdvm serve blk).
nosock = os.path.join(tmp, "nobody.sock")
case("--vhost-user with no backend listening", ["--vhost-user", f"blk,socket={nosock}", good], "nobody.sock")
case("--vhost-user: unknown type", ["--vhost-user", "gpu,socket=/x", good], "unknown device type", needs_kvm=False)
case("--vhost-user: no socket", ["--vhost-user", "blk", good], "no socket=PATH", needs_kvm=False)
case("--vhost-user: bad reconnect", ["--vhost-user", "blk,socket=/x,reconnect=soon", good], "reconnect",
     needs_kvm=False)
img = os.path.join(tmp, "disk.img")
with open(img, "wb") as f:
    f.truncate(1 << 20)
plain = os.path.join(tmp, "plain-file")
open(plain, "w").close()
case("serve: no --socket", [img], "--socket PATH is missing", needs_kvm=False, cmd="serve blk")
case("serve: no image", ["--socket", nosock], "IMAGE is missing", needs_kvm=False, cmd="serve blk")
case("serve: missing image", ["--socket", nosock, os.path.join(tmp, "nope.img")], "nope.img",
     needs_kvm=False, cmd="serve blk")
case("serve: a regular file at the socket path", ["--socket", plain, img], "not a socket",
     needs_kvm=False, cmd="serve blk")
case("serve: bad disk option", ["--socket", nosock, img + ",queues=99"], "queues must be 1..16",
     needs_kvm=False, cmd="serve blk")
case("serve: unknown device", ["--socket", nosock, img], "unknown device 'gpu'", needs_kvm=False,
     cmd="serve gpu")
case("serve: bad --seccomp", ["--socket", nosock, "--seccomp=strict", img], "--seccomp strict: expected off, log or kill",
     needs_kvm=False, cmd="serve blk")
case("serve: --seccomp without a value", ["--socket", nosock, img, "--seccomp"], "--seccomp needs a value",
     needs_kvm=False, cmd="serve blk")
case("serve net: no --tap", ["--socket", nosock], "--tap NAME is missing", needs_kvm=False,
     cmd="serve net")
case("serve net: bad mac", ["--socket", nosock, "--tap", "t0,mac=01:02:03:04:05:06"],
     "mac must look like", needs_kvm=False, cmd="serve net")
case("--net: no tap", ["--net", "queues=2", good], "no tap", needs_kvm=False)
case("--net: tap name too long", ["--net", "tap=" + "x" * 16, good], "a tap name has 1..15 characters",
     needs_kvm=False)
case("--vhost-user net with queues", ["--vhost-user", "net,socket=/x,queues=2", good], "unknown option",
     needs_kvm=False)

if os.geteuid() != 0:  # root reads any file
    case("unreadable guest file", [unreadable], "unreadable.elf")

shutil.rmtree(tmp)
for i, (ok, desc) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} - {desc}")
print(f"1..{len(results)}")
