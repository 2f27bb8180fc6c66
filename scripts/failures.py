#!/usr/bin/env python3
"""Prints what each failed test of one or more meson build trees said.

scripts/test.sh runs it after both test runs, so that the end of its output
(what a CI log viewer shows first) says why a test failed and not only that
it did: for each test whose result is not OK or SKIP, its `not ok` lines with
the diagnostics under them, then the last lines it printed.

Usage: failures.py BUILDDIR...
"""
import json
import os
import sys

TAIL = 25        # last lines of a failed test's output
NOT_OK_MAX = 10  # `not ok` lines quoted per test
DIAG_MAX = 6     # comment lines quoted under each


def failed_tests(builddir):
    path = os.path.join(builddir, "meson-logs", "testlog.json")
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError as e:
        print(f"{builddir}: no test log ({e.strerror})")
        return
    for line in lines:
        try:
            t = json.loads(line)
        except ValueError:
            continue
        if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
            yield t


def quote(t):
    out = (t.get("stdout") or "").splitlines()
    print(f"=== {t['name']}: {t['result']}, exit status {t.get('returncode')}, "
          f"{t.get('duration', 0):.1f} s")
    shown = 0
    for i, l in enumerate(out):
        if l.startswith("not ok") and shown < NOT_OK_MAX:
            shown += 1
            print("  " + l)
            for d in out[i + 1:i + 1 + DIAG_MAX]:
                if not d.startswith("#"):
                    break
                print("    " + d)
    print(f"  --- its last {min(TAIL, len(out))} lines ---")
    for l in out[-TAIL:]:
        print("  " + l)


def main():
    n = 0
    for b in sys.argv[1:]:
        for t in failed_tests(b):
            if n == 0:
                print("What the failed tests said (the whole output is in each build's meson-logs/testlog.txt):")
            quote(t)
            n += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
