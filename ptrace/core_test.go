package ptrace

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// The tests of the event core: situations in which a tracer must neither
// corrupt the tracee nor freeze. Each runs testdata/core.c in one mode and
// asserts its exact output and hit counts. Each uses a Tracer of its own, so
// that a tracer frozen by one test cannot freeze the next, and bounds every
// wait so that a freeze fails the test instead of hanging the suite.

// hangLimit is how long a Run may take before the test calls it a freeze;
// every program here ends within a few seconds when traced correctly.
const hangLimit = 20 * time.Second

// ccBuilds holds the programs buildC compiled, by name.
var ccBuilds sync.Map

type ccBuild struct {
	once sync.Once
	path string
	err  error
}

// buildC compiles a test program (or library) named name with cc and
// args (the sources among them), once per test binary, in a directory of
// its own whose path has no symbolic link (a library is found in
// /proc/PID/maps by it).
func buildC(t testing.TB, name string, args ...string) string {
	v, _ := ccBuilds.LoadOrStore(name, &ccBuild{})
	b := v.(*ccBuild)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "onetrap-"+name)
		if err == nil {
			dir, err = filepath.EvalSymlinks(dir)
		}
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, name)
		full := append(append([]string{}, args...), "-o", b.path)
		if out, err := exec.Command("cc", full...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("cc %v: %v\n%s", full, err, out)
		}
	})
	require.NoError(t, b.err)
	return b.path
}

// buildCore compiles testdata/core.c and the library its dlopen mode loads.
func buildCore(t testing.TB) (bin, lib string) {
	bin = buildC(t, "core", "-O1", "-pthread", "-no-pie", "testdata/core.c", "-ldl")
	lib = buildC(t, "libcore.so", "-O1", "-shared", "-fPIC", "testdata/corelib.c")
	return bin, lib
}

// within runs f and reports whether it returned within d; a frozen f is
// left behind (the test fails, the suite goes on).
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		f()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// coreTracer returns a Tracer of the test's own, closed at its end.
func coreTracer(t *testing.T) *Tracer {
	tr, err := NewTracer()
	require.NoError(t, err)
	t.Cleanup(func() {
		if !within(5*time.Second, func() { tr.Close() }) {
			t.Error("Tracer.Close did not return within 5s")
		}
	})
	return tr
}

// syncBuffer collects a program's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type coreRun struct {
	cmd         *exec.Cmd
	p           *Process
	out, errOut *syncBuffer
}

// coreStart starts the core program in a mode under tr, stopped before its
// first instruction. The program is killed when the test ends, before the
// tracer is closed, so that a frozen tracer is woken by its exit.
func coreStart(t *testing.T, tr *Tracer, args []string, opts ...Option) *coreRun {
	bin, _ := buildCore(t)
	return startProgram(t, tr, bin, args, opts...)
}

// startProgram starts bin with args under tr as coreStart does.
func startProgram(t *testing.T, tr *Tracer, bin string, args []string, opts ...Option) *coreRun {
	r := &coreRun{cmd: exec.Command(bin, args...), out: &syncBuffer{}, errOut: &syncBuffer{}}
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.errOut
	var err error
	r.p, err = tr.Start(r.cmd, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		if !within(5*time.Second, func() { r.p.Detach() }) {
			t.Error("Detach at cleanup did not return within 5s")
		}
	})
	return r
}

// insert puts a probe at addr that counts its hits per thread, and checks
// that the engine kept the strategy asked for.
func insert(t *testing.T, p *Process, addr uint64, s Strategy, counts map[int]int) *Probe {
	t.Helper()
	pr, err := p.Insert(addr, s, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
		if counts != nil {
			counts[tid]++
		}
	})
	require.NoError(t, err)
	if s != Auto {
		require.Equal(t, s, pr.Strategy, "%v at %#x", pr.Insn, addr)
	}
	return pr
}

// runAsync runs p in the background; the result arrives on the channel.
func runAsync(p *Process, ctx context.Context) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		exit, err := p.Run(ctx)
		done <- runResult{exit, err}
	}()
	return done
}

// cancelWithin cancels a Run and asserts that it returns (detached) within
// a second; it fails the test at once when Run has not returned in five.
func cancelWithin(t *testing.T, cancel context.CancelFunc, done <-chan runResult) runResult {
	t.Helper()
	start := time.Now()
	cancel()
	select {
	case res := <-done:
		t.Logf("Run returned %v after the cancel", time.Since(start))
		assert.Less(t, time.Since(start), time.Second, "detach after cancel")
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of the cancel")
	}
	return runResult{}
}

// waitFor polls cond every millisecond until it holds, failing the test
// after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// exited asserts that a Run ended with the program's exit status 0,
// showing the program's output when not.
func (r *coreRun) exited(t *testing.T, res runResult) {
	t.Helper()
	require.NoError(t, res.err, "stdout:\n%s\nstderr:\n%s", r.out, r.errOut)
	require.Equal(t, &Exit{}, res.exit, "stdout:\n%s\nstderr:\n%s", r.out, r.errOut)
}

// stderrLines returns the fields of the lines of s that start with prefix,
// e.g. "tid 123 f 5 h 6".
func stderrLines(s, prefix string) [][]string {
	var out [][]string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, strings.Fields(l))
		}
	}
	return out
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// Scenario 1 of the event core: a handler on the main thread inserts the
// process's first probe that needs the XOL area (so the engine stops the
// other threads to map it) while four workers hit an emulated probe in a
// loop, so that other hits are waiting. Every thread must go on with its
// own registers: the workers check their tid, a canary on their stack and
// their stack pointer after every call; the handler checks the registers
// it was given are unchanged by its Insert. Then the same with Remove and
// with Detach called from the handler while the workers hit.
func TestCoreHandlerInsertsXOLProbe(t *testing.T) {
	for _, c := range []struct {
		name   string
		action string
		strat  Strategy
	}{
		{"insert Boost", "insert", Boost},
		{"insert OutOfLine", "insert", OutOfLine},
		{"remove", "remove", Boost},
		{"detach", "detach", Boost},
	} {
		t.Run(c.name, func(t *testing.T) { testHandlerInsertsXOL(t, c.action, c.strat) })
	}
}

func testHandlerInsertsXOL(t *testing.T, action string, strat Strategy) {
	const workers, iters = 4, 3000
	bin, _ := buildCore(t)
	sym := symbols(t, bin, "c_f", "c_g", "c_h")
	tr := coreTracer(t)
	r := coreStart(t, tr, []string{"threads", fmt.Sprint(workers), fmt.Sprint(iters)})
	fCounts, hCounts := map[int]int{}, map[int]int{}
	f := insert(t, r.p, sym["c_f"], Emulate, fCounts)
	var h *Probe
	var handlerErrs []error
	regsChanged, gcalls := 0, 0
	g, err := r.p.Insert(sym["c_g"], Emulate, func(tid int, pr *Probe, rg *regs.Regs, _ memio.Memory) {
		before := *rg
		gcalls++
		var err error
		switch {
		case gcalls == 1:
			h, err = r.p.Insert(sym["c_h"], strat, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) { hCounts[tid]++ })
		case gcalls == 2 && action == "remove":
			err = errors.Join(r.p.Remove(f), r.p.Remove(h))
		case gcalls == 2 && action == "detach":
			err = r.p.Detach()
		}
		if err != nil {
			handlerErrs = append(handlerErrs, fmt.Errorf("c_g call %d: %w", gcalls, err))
		}
		// The hit's registers are this thread's, before and after.
		if *rg != before || rg.RIP != pr.Addr || rg.GPR[regs.RDI] != uint64(gcalls-1) || tid != r.p.Pid() {
			regsChanged++
		}
	})
	require.NoError(t, err)

	res := runBounded(t, r.p, runCtx(t), hangLimit, "threads "+action)
	if action == "detach" {
		require.ErrorContains(t, res.err, "detached", "exit %v, stdout:\n%s\nstderr:\n%s", res.exit, r.out, r.errOut)
		waitBounded(t, r.cmd, 10*time.Second, "the program detached from a handler")
	} else {
		r.exited(t, res)
	}
	t.Logf("stderr:\n%s", r.errOut.String())
	assert.Empty(t, handlerErrs)
	assert.Zero(t, regsChanged, "the handler's registers changed under its own Insert/Remove")
	assert.Equal(t, fmt.Sprintf("workers %d f %d ok\n", workers, workers*iters), r.out.String())
	require.NotNil(t, h, "the probe inserted from the handler")
	assert.Equal(t, strat, h.Strategy)

	// The per-thread account against the hits, and the snapshots the main
	// thread took around its second call to c_g (whose handler removed or
	// detached): the hits stopped in between.
	threads := stderrLines(r.errOut.String(), "tid ")
	require.Len(t, threads, workers)
	g1 := stderrLines(r.errOut.String(), "g1 ")
	require.Len(t, g1, 1)
	fLo, fHi, hLo, hHi := atoi(t, g1[0][2]), atoi(t, g1[0][3]), atoi(t, g1[0][5]), atoi(t, g1[0][6])
	switch action {
	case "insert":
		assert.Equal(t, uint64(3), g.Hits())
		hTotal := 0
		for _, l := range threads {
			tid, fn, hn := atoi(t, l[1]), atoi(t, l[3]), atoi(t, l[5])
			assert.Equal(t, fn, fCounts[tid], "c_f hits of thread %d", tid)
			assert.Equal(t, hn, hCounts[tid], "c_h hits of thread %d", tid)
			hTotal += hn
		}
		assert.Equal(t, uint64(workers*iters), f.Hits())
		assert.Equal(t, uint64(hTotal), h.Hits())
		assert.NotZero(t, hTotal, "the workers called c_h after the insert")
	default:
		// A call in flight at a snapshot may have hit before the removal.
		assert.GreaterOrEqual(t, f.Hits(), uint64(fLo))
		assert.LessOrEqual(t, f.Hits(), uint64(fHi+workers))
		assert.GreaterOrEqual(t, h.Hits(), uint64(hLo))
		assert.LessOrEqual(t, h.Hits(), uint64(hHi+workers))
		if action == "detach" {
			assert.Equal(t, 2, gcalls, "no hit after the detach")
		} else {
			assert.Equal(t, 3, gcalls)
			assert.Len(t, r.p.Probes(), 1, "only c_g's probe is left")
		}
	}
}

// loadBias returns where the ELF file at path is loaded in pid, from the
// mapping of its first page, or 0 when it is not mapped. It is called from
// handlers, so it returns errors rather than failing the test.
func loadBias(pid int, path string) (uint64, error) {
	ms, err := Maps(pid)
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		if m.Path == path && m.Offset == 0 {
			f, err := elf.Open(path)
			if err != nil {
				return 0, err
			}
			defer f.Close()
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_LOAD {
					return m.Start - prog.Vaddr&^0xfff, nil
				}
			}
			return 0, fmt.Errorf("%s: no PT_LOAD", path)
		}
	}
	return 0, nil
}

// Scenario 1 as the tracer meets it: LIB: probes inserted from the handler
// on the loader's _dl_debug_state (the first of them maps the XOL area),
// removed when the loader announces the library's removal, while a worker
// thread hits an emulated probe. The main thread dlopens, calls and
// dlcloses the library 1,000 times.
func TestCoreLibraryProbesFromLoaderHook(t *testing.T) {
	const loads = 1000
	bin, lib := buildCore(t)
	libFn := symbols(t, lib, "lib_fn")["lib_fn"]
	tr := coreTracer(t)
	r := coreStart(t, tr, []string{"dlopen", lib, fmt.Sprint(loads)})
	fCounts := map[int]int{}
	f := insert(t, r.p, symbols(t, bin, "c_f")["c_f"], Emulate, fCounts)

	// The loader is mapped by the kernel at the exec, before the program's
	// first instruction.
	var ld string
	ms, err := Maps(r.p.Pid())
	require.NoError(t, err)
	for _, m := range ms {
		if strings.HasPrefix(filepath.Base(m.Path), "ld-linux") {
			ld = m.Path
		}
	}
	require.NotEmpty(t, ld, "the loader's mapping")
	ldBias, err := loadBias(r.p.Pid(), ld)
	require.NoError(t, err)
	require.NotZero(t, ldBias)
	ldSym := symbols(t, ld, "_dl_debug_state", "_r_debug")
	rState := int64(ldBias + ldSym["_r_debug"] + 24) // struct r_debug's r_state
	const rtConsistent, rtDelete = 0, 2

	var libProbe *Probe
	var handlerErrs []error
	inserted, removed := 0, 0
	var libHits uint64
	_, err = r.p.Insert(ldBias+ldSym["_dl_debug_state"], Auto, func(tid int, _ *Probe, _ *regs.Regs, m memio.Memory) {
		var b [4]byte
		if _, err := m.ReadAt(b[:], rState); err != nil {
			handlerErrs = append(handlerErrs, err)
			return
		}
		switch state := binary.LittleEndian.Uint32(b[:]); {
		case state == rtConsistent && libProbe == nil:
			bias, err := loadBias(r.p.Pid(), lib)
			if err != nil || bias == 0 {
				if err != nil {
					handlerErrs = append(handlerErrs, err)
				}
				return // bias 0: the consistent state after the unload
			}
			pr, err := r.p.Insert(bias+libFn, Boost, nil)
			if err != nil {
				handlerErrs = append(handlerErrs, fmt.Errorf("insert %d: %w", inserted, err))
				return
			}
			libProbe = pr
			inserted++
		case state == rtDelete && libProbe != nil:
			libHits += libProbe.Hits()
			if err := r.p.Remove(libProbe); err != nil {
				handlerErrs = append(handlerErrs, fmt.Errorf("remove %d: %w", removed, err))
			}
			libProbe = nil
			removed++
		}
	})
	require.NoError(t, err)

	r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "dlopen"))
	require.Empty(t, handlerErrs)
	assert.Equal(t, fmt.Sprintf("loads %d sum %d worker ok\n", loads, loads*(loads-1)/2+7*loads), r.out.String())
	assert.Equal(t, loads, inserted)
	assert.Equal(t, loads, removed)
	assert.Equal(t, uint64(loads), libHits, "one call of lib_fn per load")
	var fn int
	_, err = fmt.Sscanf(r.errOut.String(), "f %d", &fn)
	require.NoError(t, err, "stderr %q", r.errOut.String())
	assert.Equal(t, uint64(fn), f.Hits(), "the worker's calls")
}

// Scenario 2: thread A reads from a pipe through a probed syscall
// instruction, stepped out of line or in place, and blocks there; thread B
// hits a probe and then writes the byte A waits for. B must be served while
// A's step is in its system call, five rounds.
func TestCoreBlockingSyscallAtProbe(t *testing.T) {
	for _, c := range []struct {
		name  string
		strat Strategy
		opts  []Option
	}{
		{"OutOfLine", OutOfLine, nil},
		{"SingleStep", SingleStep, nil},
		{"SingleStep NoXOL", SingleStep, []Option{NoXOL()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			const rounds = 5
			bin, _ := buildCore(t)
			sym := symbols(t, bin, "c_sys", "c_b")
			r := coreStart(t, coreTracer(t), []string{"pipe", fmt.Sprint(rounds), "0"}, c.opts...)
			sys := insert(t, r.p, sym["c_sys"], c.strat, nil)
			b := insert(t, r.p, sym["c_b"], Emulate, nil)
			r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "pipe"))
			assert.Equal(t, fmt.Sprintf("read %d of %d\n", rounds, rounds), r.out.String())
			assert.Equal(t, uint64(rounds), sys.Hits())
			assert.Equal(t, uint64(rounds), b.Hits())
		})
	}
}

// Scenario 2, cancelled: while A is blocked in the probed read (B writes
// only 1.5 s later), cancelling Run detaches within a second; the program
// then finishes on its own, untraced, with its probes gone (B's call to
// the probed c_b would otherwise die of SIGTRAP).
func TestCoreCancelWhileBlockedInProbedSyscall(t *testing.T) {
	for _, strat := range []Strategy{OutOfLine, SingleStep} {
		t.Run(strat.String(), func(t *testing.T) {
			bin, _ := buildCore(t)
			sym := symbols(t, bin, "c_sys", "c_b")
			r := coreStart(t, coreTracer(t), []string{"pipe", "1", "1500"})
			sys := insert(t, r.p, sym["c_sys"], strat, nil)
			b := insert(t, r.p, sym["c_b"], Emulate, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runAsync(r.p, ctx)
			waitFor(t, 5*time.Second, "the hit on the read", func() bool { return sys.Hits() == 1 })
			time.Sleep(100 * time.Millisecond) // into the read
			res := cancelWithin(t, cancel, done)
			assert.ErrorIs(t, res.err, context.Canceled)
			assert.Zero(t, b.Hits(), "B has not called c_b yet")
			waitBounded(t, r.cmd, 10*time.Second, "the detached program")
			assert.Equal(t, "read 1 of 1\n", r.out.String())
		})
	}
}

// Scenario 3: hits in vfork children (one exits, one execs), with every
// stepping strategy: a SingleStep hit stops the world, and the parent
// waiting for its vfork child cannot be stopped.
func TestCoreVforkChildHits(t *testing.T) {
	for _, strat := range []Strategy{SingleStep, OutOfLine, Emulate} {
		t.Run(strat.String(), func(t *testing.T) {
			bin, _ := buildCore(t)
			r := coreStart(t, coreTracer(t), []string{"vfork"})
			f := insert(t, r.p, symbols(t, bin, "c_f")["c_f"], strat, nil)
			r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "vfork"))
			assert.Equal(t, "vfork child 42\nvfork exec child 0\nsum 6\n", r.out.String())
			assert.Equal(t, uint64(5), f.Hits(), "two in the parent, three in the vfork children")
		})
	}
}

// Scenario 3: SingleStep hits in a worker while the main thread is inside
// posix_spawn (a vfork-like clone) 21 times, the last child sleeping 0.3 s.
func TestCoreSingleStepDuringPosixSpawn(t *testing.T) {
	bin, _ := buildCore(t)
	r := coreStart(t, coreTracer(t), []string{"spawn", "20"})
	f := insert(t, r.p, symbols(t, bin, "c_f")["c_f"], SingleStep, nil)
	r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "spawn"))
	assert.Equal(t, "spawned 21 failed 0\n", r.out.String())
	var n int
	_, err := fmt.Sscanf(r.errOut.String(), "f %d", &n)
	require.NoError(t, err, "stderr %q", r.errOut.String())
	assert.Equal(t, uint64(n), f.Hits())
}

// Scenario 3: cancelling Run while a vfork child sleeps before its exec
// (its parent waits for it) detaches within a second and leaves no INT3:
// the parent's 1,000 later calls of the probed function run untraced.
func TestCoreCancelDuringVfork(t *testing.T) {
	bin, _ := buildCore(t)
	addr := symbols(t, bin, "c_f")["c_f"]
	for _, shared := range []bool{false, true} {
		t.Run(map[bool]string{false: "own tracer", true: "shared tracer"}[shared], func(t *testing.T) {
			var r *coreRun
			if shared {
				r = coreStart(t, coreTracer(t), []string{"vforksleep", "2000"})
			} else {
				r = &coreRun{cmd: exec.Command(bin, "vforksleep", "2000"), out: &syncBuffer{}, errOut: &syncBuffer{}}
				r.cmd.Stdout, r.cmd.Stderr = r.out, r.errOut
				var err error
				r.p, err = Start(r.cmd)
				require.NoError(t, err)
				t.Cleanup(func() { r.cmd.Process.Kill() })
			}
			f := insert(t, r.p, addr, SingleStep, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runAsync(r.p, ctx)
			waitFor(t, 5*time.Second, "the hit before the vfork", func() bool { return f.Hits() == 1 })
			time.Sleep(300 * time.Millisecond) // the child is in its sleep
			var res runResult
			if shared {
				// The parent waiting for its child can be let go only
				// when the child execs: Run returns then, not before
				// (a wait for the program meanwhile would take the
				// parent's ptrace stop), and not much after.
				start := time.Now()
				cancel()
				res = waitRun(t, done)
				assert.Less(t, time.Since(start), 2500*time.Millisecond, "Run returns when the vfork ends")
			} else {
				res = cancelWithin(t, cancel, done)
			}
			assert.ErrorIs(t, res.err, context.Canceled)

			if !shared {
				// The parent still waits for its child: its text is
				// the file's again.
				m, err := memio.OpenProcess(r.p.Pid())
				require.NoError(t, err)
				got := make([]byte, 8)
				_, err = m.ReadAt(got, int64(addr))
				m.Close()
				require.NoError(t, err)
				assert.Equal(t, fileText(t, bin)(addr, 8), got, "the text after the detach")
			}
			waitBounded(t, r.cmd, 10*time.Second, "the detached program")
			assert.Equal(t, "child 0 sum 500500\n", r.out.String())
		})
	}
}

// Scenario 4: a child made by clone(CLONE_VM|SIGCHLD), a process of its own
// that shares the parent's memory, hits c_q while the parent hits c_p; the
// child exits (or execs) halfway through the parent's calls. Its hits are
// served, and its end leaves the parent's probes and XOL area alone.
func TestCoreCloneVMChild(t *testing.T) {
	const n = 10000
	for _, mode := range []string{"clonevm", "clonevmexec"} {
		t.Run(mode, func(t *testing.T) {
			bin, _ := buildCore(t)
			sym := symbols(t, bin, "c_p", "c_q")
			r := coreStart(t, coreTracer(t), []string{mode, fmt.Sprint(n)})
			p := insert(t, r.p, sym["c_p"], Emulate, nil)
			q := insert(t, r.p, sym["c_q"], Boost, nil)
			r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, mode))
			sumP := n*(n-1)/2 + 4*n
			sumQ := n*(n-1)/2 + 5*n + n + 5
			assert.Equal(t, fmt.Sprintf("p %d q %d child 0\n", sumP, sumQ), r.out.String())
			assert.Equal(t, uint64(n), p.Hits(), "the parent's calls")
			assert.Equal(t, uint64(n+1), q.Hits(), "the child's calls and the parent's one")
		})
	}
}

// innerEnv marks the test binary re-executed to run one test alone.
const innerEnv = "ONETRAP_CORE_INNER"

// Scenario 5: the tracee kills every process that shares its parent (the
// tracer's wake-up sentinel among them), then sleeps for 30 s. Cancelling
// Run must still detach within a second, leaving the program alive and
// untraced. It runs in a test process of its own, whose other children are
// the only ones the tracee can kill.
func TestCoreSentinelKilledByTracee(t *testing.T) {
	if os.Getenv(innerEnv) == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCoreSentinelKilledByTracee$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), innerEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("inner test:\n%s", out)
		require.NoError(t, err)
		require.Contains(t, string(out), "--- PASS: TestCoreSentinelKilledByTracee")
		return
	}
	bin, _ := buildCore(t)
	r := coreStart(t, coreTracer(t), []string{"killsibs", "30000"})
	f := insert(t, r.p, symbols(t, bin, "c_f")["c_f"], Emulate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(r.p, ctx)
	waitFor(t, 10*time.Second, "the killing", func() bool { return strings.Contains(r.out.String(), "killed") })
	require.Equal(t, "killed some\n", r.out.String(), "the tracee killed its siblings")
	require.Equal(t, uint64(1), f.Hits())
	time.Sleep(100 * time.Millisecond)
	res := cancelWithin(t, cancel, done)
	assert.ErrorIs(t, res.err, context.Canceled)

	// Detached and still asleep.
	require.NoError(t, unix.Kill(r.p.Pid(), 0))
	assert.NotContains(t, procState(t, r.p.Pid()), "zombie")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.p.Pid()))
	require.NoError(t, err)
	assert.Contains(t, string(st), "TracerPid:\t0")
	r.cmd.Process.Kill()
	assert.True(t, within(5*time.Second, func() { r.cmd.Wait() }), "the killed program is reaped by its parent")
}

// anonExec counts the anonymous executable mappings of pid: the XOL areas.
func anonExec(pid int) (int, error) {
	ms, err := Maps(pid)
	n := 0
	for _, m := range ms {
		if m.Path == "" && strings.Contains(m.Perms, "x") {
			n++
		}
	}
	return n, err
}

// Also fix: XOL slots are reused. 10,000 Insert/Remove cycles of one Boost
// probe on a running process (which calls the probed function every
// millisecond) leave no XOL mapping beyond those the first insert made.
func TestCoreXOLSlotsReused(t *testing.T) {
	const cycles = 10000
	bin, _ := buildCore(t)
	sym := symbols(t, bin, "c_f", "c_h")
	r := coreStart(t, coreTracer(t), []string{"loop", "1"})
	insert(t, r.p, sym["c_f"], Emulate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(r.p, ctx)

	var base uint64
	var areas int
	var mapsErr error
	ok := within(hangLimit, func() {
		for i := 0; i < cycles; i++ {
			pr, err := r.p.Insert(sym["c_h"], Boost, nil)
			if !assert.NoError(t, err, "insert %d", i) {
				return
			}
			if i == 0 {
				base, _ = r.p.XOL()
				areas, mapsErr = anonExec(r.p.Pid())
			}
			if !assert.NoError(t, r.p.Remove(pr), "remove %d", i) {
				return
			}
		}
	})
	require.True(t, ok, "%d Insert/Remove cycles did not finish within %v", cycles, hangLimit)
	require.NoError(t, mapsErr)
	require.NotZero(t, base, "the first Boost probe mapped the XOL area")
	pr, err := r.p.Insert(sym["c_h"], Boost, nil)
	require.NoError(t, err)
	nowBase, _ := r.p.XOL()
	assert.Equal(t, base, nowBase, "the first area stays")
	now, err := anonExec(r.p.Pid())
	require.NoError(t, err)
	assert.Equal(t, areas, now, "anonymous executable mappings after %d cycles", cycles)
	// The probe still works after the churn.
	waitFor(t, 5*time.Second, "a hit after the cycles", func() bool { return pr.Hits() > 0 })
	res := cancelWithin(t, cancel, done)
	assert.ErrorIs(t, res.err, context.Canceled)
}

// queuedInfo is a siginfo_t as sigqueue(3) fills it.
type queuedInfo struct {
	Signo, Errno, Code int32
	_                  int32
	Pid                int32
	Uid                uint32
	Value              uint64
	_                  [96]byte
}

// Also fix: a signal that arrives while a thread is stepped is delivered
// with its own siginfo, not the tracer's. The handler on c_h queues a
// SIGUSR2 to the hitting thread as the program's own sigqueue would (code
// SI_QUEUE, the program's pid, a value: the hit's number), so it is pending
// during every step; another thread of the program queues 200 SIGUSR1s with
// pthread_sigqueue, at any point. The program's SA_SIGINFO handler checks
// code, sender and value of each.
func TestCoreHeldSignalKeepsSiginfo(t *testing.T) {
	require.Equal(t, uintptr(128), unsafe.Sizeof(queuedInfo{}))
	// Emulate steps nothing: the signal is never held there.
	for _, strat := range []Strategy{Emulate, Boost, OutOfLine, SingleStep} {
		t.Run(strat.String(), func(t *testing.T) {
			const calls = 300
			bin, _ := buildCore(t)
			r := coreStart(t, coreTracer(t), []string{"sigq", fmt.Sprint(calls)})
			n := 0
			var sendErr error
			pr, err := r.p.Insert(symbols(t, bin, "c_h")["c_h"], strat, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
				n++
				info := queuedInfo{Signo: int32(unix.SIGUSR2), Code: -1 /* SI_QUEUE */, Pid: int32(r.p.Pid()), Uid: uint32(os.Getuid()), Value: uint64(n)}
				_, _, e := unix.Syscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(r.p.Pid()), uintptr(tid), uintptr(unix.SIGUSR2), uintptr(unsafe.Pointer(&info)), 0, 0)
				if e != 0 && sendErr == nil {
					sendErr = e
				}
			})
			require.NoError(t, err)
			require.Equal(t, strat, pr.Strategy)
			r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "sigq"))
			require.NoError(t, sendErr)
			assert.Equal(t, fmt.Sprintf("calls %d tracer %d other 200 bad 0\n", calls, calls), r.out.String())
			assert.Equal(t, uint64(calls), pr.Hits())
		})
	}
}

// Also fix: a SIGTRAP that another thread sends with tgkill (si_code
// SI_TKILL) to a thread sitting one byte into a probed five-byte mov (it
// spins there: the mov's immediate begins with eb fe, a jump to itself) is
// the program's: its handler gets all 50, each at c_mid+1, and none is
// taken for a hit. Only the main thread's 100 calls of c_mid are hits.
func TestCoreSIGTRAPInsideProbedInstruction(t *testing.T) {
	for _, strat := range []Strategy{Emulate, Boost, OutOfLine, SingleStep} {
		t.Run(strat.String(), func(t *testing.T) {
			bin, _ := buildCore(t)
			r := coreStart(t, coreTracer(t), []string{"trapmid", "50", "100"})
			pr := insert(t, r.p, symbols(t, bin, "c_mid")["c_mid"], strat, nil)
			require.Equal(t, 5, pr.Insn.Len)
			r.exited(t, runBounded(t, r.p, runCtx(t), hangLimit, "trapmid"))
			assert.Equal(t, fmt.Sprintf("sigtrap 50 at mid 50 bad 0 direct 100 sum %#x\n", 100*uint64(0x9090feeb)), r.out.String())
			assert.Equal(t, uint64(100), pr.Hits())
		})
	}
}

// Also fix: a shared Tracer, still serving another process, that started a
// child and detached it does not reap it: the caller's cmd.Wait gets the
// exit status. The other process hits a SingleStep probe without pause, so
// that the tracer is mostly waiting for one of its threads when the
// detached child exits.
func TestCoreSharedTracerLeavesDetachedChild(t *testing.T) {
	bin, _ := buildCore(t)
	addr := symbols(t, bin, "c_f")["c_f"]
	tr := coreTracer(t)
	busy := coreStart(t, tr, []string{"loop", "0"})
	insert(t, busy.p, addr, Emulate, nil)
	insert(t, busy.p, symbols(t, bin, "c_h")["c_h"], SingleStep, nil)
	busyCtx, busyCancel := context.WithCancel(context.Background())
	defer busyCancel()
	busyDone := runAsync(busy.p, busyCtx)

	r := coreStart(t, tr, []string{"sleepexit", "300", "7"})
	f := insert(t, r.p, addr, Emulate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(r.p, ctx)
	waitFor(t, 5*time.Second, "the hit", func() bool { return f.Hits() == 1 })
	res := cancelWithin(t, cancel, done)
	assert.ErrorIs(t, res.err, context.Canceled)

	var err error
	require.True(t, within(10*time.Second, func() { err = r.cmd.Wait() }), "cmd.Wait of the detached child")
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the caller's Wait gets the status")
	assert.Equal(t, 7, ee.ExitCode())
	res = cancelWithin(t, busyCancel, busyDone)
	assert.ErrorIs(t, res.err, context.Canceled)
}

// Also fix: errors that say what went wrong. Attaching to a process
// another tracer holds names that tracer (TracerPid); attaching to a
// zombie says zombie; starting an executable file that is no program gives
// ENOEXEC.
func TestCoreClearErrors(t *testing.T) {
	bin, _ := buildCore(t)
	t.Run("traced by another", func(t *testing.T) {
		r := coreStart(t, coreTracer(t), []string{"sleep", "30000"})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := runAsync(r.p, ctx)
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.p.Pid()))
		require.NoError(t, err)
		var tracer string
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "TracerPid:"); ok {
				tracer = strings.TrimSpace(v)
			}
		}
		require.NotEqual(t, "0", tracer)
		var p *Process
		tr := coreTracer(t)
		ok := within(5*time.Second, func() { p, err = tr.Attach(r.p.Pid()) })
		require.True(t, ok, "Attach did not return")
		require.Error(t, err)
		assert.Nil(t, p)
		t.Logf("error: %v", err)
		if !strings.Contains(err.Error(), "TracerPid") {
			assert.Contains(t, err.Error(), tracer, "the error names the tracer")
		}
		cancelWithin(t, cancel, done)
	})
	t.Run("zombie", func(t *testing.T) {
		cmd := exec.Command(bin, "exit")
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Wait() })
		waitFor(t, 5*time.Second, "the zombie", func() bool { return strings.Contains(procState(t, cmd.Process.Pid), "zombie") })
		var err error
		tr := coreTracer(t)
		ok := within(5*time.Second, func() { _, err = tr.Attach(cmd.Process.Pid) })
		require.True(t, ok, "Attach did not return")
		require.Error(t, err)
		t.Logf("error: %v", err)
		assert.Contains(t, err.Error(), "zombie")
	})
	t.Run("ENOEXEC", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "notaprogram")
		require.NoError(t, os.WriteFile(path, []byte("neither ELF nor script\n\x00\x01\x02"), 0o755))
		var err error
		var p *Process
		tr := coreTracer(t)
		ok := within(5*time.Second, func() { p, err = tr.Start(exec.Command(path)) })
		require.True(t, ok, "Start did not return")
		if p != nil {
			p.Detach()
		}
		require.Error(t, err)
		t.Logf("error: %v", err)
		if !errors.Is(err, unix.ENOEXEC) {
			assert.Contains(t, err.Error(), "exec format error")
		}
	})
}

// Also fix: the leader at a hit whose handler is slow, while another
// thread's execve replaces it. The registers the hit would write must not
// land in the new image, which the execing thread starts under the
// leader's tid: it prints and exits 7 only if it starts intact. The
// handler's Insert then needs the XOL area (Emulate maps none before): no
// mmap may be injected into the new image.
func TestCoreExecReplacesLeaderMidHit(t *testing.T) {
	for _, strat := range []Strategy{Emulate, Boost, OutOfLine} {
		t.Run(strat.String(), func(t *testing.T) {
			bin, _ := buildCore(t)
			sym := symbols(t, bin, "c_f", "c_h")
			r := coreStart(t, coreTracer(t), []string{"execrace"})
			leader := r.p.Pid()
			hits := 0
			_, err := r.p.Insert(sym["c_f"], strat, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
				hits++
				if tid == leader {
					// The execve completes meanwhile: the new image's
					// command line shows it.
					for i := 0; i < 500; i++ {
						if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", leader)); strings.Contains(string(b), "exit7") {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
					// An Insert now must not inject into the new
					// image; whether it fails depends on whether
					// the execve got that far.
					r.p.Insert(sym["c_h"], OutOfLine, nil)
				}
			})
			require.NoError(t, err)
			res := runBounded(t, r.p, runCtx(t), hangLimit, "execrace")
			require.NoError(t, res.err)
			assert.Equal(t, &Exit{Code: 7}, res.exit)
			assert.Equal(t, "new image\n", r.out.String())
			assert.Equal(t, 1, hits)
		})
	}
}

// A group-stop that comes while threads are stepped out of line (or run an
// injected call) stops them too: SIGSTOP, sent again and again to four
// workers that hit a probe stepped out of line, stops every thread each
// time until SIGCONT, and the workers finish intact.
func TestCoreGroupStopDuringSteps(t *testing.T) {
	const workers, iters, rounds = 4, 8000, 20
	bin, _ := buildCore(t)
	sym := symbols(t, bin, "c_f")
	r := coreStart(t, coreTracer(t), []string{"threads", fmt.Sprint(workers), fmt.Sprint(iters)})
	f := insert(t, r.p, sym["c_f"], OutOfLine, nil)
	done := runAsync(r.p, context.Background())
	pid := r.p.Pid()
	for k := 0; k < rounds; k++ {
		for f.Hits() < uint64(iters*(k+1)/(rounds+1)) {
			time.Sleep(time.Millisecond)
		}
		// A worker that escaped an earlier group-stop may have finished
		// the work already, while the main thread stayed stopped.
		require.NoError(t, unix.Kill(pid, unix.SIGSTOP), "round %d; stderr:\n%s", k, r.errOut)
		// Stopped means the count stands still, every thread in a stop.
		deadline := time.Now().Add(5 * time.Second)
		n, since := f.Hits(), time.Now()
		for time.Since(since) < 100*time.Millisecond && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			if h := f.Hits(); h != n {
				n, since = h, time.Now()
			}
		}
		require.GreaterOrEqual(t, time.Since(since), 100*time.Millisecond, "round %d: hits go on after SIGSTOP", k)
		// Every thread gets to its stop, a busy one a little later on a
		// loaded machine.
		stopped := func() (bool, string) {
			tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			require.NoError(t, err, "round %d; stderr:\n%s", k, r.errOut)
			for _, task := range tasks {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
				require.NoError(t, err)
				// The state follows the command name in parentheses.
				if st := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))[0]; st != "t" {
					return false, task.Name() + " " + st
				}
			}
			return true, ""
		}
		for ok, _ := stopped(); !ok && time.Now().Before(deadline); ok, _ = stopped() {
			time.Sleep(time.Millisecond)
		}
		if ok, which := stopped(); !ok {
			t.Fatalf("round %d: task %s not stopped\n%s", k, which, dumpTracer(r.p.t))
		}
		assert.Equal(t, n, f.Hits(), "round %d: no hit while stopped", k)
		require.NoError(t, unix.Kill(pid, unix.SIGCONT))
	}
	res := waitRun(t, done)
	r.exited(t, res)
	assert.Contains(t, r.out.String(), fmt.Sprintf("workers %d f %d ok", workers, workers*iters))
	assert.Equal(t, uint64(workers*iters), f.Hits())
}
