package ptrace

import (
	"bufio"
	"context"
	"debug/elf"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/testprog"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
	symtab "github.com/onetrap/onetrap/symbols"
)

// The tests of Jump, trapless probes: testdata/jump.c in one mode per
// test, exact counts and unchanged output.

// buildJump compiles testdata/jump.c once per test binary.
func buildJump(t testing.TB) string {
	return buildC(t, "jump", "-O1", "-pthread", "-no-pie", "testdata/jump.c")
}

// jumpRun starts the jump program in mode with n, and puts Jump probes on
// the named symbols.
func jumpRun(t *testing.T, mode string, n int, syms ...string) (*coreRun, []*Probe) {
	bin := buildJump(t)
	r := startProgram(t, coreTracer(t), bin, []string{mode, strconv.Itoa(n)})
	addrs := symbols(t, bin, syms...)
	var prs []*Probe
	for _, s := range syms {
		pr, err := r.p.Insert(addrs[s], Jump, nil)
		require.NoError(t, err, s)
		require.Equal(t, Jump, pr.Strategy)
		prs = append(prs, pr)
	}
	return r, prs
}

// fileBytes returns n bytes of bin's text at address addr (a -no-pie
// program: addresses are the file's).
func fileBytes(t *testing.T, bin string, addr uint64, n int) []byte {
	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, s := range f.Sections {
		if s.Type == elf.SHT_PROGBITS && addr >= s.Addr && addr+uint64(n) <= s.Addr+s.Size {
			b := make([]byte, n)
			_, err := s.ReadAt(b, int64(addr-s.Addr))
			require.NoError(t, err)
			return b
		}
	}
	t.Fatalf("%#x not in %s", addr, bin)
	return nil
}

func TestJumpLoop(t *testing.T) {
	const n = 200000
	r, prs := jumpRun(t, "loop", n, "j_mov")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", 42*n), r.out.String())
	assert.Equal(t, uint64(n), prs[0].Hits())
}

func TestJumpThreads(t *testing.T) {
	const n = 1000000 // 16 threads
	r, prs := jumpRun(t, "threads", n, "j_mov")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", 16*42*n), r.out.String())
	assert.Equal(t, uint64(16*n), prs[0].Hits())
}

// cmp; probe; setl with xmm2 checked after, and a leaf keeping data at
// -8 and -128 from rsp across its probe.
func TestJumpFlagsRedZone(t *testing.T) {
	const n = 100000
	r, prs := jumpRun(t, "flags", n, "j_flags_probe", "j_red_probe")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, "bad 0\n", r.out.String())
	assert.Equal(t, uint64(2*n), prs[0].Hits())
	assert.Equal(t, uint64(n), prs[1].Hits())
}

// The relocated load faults in the pad: the SA_SIGINFO handler sees the
// original address.
func TestJumpFaultAtOriginalAddress(t *testing.T) {
	const n = 1000
	r, prs := jumpRun(t, "fault", n, "j_load")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("ok %d fault rip at j_load addr 0x100\n", n), r.out.String())
	assert.Equal(t, uint64(n+1), prs[0].Hits())
}

func TestJumpFork(t *testing.T) {
	const n = 50000
	r, prs := jumpRun(t, "fork", n, "j_mov")
	r.exited(t, <-runAsync(r.p, context.Background()))
	// The child reads its own first byte of j_mov: the original b8.
	assert.Equal(t, fmt.Sprintf("child sum %d byte b8\nparent sum %d child 0\n", 42*n, 2*42*n), r.out.String())
	assert.Equal(t, uint64(2*n), prs[0].Hits())
}

func TestJumpVforkExec(t *testing.T) {
	const n = 50000
	r, prs := jumpRun(t, "vfork", n, "j_mov")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d true 0\n", 2*42*n), r.out.String())
	assert.Equal(t, uint64(2*n), prs[0].Hits())
}

// Explicit Jump is refused where it cannot run; Auto with no handler
// picks it where it can.
func TestJumpChoice(t *testing.T) {
	bin := buildJump(t)
	r := startProgram(t, coreTracer(t), bin, []string{"loop", "10"})
	a := symbols(t, bin, "j_mov", "j_red", "j_flags_probe")
	var re *RefusedError
	_, err := r.p.Insert(a["j_mov"], Jump, func(int, *Probe, *regs.Regs, memio.Memory) {})
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Reason, "no handler")
	_, err = r.p.Insert(a["j_red"]+5, Jump, nil) // movq %rsi,-128(%rsp): 5 bytes, boostable
	require.NoError(t, err)
	_, err = r.p.Insert(a["j_mov"]+5, Jump, nil) // ret: 1 byte, and the function ends
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Reason, "5 bytes")
	pr3, err := r.p.Insert(a["j_flags_probe"]+6, Jump, nil) // setl (3 bytes) and movzbl (3): a region
	require.NoError(t, err)
	pr, err := r.p.Insert(a["j_mov"], Auto, nil)
	require.NoError(t, err)
	assert.Equal(t, Jump, pr.Strategy)
	pr2, err := r.p.Insert(a["j_mov"], Auto, nil)
	require.NoError(t, err, "a second counting probe shares the pad")
	_, err = r.p.Insert(a["j_mov"], Auto, func(int, *Probe, *regs.Regs, memio.Memory) {})
	assert.Error(t, err, "a handler cannot share a pad")
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, uint64(10), pr.Hits())
	assert.Equal(t, uint64(10), pr2.Hits())
	assert.Zero(t, pr3.Hits(), "loop mode does not call j_flags")
}

// patched waits until the jump is written at addr of pid.
func patched(t *testing.T, pid int, addr uint64) {
	m, err := memio.OpenProcess(pid)
	require.NoError(t, err)
	defer m.Close()
	waitFor(t, 5*time.Second, "the jump written", func() bool {
		b := make([]byte, 1)
		_, err := m.ReadAt(b, int64(addr))
		return err == nil && b[0] == 0xe9
	})
}

// noMapping asserts that pid maps nothing where p's pads and counters
// were.
func noAnonExec(t *testing.T, pid int, areas []uint64) {
	ms, err := Maps(pid)
	require.NoError(t, err)
	for _, m := range ms {
		for _, a := range areas {
			assert.False(t, a >= m.Start && a < m.End, "%#x still mapped: %+v", a, m)
		}
	}
}

// areasOf returns the bases of p's XOL areas and counter mappings.
func areasOf(p *Process) []uint64 {
	var out []uint64
	p.t.do(func() error {
		for x := p.xol; x != nil; x = x.also {
			out = append(out, x.base)
		}
		for c := p.counters; c != nil; c = c.also {
			out = append(out, c.base)
		}
		return nil
	})
	return out
}

// Detach mid-run: the original bytes back, no area left, the program
// finishes with its output.
func TestJumpDetachMidRun(t *testing.T) {
	bin := buildJump(t)
	r, prs := jumpRun(t, "timed", 1500, "j_mov")
	addr := symbols(t, bin, "j_mov")["j_mov"]
	done := runAsync(r.p, context.Background())
	patched(t, r.p.Pid(), addr)
	waitFor(t, 5*time.Second, "hits", func() bool { return prs[0].Hits() > 100000 })
	areas := areasOf(r.p)
	require.Len(t, areas, 2)
	require.NoError(t, r.p.Detach())
	<-done
	h := prs[0].Hits()
	m, err := memio.OpenProcess(r.p.Pid())
	require.NoError(t, err)
	b := make([]byte, 5)
	_, err = m.ReadAt(b, int64(addr))
	m.Close()
	require.NoError(t, err)
	assert.Equal(t, fileBytes(t, bin, addr, 5), b)
	noAnonExec(t, r.p.Pid(), areas)
	assert.Equal(t, h, prs[0].Hits(), "the count is kept after Detach")
	// Wait, not Process.Wait: the output is copied until the pipe closes.
	require.NoError(t, r.cmd.Wait())
	assert.Equal(t, "ready\nok 1\n", r.out.String())
}

// Remove while 16 threads hit: the bytes come back, the count stops.
func TestJumpRemoveWhileHitting(t *testing.T) {
	const n = 300000
	bin := buildJump(t)
	r, prs := jumpRun(t, "threads", n, "j_mov")
	addr := symbols(t, bin, "j_mov")["j_mov"]
	done := runAsync(r.p, context.Background())
	patched(t, r.p.Pid(), addr)
	waitFor(t, 5*time.Second, "hits", func() bool { return prs[0].Hits() > 10000 })
	require.NoError(t, r.p.Remove(prs[0]))
	h := prs[0].Hits()
	b := make([]byte, 5)
	_, err := r.p.ReadAt(b, addr)
	require.NoError(t, err)
	assert.Equal(t, fileBytes(t, bin, addr, 5), b)
	r.exited(t, <-done)
	assert.Equal(t, fmt.Sprintf("sum %d\n", 16*42*n), r.out.String())
	assert.Equal(t, h, prs[0].Hits(), "no count after Remove")
	assert.Less(t, h, uint64(16*n))
}

// SIGKILL of the tracer mid-run: the program runs on through its pads and
// prints its normal output. The tracer is the test binary in the mode
// jumptracer, which starts the program with its output to a file.
func TestJumpTracerKilled(t *testing.T) {
	bin := buildJump(t)
	out := killTracerMidRun(t, child("jumptracer", "JUMP_BIN="+bin), "JUMP_OUT")
	assert.Equal(t, fmt.Sprintf("sum %d\n", 16*42*2000000), out)
}

// killTracerMidRun starts cmd, a tracer (the test binary in a child mode)
// that writes its program's output to the file named by the environment
// variable outVar and prints "patched PID" once the program runs through
// its pads; it kills the tracer then, and returns the program's output
// once the program has finished on its own.
func killTracerMidRun(t *testing.T, cmd *exec.Cmd, outVar string) string {
	out := filepath.Join(t.TempDir(), "out")
	cmd.Env = append(cmd.Env, outVar+"="+out)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	var pid int
	_, err = fmt.Sscanf(line, "patched %d", &pid)
	require.NoError(t, err, line)
	t.Logf("program %d", pid)
	require.NoError(t, cmd.Process.Signal(unix.SIGKILL))
	cmd.Wait()
	waitFor(t, 30*time.Second, "the program's end", func() bool {
		b, _ := os.ReadFile(out)
		return strings.HasSuffix(string(b), "\n") && strings.Contains(string(b), "sum")
	})
	b, _ := os.ReadFile(out)
	return string(b)
}

// symbolValue is the value of symbol name in the ELF file bin, for the
// child modes that have no testing.T (0 if there is none).
func symbolValue(bin, name string) uint64 {
	ef, err := elf.Open(bin)
	if err != nil {
		panic(err)
	}
	defer ef.Close()
	syms, _ := ef.Symbols()
	for _, s := range syms {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

// jumpTracerChild is the tracer TestJumpTracerKilled kills: it starts the
// program (16 threads of 2M calls), puts a Jump probe on j_mov, says so
// once the jump is written and the threads run through it (a process
// killed while still parked by Start gets the exec's SIGTRAP), and waits
// to be killed.
func jumpTracerChild() {
	bin := os.Getenv("JUMP_BIN")
	f, err := os.Create(os.Getenv("JUMP_OUT"))
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(bin, "threads", "2000000")
	cmd.Stdout = f
	p, err := Start(cmd)
	if err != nil {
		panic(err)
	}
	addr := symbolValue(bin, "j_mov")
	pr, err := p.Insert(addr, Jump, nil)
	if err != nil {
		panic(err)
	}
	go p.Run(context.Background())
	m, _ := memio.OpenProcess(p.Pid())
	b := make([]byte, 1)
	for {
		if _, err := m.ReadAt(b, int64(addr)); err == nil && b[0] == 0xe9 && pr.Hits() > 1000 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("patched %d\n", p.Pid())
	select {}
}

// A jump over a region of three instructions (push rbp; mov rbp,rsp; lea),
// proved from the function's code: 16 threads counted exactly, the
// program's result unchanged, and ReadAt shows the original bytes under
// the jump.
func TestJumpRegion(t *testing.T) {
	const n = 100000
	bin := buildJump(t)
	r, prs := jumpRun(t, "push", n, "j_push")
	addr := symbols(t, bin, "j_push")["j_push"]
	done := runAsync(r.p, context.Background())
	patched(t, r.p.Pid(), addr)
	b := make([]byte, 8)
	_, err := r.p.ReadAt(b, addr)
	require.NoError(t, err)
	assert.Equal(t, fileBytes(t, bin, addr, 8), b, "ReadAt shows the bytes the jump replaced")
	r.exited(t, <-done)
	assert.Equal(t, fmt.Sprintf("ready\nsum %d\n", 16*n), r.out.String())
	assert.Equal(t, uint64(16*n), prs[0].Hits())
}

// A loop branches to byte 2 of the region a jump at j_into would replace:
// Jump is refused with the reason, Auto keeps a trap probe and says why,
// and the count is exact.
func TestJumpRegionBranchInto(t *testing.T) {
	const n = 700
	bin := buildJump(t)
	r := startProgram(t, coreTracer(t), bin, []string{"into", strconv.Itoa(n)})
	addr := symbols(t, bin, "j_into")["j_into"]
	_, err := r.p.Insert(addr, Jump, nil)
	var re *RefusedError
	require.ErrorAs(t, err, &re)
	assert.Contains(t, re.Reason, fmt.Sprintf("%#x", addr+2), "the reason names the byte branched to")
	pr, err := r.p.Insert(addr, Auto, nil)
	require.NoError(t, err)
	assert.NotEqual(t, Jump, pr.Strategy)
	assert.Contains(t, pr.NoJump, fmt.Sprintf("%#x", addr+2))
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, "sum 8400\n", r.out.String())
	assert.Equal(t, uint64(n), pr.Hits())
}

// The jump over a region is written and taken out again and again while
// 16 threads run through the region: each time, threads the world stop
// caught at its interior boundaries (+1, +4) are moved into the pad, and
// out again at the removal; none runs the jump's tail as code, so the
// result is right.
func TestJumpRegionPatchWhileRunning(t *testing.T) {
	const n = 20000000
	bin := buildJump(t)
	tr := coreTracer(t)
	r := startProgram(t, tr, bin, []string{"push", strconv.Itoa(n)})
	addr := symbols(t, bin, "j_push")["j_push"]
	done := runAsync(r.p, context.Background())
	waitFor(t, 5*time.Second, "ready", func() bool { return strings.Contains(r.out.String(), "ready") })
	var total uint64
	moved := func() (n int) {
		tr.do(func() error { n = tr.padEntries + tr.slotExits; return nil })
		return n
	}
	for k := 0; k < 30 && moved() < 10; k++ {
		pr, err := r.p.Insert(addr, Jump, nil)
		require.NoError(t, err)
		patched(t, r.p.Pid(), addr)
		time.Sleep(2 * time.Millisecond)
		require.NoError(t, r.p.Remove(pr), "cycle %d", k)
		total += pr.Hits()
	}
	t.Logf("threads moved into or out of the pad: %d; hits %d", moved(), total)
	assert.Positive(t, moved(), "no thread was ever caught inside the region")
	assert.Positive(t, total)
	res := waitRun(t, done)
	r.exited(t, res)
	assert.Equal(t, fmt.Sprintf("ready\nsum %d\n", 16*n), r.out.String())
}

//go:embed testdata/gojump/main.go
var goJumpSrc string

// goJumpTarget builds testdata/gojump and returns it, its output untraced
// with argument 1500, and the address of main.probed past its stack check.
func goJumpTarget(t *testing.T) (bin string, want []byte, addr uint64) {
	bin = testprog.Go(t, "gojump", goJumpSrc)
	want, err := exec.Command(bin, "1500").Output()
	require.NoError(t, err)
	f, err := symtab.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	fn, err := f.LookupFunc("main.probed")
	require.NoError(t, err)
	addr = fn.Addr + f.StackCheckSkip(fn)
	require.NotEqual(t, fn.Addr, addr, "the stack check is skipped")
	return bin, want, addr
}

// A Go program: 8 goroutines call a function whose entry (past its stack
// check: push rbp; mov rbp,rsp; sub rsp) a jump replaces, recursively to
// depth 300 so that stacks grow and move, with GOGC=1 and async
// preemption signals at work; a nil dereference in it is recovered. The
// count equals the program's own, and its output is unchanged.
func TestJumpGo(t *testing.T) {
	bin, want, addr := goJumpTarget(t)
	r := startProgram(t, coreTracer(t), bin, []string{"1500"})
	pr, err := r.p.Insert(addr, Auto, nil)
	require.NoError(t, err)
	require.Equal(t, Jump, pr.Strategy, pr.NoJump)
	r.exited(t, waitRun(t, runAsync(r.p, context.Background())))
	assert.Equal(t, string(want), r.out.String())
	var sum, calls int64
	var rec bool
	_, err = fmt.Sscanf(r.out.String(), "sum %d recovered %v calls %d", &sum, &rec, &calls)
	require.NoError(t, err)
	assert.True(t, rec)
	assert.Equal(t, uint64(calls), pr.Hits())
}

// ITIMER_PROF at 10 kHz whose handler calls the probed function while the
// main loop does too: signals land in the pad all the time, and every
// call is counted once.
func TestJumpProfSignals(t *testing.T) {
	const n = 20000000
	r, prs := jumpRun(t, "prof", n, "j_push")
	r.exited(t, waitRun(t, runAsync(r.p, context.Background())))
	var ok int
	var calls uint64
	_, err := fmt.Sscanf(r.out.String(), "ok %d calls %d", &ok, &calls)
	require.NoError(t, err, r.out.String())
	assert.Equal(t, 1, ok)
	assert.Greater(t, calls, uint64(n), "the handler ran")
	assert.Equal(t, calls, prs[0].Hits())
}
