"""What the cli suite's Python tests share: TAP results, waiting for a path to appear,
reading a child's output up to a marker, and a client of fdvm's control socket."""
import json
import os
import select
import socket
import time

results = []


def check(ok, desc):
    """Records one TAP result; returns ok."""
    results.append((bool(ok), desc))
    return ok


def done():
    for i, (ok, desc) in enumerate(results, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {desc}")
    print(f"1..{len(results)}")


def wait_path(path, proc, secs=20):
    """Waits for path to exist while proc runs; False if proc ended or time ran out."""
    deadline = time.monotonic() + secs
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_until(proc, marker, secs):
    """Reads proc's stdout (a pipe) until marker (bytes) shows, it closes, or secs pass."""
    out, deadline = b"", time.monotonic() + secs
    while marker not in out and time.monotonic() < deadline:
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    return out


class Api:
    """A client of fdvm's control socket: one JSON request a line, one answer a line."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.f = self.s.makefile("rw")

    def raw(self, line):
        self.f.write(line + "\n")
        self.f.flush()
        return json.loads(self.f.readline())

    def call(self, cmd):
        return self.raw(json.dumps({"execute": cmd}))

    def close(self):
        self.f.close()
        self.s.close()
