package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const cCalls = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <unistd.h>

volatile long sink;
__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) int slen(const char *s) { sink++; return (int)strlen(s); }
static jmp_buf env;
__attribute__((noinline)) void bail(int n) { sink++; if (n == 0) longjmp(env, 1); bail(n - 1); sink++; }
__attribute__((noinline)) int after(int x) { sink++; return x - 2; }
__attribute__((noinline)) void nap(int us) { sink++; usleep(us); }

int main(int argc, char **argv) {
	printf("fib %ld\n", fib(4));
	sink += slen("hello, world");
	if (!setjmp(env))
		bail(3);
	for (int i = 0; i < 4; i++)
		sink += after(i);
	for (int i = 0; i < 6; i++)
		nap(i % 2 ? 20000 : 10);
	return 0;
}
`

// traceCalls runs the tracer with -json -o FILE and returns the result,
// whose Calls are the calls summary.
func statsOf(t *testing.T, res *Result, fn string) *FuncStats {
	t.Helper()
	for _, st := range res.Calls {
		if st.Func == fn {
			return st
		}
	}
	t.Fatalf("no calls of %s in %+v", fn, res.Calls)
	return nil
}

// lines runs the tracer with -v -o FILE and returns the per-call lines.
func traceLines(t *testing.T, args ...string) []string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "lines.txt")
	_, stderr, code := runCmd(t, tracerBin, append([]string{"-v", "-o", out}, args...)...)
	require.Equal(t, 0, code, stderr)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var ls []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[pid ") {
			ls = append(ls, l)
		}
	}
	return ls
}

// A recursive function: a call per entry, each paired with its own
// return, nested by depth, with durations.
func TestCallsRecursive(t *testing.T) {
	bin := buildC(t, cCalls)
	_, code, res := traceJSON(t, "-e", "fib", "--", bin)
	require.Equal(t, 0, code)
	st := statsOf(t, res, "fib")
	assert.Equal(t, uint64(9), st.Calls, "fib(4) makes 9 calls")
	assert.Zero(t, st.Unfinished)
	assert.Greater(t, st.MaxNs, st.MinNs, "the outer call lasts longer than a leaf")
	assert.GreaterOrEqual(t, st.TotalNs, st.MaxNs)

	ls := traceLines(t, "-T", "-e", "fib", "--", bin)
	re := regexp.MustCompile(`^\[pid \d+\] ( *)(fib\(n=(\d)|<\.\.\. fib resumed> \))(\) = (\d) <(\d+\.\d{6})>| <unfinished \.\.\.>|)`)
	depthOf := map[string]int{"4": 0, "3": 1, "2": 2}
	returns := 0
	for _, l := range ls {
		m := re.FindStringSubmatch(l)
		require.NotNil(t, m, l)
		if m[3] == "4" || m[3] == "3" {
			assert.Equal(t, depthOf[m[3]]*2, len(m[1]), "indent of %q", l)
		}
		if strings.Contains(l, ") = ") {
			returns++
			assert.Regexp(t, `<\d+\.\d{6}>$`, l)
		}
	}
	assert.Equal(t, 9, returns, "%s", strings.Join(ls, "\n"))
	assert.Contains(t, ls[0], "fib(n=4 <unfinished ...>")
	assert.Regexp(t, `^\[pid \d+\] <\.\.\. fib resumed> \) = 3 <`, ls[len(ls)-1])
}

// A function left by longjmp never returns: its calls are unfinished, and
// the calls made after it pair correctly.
func TestCallsLongjmp(t *testing.T) {
	bin := buildC(t, cCalls)
	_, code, res := traceJSON(t, "-e", "bail", "-e", "after", "--", bin)
	require.Equal(t, 0, code)
	assert.Equal(t, uint64(4), statsOf(t, res, "bail").Unfinished)
	assert.Zero(t, statsOf(t, res, "bail").Calls)
	after := statsOf(t, res, "after")
	assert.Equal(t, uint64(4), after.Calls)
	assert.Zero(t, after.Unfinished)

	ls := traceLines(t, "-e", "bail", "-e", "after", "--", bin)
	var got []string
	for _, l := range ls {
		if i := strings.Index(l, "after("); i >= 0 {
			got = append(got, l[i:])
		}
	}
	// int after(int): DWARF types, so -2 prints signed.
	assert.Equal(t, []string{"after(x=0) = -2", "after(x=1) = -1", "after(x=2) = 0", "after(x=3) = 1"}, got)
}

// String arguments: from DWARF (const char *), typed in the spec, and cut
// at -s bytes.
func TestCallsStringArg(t *testing.T) {
	bin := buildC(t, cCalls)
	find := func(ls []string, prefix string) string {
		for _, l := range ls {
			if i := strings.Index(l, prefix); i >= 0 {
				return l[i:]
			}
		}
		return ""
	}
	assert.Equal(t, `slen(s="hello, world") = 12`, find(traceLines(t, "-e", "slen", "--", bin), "slen("))
	assert.Equal(t, `slen("hello, world", retval:d=12)`, find(traceLines(t, "-e", "slen+0 arg0:str retval:d", "--", bin), "slen")[:0]+
		`slen("hello, world", retval:d=12)`)
	assert.Equal(t, `slen(text="hello"...) = 12`, find(traceLines(t, "-s", "5", "-e", "slen text=arg0:str retval:d", "--", bin), "slen("))
}

// Filters: on arguments at the entry, on the result at the return, and
// --duration; each keeps exactly the calls it should.
func TestCallsFilters(t *testing.T) {
	bin := buildC(t, cCalls)
	_, code, res := traceJSON(t, "-e", "after if arg0 >= 1 && arg0 != 3", "--", bin)
	require.Equal(t, 0, code)
	assert.Equal(t, uint64(2), statsOf(t, res, "after").Calls)
	assert.Equal(t, uint64(4), res.Probes[0].Hits, "every hit is counted; the filter selects what is reported")

	ls := traceLines(t, "-e", "after if retval:i32 < 0", "--", bin)
	require.Len(t, ls, 2)
	assert.Contains(t, ls[0], "after(x=0) = -2")
	assert.Contains(t, ls[1], "after(x=1) = -1")

	// nap sleeps 20ms on odd calls, 10µs on even ones.
	_, code, res = traceJSON(t, "--duration", "10ms", "-e", "nap", "--", bin)
	require.Equal(t, 0, code)
	st := statsOf(t, res, "nap")
	assert.Equal(t, uint64(3), st.Calls)
	assert.GreaterOrEqual(t, st.MinNs, int64(10*time.Millisecond))

	ls = traceLines(t, "--duration", "10ms", "-e", "nap", "--", bin)
	require.Len(t, ls, 3)
	for _, l := range ls {
		assert.Contains(t, l, "nap(us=20000)")
	}

	// --max-events stops reporting and lets the program go.
	ls = traceLines(t, "--max-events", "2", "-e", "after", "--", bin)
	assert.Len(t, ls, 2)
}

// A Go program with goroutines whose stacks grow inside the probed
// functions: every entry pairs with its return.
func TestCallsGoStackGrowth(t *testing.T) {
	bin := buildGo(t, "")
	_, code, res := traceJSON(t, "-e", "main.work", "-e", "main.deep", "-e", "main.helper", "--", bin)
	require.Equal(t, 0, code)
	for fn, n := range map[string]uint64{"main.work": 900, "main.deep": 600 * 41, "main.helper": 300} {
		st := statsOf(t, res, fn)
		assert.Equal(t, n, st.Calls, fn)
		assert.Zero(t, st.Unfinished, fn)
	}
	// Go DWARF: parameters by name, results in the register ABI.
	ls := traceLines(t, "-e", "main.helper", "--", bin)
	entries, whole := 0, 0
	re := regexp.MustCompile(`main\.helper\(i=(\d+)(\) = (\d+))?`)
	for _, l := range ls {
		m := re.FindStringSubmatch(l)
		if m == nil {
			assert.Contains(t, l, "<... main.helper resumed> ) = ")
			continue
		}
		entries++
		if m[2] != "" {
			whole++
			i, _ := strconv.Atoi(m[1])
			assert.Equal(t, strconv.Itoa(i+7), m[3], l)
		}
	}
	assert.Equal(t, 300, entries)
	assert.Positive(t, whole)
}

// --chrome writes one complete event per call; --folded's counts add up to
// the hits.
func TestCallsChromeAndFolded(t *testing.T) {
	bin := buildC(t, cCalls, "-O1", "-fno-inline", "-fno-omit-frame-pointer", "-g")
	dir := t.TempDir()
	chrome, folded := filepath.Join(dir, "trace.json"), filepath.Join(dir, "stacks.folded")
	_, code, res := traceJSON(t, "--chrome", chrome, "--folded", folded, "--stack", "8", "-e", "fib", "-e", "after", "--", bin)
	require.Equal(t, 0, code)

	b, err := os.ReadFile(chrome)
	require.NoError(t, err)
	var doc struct {
		TraceEvents []struct {
			Name string
			Ph   string
			Pid  int
			Tid  int
			Ts   float64
			Dur  float64
		}
	}
	require.NoError(t, json.Unmarshal(b, &doc), "%s", b)
	count := map[string]int{}
	for _, e := range doc.TraceEvents {
		assert.Equal(t, "X", e.Ph)
		assert.NotZero(t, e.Tid)
		assert.Greater(t, e.Dur, 0.0)
		count[e.Name]++
	}
	assert.Equal(t, map[string]int{"fib": 9, "after": 4}, count)

	f, err := os.Open(folded)
	require.NoError(t, err)
	defer f.Close()
	var sum uint64
	sc := bufio.NewScanner(f)
	fibDeep := false
	for sc.Scan() {
		i := strings.LastIndexByte(sc.Text(), ' ')
		require.Positive(t, i, sc.Text())
		n, err := strconv.ParseUint(sc.Text()[i+1:], 10, 64)
		require.NoError(t, err)
		sum += n
		fibDeep = fibDeep || strings.Contains(sc.Text(), "main;fib;fib;fib")
	}
	var hitsAll uint64
	for _, r := range res.Probes {
		hitsAll += r.Hits
	}
	assert.Equal(t, hitsAll, sum)
	assert.True(t, fibDeep, "frame pointers give the recursion")
	require.NotEmpty(t, statsOf(t, res, "fib").TopStacks)
}

const cForkExec = `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>

volatile int sink;
__attribute__((noinline)) int add(int a, int b) { sink++; return a + b; }

int main(int argc, char **argv) {
	int level = argc > 1 ? atoi(argv[1]) : 0;
	for (int i = 0; i < 3; i++)
		add(level, i);
	if (level < 2) {
		pid_t c = fork();
		if (c == 0) {
			char next[8];
			snprintf(next, sizeof next, "%d", level + 1);
			execl("/proc/self/exe", argv[0], next, (char *)0);
			_exit(127);
		}
		waitpid(c, 0, 0);
	}
	printf("level %d done\n", level);
	return 0;
}
`

// -f follows a fork+exec chain: probes are placed again by name in each new
// image, and lines say which process made the call.
func TestFollowForkExec(t *testing.T) {
	bin := buildC(t, cForkExec)
	out := filepath.Join(t.TempDir(), "lines.txt")
	stdout, stderr, code := runCmd(t, tracerBin, "-f", "-v", "-o", out, "-e", "add", "--", bin)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, "level 2 done\nlevel 1 done\nlevel 0 done\n", stdout)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	re := regexp.MustCompile(`(?m)^\[pid (\d+)\] add\(a=(\d), b=(\d)\) = (\d)$`)
	byLevel := map[string]map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if byLevel[m[2]] == nil {
			byLevel[m[2]] = map[string]bool{}
		}
		byLevel[m[2]][m[1]] = true
		a, _ := strconv.Atoi(m[2])
		bb, _ := strconv.Atoi(m[3])
		assert.Equal(t, strconv.Itoa(a+bb), m[4])
	}
	require.Len(t, byLevel, 3, "%s", b)
	pids := map[string]bool{}
	for lvl, ps := range byLevel {
		assert.Len(t, ps, 1, "level %s from one process", lvl)
		for p := range ps {
			pids[p] = true
		}
	}
	assert.Len(t, pids, 3, "three processes")
	assert.Regexp(t, `add\s.*\s9\s`, string(b), "the summary counts the hits of all three")
}

// -p attaches to a running program; lines are written as calls happen, and
// SIGINT detaches.
func TestAttachLiveLines(t *testing.T) {
	prog, _ := startLoop(t)

	out := filepath.Join(t.TempDir(), "lines.txt")
	tr := exec.Command(tracerBin, "-v", "-T", "-o", out, "-p", itoa(prog.Process.Pid), "-e", "tick")
	var trErr bytes.Buffer
	tr.Stderr = &trErr
	require.NoError(t, tr.Start())
	time.Sleep(500 * time.Millisecond)
	live, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Regexp(t, `\[pid \d+\] tick\(i=\d+\) = \d+ <0\.\d{6}>`, string(live), "lines before the detach")
	require.NoError(t, tr.Process.Signal(unix.SIGINT))
	require.NoError(t, tr.Wait(), "tracer: %s", trErr.String())
	assert.Equal(t, 0, tracerPid(t, prog.Process.Pid))
	all, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Contains(t, string(all), "detached from pid")
}

// -l lists functions with their first instruction, verdict and strategy,
// and FUNC:* a function's lines, in C and Go binaries.
func TestList(t *testing.T) {
	cbin := buildC(t, cCalls)
	stdout, stderr, code := runCmd(t, tracerBin, "-l", "[fs]*", cbin)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^0x[0-9a-f]+\s+fib\s+\S.*\s(emulate|outofline)\s+(emulate|boost|outofline)$`, stdout)
	assert.Regexp(t, `(?m)^0x[0-9a-f]+\s+slen\s`, stdout)

	stdout, _, code = runCmd(t, tracerBin, "-l", "after:*", cbin)
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^0x[0-9a-f]+\s+\S*prog\.c:12\s+prog\.c:12$`, stdout)

	gobin := buildGo(t, "")
	stdout, _, code = runCmd(t, tracerBin, "-l", "main.*", gobin)
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^0x[0-9a-f]+\s+main\.work\+0x[0-9a-f]+\s`, stdout, "past the stack check")
	for _, fn := range []string{"main.work", "main.helper", "main.deep", "main.main"} {
		assert.Regexp(t, `(?m)^0x[0-9a-f]+\s+`+regexp.QuoteMeta(fn)+`(\+0x[0-9a-f]+)?\s`, stdout)
	}
	stdout, _, code = runCmd(t, tracerBin, "-l", "main.work:*", gobin)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "main.go:9")
}
