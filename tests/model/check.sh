#!/bin/sh
# Model-checks tests/model/msix.pml with spin, printing TAP: the model as
# fdvm does it must pass (no assertion violated, no invalid end state, the
# search complete); each broken variant must fail.
#   sh check.sh path/to/msix.pml
# Environment: CC (C compiler, default cc), PAN_FLAGS (extra pan options),
# KEEP=1 keeps the work directory (the trails of the failing variants).
set -u

pml=${1:?usage: check.sh msix.pml}
case $pml in
/*) ;;
*) pml=$(pwd)/$pml ;;
esac
if [ ! -r "$pml" ]; then
	echo "Bail out! $pml: not readable"
	exit 1
fi
if ! command -v spin >/dev/null 2>&1; then
	echo "1..0 # SKIP spin not installed"
	exit 0
fi
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then
	cc=gcc
	if ! command -v "$cc" >/dev/null 2>&1; then
		echo "1..0 # SKIP no C compiler"
		exit 0
	fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fdvm-model.XXXXXX") || exit 1
if [ "${KEEP:-0}" = 1 ]; then
	echo "# work directory: $work"
else
	trap 'rm -rf "$work"' EXIT
	trap 'rm -rf "$work"; exit 1' HUP INT TERM
fi

# name | expected | spin defines | description
variants='correct|pass||the model as fdvm does it: never lost, never spurious, PBA exact
no-resignal|fail|-DBROKEN_NO_RESIGNAL|no count written at unmask for the pending bit: a lost interrupt
no-deassign|fail|-DBROKEN_NO_DEASSIGN|mask without deassigning the irqfd: a delivery while masked
kvm-no-consume|fail|-DBROKEN_KVM_NO_CONSUME|KVM deassign not consuming the count: a stale pending bit, a duplicate
kvm-pre-5.11|fail|-DKVM_PRE_5_11|irqfd_wakeup not draining the count (Linux < 5.11): a duplicate at assign'

n=$(printf '%s\n' "$variants" | wc -l)
echo "1..$n"
i=0
status=0
nl='
'
oldifs=$IFS
IFS=$nl
for v in $variants; do
	IFS=$oldifs
	i=$((i + 1))
	name=${v%%|*}; rest=${v#*|}
	expect=${rest%%|*}; rest=${rest#*|}
	defs=${rest%%|*}; desc=${rest#*|}
	dir=$work/$name
	mkdir "$dir"
	# spin and pan write pan.*, the trail and logs in the current directory
	# shellcheck disable=SC2086 # $defs: zero or more -D options
	if ! (cd "$dir" && spin -a $defs "$pml") >"$dir/spin.log" 2>&1; then
		echo "not ok $i - $name: spin -a failed"
		sed 's/^/# /' "$dir/spin.log"
		status=1
		IFS=$nl
		continue
	fi
	if ! (cd "$dir" && "$cc" -O1 -DSAFETY -o pan pan.c) >"$dir/cc.log" 2>&1; then
		echo "not ok $i - $name: compiling pan.c failed"
		sed 's/^/# /' "$dir/cc.log"
		status=1
		IFS=$nl
		continue
	fi
	# shellcheck disable=SC2086 # PAN_FLAGS: options, split
	(cd "$dir" && ./pan -m1000000 -w22 ${PAN_FLAGS:-}) >"$dir/pan.log" 2>&1
	errors=$(sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$dir/pan.log" | head -n 1)
	states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$dir/pan.log" | head -n 1)
	secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$dir/pan.log" | head -n 1)
	why=$(grep -E '^pan:[0-9]+: ' "$dir/pan.log" | head -n 1)
	: "${errors:=?}" "${states:=?}" "${secs:=?}"
	if [ "$expect" = pass ]; then
		if [ "$errors" = 0 ] && ! grep -q 'max search depth too small' "$dir/pan.log"; then
			echo "ok $i - $name: $desc ($states states, ${secs}s)"
		else
			echo "not ok $i - $name: $desc (errors: $errors)"
			sed 's/^/# /' "$dir/pan.log"
			echo "# replay: spin -t -p -g $defs msix.pml in a copy of $dir (KEEP=1)"
			status=1
		fi
	else
		if [ "$errors" != 0 ] && [ "$errors" != '?' ]; then
			echo "ok $i - $name: fails as it must: $desc"
			echo "# $why"
		else
			echo "not ok $i - $name: passed, but must fail: $desc ($states states)"
			sed 's/^/# /' "$dir/pan.log"
			status=1
		fi
	fi
	IFS=$nl
done
IFS=$oldifs
exit $status
