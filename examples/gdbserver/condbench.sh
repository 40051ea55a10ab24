#!/bin/sh
# Measures, in one run on one machine, what a breakpoint whose condition is
# false costs a program: under gdb alone (gdb evaluates the condition), gdb
# with gdbserver and gdb with onetrap's server (both evaluate it on the
# target: set breakpoint condition-evaluation target). Everything is pinned
# to one CPU. The program times its own loop of N calls; prints a Markdown
# table.
#
#   examples/gdbserver/condbench.sh [N] [CPU]
set -eu
n=${1:-10000}
cpu=${2:-0}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -g -O0 -fno-omit-frame-pointer -o "$tmp/condbench" "$here/testdata/condbench.c"
(cd "$here" && go build -o "$tmp/onetrap-gdbserver" .)
pin="taskset -c $cpu"
bp='break f if i < 0'

# us_per_call LABEL CMD...: runs CMD, picks the program's line.
row() {
	label=$1
	shift
	line=$("$@" 2>&1 | grep -m1 us_per_call || true)
	us=$(echo "$line" | sed -n 's/.*us_per_call \([0-9.]*\).*/\1/p')
	echo "$label|${us:-failed}"
}

{
	row "untraced" $pin "$tmp/condbench" "$n"
	row "gdb $(gdb --version | head -1 | sed 's/.* //') alone (condition on the host)" \
		$pin gdb -batch -nx -ex "$bp" -ex run --args "$tmp/condbench" "$n"
	if command -v gdbserver >/dev/null; then
		row "gdb + gdbserver $(gdbserver --version | head -1 | sed 's/.* //') (condition on the target)" \
			$pin gdb -batch -nx -ex 'set breakpoint condition-evaluation target' \
			-ex "target remote | gdbserver - $tmp/condbench $n" -ex "$bp" -ex continue "$tmp/condbench"
	else
		echo "gdb + gdbserver|not installed"
	fi
	row "gdb + onetrap gdbserver (condition on the target)" \
		$pin gdb -batch -nx -ex 'set breakpoint condition-evaluation target' \
		-ex "target remote | $tmp/onetrap-gdbserver - $tmp/condbench $n" -ex "$bp" -ex continue "$tmp/condbench"
} >"$tmp/rows"

base=$(grep '^gdb + gdbserver' "$tmp/rows" | cut -d'|' -f2)
echo "| debugger ($n calls, one CPU) | µs per hit | gdbserver ÷ this |"
echo "|---|---:|---:|"
while IFS='|' read -r label us; do
	x=$(awk -v a="$us" -v b="$base" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", b / a; else print "—" }')
	echo "| $label | $us | $x |"
done <"$tmp/rows"
