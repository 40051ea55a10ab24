#!/usr/bin/env bash
# compare.sh: the cost of one breakpoint hit, side by side, on one C target
# (testdata/target.c, a loop calling f N times): untraced, under onetrap
# with each strategy (Jump: no trap, a jump to a counting pad), at the
# ptrace floor, under gdb (a breakpoint with an ignore count), under Delve
# (a breakpoint with a hit-count condition) and, when run as root, under a
# kernel uprobe (a tracefs event) and bpftrace (a uprobe counting).
# Everything runs pinned to one CPU (CPU, default 0). Each method runs with
# N hits and with none, R times each (default 3); the cost of a hit is the
# median difference divided by N, so start-up costs cancel out. Prints a
# Markdown table.
#
#	examples/hitcost/compare.sh            # from the repository root
#	CPU=1 R=5 examples/hitcost/compare.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CPU=${CPU:-0}
R=${R:-3}
N_ONETRAP=${N_ONETRAP:-200000} # also the floor and the untraced run
N_GDB=${N_GDB:-10000}
N_DLV=${N_DLV:-2000}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cc -g -O1 -no-pie -o "$work/target" "$here/testdata/target.c"
(cd "$root" && go build -o "$work/hitcost" ./examples/hitcost)
f=$(nm "$work/target" | awk '$3 == "f" { print "0x" $1 }')

dlv=$(command -v dlv || true)
if [ -z "$dlv" ] && [ -x "$(go env GOPATH)/bin/dlv" ]; then dlv=$(go env GOPATH)/bin/dlv; fi
if [ -z "$dlv" ]; then
	echo "installing Delve..." >&2
	go install github.com/go-delve/delve/cmd/dlv@latest >&2
	dlv=$(go env GOPATH)/bin/dlv
fi
have_gdb=$(command -v gdb || true)

# run N METHOD: runs METHOD with N hits pinned to CPU, checks the target's
# checksum, and prints the elapsed nanoseconds.
run() {
	local n=$1 method=$2 out t0 t1
	local cmd
	case $method in
	untraced) cmd=("$work/target" "$n") ;;
	floor) cmd=("$work/hitcost" -strategy floor "$work/target" "$n" floor) ;;
	uprobe) cmd=("$work/target" "$n") ;; # the event is enabled around its runs
	bpftrace) cmd=(bpftrace -q -e "uprobe:$work/target:f { @c = count(); }" -c "$work/target $n") ;;
	gdb) cmd=(gdb -nx -batch -ex "break *$f" -ex "ignore 1 $n" -ex run --args "$work/target" "$n") ;;
	delve)
		printf 'break bp1 *%s\ncondition -hitcount bp1 > %d\ncontinue\nexit\n' "$f" "$n" >"$work/dlv.init"
		cmd=("$dlv" exec --allow-non-terminal-interactive=true "$work/target" --init "$work/dlv.init" -- "$n")
		;;
	*) cmd=("$work/hitcost" -strategy "$method" "$work/target" "$n") ;;
	esac
	t0=$(date +%s%N)
	out=$(taskset -c "$CPU" "${cmd[@]}" </dev/null 2>"$work/stderr") || {
		echo "$method with $n hits failed:" >&2
		cat "$work/stderr" >&2
		exit 1
	}
	t1=$(date +%s%N)
	# The target prints the sum of 1..n: the probed program computed right.
	if ! grep -qx "$((n * (n + 1) / 2))" <<<"$out"; then
		echo "$method with $n hits: wrong output: $out" >&2
		exit 1
	fi
	echo $((t1 - t0))
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# cost METHOD N: microseconds per hit, median over R runs.
cost() {
	local method=$1 n=$2 i a b
	for ((i = 0; i < R; i++)); do
		a=$(run "$n" "$method")
		b=$(run 0 "$method")
		echo $((a - b))
	done | median | awk -v n="$n" '{ printf "%.3f\n", $1 / n / 1000 }'
}

# fileoff ADDR: the file offset of virtual address ADDR in the target,
# which a kernel uprobe is placed by.
fileoff() {
	local a=$(($1)) typ off va pa fsz rest
	while read -r typ off va pa fsz rest; do
		[ "$typ" = LOAD ] || continue
		if ((a >= va && a < va + fsz)); then
			printf '0x%x\n' $((a - va + off))
			return
		fi
	done < <(readelf -lW "$work/target")
}

tracefs=/sys/kernel/tracing
uprobe_ok=
if [ "$(id -u)" = 0 ]; then
	[ -d "$tracefs/events" ] || mount -t tracefs nodev "$tracefs" 2>/dev/null || true
	if [ -w "$tracefs/uprobe_events" ]; then
		echo "-:onetrap_hitcost/f" >>"$tracefs/uprobe_events" 2>/dev/null || true
		if echo "p:onetrap_hitcost/f $work/target:$(fileoff "$f")" >>"$tracefs/uprobe_events"; then
			uprobe_ok=1
			trap 'echo 0 >"$tracefs/events/onetrap_hitcost/f/enable" 2>/dev/null; echo "-:onetrap_hitcost/f" >>"$tracefs/uprobe_events" 2>/dev/null; rm -rf "$work"' EXIT
		fi
	fi
fi

declare -A us hits
methods=(untraced floor emulate boost jump outofline singlestep)
[ -n "$uprobe_ok" ] && methods+=(uprobe)
[ "$(id -u)" = 0 ] && command -v bpftrace >/dev/null && methods+=(bpftrace)
[ -n "$have_gdb" ] && methods+=(gdb)
[ -n "$dlv" ] && methods+=(delve)
for m in "${methods[@]}"; do
	case $m in
	gdb) n=$N_GDB ;;
	delve) n=$N_DLV ;;
	*) n=$N_ONETRAP ;;
	esac
	hits[$m]=$n
	[ "$m" = uprobe ] && echo 1 >"$tracefs/events/onetrap_hitcost/f/enable"
	us[$m]=$(cost "$m" "$n")
	[ "$m" = uprobe ] && echo 0 >"$tracefs/events/onetrap_hitcost/f/enable"
	echo "$m: ${us[$m]} µs per hit" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
name() {
	case $1 in
	untraced) echo "untraced" ;;
	floor) echo "ptrace floor (own int3, wait + continue)" ;;
	emulate) echo "onetrap Emulate (push rbp)" ;;
	boost) echo "onetrap Boost" ;;
	jump) echo "onetrap Jump (no trap: a pad counts)" ;;
	uprobe) echo "kernel uprobe $(uname -r) (tracefs event, root)" ;;
	bpftrace) echo "$(bpftrace --version) (uprobe, count(), root)" ;;
	outofline) echo "onetrap OutOfLine (stepped)" ;;
	singlestep) echo "onetrap SingleStep" ;;
	gdb) echo "gdb $(gdb --version | head -1 | awk '{ print $NF }') (break, ignore count)" ;;
	delve) echo "Delve $("$dlv" version | awk '/Version/ { print $2 }') (break, hit-count condition)" ;;
	esac
}
echo
echo "One hit of a breakpoint on \`push rbp\`, CPU $CPU, median of $R runs, $(nproc) CPUs, load:$(uptime | sed 's/.*load average://')"
echo
echo "| method | hits per run | µs per hit | × floor |"
echo "|---|---:|---:|---:|"
for m in "${methods[@]}"; do
	echo "| $(name "$m") | ${hits[$m]} | ${us[$m]} | $(ratio "${us[$m]}" "${us[floor]}") |"
done
echo
echo "- onetrap Emulate / floor: $(ratio "${us[emulate]}" "${us[floor]}"); Boost / floor: $(ratio "${us[boost]}" "${us[floor]}"); SingleStep / Emulate: $(ratio "${us[singlestep]}" "${us[emulate]}")"
echo "- onetrap Jump: $(awk -v j="${us[jump]}" 'BEGIN { printf "%.0f", j * 1000 }') ns per hit, floor / Jump: $(ratio "${us[floor]}" "${us[jump]}")"
[ -n "$uprobe_ok" ] && echo "- a kernel uprobe costs $(ratio "${us[uprobe]}" "${us[jump]}")× onetrap Jump"
[ -n "$have_gdb" ] && echo "- onetrap Emulate is $(ratio "${us[gdb]}" "${us[emulate]}")× faster than gdb, Boost $(ratio "${us[gdb]}" "${us[boost]}")×"
[ -n "$dlv" ] && echo "- onetrap Emulate is $(ratio "${us[delve]}" "${us[emulate]}")× faster than Delve, Boost $(ratio "${us[delve]}" "${us[boost]}")×"
