#!/bin/sh
# fdvm's main job: installs what is missing, builds, and runs the doorbell
# benchmark on the bundled guest under fdvm, a bare KVM loop and QEMU,
# printing the table and writing fdvm-bench-doorbell.json / .png here.
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

./build/cli/fdvm bench doorbell "$@"
