#!/usr/bin/env bash
# compare.sh: the cost of one breakpoint hit, side by side, on one C target
# (testdata/target.c, a loop calling f N times): untraced, under onetrap
# with each strategy, at the ptrace floor, under gdb (a breakpoint with an
# ignore count) and under Delve (a breakpoint with a hit-count condition).
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
	done | median | awk -v n="$n" '{ printf "%.2f\n", $1 / n / 1000 }'
}

declare -A us hits
methods=(untraced floor emulate boost outofline singlestep)
[ -n "$have_gdb" ] && methods+=(gdb)
[ -n "$dlv" ] && methods+=(delve)
for m in "${methods[@]}"; do
	case $m in
	gdb) n=$N_GDB ;;
	delve) n=$N_DLV ;;
	*) n=$N_ONETRAP ;;
	esac
	hits[$m]=$n
	us[$m]=$(cost "$m" "$n")
	echo "$m: ${us[$m]} µs per hit" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
name() {
	case $1 in
	untraced) echo "untraced" ;;
	floor) echo "ptrace floor (own int3, wait + continue)" ;;
	emulate) echo "onetrap Emulate (push rbp)" ;;
	boost) echo "onetrap Boost" ;;
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
[ -n "$have_gdb" ] && echo "- onetrap Emulate is $(ratio "${us[gdb]}" "${us[emulate]}")× faster than gdb, Boost $(ratio "${us[gdb]}" "${us[boost]}")×"
[ -n "$dlv" ] && echo "- onetrap Emulate is $(ratio "${us[delve]}" "${us[emulate]}")× faster than Delve, Boost $(ratio "${us[delve]}" "${us[boost]}")×"
