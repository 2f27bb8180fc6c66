#!/bin/sh
# fdvm's main job on the bundled guest: installs what is missing, builds,
# and boots the self-test guests, printing what each did.
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null

for g in hello cpl3 exceptions; do
	echo "== fdvm run build/guest/$g.elf"
	./build/cli/fdvm run build/guest/$g.elf
done
echo "== all bundled guests passed"
