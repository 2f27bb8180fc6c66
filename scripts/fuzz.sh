#!/bin/sh
# Fuzzes with libFuzzer under ASan and UBSan:
#   scripts/fuzz.sh [TARGET] [SECONDS]
# TARGET is a fuzz/ target (elf, virtqueue, vhost_user, pci, virtio_pci,
# virtio_blk, uart, ...); none: each in turn. SECONDS per target, default
# 600. Configures and builds a clang build dir ($FUZZ_BUILD, default
# build-fuzz), starts from the committed seeds (fuzz/corpus/TARGET) and
# keeps what it finds in $FUZZ_BUILD/fuzz-work/TARGET, so a second run goes
# on from there; findings land in $FUZZ_BUILD/fuzz-work/TARGET-crash-* (or
# -timeout-*, -leak-*, -oom-*); replay one with the fuzz-TARGET program. At
# the end it prints, per target, executions, coverage and findings.
# Installs clang if it is missing. The pci, virtio_pci and uart targets need
# /dev/kvm (they are skipped without it).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FUZZ_BUILD:-build-fuzz}
TARGET=${1:-}
SECONDS_EACH=${2:-600}

# clang and its runtime (libFuzzer and the sanitizers: libclang-rt-dev).
need=""
if ! command -v clang >/dev/null 2>&1; then
	need="clang libclang-rt-dev"
elif [ ! -f "$(clang -print-resource-dir)/lib/linux/libclang_rt.fuzzer-x86_64.a" ]; then
	need="libclang-rt-dev"
fi
if [ -n "$need" ]; then
	echo "fdvm: installing $need" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
		$need >/dev/null
fi
"$ROOT/scripts/deps.sh"

if [ ! -f "$BUILD/build.ninja" ]; then
	CC=clang meson setup "$BUILD" "$ROOT" -Dfuzzing=true -Db_sanitize=address,undefined
fi
ninja -C "$BUILD" >/dev/null

if [ -n "$TARGET" ]; then
	TARGETS=$TARGET
else
	TARGETS=$(cd "$BUILD/fuzz" && ls fuzz-* | grep -v '\.p$' | sed 's/^fuzz-//')
fi

WORK="$BUILD/fuzz-work"
mkdir -p "$WORK"
SUMMARY=""
status=0
for t in $TARGETS; do
	exe="$BUILD/fuzz/fuzz-$t"
	if [ ! -x "$exe" ]; then
		echo "fuzz.sh: no target $t" >&2
		exit 2
	fi
	mkdir -p "$WORK/$t"
	seeds="$ROOT/fuzz/corpus/$t"
	[ -d "$seeds" ] || seeds=""
	log="$WORK/$t.log"
	echo "== $t: $SECONDS_EACH s (log $log)"
	rc=0
	# libFuzzer's own exit code for a finding is 77, a skip to meson: 1
	# here, so 77 means only what the VM targets mean by it.
	"$exe" -max_total_time="$SECONDS_EACH" -timeout=20 -print_final_stats=1 \
		-error_exitcode=1 -timeout_exitcode=1 \
		-artifact_prefix="$WORK/$t-" "$WORK/$t" $seeds >"$log" 2>&1 || rc=$?
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
	execs=$(grep stat::number_of_executed_units "$log" | awk '{print $2}' || true)
	cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
	case $rc in
	0) result="no finding" ;;
	77) result="skipped (no /dev/kvm)" ;;
	*) result="FINDING (exit $rc): $(ls -t "$WORK/$t"-*-* 2>/dev/null | head -n 1)"; status=1 ;;
	esac
	line="$t: ${execs:-?} execs, cov ${cov:-?}, ft ${ft:-?}, $result"
	echo "$line"
	SUMMARY="$SUMMARY$line
"
done
echo "== summary ($SECONDS_EACH s each)"
printf '%s' "$SUMMARY"
exit $status
