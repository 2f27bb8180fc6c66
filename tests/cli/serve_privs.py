#!/usr/bin/env python3
"""`fdvm serve blk --user/--group`: least privilege for the daemon (root only).

Started as root with an fd it should not keep, it must end up running as the
user asked for (every uid, gid and supplementary group, no capabilities,
no_new_privs), without the inherited fd, still serving (a vhost-user
GET_FEATURES is answered), and stop with status 0 on SIGTERM, removing its
socket where the directory lets that user (a sticky one, like /tmp) and
saying in one line that it could not elsewhere. A user or group that does
not exist is a usage error with one clear line. Reports in TAP."""
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vhost_user"))
import vu_client  # noqa: E402

fdvm = sys.argv[1]
results = []


def check(ok, what):
    results.append((bool(ok), what))


def status_fields(pid):
    f = {}
    with open(f"/proc/{pid}/status") as s:
        for l in s:
            k, _, v = l.partition(":")
            f[k] = v.split()
    return f


def serve(tmp, sock, extra, pass_fds=()):
    """Starts the daemon; returns (process, stderr path) once it says it serves."""
    img = os.path.join(tmp, "disk.img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    errpath = os.path.join(tmp, "stderr")
    err = open(errpath, "w")
    p = subprocess.Popen([fdvm, "serve", "blk", "--socket", sock, img, *extra],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                         pass_fds=pass_fds)
    err.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.poll() is None:
        if "serving" in open(errpath).read():
            break
        time.sleep(0.02)
    return p, errpath


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return None


def main():
    if os.geteuid() != 0:
        print("1..0 # SKIP needs root (it drops to another user)")
        return
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        print("1..0 # SKIP no user 'nobody'")
        return
    want_groups = sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    tmp = tempfile.mkdtemp(prefix="fdvm-privs-")
    os.chmod(tmp, 0o755)  # nobody must reach the socket directories
    try:
        # 1. --user nobody in a sticky directory anyone may write, like /tmp.
        sockdir = os.path.join(tmp, "sticky")
        os.mkdir(sockdir)
        os.chmod(sockdir, 0o1777)
        sock = os.path.join(sockdir, "blk.sock")
        r, w = os.pipe()
        inherited = f"pipe:[{os.fstat(r).st_ino}]"
        p, errpath = serve(tmp, sock, ["--user", "nobody"], pass_fds=(r, w))
        os.close(r)
        os.close(w)
        running = p.poll() is None
        check(running, "fdvm serve blk --user nobody starts and says it serves")
        if running:
            st = status_fields(p.pid)
            check(st["Uid"] == [str(nobody.pw_uid)] * 4, f"every uid is nobody's ({' '.join(st['Uid'])})")
            check(st["Gid"] == [str(nobody.pw_gid)] * 4, f"every gid is nobody's group ({' '.join(st['Gid'])})")
            got_groups = sorted(int(g) for g in st.get("Groups", []))
            check(got_groups == want_groups, f"supplementary groups are nobody's: {got_groups} == {want_groups}")
            check(st["NoNewPrivs"] == ["1"], "no_new_privs is set")
            check(int(st["CapEff"][0], 16) == 0 and int(st["CapPrm"][0], 16) == 0,
                  f"no capabilities left (CapEff {st['CapEff'][0]}, CapPrm {st['CapPrm'][0]})")
            fds = [os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")]
            check(inherited not in fds, f"the inherited pipe is closed (fds: {', '.join(sorted(fds))})")
            check(os.stat(sock).st_uid == nobody.pw_uid, "the socket belongs to nobody")
            try:
                with vu_client.Conn(sock) as c:
                    feats = c.get_u64(vu_client.GET_FEATURES)
                check(feats & (1 << 32), f"a client connects and GET_FEATURES is answered (0x{feats:x})")
            except Exception as e:  # any failure is the result
                check(False, f"a client connects and GET_FEATURES is answered: {e!r}")
            rc = stop(p)
            check(rc == 0, f"SIGTERM: exit status {rc}, expected 0")
            check(not os.path.exists(sock), "the socket is removed at exit (sticky directory)")
        else:
            p.wait()
        for l in open(errpath).read().splitlines():
            print("# stderr: " + l)

        # 2. A directory only root may write: the socket stays, said in one line.
        sockdir = os.path.join(tmp, "rootonly")
        os.mkdir(sockdir)
        os.chmod(sockdir, 0o755)
        sock = os.path.join(sockdir, "blk.sock")
        p, errpath = serve(tmp, sock, ["--user", "nobody", "--group", str(nobody.pw_gid)])
        if p.poll() is None:
            rc = stop(p)
            err = open(errpath).read()
            warned = [l for l in err.splitlines() if "cannot remove" in l]
            check(rc == 0 and len(warned) == 1 and sock in warned[0],
                  f"in a root-only directory: status {rc}, one line says the socket stays: {warned}")
        else:
            p.wait()
            check(False, f"--user nobody --group: did not start ({p.returncode}): {open(errpath).read()!r}")

        # 3. Without --user: still no_new_privs, still root.
        sock = os.path.join(tmp, "plain.sock")
        p, errpath = serve(tmp, sock, [])
        if p.poll() is None:
            st = status_fields(p.pid)
            check(st["NoNewPrivs"] == ["1"] and st["Uid"][1] == "0",
                  "without --user: no_new_privs set, uid unchanged")
            check(stop(p) == 0 and not os.path.exists(sock), "without --user: SIGTERM exits 0, socket removed")
        else:
            p.wait()
            check(False, "without --user: did not start")

        # 4. Users and groups that do not exist: usage errors, one clear line.
        for opt, val, words in (("--user", "fdvm-no-such-user", "no such user"),
                                ("--group", "fdvm-no-such-group", "no such group"),
                                ("--user", "", "needs a value")):
            sock = os.path.join(tmp, "bad.sock")
            img = os.path.join(tmp, "disk.img")
            r = subprocess.run([fdvm, "serve", "blk", "--socket", sock, img, f"{opt}={val}"],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
            lines = r.stderr.strip().splitlines()
            check(r.returncode == 2 and len(lines) == 1 and words in lines[0] and not os.path.exists(sock),
                  f"{opt}={val!r}: status {r.returncode}, {lines}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for i, (ok, what) in enumerate(results, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {what}")
    print(f"1..{len(results)}")


if __name__ == "__main__":
    main()
