#!/bin/sh
# fdvm's main job: installs what is missing, builds, and runs the doorbell
# benchmark on the bundled guest under fdvm, a bare KVM loop and QEMU,
# printing the table and writing its JSON and chart under build/results/
# (outside tracked files; --json/--png elsewhere if given).
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

mkdir -p build/results
./build/cli/fdvm bench doorbell --json build/results/fdvm-bench-doorbell.json \
	--png build/results/fdvm-bench-doorbell.png "$@"
