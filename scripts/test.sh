#!/bin/sh
# The whole test suite: installs what is missing, builds fdvm twice (plain,
# and with AddressSanitizer + UBSan) and runs every suite in both.
# Guest tests skip (not fail) when /dev/kvm is not usable; QEMU interop
# tests skip when QEMU is not there.
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh

build() {
	dir=$1
	shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir" >/dev/null
}

build build -Dtests=enabled
build build-asan -Dtests=enabled -Db_sanitize=address,undefined -Db_lundef=false

status=0
meson test -C build --print-errorlogs || status=1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --print-errorlogs --suite unit --suite kvm-api --suite cli --suite kvm || status=1
# Last, where a log viewer that shows the end sees it: why each failed test failed.
[ $status -eq 0 ] || python3 scripts/failures.py build build-asan
exit $status
