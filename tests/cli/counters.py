#!/usr/bin/env python3
"""fdvm's notification counters against a known guest workload, and the control socket.

The counters guest (guest/tests/counters) drives a virtio-blk disk with event index through
four phases and prints what it did ("# tally ..."), then waits in HLT. This test reads the
counters over --api-socket (raw JSON and through `fdvm stat`) and checks them against the
tally: requests, doorbells and bytes exactly; the doorbells on the path --notify chose;
interrupts suppressed at least once per request made with interrupts off and fewer
interrupts than requests; signals while masked and deliveries at unmask exactly as many
as the masked rounds in which the guest saw the pending bit. Then pause (counters stand
still, status says paused), resume, a bad command and bad JSON, power-off (exit 0) and the
socket gone. The same workload through fdvm serve blk (vhost-user): the daemon's socket
reports the rings' counters, fdvm run's reports the MSI-X side."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from clitest import Api, check, done, read_until, wait_path

fdvm, guest = sys.argv[1], sys.argv[2]


def wait_ready(p, secs=120):
    """Reads the guest's output until '# ready'; returns (text, tally dict or None)."""
    text = read_until(p, b"# ready", secs).decode(errors="replace")
    m = re.search(r"# tally (.*)", text)
    tally = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))} if m else None
    return text, tally if "# ready" in text else None


def the_queue(counters):
    devs = [d for d in counters["devices"] if d["name"].endswith("blk")]
    return devs[0], devs[0]["queues"][0]


def check_rings(q, t, where):
    """What the ring's server counted against the guest's tally."""
    check(q["requests"] == t["requests"], f"{where}: requests {q['requests']} == {t['requests']}")
    check(q["kicks"] == t["kicks"], f"{where}: doorbells {q['kicks']} == the guest's {t['kicks']}")
    check(q["out_bytes"] == t["out_bytes"] and q["in_bytes"] == t["in_bytes"],
          f"{where}: bytes out {q['out_bytes']} in {q['in_bytes']} == {t['out_bytes']}, {t['in_bytes']}")
    check(q["irqs_suppressed"] >= t["b"],
          f"{where}: {q['irqs_suppressed']} interrupts suppressed, at least the {t['b']} requests made with interrupts off")
    check(t["c"] + 1 <= q["irqs"] < t["requests"] and t["irqs_seen"] <= q["irqs"],
          f"{where}: {q['irqs']} interrupts signalled: fewer than {t['requests']} requests, "
          f"at least the {t['c']} masked rounds and one for the batch, not fewer than the guest's {t['irqs_seen']}")
    check(q["irqs"] + q["irqs_suppressed"] >= t["a"] + t["b"] + t["c"] + 1,
          f"{where}: a decision for every completion made one at a time, and the batch "
          f"({q['irqs']} + {q['irqs_suppressed']})")
    check(t["requests"] - t["kicks"] <= q["kicks_suppressed"] <= t["requests"],
          f"{where}: {q['kicks_suppressed']} requests without a doorbell of their own "
          f"(at least {t['requests']} - {t['kicks']})")
    check(q["poll_misses"] >= 1, f"{where}: polling ran dry {q['poll_misses']} times (poll=50 us)")


def check_vector(dev, q, t, where, kernel):
    v = dev["vectors"][q["vector"]]
    check(v["masked_signals"] == t["masked_rounds"] and v["unmask_deliveries"] == t["pending_seen"] == t["masked_rounds"],
          f"{where}: vector {q['vector']}: {v['masked_signals']} signals while masked, "
          f"{v['unmask_deliveries']} deliveries at unmask, the guest saw the pending bit {t['pending_seen']} times")
    check(v["kernel"] == kernel and not v["masked"] and not v["pending"],
          f"{where}: vector {q['vector']}: kernel {v['kernel']} (expected {kernel}), unmasked, nothing pending")


def stop(p, api, where):
    r = api.call("power-off")
    check(r == {"return": {}}, f"{where}: power-off answered {r}")
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = p.wait()
    err = p.stderr.read().decode(errors="replace").strip()
    check(rc == 0, f"{where}: fdvm run exits 0 after power-off (got {rc}; stderr {err!r})")


def in_process(tmp, notify):
    where = f"in-process, --notify {notify}"
    img, sock = os.path.join(tmp, "disk.img"), os.path.join(tmp, f"api-{notify}.sock")
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    p = subprocess.Popen([fdvm, "run", "--notify", notify, "--blk", img, "--api-socket", sock, guest],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text, t = wait_ready(p)
    if not check(t is not None and "not ok" not in text, f"{where}: the guest ran its workload" + ("" if t else f": {text[-400:]!r}")):
        p.kill()
        p.wait()
        return
    api = Api(sock)
    c = api.call("counters")["return"]
    dev, q = the_queue(c)
    check(not dev["remote"] and dev["counting"] and q["kick_path"] == ("ioeventfd" if notify == "auto" else "exit"),
          f"{where}: doorbells on the {q['kick_path']} path")
    by_path = (q["doorbells_ioeventfd"], q["doorbells_exit"])
    check(by_path == ((q["kicks"], 0) if notify == "auto" else (0, q["kicks"])),
          f"{where}: doorbells by ioeventfd, by exit: {by_path} of {q['kicks']}")
    check_rings(q, t, where)
    check_vector(dev, q, t, where, notify == "auto")

    # The CLI client: a table with the same figures.
    r = subprocess.run([fdvm, "stat", sock], capture_output=True, text=True, timeout=20)
    row = [l for l in r.stdout.splitlines() if l.startswith("virtio-blk")]
    check(r.returncode == 0 and row and row[0].split()[3] == str(t["kicks"]) and row[0].split()[7] == str(t["requests"]),
          f"{where}: fdvm stat prints the queue's row: {row}")
    r = subprocess.run([fdvm, "stat", sock, "--interval", "0.2", "--count", "2"], capture_output=True,
                       text=True, timeout=20)
    rates = [l for l in r.stdout.splitlines() if l.startswith("virtio-blk")]
    check(r.returncode == 0 and r.stdout.count("per second") == 2 and len(rates) == 2
          and all(float(x) == 0 for x in rates[-1].split()[3:]),
          f"{where}: fdvm stat --interval: two tables of rates, all 0 for an idle guest: {rates}")

    # fdvm api: one command from the shell.
    r = subprocess.run([fdvm, "api", sock, "status"], capture_output=True, text=True, timeout=20)
    r2 = subprocess.run([fdvm, "api", sock, "bogus"], capture_output=True, text=True, timeout=20)
    check(r.returncode == 0 and json.loads(r.stdout)["state"] == "running"
          and r2.returncode == 2 and "CommandNotFound" in r2.stderr,
          f"{where}: fdvm api status: {r.stdout.strip()!r}; fdvm api bogus: {r2.returncode}, {r2.stderr.strip()!r}")

    # Pause: the vCPU leaves the guest; status says so; resume.
    s0 = api.call("status")["return"]
    r = api.call("pause")
    s1 = api.call("status")["return"]
    time.sleep(0.3)
    c1 = api.call("counters")["return"]
    r2 = api.call("resume")
    s2 = api.call("status")["return"]
    check(s0["state"] == "running" and r == {"return": {"state": "paused"}} and s1["state"] == "paused"
          and r2 == {"return": {"state": "running"}} and s2["state"] == "running",
          f"{where}: status {s0['state']}, pause -> {s1['state']}, resume -> {s2['state']}")
    check(the_queue(c1)[1]["requests"] == t["requests"], f"{where}: counters while paused")
    e = api.call("reboot")
    b = api.raw("{not json")
    m = api.raw('{"execute": 5}')
    check(e.get("error", {}).get("class") == "CommandNotFound" and "error" in b and "error" in m,
          f"{where}: unknown command, bad JSON, a bad request: errors {e}, {b}, {m}")
    stop(p, api, where)
    api.close()
    check(not os.path.exists(sock), f"{where}: the socket is removed at exit")


def vhost_user(tmp):
    where = "vhost-user"
    img = os.path.join(tmp, "disk.img")
    vu, dapi, fapi = (os.path.join(tmp, n) for n in ("vu.sock", "serve-api.sock", "run-api.sock"))
    d = subprocess.Popen([fdvm, "serve", "blk", "--socket", vu, "--api-socket", dapi, "-q", img],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not check(wait_path(vu, d) and wait_path(dapi, d), f"{where}: fdvm serve blk listens on both sockets"):
        d.kill()
        d.wait()
        return
    p = subprocess.Popen([fdvm, "run", "--vhost-user", f"blk,socket={vu}", "--api-socket", fapi, guest],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text, t = wait_ready(p)
    if check(t is not None and "not ok" not in text, f"{where}: the guest ran its workload" + ("" if t else f": {text[-400:]!r}")):
        dc = Api(dapi)
        s = dc.call("status")["return"]
        c = dc.call("counters")["return"]
        dev, q = the_queue(c)
        check(s["connected"] and dev["backend"] == "vhost-user" and q["kick_path"] == "frontend",
              f"{where}: the daemon reports a connected frontend: {s}")
        check_rings(q, t, f"{where}, the daemon")
        dc.close()
        fc = Api(fapi)
        fdev, fq = the_queue(fc.call("counters")["return"])
        check(fdev["remote"] and fq["requests"] == 0, f"{where}: fdvm run marks the device remote")
        check_vector(fdev, fq, t, f"{where}, fdvm run", True)
        stop(p, fc, where)
        fc.close()
    else:
        p.kill()
        p.wait()
    d.terminate()
    try:
        rc = d.wait(timeout=10)
    except subprocess.TimeoutExpired:
        d.kill()
        rc = d.wait()
    check(rc == 0 and not os.path.exists(dapi), f"{where}: the daemon stops (status {rc}) and removes its api socket")


def bad_input(tmp):
    r = subprocess.run([fdvm, "stat", os.path.join(tmp, "nothing.sock")], capture_output=True, text=True)
    check(r.returncode == 2 and "is fdvm running with --api-socket" in r.stderr,
          f"fdvm stat on no socket: status {r.returncode}, {r.stderr.strip()!r}")
    f = os.path.join(tmp, "file")
    open(f, "w").close()
    r = subprocess.run([fdvm, "run", "--api-socket", f, guest], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "not a socket" in r.stderr and os.path.isfile(f),
          f"--api-socket on a regular file: status {r.returncode}, {r.stderr.strip()!r}, the file kept")


if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("1..0 # SKIP /dev/kvm is not usable")
    sys.exit(0)
with tempfile.TemporaryDirectory() as tmp:
    in_process(tmp, "auto")
    in_process(tmp, "userspace")
    vhost_user(tmp)
    bad_input(tmp)
done()
