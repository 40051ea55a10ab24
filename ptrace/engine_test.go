package ptrace

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

func child(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	return cmd
}

// start runs cmd under the tracer, and makes sure it is gone when the test
// ends however it ends.
func start(t *testing.T, cmd *exec.Cmd) *Process {
	p, err := Start(cmd)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		cmd.Process.Kill()
	})
	return p
}

func untraced(t *testing.T, mode string, env ...string) string {
	out, err := child(mode, env...).Output()
	require.NoError(t, err)
	return string(out)
}

func TestProbeEveryPrologue(t *testing.T) {
	const n = 300
	want := untraced(t, "calls", "N=300")
	for _, strat := range []Strategy{Auto, SingleStep, OutOfLine} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := child("calls", "N=300")
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Stderr = os.Stderr
			p := start(t, cmd)
			probes := map[asmfuncs.Site]*Probe{}
			for s := asmfuncs.Site(0); s < asmfuncs.NumSites; s++ {
				if s == asmfuncs.SiteTrap || s == asmfuncs.SiteUd2 {
					continue
				}
				pr, err := p.Insert(asmfuncs.Addr(s), strat, func(tid int, pr *Probe, r *regs.Regs, m memio.Memory) {
					if r.RIP != pr.Addr {
						panic("rip is not the probe's address")
					}
				})
				require.NoError(t, err, "site %v", s)
				t.Logf("%v at %#x: %v, %v", s, pr.Addr, pr.Insn, pr.Strategy)
				probes[s] = pr
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			exit, err := p.Run(ctx)
			require.NoError(t, err)
			assert.Equal(t, 0, exit.Code)
			assert.Equal(t, want, out.String())
			for s, pr := range probes {
				assert.Equal(t, uint64(n), pr.Hits(), "site %v", s)
			}
			assert.True(t, strings.TrimSpace(want) != "")
		})
	}
}

func runCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A load that faults under emulation runs on the CPU, which raises the
// genuine SIGSEGV at the genuine address: the Go runtime in the tracee turns
// it into a recoverable panic only if the pc is its own code.
func TestFaultReachesTracee(t *testing.T) {
	want := untraced(t, "fault")
	require.Contains(t, want, "recovered: runtime error: invalid memory address")
	for _, strat := range []Strategy{Emulate, OutOfLine, SingleStep, Boost} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := child("fault")
			var out bytes.Buffer
			cmd.Stdout = &out
			p := start(t, cmd)
			pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteDeref), strat, nil)
			require.NoError(t, err)
			exit, err := p.Run(runCtx(t))
			require.NoError(t, err)
			assert.Equal(t, &Exit{}, exit)
			assert.Equal(t, want, out.String())
			assert.Equal(t, uint64(1), pr.Hits())
		})
	}
}

// SIGTRAPs the tracee sends itself reach its handler with probes in place.
// (The Go runtime dies on its own int3 even untraced; the C test covers that.)
func TestOwnSIGTRAPReachesTracee(t *testing.T) {
	cmd := child("trap")
	var out bytes.Buffer
	cmd.Stdout = &out
	p := start(t, cmd)
	pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), Auto, nil)
	require.NoError(t, err)
	exit, err := p.Run(runCtx(t))
	require.NoError(t, err)
	assert.Equal(t, 0, exit.Code)
	assert.Equal(t, "got 2 SIGTRAP\n", out.String())
	assert.Equal(t, uint64(2), pr.Hits())
}

func TestBadInputChangesNothing(t *testing.T) {
	cmd := child("calls", "N=1")
	var out bytes.Buffer
	cmd.Stdout = &out
	p := start(t, cmd)
	m, err := memio.OpenProcess(p.Pid())
	require.NoError(t, err)
	defer m.Close()
	text := func() []byte {
		b := make([]byte, 0x200)
		_, err := m.ReadAt(b, int64(asmfuncs.Addr(asmfuncs.SitePushRBP)&^0xff))
		require.NoError(t, err)
		return b
	}
	before := text()
	cases := []struct {
		name string
		addr uint64
		want string
	}{
		{"unmapped", 0x10, "not mapped"},
		{"data, not executable", uint64(uintptr(unsafe.Pointer(&asmfuncs.Word))), "not executable"},
		{"the program's own int3 (cc)", asmfuncs.Addr(asmfuncs.SiteTrap), "already holds an INT3"},
		{"ud2 (0f 0b), rejected", asmfuncs.Addr(asmfuncs.SiteUd2), "undefined instruction"},
		{"inside push rbp's neighbour mov (48 8b 04 24)", asmfuncs.Addr(asmfuncs.SitePushRBP) + 2, ""},
	}
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP)+1, Emulate, nil)
	require.NoError(t, err, "mov rax,[rsp] after push rbp")
	for _, c := range cases {
		_, err := p.Insert(c.addr, Auto, nil)
		require.Error(t, err, c.name)
		assert.Contains(t, err.Error(), c.want, c.name)
		t.Log(err)
	}
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP)+1, Auto, nil)
	assert.NoError(t, err, "a second probe at the same address")
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP)+1, SingleStep, nil)
	assert.Error(t, err, "a second probe cannot change the strategy")
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SiteCpuid), Emulate, nil)
	assert.ErrorContains(t, err, "cannot be emulated")

	after := text()
	off := asmfuncs.Addr(asmfuncs.SitePushRBP)&0xff + 1
	assert.Equal(t, byte(0xcc), after[off])
	after[off] = before[off]
	assert.Equal(t, before, after, "only the accepted probe's byte changed")
	base, _ := p.XOL()
	assert.Zero(t, base, "no XOL area for emulated probes")

	_, err = p.Run(runCtx(t))
	require.NoError(t, err)
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SiteLea), Auto, nil)
	assert.ErrorContains(t, err, "no longer traced")
	_, err = Attach(p.Pid())
	assert.Error(t, err, "a process that is gone")

	_, err = Start(exec.Command("/nonexistent/program"))
	assert.Error(t, err)
}

// Two probes at one address share one INT3 and both handlers run; Remove
// takes one out, then the other, and the tracee runs on untouched.
func TestTwoProbesOneAddressAndRemove(t *testing.T) {
	want := untraced(t, "calls", "N=200")
	cmd := child("calls", "N=200")
	var out bytes.Buffer
	cmd.Stdout = &out
	p := start(t, cmd)
	addr := asmfuncs.Addr(asmfuncs.SiteSubRSP)
	var a, b int
	pa, err := p.Insert(addr, Auto, func(int, *Probe, *regs.Regs, memio.Memory) { a++ })
	require.NoError(t, err)
	var pb *Probe
	pb, err = p.Insert(addr, Auto, func(_ int, pr *Probe, _ *regs.Regs, _ memio.Memory) {
		b++
		if b == 50 {
			// Remove from inside a handler: runs inline on the tracer thread.
			if err := p.Remove(pa); err != nil {
				panic(err)
			}
		}
		if b == 100 {
			if err := p.Remove(pr); err != nil {
				panic(err)
			}
		}
	})
	require.NoError(t, err)
	exit, err := p.Run(runCtx(t))
	require.NoError(t, err)
	assert.Equal(t, 0, exit.Code)
	assert.Equal(t, want, out.String())
	assert.Equal(t, 50, a)
	assert.Equal(t, 100, b)
	assert.Equal(t, uint64(50), pa.Hits())
	assert.Equal(t, uint64(100), pb.Hits())
	assert.Error(t, p.Remove(pa))
}

// Attach to a running process, probe it with every strategy, cancel the
// context: the process is left running with its text as in the file and no
// XOL area.
func TestAttachCancelDetach(t *testing.T) {
	cmd := child("sleep")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line := make([]byte, 6)
	_, err = io.ReadFull(stdout, line)
	require.NoError(t, err)

	p, err := Attach(cmd.Process.Pid)
	require.NoError(t, err)
	var probes []*Probe
	for s, strat := range map[asmfuncs.Site]Strategy{
		asmfuncs.SitePushRBP: Emulate, asmfuncs.SiteRipLoad: OutOfLine,
		asmfuncs.SiteCpuid: OutOfLine, asmfuncs.SiteLea: SingleStep, asmfuncs.SiteCallLeaf: OutOfLine,
	} {
		pr, err := p.Insert(asmfuncs.Addr(s), strat, nil)
		require.NoError(t, err, "%v", s)
		probes = append(probes, pr)
	}
	base, size := p.XOL()
	require.NotZero(t, base)
	require.True(t, hasMapping(t, cmd.Process.Pid, base, base+size))

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Wait for hits while the tracee mostly sleeps in nanosleep.
		for probes[0].Hits() < 20 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	exit, err := p.Run(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Nil(t, exit)
	assert.Less(t, time.Since(start), 10*time.Second)
	for _, pr := range probes {
		// The loop calls each once per round; the cancel lands mid-round.
		assert.GreaterOrEqual(t, pr.Hits(), uint64(19), "%v", pr.Insn)
	}

	// The text equals the file's, the XOL area is gone, the process runs.
	assert.False(t, hasMapping(t, cmd.Process.Pid, base, base+size))
	file := fileText(t, os.Args[0])
	m, err := memio.OpenProcess(cmd.Process.Pid)
	require.NoError(t, err)
	defer m.Close()
	for s := asmfuncs.Site(0); s < asmfuncs.NumSites; s++ {
		got := make([]byte, 16)
		_, err := m.ReadAt(got, int64(asmfuncs.Addr(s)))
		require.NoError(t, err)
		assert.Equal(t, file(asmfuncs.Addr(s), 16), got, "%v", s)
	}
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, unix.Kill(cmd.Process.Pid, 0))
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	require.NoError(t, err)
	assert.Contains(t, string(st), "TracerPid:\t0")
}

func hasMapping(t *testing.T, pid int, lo, hi uint64) bool {
	ms, err := Maps(pid)
	require.NoError(t, err)
	for _, m := range ms {
		if m.Start < hi && m.End > lo {
			return true
		}
	}
	return false
}

// fileText returns a reader of an executable's bytes by virtual address.
func fileText(t *testing.T, path string) func(addr uint64, n int) []byte {
	f, err := elf.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return func(addr uint64, n int) []byte {
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_LOAD && addr >= prog.Vaddr && addr+uint64(n) <= prog.Vaddr+prog.Filesz {
				b := make([]byte, n)
				_, err := prog.ReadAt(b, int64(addr-prog.Vaddr))
				require.NoError(t, err)
				return b
			}
		}
		t.Fatalf("%#x not in %s", addr, path)
		return nil
	}
}

// The hit path allocates nothing: thousands of hits, with every strategy,
// cost fewer allocations in the whole test process than one per hundred
// hits.
func TestHitDoesNotAllocate(t *testing.T) {
	const n = 2000
	for _, strat := range []Strategy{Emulate, OutOfLine, SingleStep, Boost} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := child("calls", fmt.Sprintf("N=%d", n))
			cmd.Stdout = io.Discard
			p := start(t, cmd)
			var probes []*Probe
			for _, s := range []asmfuncs.Site{asmfuncs.SitePushRBP, asmfuncs.SiteSubRSP, asmfuncs.SiteLea, asmfuncs.SiteCallLeaf} {
				st := strat
				if st == Boost && s == asmfuncs.SiteCallLeaf {
					st = Emulate // calls are never boosted
				}
				pr, err := p.Insert(asmfuncs.Addr(s), st, func(int, *Probe, *regs.Regs, memio.Memory) {})
				require.NoError(t, err)
				probes = append(probes, pr)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := p.Run(runCtx(t))
			runtime.ReadMemStats(&after)
			require.NoError(t, err)
			hits := uint64(0)
			for _, pr := range probes {
				hits += pr.Hits()
			}
			require.Equal(t, uint64(4*n), hits)
			allocs := after.Mallocs - before.Mallocs
			t.Logf("%d allocations for %d hits", allocs, hits)
			assert.Less(t, float64(allocs)/float64(hits), 0.01)
		})
	}
}

func osThreads(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	return len(ents)
}

// A tracee killed in the middle of a hit ends Run with the killing signal,
// and the tracer leaves no goroutine and no OS thread behind.
func TestKilledMidHit(t *testing.T) {
	goroutines, threads := runtime.NumGoroutine(), osThreads(t)
	for _, strat := range []Strategy{Emulate, OutOfLine, SingleStep} {
		cmd := child("calls", "N=1000")
		cmd.Stdout = io.Discard
		p := start(t, cmd)
		pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), strat, func(_ int, pr *Probe, _ *regs.Regs, _ memio.Memory) {
			if pr.Hits() == 10 {
				unix.Kill(p.Pid(), unix.SIGKILL)
			}
		})
		require.NoError(t, err)
		exit, err := p.Run(runCtx(t))
		require.NoError(t, err, "%v", strat)
		assert.Equal(t, &Exit{Signal: unix.SIGKILL}, exit, "%v", strat)
		assert.Equal(t, uint64(10), pr.Hits(), "%v", strat)
	}
	// The tracer goroutines end after the processes; give them a moment.
	// The runtime may start one more thread of its own meanwhile (it
	// keeps idle ones), which is why one is allowed; a tracer thread
	// left behind per process would be three.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (runtime.NumGoroutine() > goroutines || osThreads(t) > threads) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "goroutines")
	assert.LessOrEqual(t, osThreads(t), threads+1, "OS threads")
}

// SIGSTOP stops a traced process as it would an untraced one, and SIGCONT
// lets it go on: no hit while it is stopped.
func TestGroupStop(t *testing.T) {
	cmd := child("sleep")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := start(t, cmd)
	pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), Auto, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx)
		done <- err
	}()
	_, err = io.ReadFull(stdout, make([]byte, 6))
	require.NoError(t, err)
	waitHits := func(n uint64) {
		deadline := time.Now().Add(10 * time.Second)
		for pr.Hits() < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		require.GreaterOrEqual(t, pr.Hits(), n)
	}
	waitHits(5)
	require.NoError(t, unix.Kill(p.Pid(), unix.SIGSTOP))
	// A thread at a hit shows "t (tracing stop)" too, so the group-stop is
	// taken as reached once the count has stood still for 50 ms; if a
	// thread escaped it, the count never stands still that long.
	deadline := time.Now().Add(10 * time.Second)
	stopped, since := pr.Hits(), time.Now()
	for time.Since(since) < 50*time.Millisecond && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		if h := pr.Hits(); h != stopped {
			stopped, since = h, time.Now()
		}
	}
	assert.Contains(t, procState(t, p.Pid()), "stop")
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, stopped, pr.Hits(), "no hits while stopped")
	require.NoError(t, unix.Kill(p.Pid(), unix.SIGCONT))
	waitHits(stopped + 5)
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
}

// procState returns the State line of /proc/PID/status.
func procState(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "State:") {
			return l
		}
	}
	return ""
}

// Cancelling the context ends Run promptly while the tracee sleeps in a
// system call that nothing will end, and detaches it: it is untraced and
// still blocked there, its text restored.
func TestCancelWhileTraceeBlocks(t *testing.T) {
	cmd := child("block")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := start(t, cmd)
	pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCpuid), OutOfLine, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Run(ctx)
		done <- err
	}()
	_, err = io.ReadFull(stdout, make([]byte, 6))
	require.NoError(t, err)
	require.Equal(t, uint64(1), pr.Hits())
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	t.Logf("Run returned %v after cancel", time.Since(start))
	assert.Less(t, time.Since(start), time.Second)
	// Detached, it goes back into its read.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(procState(t, p.Pid()), "sleeping") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	assert.Contains(t, procState(t, p.Pid()), "sleeping")
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	require.NoError(t, err)
	assert.Contains(t, string(st), "TracerPid:\t0")
	file := fileText(t, os.Args[0])
	m, err := memio.OpenProcess(p.Pid())
	require.NoError(t, err)
	defer m.Close()
	got := make([]byte, 8)
	_, err = m.ReadAt(got, int64(pr.Addr))
	require.NoError(t, err)
	assert.Equal(t, file(pr.Addr, 8), got)
}

// One tracer serves several processes at once.
func TestOneTracerTwoProcesses(t *testing.T) {
	tr, err := NewTracer()
	require.NoError(t, err)
	defer tr.Close()
	want := untraced(t, "calls", "N=100")
	type run struct {
		p   *Process
		pr  *Probe
		out bytes.Buffer
	}
	runs := make([]*run, 2)
	for i := range runs {
		r := &run{}
		cmd := child("calls", "N=100")
		cmd.Stdout = &r.out
		r.p, err = tr.Start(cmd)
		require.NoError(t, err)
		t.Cleanup(func() { cmd.Process.Kill() })
		r.pr, err = r.p.Insert(asmfuncs.Addr(asmfuncs.SiteCallLeaf), []Strategy{Emulate, OutOfLine}[i], nil)
		require.NoError(t, err)
		runs[i] = r
	}
	errs := make(chan error, 2)
	for _, r := range runs {
		go func() {
			_, err := r.p.Run(runCtx(t))
			errs <- err
		}()
	}
	for range runs {
		require.NoError(t, <-errs)
	}
	for _, r := range runs {
		assert.Equal(t, want, r.out.String())
		assert.Equal(t, uint64(100), r.pr.Hits())
	}
	require.NoError(t, tr.Close())
	_, err = tr.Attach(os.Getpid())
	assert.ErrorIs(t, err, ErrClosed)
}

// A handler that panics or detaches mid-hit leaves the tracee intact: it
// runs on untraced from the probed instruction and ends as it would have.
func TestHandlerPanicsOrDetaches(t *testing.T) {
	want := untraced(t, "calls", "N=300")
	for _, c := range []struct {
		name string
		h    func(p *Process) Handler
		err  string
	}{
		{"panic", func(p *Process) Handler {
			return func(_ int, pr *Probe, r *regs.Regs, _ memio.Memory) {
				if pr.Hits() == 100 {
					panic("boom")
				}
			}
		}, "panicked: boom"},
		{"detach", func(p *Process) Handler {
			return func(_ int, pr *Probe, r *regs.Regs, _ memio.Memory) {
				if pr.Hits() == 100 {
					if err := p.Detach(); err != nil {
						panic(err)
					}
				}
			}
		}, "detached"},
	} {
		for _, strat := range []Strategy{Emulate, OutOfLine} {
			t.Run(c.name+"/"+strat.String(), func(t *testing.T) {
				cmd := child("calls", "N=300")
				var out bytes.Buffer
				cmd.Stdout = &out
				p := start(t, cmd)
				pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCallLeaf), strat, c.h(p))
				require.NoError(t, err)
				exit, err := p.Run(runCtx(t))
				assert.Nil(t, exit)
				assert.ErrorContains(t, err, c.err)
				assert.Equal(t, uint64(100), pr.Hits())
				require.NoError(t, cmd.Wait())
				assert.Equal(t, want, out.String())
			})
		}
	}
}

// A refused site is a *RefusedError, naming the address and, where the
// instruction is the reason, the instruction; a process that is gone is
// not.
func TestRefusalsAreTyped(t *testing.T) {
	cmd := child("sleep")
	cmd.Stdout = io.Discard
	p := start(t, cmd)
	var re *RefusedError
	_, err := p.Insert(uint64(uintptr(unsafe.Pointer(&asmfuncs.Word))), Auto, nil)
	require.ErrorAs(t, err, &re)
	assert.Equal(t, uint64(uintptr(unsafe.Pointer(&asmfuncs.Word))), re.Addr)
	assert.Nil(t, re.Insn)
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SiteUd2), Auto, nil)
	require.ErrorAs(t, err, &re)
	require.NotNil(t, re.Insn)
	assert.Equal(t, asmfuncs.Addr(asmfuncs.SiteUd2), re.Insn.Addr)
	require.NoError(t, p.Detach())
	cmd.Process.Kill()
	_, err = p.Insert(asmfuncs.Addr(asmfuncs.SiteSubRSP), Auto, nil)
	require.Error(t, err)
	assert.False(t, errors.As(err, &re), "a process no longer traced is not a refusal: %v", err)
}
