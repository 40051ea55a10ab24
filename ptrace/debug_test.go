package ptrace

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// buildDebug compiles testdata/debug.c once per test binary.
func buildDebug(t testing.TB) string {
	return buildC(t, "debug", "-O1", "-fno-omit-frame-pointer", "-pthread", "-no-pie", "testdata/debug.c")
}

// debugStart starts the debug program in a mode, stopped, on a tracer of
// the test's own (see coreStart).
func debugStart(t *testing.T, mode string, rest ...any) *coreRun {
	bin := buildDebug(t)
	args := []string{mode}
	var opts []Option
	for _, a := range rest {
		switch a := a.(type) {
		case string:
			args = append(args, a)
		case Option:
			opts = append(opts, a)
		}
	}
	return startProgram(t, coreTracer(t), bin, args, opts...)
}

// nextStop waits for p's next stop, failing the test after a while.
func nextStop(t *testing.T, p *Process) Stop {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangLimit)
	defer cancel()
	s, err := p.NextStop(ctx)
	require.NoError(t, err)
	return s
}

// A thread parked at a breakpoint stays there while the others run on; a
// goroutine other than the tracer's reads and changes its registers and
// resumes it.
func TestParkResumeNonStop(t *testing.T) {
	bin := buildDebug(t)
	sym := symbols(t, bin, "target")
	r := debugStart(t, "park", "3")
	hits := 0
	_, err := r.p.Insert(sym["target"], Auto, func(tid int, pr *Probe, _ *regs.Regs, _ memio.Memory) {
		hits++
		require.NoError(t, r.p.Park(tid))
	})
	require.NoError(t, err)
	done := runAsync(r.p, runCtx(t))
	s := nextStop(t, r.p)
	assert.Equal(t, StopBreakpoint, s.Reason)
	assert.Equal(t, sym["target"], s.Addr)
	rg, err := r.p.Regs(s.Tid)
	require.NoError(t, err)
	assert.Equal(t, sym["target"], rg.RIP)
	assert.Equal(t, uint64(20), rg.GPR[regs.RDI])
	// The workers run while main is parked: the program sees them move
	// after the call returns only if they ran, which it checks itself;
	// here the test waits long enough for them to run a lot.
	time.Sleep(100 * time.Millisecond)
	rg.GPR[regs.RDI] = 100
	require.NoError(t, r.p.SetRegs(s.Tid, &rg))
	require.NoError(t, r.p.Resume(s.Tid))
	res := waitRun(t, done)
	require.NoError(t, res.err)
	assert.Equal(t, 0, res.exit.Code)
	assert.Equal(t, "target 201 workers ran\n", r.out.String())
	assert.Equal(t, 1, hits)
}

// waitRun waits for runAsync's result.
func waitRun(t *testing.T, done <-chan runResult) runResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(hangLimit):
		t.Fatal("Run did not return")
	}
	return runResult{}
}

// Stepping by emulation gives the registers the CPU gives, instruction
// by instruction, over seq: at each instruction the thread is stepped by
// emulation, put back, and stepped by the CPU (seq's stores write the same
// values twice), and the two are compared.
func TestStepEmulationAgreesWithCPU(t *testing.T) {
	sym := symbols(t, buildDebug(t), "seq")
	r := debugStart(t, "seq")
	_, err := r.p.Insert(sym["seq"], Emulate, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
		r.p.Park(tid)
	})
	require.NoError(t, err)
	done := runAsync(r.p, runCtx(t))
	s := nextStop(t, r.p)
	require.Equal(t, StopBreakpoint, s.Reason)
	emulated := 0
	for i := 0; i < 18; i++ {
		before, err := r.p.Regs(s.Tid)
		require.NoError(t, err)
		require.NoError(t, r.p.Step(s.Tid))
		require.Equal(t, StopStep, nextStop(t, r.p).Reason)
		e, err := r.p.Regs(s.Tid)
		require.NoError(t, err)
		require.NoError(t, r.p.SetRegs(s.Tid, &before))
		require.NoError(t, r.p.StepCPU(s.Tid))
		require.Equal(t, StopStep, nextStop(t, r.p).Reason)
		c, err := r.p.Regs(s.Tid)
		require.NoError(t, err)
		if e != c {
			// imul leaves SF ZF AF PF undefined, shl AF: compare the
			// rest.
			const undef = 1<<2 | 1<<4 | 1<<6 | 1<<7
			e.RFLAGS &^= undef
			c.RFLAGS &^= undef
		}
		assert.Equal(t, c, e, "instruction %d at %#x", i, before.RIP)
		if c.RIP == sym["seq"]+uint64(i) {
			break
		}
		emulated++
	}
	require.NoError(t, r.p.Resume(s.Tid))
	res := waitRun(t, done)
	require.NoError(t, res.err)
	assert.Equal(t, "seq 856\n", r.out.String())
	assert.Equal(t, 18, emulated)
}

// StepOver a recursive call parks the thread after that call returns, not
// when a deeper call returns to the same address; StepOut returns to the
// caller's frame.
func TestStepOverStepOutRecursion(t *testing.T) {
	bin := buildDebug(t)
	sym := symbols(t, bin, "fact")
	r := debugStart(t, "recurse", "6")
	var calls int
	var pr *Probe
	pr, err := r.p.Insert(sym["fact"], Auto, func(tid int, _ *Probe, rg *regs.Regs, _ memio.Memory) {
		calls++
		if rg.GPR[regs.RDI] == 4 {
			r.p.Park(tid)
		}
	})
	require.NoError(t, err)
	done := runAsync(r.p, runCtx(t))
	s := nextStop(t, r.p)
	require.Equal(t, StopBreakpoint, s.Reason)
	rg, err := r.p.Regs(s.Tid)
	require.NoError(t, err)
	// At fact(4)'s entry: the return address and the caller's stack.
	var word [8]byte
	_, err = r.p.ReadAt(word[:], rg.GPR[regs.RSP])
	require.NoError(t, err)
	ret := uint64(word[0]) | uint64(word[1])<<8 | uint64(word[2])<<16 | uint64(word[3])<<24 |
		uint64(word[4])<<32 | uint64(word[5])<<40 | uint64(word[6])<<48 | uint64(word[7])<<56
	require.NoError(t, r.p.Remove(pr))
	require.NoError(t, r.p.StepOut(s.Tid, ret, rg.GPR[regs.RSP]+8))
	st := nextStop(t, r.p)
	require.Equal(t, StopStep, st.Reason)
	after, err := r.p.Regs(s.Tid)
	require.NoError(t, err)
	assert.Equal(t, ret, after.RIP)
	assert.Equal(t, rg.GPR[regs.RSP]+8, after.GPR[regs.RSP])
	assert.Equal(t, uint64(24), after.GPR[regs.RAX], "fact(4) returned")
	require.NoError(t, r.p.Resume(s.Tid))
	res := waitRun(t, done)
	require.NoError(t, res.err)
	assert.Equal(t, "fact 720\n", r.out.String())
	assert.Equal(t, 3, calls, "fact(6), fact(5), fact(4) hit before the probe went")
}

// With AllStop, every thread stops when one parks, and all go on together.
func TestAllStop(t *testing.T) {
	bin := buildDebug(t)
	sym := symbols(t, bin, "target")
	r := debugStart(t, "park", "3", AllStop())
	_, err := r.p.Insert(sym["target"], Auto, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
		r.p.Park(tid)
	})
	require.NoError(t, err)
	done := runAsync(r.p, runCtx(t))
	s := nextStop(t, r.p)
	require.Equal(t, StopBreakpoint, s.Reason)
	time.Sleep(20 * time.Millisecond)
	// Every thread is stopped: each shows in /proc as traced-stopped.
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", r.p.Pid()))
	require.NoError(t, err)
	require.Len(t, ents, 4)
	for _, e := range ents {
		st := procState(t, mustAtoi(t, e.Name()))
		assert.Contains(t, st, "tracing stop", "thread %s", e.Name())
	}
	for _, e := range ents {
		_, err := r.p.Regs(mustAtoi(t, e.Name()))
		assert.NoError(t, err, "registers of a thread stopped with the world")
	}
	require.NoError(t, r.p.Resume(s.Tid))
	res := waitRun(t, done)
	require.NoError(t, res.err)
	assert.Equal(t, "target 41 workers ran\n", r.out.String())
}

func mustAtoi(t *testing.T, s string) int {
	var n int
	_, err := fmt.Sscan(s, &n)
	require.NoError(t, err)
	return n
}

// A process started stopped is parked at its first instruction: a debugger
// reads its registers and steps it before Run lets it go.
func TestStepBeforeRun(t *testing.T) {
	r := debugStart(t, "seq")
	tids := r.p.Threads()
	require.Equal(t, []int{r.p.Pid()}, tids)
	rg, err := r.p.Regs(tids[0])
	require.NoError(t, err)
	require.NotZero(t, rg.RIP)
	require.NotZero(t, rg.GPR[regs.RSP])
	for i := 0; i < 5; i++ {
		require.NoError(t, r.p.Step(tids[0]))
		s := nextStop(t, r.p)
		require.Equal(t, StopStep, s.Reason)
	}
	after, err := r.p.Regs(tids[0])
	require.NoError(t, err)
	assert.NotEqual(t, rg.RIP, after.RIP)
	res := runBounded(t, r.p, runCtx(t), hangLimit, "seq")
	require.NoError(t, res.err)
	assert.Equal(t, "seq 856\n", r.out.String())
}
