package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The tests run the tracer as a separate program, as a user does: it is
// built once, and its targets are built in the test (a C program with cc, a
// Go program with go build), so nothing is traced that the tracer built.

var tracerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "trace-test")
	if err != nil {
		panic(err)
	}
	tracerBin = filepath.Join(dir, "trace")
	out, err := exec.Command(goTool(), "build", "-o", tracerBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// run runs cmd and returns its stdout and exit status.
func runCmd(t *testing.T, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	}
	require.NoError(t, err, "%s %v: %s", name, args, e.String())
	return o.String(), e.String(), 0
}

// traceJSON runs the tracer with -json -o FILE and the given arguments and
// returns the program's stdout, the tracer's exit status and the result.
func traceJSON(t *testing.T, args ...string) (string, int, *Result) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	stdout, stderr, code := runCmd(t, tracerBin, append([]string{"-json", "-o", out}, args...)...)
	b, err := os.ReadFile(out)
	require.NoError(t, err, "tracer stderr: %s", stderr)
	var res Result
	require.NoError(t, json.Unmarshal(b, &res), "%s", b)
	return stdout, code, &res
}

// hits sums the hits of the rows of spec, and checks none was refused.
func hits(t *testing.T, res *Result, spec string) uint64 {
	t.Helper()
	var n uint64
	found := false
	for _, r := range res.Probes {
		if r.Spec == spec {
			require.Empty(t, r.Error, "%s", r.Site)
			n += r.Hits
			found = true
		}
	}
	require.True(t, found, "no probe for %q in %+v", spec, res.Probes)
	return n
}

const cProgram = `#include <stdio.h>
#include <stdlib.h>
#include <dlfcn.h>

__attribute__((noinline)) int add(int a, int b) { return a + b; }
__attribute__((noinline)) int pick(int a) {
	if (a % 3 == 0)
		return a * 5;
	return a - 1;
}

int main(int argc, char **argv) {
	int n = atoi(argv[1]);
	long s = 0;
	for (int i = 0; i < n; i++)
		s += add(i, 1) + pick(i);
	/* A library loaded after start: its probe is placed at the dlopen. */
	void *h = dlopen("libm.so.6", RTLD_NOW);
	if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
	double (*f)(double) = (double (*)(double))dlsym(h, "cbrt");
	double d = 0;
	for (int i = 0; i < 7; i++)
		d += f(i * 8);
	printf("sum %ld cbrt %.3f\n", s, d);
	return 3;
}
`

// buildC compiles src with -O1 -fno-inline -g, or with opts when given.
func buildC(t *testing.T, src string, opts ...string) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	require.NoError(t, err, "the tests need a C compiler")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prog.c"), []byte(src), 0o644))
	bin := filepath.Join(dir, "prog")
	if opts == nil {
		opts = []string{"-O1", "-fno-inline", "-g"}
	}
	args := append(opts, "-o", bin, filepath.Join(dir, "prog.c"), "-ldl")
	out, err := exec.Command(cc, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func TestCProgram(t *testing.T) {
	bin := buildC(t, cProgram)
	want, _, wantCode := runCmd(t, bin, "200")
	require.Equal(t, 3, wantCode)

	got, code, res := traceJSON(t, "-e", "add arg0 arg1", "-e", "pick", "-e", "pick%return", "-e", "libm:cbrt", "--", bin, "200")
	assert.Equal(t, want, got, "the program's output is unchanged")
	assert.Equal(t, wantCode, code, "the tracer exits with the program's status")
	require.NotNil(t, res.Exit)
	assert.Equal(t, 3, res.Exit.Code)
	assert.False(t, res.Detached)
	assert.Equal(t, uint64(200), hits(t, res, "add arg0 arg1"))
	assert.Equal(t, uint64(200), hits(t, res, "pick"))
	assert.Equal(t, uint64(200), hits(t, res, "pick%return"), "every RET of pick, together, once per call")
	assert.Equal(t, uint64(7), hits(t, res, "libm:cbrt"), "a probe in a library loaded by dlopen")
	for _, r := range res.Probes {
		assert.NotEmpty(t, r.Insn, r.Site)
		assert.Contains(t, []string{"emulate", "outofline"}, r.Verdict, r.Site)
		assert.NotEmpty(t, r.Strategy, r.Site)
		assert.NotZero(t, r.Addr, r.Site)
	}
	assert.Empty(t, res.Errors)
}

const cDlclose = `#include <stdio.h>
#include <dlfcn.h>

int main(void) {
	double d = 0;
	for (int k = 0; k < 3; k++) {
		void *h = dlopen("libm.so.6", RTLD_NOW);
		if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
		double (*f)(double) = (double (*)(double))dlsym(h, "cbrt");
		for (int i = 0; i < 7; i++)
			d += f(i * 8);
		dlclose(h);
	}
	printf("%.3f\n", d);
	return 0;
}
`

// Probes in a library follow it through dlclose and a new dlopen (taken
// out before the unmap, put back once it is mapped again), and hits add up.
func TestDlopenDlclose(t *testing.T) {
	bin := buildC(t, cDlclose, "-O0", "-g")
	want, _, _ := runCmd(t, bin)
	// prog.c:9 is the dlsym line, run once per dlopen (DWARF lines).
	got, code, res := traceJSON(t, "-e", "libm.so.6:cbrt", "-e", "prog.c:9", "--", bin)
	assert.Equal(t, want, got)
	assert.Equal(t, 0, code)
	assert.Equal(t, uint64(21), hits(t, res, "libm.so.6:cbrt"))
	assert.Equal(t, uint64(3), hits(t, res, "prog.c:9"))
	assert.Len(t, res.Probes, 2)
	assert.Empty(t, res.Errors)
}

func TestCProgramVerbose(t *testing.T) {
	bin := buildC(t, cProgram)
	out := filepath.Join(t.TempDir(), "hits.txt")
	_, _, code := runCmd(t, tracerBin, "-v", "-o", out, "-e", "add+0 a=arg0 rsi", "-strategy", "outofline", "--", bin, "5")
	require.Equal(t, 3, code)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[pid ") {
			lines = append(lines, l)
		}
	}
	require.Len(t, lines, 5, "%s", b)
	for i, l := range lines {
		// add(i, 1): arg1 is i, rsi is 1.
		assert.Regexp(t, `^\[pid \d+\] add a=0x`+string(rune('0'+i))+` rsi=0x1$`, l)
	}
	assert.Regexp(t, `add\s+\S.*outofline\s+5\s`, string(b), "summary row")
}

const cExec = `#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) int add(int a, int b) { return a + b; }

int main(int argc, char **argv) {
	int s = 0;
	for (int i = 0; i < 5; i++)
		s += add(i, 1);
	printf("image %s sum %d\n", argc > 1 ? "second" : "first", s);
	fflush(stdout);
	if (argc == 1)
		execl("/proc/self/exe", argv[0], "again", (char *)0);
	return 0;
}
`

// An exec drops the probes with the old image; the tracer places them again
// in the new one, and the hits add up.
func TestExec(t *testing.T) {
	bin := buildC(t, cExec)
	got, code, res := traceJSON(t, "-e", "add", "--", bin)
	assert.Equal(t, "image first sum 15\nimage second sum 15\n", got)
	assert.Equal(t, 0, code)
	assert.Equal(t, uint64(10), hits(t, res, "add"))
	assert.Empty(t, res.Errors)
}

// With -json, -v's hits are JSON objects, one per line, then the summary.
func TestJSONStream(t *testing.T) {
	bin := buildC(t, cProgram)
	out := filepath.Join(t.TempDir(), "stream.json")
	_, _, code := runCmd(t, tracerBin, "-json", "-v", "-o", out, "-e", "add+0 a=arg0 rsi", "--", bin, "4")
	require.Equal(t, 3, code)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	dec := json.NewDecoder(f)
	for i := 0; i < 4; i++ {
		var hit struct {
			Tid   int
			Probe string
			Args  map[string]string
		}
		require.NoError(t, dec.Decode(&hit))
		assert.NotZero(t, hit.Tid)
		assert.Equal(t, "add", hit.Probe)
		assert.Equal(t, map[string]string{"a": "0x" + strconv.Itoa(i), "rsi": "0x1"}, hit.Args)
	}
	var res Result
	require.NoError(t, dec.Decode(&res))
	assert.Equal(t, uint64(4), hits(t, &res, "add+0 a=arg0 rsi"))
	assert.False(t, dec.More())
}

const goProgram = `package main

import (
	"fmt"
	"sync"
)

//go:noinline
func work(i int) int {
	if i%3 == 0 {
		return helper(i) + 1
	}
	return deep(i, 40)
}

//go:noinline
func helper(i int) int { return i + 7 }

// deep recurses with a large frame, so goroutines' stacks grow inside work's
// callees and work itself runs its stack check more than once per call.
//
//go:noinline
func deep(i, n int) int {
	var pad [256]byte
	pad[n%256] = byte(i)
	if n == 0 {
		return i * 2
	}
	return deep(i, n-1) + int(pad[n%256]) - int(byte(i))
}

func main() {
	var wg sync.WaitGroup
	sums := make([]int, 3)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				sums[g] += work(i)
			}
		}()
	}
	wg.Wait()
	fmt.Println("sums", sums)
}
`

func buildGo(t *testing.T, ldflags string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(goProgram), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prog\n\ngo 1.22\n"), 0o644))
	bin := filepath.Join(dir, "prog")
	cmd := exec.Command(goTool(), "build", "-ldflags="+ldflags, "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

func TestGoProgram(t *testing.T) {
	for _, c := range []struct{ name, ldflags string }{
		{"with symbols", ""},
		{"stripped -s -w", "-s -w"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bin := buildGo(t, c.ldflags)
			if c.ldflags != "" {
				f, err := elfSymbols(bin)
				require.NoError(t, err)
				require.Zero(t, f, "stripped binary has no symbol table")
			}
			want, _, _ := runCmd(t, bin)
			got, code, res := traceJSON(t, "-e", "main.work arg0", "-e", "main.work%return", "-e", "main.helper", "-e", "main.deep", "--", bin)
			assert.Equal(t, want, got)
			assert.Equal(t, 0, code)
			assert.Equal(t, uint64(900), hits(t, res, "main.work arg0"))
			assert.Equal(t, uint64(900), hits(t, res, "main.work%return"))
			assert.Equal(t, uint64(300), hits(t, res, "main.helper"))
			assert.Equal(t, uint64(600*41), hits(t, res, "main.deep"))

			// Go's register ABI: arg0 is rax, still there past the stack
			// check, where the probe on main.work is; a line per call.
			out := filepath.Join(t.TempDir(), "hits.txt")
			_, stderr, code := runCmd(t, tracerBin, "-v", "-o", out, "-e", "main.work i=arg0", "--", bin)
			require.Equal(t, 0, code, stderr)
			b, err := os.ReadFile(out)
			require.NoError(t, err)
			seen := map[string]int{}
			for _, m := range regexp.MustCompile(`main\.work\(i=0x([0-9a-f]+)`).FindAllStringSubmatch(string(b), -1) {
				seen[m[1]]++
			}
			require.Len(t, seen, 300, "work(i) for i = 0..299")
			for i := 0; i < 300; i++ {
				assert.Equal(t, 3, seen[strconv.FormatInt(int64(i), 16)], "work(%d), once per goroutine", i)
			}
		})
	}
}

func TestGoFirstByteCountsStackGrowth(t *testing.T) {
	// FUNC+0 is the first byte, the stack check: a call that grows the
	// stack runs it again, so it may count more than the calls; never fewer.
	bin := buildGo(t, "")
	_, code, res := traceJSON(t, "-e", "main.deep+0", "--", bin)
	require.Equal(t, 0, code)
	require.Len(t, res.Probes, 1)
	// deep's frame is big: its check starts with lea r12, [rsp-n].
	assert.Equal(t, "main.deep", res.Probes[0].Site)
	assert.Regexp(t, `^lea r12, ptr \[rsp-0x[0-9a-f]+\]$`, res.Probes[0].Insn)
	assert.GreaterOrEqual(t, res.Probes[0].Hits, uint64(600*41))
}

func TestDemo(t *testing.T) {
	for _, strategy := range []string{"", "emulate", "boost", "outofline"} {
		t.Run("strategy="+strategy, func(t *testing.T) {
			var args []string
			if strategy != "" {
				args = []string{"-strategy", strategy}
			}
			stdout, stderr, code := runCmd(t, tracerBin, args...)
			assert.Equal(t, 0, code, "%s", stderr)
			assert.Contains(t, stderr, "demo: PASSED")
			assert.Contains(t, stdout, "checksum 124000 (want 124000), counter 4000 (want 4000)")
			for _, f := range demoFuncs {
				if strategy == "emulate" && f.verdict != "emulate" {
					assert.Contains(t, stderr, "demo: "+f.name+" ")
					assert.Regexp(t, `demo: `+f.name+`\s+refused under -strategy emulate, as expected: ok`, stderr)
					continue
				}
				ran := `\w+`
				switch strategy {
				case "boost":
					ran = `(boost|outofline)` // a rip-relative copy too far from its target is stepped
				case "emulate", "outofline":
					ran = strategy
				}
				assert.Regexp(t, `demo: `+f.name+`\s+decoder `+f.verdict+`\s+\(expected `+f.verdict+`\s*\) ran as `+ran+`\s+hits  4000 \(expected  4000\): ok`, stderr)
			}
		})
	}
}

const cLoop = `#include <stdio.h>
#include <signal.h>
#include <unistd.h>

__attribute__((noinline)) long tick(long i) { return i * 3; }

int main(void) {
	long s = 0;
	/* As at a terminal, whatever SIGINT was in the test's parent. */
	signal(SIGINT, SIG_DFL);
	printf("ready\n");
	fflush(stdout);
	for (long i = 0; i < 100; i++) {
		s += tick(i);
		usleep(10000);
	}
	printf("sum %ld\n", s);
	return 0;
}
`

// startLoop starts cLoop untraced and waits until it is ready; the caller
// reads the rest of its output from stdout.
func startLoop(t *testing.T) (prog *exec.Cmd, stdout io.Reader) {
	t.Helper()
	bin := buildC(t, cLoop)
	prog = exec.Command(bin)
	out, err := prog.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, prog.Start())
	t.Cleanup(func() { prog.Process.Kill() })
	buf := make([]byte, 6)
	_, err = io.ReadFull(out, buf)
	require.NoError(t, err)
	require.Equal(t, "ready\n", string(buf))
	return prog, out
}

func TestAttachDetachOnSIGINT(t *testing.T) {
	prog, stdout := startLoop(t)

	out := filepath.Join(t.TempDir(), "result.json")
	tr := exec.Command(tracerBin, "-json", "-o", out, "-p", itoa(prog.Process.Pid), "-e", "tick arg0")
	var trErr bytes.Buffer
	tr.Stderr = &trErr
	require.NoError(t, tr.Start())
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 1, tracerPid(t, prog.Process.Pid) /* traced */, "the tracer has attached")
	require.NoError(t, tr.Process.Signal(unix.SIGINT))
	require.NoError(t, tr.Wait(), "tracer: %s", trErr.String())
	assert.Equal(t, 0, tracerPid(t, prog.Process.Pid), "detached: no tracer")

	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var res Result
	require.NoError(t, json.Unmarshal(b, &res), "%s", b)
	assert.True(t, res.Detached)
	assert.Nil(t, res.Exit)
	n := hits(t, &res, "tick arg0")
	assert.Greater(t, n, uint64(0))
	assert.Less(t, n, uint64(100))

	// The program goes on, untraced, and ends as if never traced.
	rest := new(bytes.Buffer)
	_, err = rest.ReadFrom(stdout)
	require.NoError(t, err)
	require.NoError(t, prog.Wait())
	assert.Equal(t, "sum 14850\n", rest.String())
}

// A Ctrl-C at a terminal goes to the whole process group: the started
// program dies of it, and the tracer says so rather than detaching.
func TestCtrlCStartedProgram(t *testing.T) {
	bin := buildC(t, cLoop)
	out := filepath.Join(t.TempDir(), "result.json")
	tr := exec.Command(tracerBin, "-json", "-o", out, "-e", "tick", "--", bin)
	tr.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	var trOut bytes.Buffer
	tr.Stdout = &trOut
	require.NoError(t, tr.Start())
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, unix.Kill(-tr.Process.Pid, unix.SIGINT))
	err := tr.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 128+int(unix.SIGINT), ee.ExitCode())

	b, err := os.ReadFile(out)
	require.NoError(t, err)
	var res Result
	require.NoError(t, json.Unmarshal(b, &res), "%s", b)
	assert.False(t, res.Detached)
	require.NotNil(t, res.Exit)
	assert.Equal(t, "SIGINT", res.Exit.Signal)
	n := hits(t, &res, "tick")
	assert.Greater(t, n, uint64(0))
	assert.Less(t, n, uint64(100))
	assert.Equal(t, "ready\n", trOut.String(), "the program was killed before its last line")
}

// tracerPid returns 1 when pid is traced, 0 when not.
func tracerPid(t *testing.T, pid int) int {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
			if strings.TrimSpace(v) == "0" {
				return 0
			}
			return 1
		}
	}
	t.Fatal("no TracerPid")
	return 0
}

func TestUsageErrors(t *testing.T) {
	bin := buildC(t, cProgram)
	for _, c := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown function", []string{"-e", "no_such_function", "--", bin, "3"}, "no function matches"},
		{"bad spec", []string{"-e", "add+", "--", bin, "3"}, "-e"},
		{"no probe", []string{"--", bin, "3"}, "no probe given (-e SPEC)"},
		{"pid and program", []string{"-p", "1", "-e", "add", "--", bin}, "either -p PID or a program"},
		{"bad strategy", []string{"-strategy", "teleport", "-e", "add", "--", bin}, "unknown -strategy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, tracerBin, c.args...)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr, c.msg)
			assert.Empty(t, stdout, "the program did not run")
		})
	}
}

// A LIB: spec that names nothing in its library ends the trace as soon as
// the library is mapped: the program's main never runs.
func TestLibSpecMatchesNothing(t *testing.T) {
	bin := buildC(t, cProgram)
	stdout, stderr, code := runCmd(t, tracerBin, "-e", "libc:no_such_function_here", "--", bin, "5")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, `-e "libc:no_such_function_here"`)
	assert.Contains(t, stderr, "no function matches")
	assert.Empty(t, stdout, "main never ran")
}

const cCount = `#include <stdio.h>
#include <stdlib.h>
#include <dlfcn.h>

__attribute__((noinline)) int five(int x) { return x + 1000000; }
__attribute__((noinline)) int add(int a, int b) { return a + b; }

int main(int argc, char **argv) {
	int n = atoi(argv[1]);
	long s = 0;
	for (int i = 0; i < n; i++)
		s += five(i) + add(i, 2);
	double d = 0;
	for (int k = 0; k < 3; k++) {
		void *h = dlopen("libm.so.6", RTLD_NOW);
		if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 1; }
		double (*f)(double) = (double (*)(double))dlsym(h, "cbrt");
		for (int i = 0; i < 7; i++)
			d += f(i * 8);
		dlclose(h);
	}
	printf("sum %ld cbrt %.3f\n", s, d);
	return 0;
}
`

// With --count, probes only count: function entries are hits, not calls,
// and a site that can take a jump runs with no trap (five's first
// instruction, a 6-byte lea, can); the counts are exact either way, through
// a dlclose and a new dlopen too, and the program's output is unchanged.
func TestCountTrapless(t *testing.T) {
	bin := buildC(t, cCount)
	const n = 20000
	want, _, wantCode := runCmd(t, bin, fmt.Sprint(n))
	require.Equal(t, 0, wantCode)
	got, code, res := traceJSON(t, "--count", "-e", "five", "-e", "add", "-e", "libm:cbrt", "--", bin, fmt.Sprint(n))
	assert.Equal(t, want, got, "the program's output is unchanged")
	assert.Equal(t, 0, code)
	assert.Equal(t, uint64(n), hits(t, res, "five"))
	assert.Equal(t, uint64(n), hits(t, res, "add"))
	assert.Equal(t, uint64(21), hits(t, res, "libm:cbrt"))
	assert.Empty(t, res.Calls, "--count makes no calls")
	for _, r := range res.Probes {
		if r.Spec == "five" {
			assert.Equal(t, "jump", r.Strategy, r.Site)
		} else if r.Strategy != "jump" {
			assert.Contains(t, r.Strategy, "no jump: ", "a counting probe says why it takes a trap")
		}
	}
}

// With -v and register values printed, a probe whose site can take a jump
// records its hits in the program (no trap): every hit is printed, in
// order, with the same line a trap would print, and the summary says jump.
func TestVerboseRecorded(t *testing.T) {
	bin := buildC(t, cCount)
	const n = 20000
	want, _, wantCode := runCmd(t, bin, fmt.Sprint(n))
	require.Equal(t, 0, wantCode)
	out := filepath.Join(t.TempDir(), "hits.txt")
	got, _, code := runCmd(t, tracerBin, "-v", "-o", out, "-e", "five+0 arg0", "--", bin, fmt.Sprint(n))
	require.Equal(t, 0, code)
	assert.Equal(t, want, got, "the program's output is unchanged")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	i := 0
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "[pid ") {
			continue
		}
		require.Regexp(t, fmt.Sprintf(`^\[pid \d+\] five arg0=%#x$`, i), l)
		i++
	}
	assert.Equal(t, n, i, "every hit printed")
	assert.Regexp(t, fmt.Sprintf(`five\s+\S.*jump\s+%d\s`, n), string(b), "summary row")
	assert.NotContains(t, string(b), "dropped")
}

// -v on a Go function's hits with a register argument records them with
// no trap (main.helper's first instructions, lea and ret, take a jump to a
// recording pad): every hit printed, with Go's arg0 (rax), from the three
// goroutines.
func TestVerboseRecordedGo(t *testing.T) {
	bin := buildGo(t, "")
	want, _, _ := runCmd(t, bin)
	out := filepath.Join(t.TempDir(), "hits.txt")
	got, stderr, code := runCmd(t, tracerBin, "-v", "-o", out, "-e", "main.helper+0 arg0", "--", bin)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, want, got, "the program's output is unchanged")
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	seen := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\[pid \d+\] main\.helper arg0=0x([0-9a-f]+)$`).FindAllStringSubmatch(string(b), -1) {
		seen[m[1]]++
	}
	require.Len(t, seen, 100, "helper(i) for i = 0, 3, ..., 297:\n%s", b)
	for i := 0; i < 300; i += 3 {
		assert.Equal(t, 3, seen[strconv.FormatInt(int64(i), 16)], "helper(%d), once per goroutine", i)
	}
	assert.Regexp(t, `main\.helper\s+\S.*jump\s+300\s`, string(b), "summary row")
}
