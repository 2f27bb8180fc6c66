#!/bin/sh
# Installs what fdvm needs to build and test, on Debian 12, if anything is
# missing. Safe to run again; does nothing when all is there.
set -eu

PKGS="gcc libc6-dev meson ninja-build pkg-config python3 linux-libc-dev
libcmocka-dev libseccomp-dev libjansson-dev liburing-dev g++ qemu-system-x86 gnuplot-nox spin iproute2 iputils-ping acpica-tools lz4 zstd"

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "fdvm: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
