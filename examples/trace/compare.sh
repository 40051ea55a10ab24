#!/usr/bin/env bash
# compare.sh: the cost of tracing calls, side by side, on one workload
# (testdata/calls.c: N calls of libc's atoi through the PLT), each call's
# entry and return traced and counted: untraced, under onetrap's tracer
# (-c: the calls summary), under ltrace (-c) and, when run as root with
# bpftrace installed, under bpftrace (uprobe and uretprobe, counted); then
# the entries alone counted, by onetrap's tracer with --count (trapless
# where the entry can take a jump to a counting pad) and by bpftrace. The
# tracer and the workload run pinned to one CPU (CPU, default 0), as in
# examples/hitcost. Every run is checked for the workload's checksum; each
# method runs R times (default 3) and the median is kept; the cost of a call
# is the difference from the untraced run divided by N (start-up included).
# Prints a Markdown table.
#
#	examples/trace/compare.sh            # from the repository root
#	N=50000 R=5 examples/trace/compare.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=${N:-20000}
R=${R:-3}
CPU=${CPU:-0}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# -O0 keeps atoi a call (not strtol inlined); lazy binding keeps the PLT
# that ltrace needs.
cc -O0 -Wl,-z,lazy -o "$work/calls" "$here/testdata/calls.c"
(cd "$root" && go build -o "$work/trace" ./examples/trace)
want=$((42 * N))
libc=$(ldd "$work/calls" | awk '/libc.so/ { print $3 }')

methods=(untraced onetrap)
if command -v ltrace >/dev/null; then methods+=(ltrace); fi
if [ "$(id -u)" = 0 ] && command -v bpftrace >/dev/null; then
	[ -d /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
	methods+=(bpftrace)
fi
# Counting entries only: onetrap with no trap per call where the entry can
# take a jump to a counting pad, bpftrace with a uprobe.
methods+=(onetrap-count)
if [ "$(id -u)" = 0 ] && command -v bpftrace >/dev/null; then methods+=(bpftrace-count); fi

# run METHOD: runs the workload under METHOD, checks its checksum and
# prints the elapsed nanoseconds.
run() {
	local method=$1 out t0 t1
	local cmd
	case $method in
	untraced) cmd=("$work/calls" "$N") ;;
	onetrap) cmd=("$work/trace" -c -o "$work/report" -e libc:atoi -- "$work/calls" "$N") ;;
	ltrace) cmd=(ltrace -c -o "$work/report" -e atoi "$work/calls" "$N") ;;
	bpftrace)
		cmd=(bpftrace -q -o "$work/report" -e "uprobe:$libc:atoi { @c = count(); } uretprobe:$libc:atoi { @r = count(); }" -c "$work/calls $N")
		;;
	onetrap-count) cmd=("$work/trace" --count -o "$work/report" -e libc:atoi -- "$work/calls" "$N") ;;
	bpftrace-count) cmd=(bpftrace -q -o "$work/report" -e "uprobe:$libc:atoi { @c = count(); }" -c "$work/calls $N") ;;
	esac
	t0=$(date +%s%N)
	out=$(taskset -c "$CPU" "${cmd[@]}" </dev/null 2>"$work/stderr") || {
		echo "$method failed:" >&2
		cat "$work/stderr" >&2
		exit 1
	}
	t1=$(date +%s%N)
	if [ "$(echo "$out" | head -1)" != "$want" ]; then
		echo "$method: checksum $(echo "$out" | head -1), want $want" >&2
		exit 1
	fi
	echo $((t1 - t0))
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

version() {
	case $1 in
	untraced) echo "untraced" ;;
	onetrap) echo "onetrap trace -c (entry and RET probes)" ;;
	ltrace) echo "$(ltrace -V | head -1 | sed 's/ version / /; s/\.$//') -c" ;;
	bpftrace) echo "$(bpftrace --version) (uprobe + uretprobe)" ;;
	onetrap-count) echo "onetrap trace --count (entries counted, trapless)" ;;
	bpftrace-count) echo "$(bpftrace --version) (uprobe counted)" ;;
	esac
}

declare -A ns
for m in "${methods[@]}"; do
	ns[$m]=$(for _ in $(seq "$R"); do run "$m"; done | median)
done
base=${ns[untraced]}
echo "| tracer | calls | wall time | µs per call | × untraced |"
echo "|---|---:|---:|---:|---:|"
for m in "${methods[@]}"; do
	t=${ns[$m]}
	awk -v name="$(version "$m")" -v n="$N" -v t="$t" -v b="$base" 'BEGIN {
		printf "| %s | %d | %.3f s | %.2f | %.1f |\n", name, n, t / 1e9, (t - b) / n / 1e3, t / b
	}'
done
if [ "$(id -u)" != 0 ] || ! command -v bpftrace >/dev/null; then
	echo
	echo "(bpftrace not run: it needs root and the bpftrace command)"
fi
