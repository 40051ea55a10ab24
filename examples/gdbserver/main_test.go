package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests drive gdb itself, in batch mode, against the server started
// by gdb over a pipe (target remote | gdbserver - PROGRAM), on the C
// program of testdata built here.

var build struct {
	once         sync.Once
	server, prog string
	err          error
}

// binaries builds the server and the test program once.
func binaries(t *testing.T) (server, prog string) {
	t.Helper()
	if _, err := exec.LookPath("gdb"); err != nil {
		t.Skip("gdb is not installed")
	}
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "onetrap-gdbserver")
		if err != nil {
			build.err = err
			return
		}
		build.server, build.prog = filepath.Join(dir, "gdbserver"), filepath.Join(dir, "prog")
		for _, c := range [][]string{
			{"go", "build", "-o", build.server, "."},
			{"cc", "-g", "-O0", "-fno-omit-frame-pointer", "-pthread", "-o", build.prog, "testdata/prog.c"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				build.err = &buildError{c, err, out}
				return
			}
		}
	})
	require.NoError(t, build.err)
	return build.server, build.prog
}

type buildError struct {
	cmd []string
	err error
	out []byte
}

func (e *buildError) Error() string {
	return strings.Join(e.cmd, " ") + ": " + e.err.Error() + "\n" + string(e.out)
}

// gdb runs gdb in batch mode with commands, on the server running prog
// with args (remote false: plain gdb runs prog itself), and returns what
// it printed, the program's output included (its stdout goes to the
// server's stderr, which is gdb's).
func gdb(t *testing.T, remote bool, args string, cmds ...string) string {
	t.Helper()
	return gdbSetup(t, remote, args, nil, cmds...)
}

// gdbSetup is gdb with settings made before connecting (non-stop).
func gdbSetup(t *testing.T, remote bool, args string, setup []string, cmds ...string) string {
	t.Helper()
	server, prog := binaries(t)
	argv := []string{"-batch", "-nx", "-ex", "set pagination off"}
	for _, c := range setup {
		argv = append(argv, "-ex", c)
	}
	if remote {
		argv = append(argv, "-ex", "target remote | "+server+" - "+prog+" "+args)
	} else if args != "" {
		argv = append(argv, "-ex", "set args "+args)
	}
	for _, c := range cmds {
		argv = append(argv, "-ex", c)
	}
	argv = append(argv, prog)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "gdb", argv...).CombinedOutput()
	require.NoError(t, ctx.Err(), "gdb timed out:\n%s", out)
	require.NoError(t, err, "%s", out)
	return string(out)
}

func TestBreakRegistersStackNextFinish(t *testing.T) {
	out := gdb(t, true, "calls 10",
		"break work", "continue", "info registers", "x/4gx $rsp", "bt",
		"next", "next", "finish", "delete", "continue")
	assert.Contains(t, out, "Breakpoint 1, work (i=0) at ")
	assert.Regexp(t, `rip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <work\+\d+>`, out)
	assert.Regexp(t, `rsp\s+0x7ff[0-9a-f]+`, out)
	assert.Regexp(t, `eflags\s+0x[0-9a-f]+\s+\[ .*IF`, out)
	assert.Regexp(t, `0x7ff[0-9a-f]+:\s+0x[0-9a-f]{16}\s+0x[0-9a-f]{16}\n0x7ff[0-9a-f]+:\s+0x[0-9a-f]{16}\s+0x[0-9a-f]{16}`, out)
	assert.Regexp(t, `#0  work \(i=0\) at .*prog.c:22\n#1  0x[0-9a-f]+ in main \(argc=3, argv=0x[0-9a-f]+\) at .*prog.c:\d+`, out)
	assert.Contains(t, out, "23\t\tlong y = add(x, i);")
	assert.Contains(t, out, "24\t\treturn y - i;")
	assert.Contains(t, out, "Value returned is $1 = 0")
	assert.Contains(t, out, "sum 135\n", "the program's output, unchanged")
	assert.Contains(t, out, "exited normally")
}

// Ten stepi from a breakpoint land on the same instructions as under gdb
// alone (named by function and offset: the two runs load at different
// addresses).
func TestStepiAsPlainGDB(t *testing.T) {
	cmds := []string{"break work"}
	for i := 0; i < 10; i++ {
		cmds = append(cmds, "stepi", "x/i $pc")
	}
	cmds = append(cmds, "delete", "continue")
	pcs := regexp.MustCompile(`=> 0x[0-9a-f]+ <([a-z_]+(?:\+\d+)?)>`)
	places := func(out string) []string {
		var p []string
		for _, m := range pcs.FindAllStringSubmatch(out, -1) {
			p = append(p, m[1])
		}
		return p
	}
	remote := gdb(t, true, "calls 3", append([]string{cmds[0], "continue"}, cmds[1:]...)...)
	plain := gdb(t, false, "calls 3", append([]string{cmds[0], "run"}, cmds[1:]...)...)
	want := places(plain)
	require.Len(t, want, 10, plain)
	remoteCmds := places(remote)
	assert.Equal(t, want, remoteCmds, remote)
	assert.Contains(t, want, "add", "the steps go into a call")
	assert.Contains(t, remote, "sum 9\n")
}

// A condition evaluated by the server stops exactly once: the server saw
// every hit, gdb one stop.
func TestConditionOnTarget(t *testing.T) {
	out := gdb(t, true, "calls 10",
		"set breakpoint condition-evaluation target",
		"break add if a == 15", "continue", "print a", "print b", "monitor hits",
		"break prog.c:55", "continue", "monitor hits", "delete", "continue")
	assert.Equal(t, 1, strings.Count(out, "Breakpoint 1, add (a=15, b=5)"), out)
	assert.Contains(t, out, "$1 = 15")
	m := regexp.MustCompile(`breakpoint 0x[0-9a-f]+: (\d+) hits, (\d+) reported`).FindAllStringSubmatch(out, -1)
	require.NotEmpty(t, m, out)
	// The first report of monitor hits: add was hit for i = 0..5.
	assert.Equal(t, []string{"6", "1"}, m[0][1:])
	assert.Contains(t, out, "sum 135\n")
	assert.Contains(t, out, "exited normally")
	// Before the program's end the server saw all ten calls and still
	// reported one.
	require.Len(t, m, 5, out) // add, the loader's breakpoint; add, line 55, the loader's
	assert.Equal(t, []string{"10", "1"}, m[2][1:])
}

func TestThreadApplyAllBt(t *testing.T) {
	out := gdb(t, true, "threads 2",
		"break tick", "continue", "thread apply all bt", "info threads", "delete", "continue")
	assert.Contains(t, out, "Breakpoint 1, tick (i=0)")
	assert.Len(t, regexp.MustCompile(`\nThread \d+ \(Thread \d+\):\n#0 `).FindAllString(out, -1), 3, out)
	// gdb prints a frame's pc only when it is not at a line's start; a
	// worker just created may not be in worker yet at tick(0), but in the
	// thread library's start.
	assert.NotEmpty(t, regexp.MustCompile(`#0  (0x[0-9a-f]+ in )?worker \(arg=`).FindAllString(out, -1), out)
	assert.Contains(t, out, "#1  0x")
	assert.Contains(t, out, "threads done, workers moved during")
	assert.Contains(t, out, "exited normally")
}

// In non-stop mode a breakpoint stops its thread only: the workers count
// on while main sits at it.
func TestNonStop(t *testing.T) {
	out := gdbSetup(t, true, "threads 2", []string{"set non-stop on"},
		"break tick if i == 3", "continue", "info threads",
		"print counts[0]", "shell sleep 0.2", "print counts[0]",
		"delete", "continue -a")
	assert.Contains(t, out, "Thread 1 hit Breakpoint 1, tick (i=3)")
	assert.Equal(t, 2, strings.Count(out, "(running)"), out)
	m := regexp.MustCompile(`\$[12] = (\d+)`).FindAllStringSubmatch(out, -1)
	require.Len(t, m, 2, out)
	a, _ := strconv.Atoi(m[0][1])
	b, _ := strconv.Atoi(m[1][1])
	assert.Greater(t, b, a, "a worker counted while main was stopped")
	assert.Contains(t, out, "threads done, workers moved during")
	assert.Contains(t, out, "exited normally")
}

// After detach the program runs on to its end, untouched. Over TCP, so
// that the program's output does not go through gdb's pipe from the
// server's stderr, which gdb closes when it leaves.
func TestDetach(t *testing.T) {
	server, prog := binaries(t)
	srv := exec.Command(server, "127.0.0.1:0", prog, "forever", "20")
	var out strings.Builder
	srv.Stdout = &out
	stderr, err := srv.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	t.Cleanup(func() { srv.Process.Kill() })
	sc := bufio.NewScanner(stderr)
	port := ""
	for port == "" && sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "Listening on port "); ok {
			port = p
		}
	}
	require.NotEmpty(t, port)
	go io.Copy(io.Discard, stderr)
	session := gdbSetup(t, false, "", []string{"target remote 127.0.0.1:" + port},
		"break sleep_ms", "continue", "continue", "detach")
	assert.Contains(t, session, "[Inferior 1 (Remote target) detached]")
	// The server exits after the detach; its stdout closes when the
	// program, which shares it, ends.
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the program did not end after the detach")
	}
	var want strings.Builder
	for i := 0; i < 20; i++ {
		want.WriteString("count " + strconv.Itoa(i) + "\n")
	}
	want.WriteString("done\n")
	assert.Equal(t, want.String(), out.String())
}
