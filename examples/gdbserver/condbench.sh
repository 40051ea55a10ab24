#!/bin/sh
# Measures, in one run on one machine, what a breakpoint whose condition is
# false costs a program: under gdb alone (gdb evaluates the condition), gdb
# with gdbserver and gdb with onetrap's server (both evaluate it on the
# target: set breakpoint condition-evaluation target). Everything is pinned
# to one CPU. The program times its own loop of N calls. Each debugger is
# measured REPS times, in turns, and its median kept, so that a burst of
# other work on a shared machine lands on every row alike rather than on
# one. Prints a Markdown table, the rows of the README's, then how many
# times faster per hit onetrap's server is than gdbserver (the aim is 5).
#
#   examples/gdbserver/condbench.sh [N] [CPU] [REPS]
set -eu
n=${1:-10000}
cpu=${2:-0}
reps=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -g -O0 -fno-omit-frame-pointer -o "$tmp/condbench" "$here/testdata/condbench.c"
(cd "$here" && go build -o "$tmp/onetrap-gdbserver" .)
pin="taskset -c $cpu"
bp='break f if i < 0'

# The debuggers, by row: a label and a command.
label_gdb="gdb $(gdb --version | head -1 | sed 's/.* //') alone (condition on the host)"
run_gdb() {
	$pin gdb -batch -nx -ex "$bp" -ex run --args "$tmp/condbench" "$n"
}
if command -v gdbserver >/dev/null; then
	label_gdbserver="gdb + gdbserver $(gdbserver --version | head -1 | sed 's/.* //') (condition on the target)"
else
	label_gdbserver="gdb + gdbserver (not installed)"
fi
run_gdbserver() {
	command -v gdbserver >/dev/null || return 0
	$pin gdb -batch -nx -ex 'set breakpoint condition-evaluation target' \
		-ex "target remote | gdbserver - $tmp/condbench $n" -ex "$bp" -ex continue "$tmp/condbench"
}
label_onetrap="gdb + onetrap gdbserver (condition on the target)"
run_onetrap() {
	$pin gdb -batch -nx -ex 'set breakpoint condition-evaluation target' \
		-ex "target remote | $tmp/onetrap-gdbserver - $tmp/condbench $n" -ex "$bp" -ex continue "$tmp/condbench"
}
rows="gdb gdbserver onetrap"

# Each run appends the program's µs per call to its row's file.
i=0
while [ "$i" -lt "$reps" ]; do
	for r in $rows; do
		"run_$r" 2>&1 | sed -n 's/.*us_per_call \([0-9.]*\).*/\1/p' | head -1 >>"$tmp/$r"
	done
	i=$((i + 1))
done

# median ROW: the middle of its runs, or nothing if none printed a figure.
median() {
	sort -n "$tmp/$1" | awk 'NF { v[++k] = $1 } END { if (k) printf "%.2f\n", k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }'
}
ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", b / a; else print "—" }'
}

base=$(median gdbserver)
echo "| debugger ($n calls, one CPU, median of $reps) | µs per hit | gdbserver ÷ this |"
echo "|---|---:|---:|"
for r in $rows; do
	us=$(median "$r")
	eval "label=\$label_$r"
	echo "| $label | ${us:-failed} | $(ratio "$us" "$base") |"
done
echo
echo "onetrap's server: $(ratio "$(median onetrap)" "$base") times faster per hit than gdbserver (aim: 5)"
echo "all runs, µs per hit: $(for r in $rows; do printf '%s %s; ' "$r" "$(tr '\n' ' ' <"$tmp/$r" | sed 's/ $//')"; done | sed 's/; $//')"
