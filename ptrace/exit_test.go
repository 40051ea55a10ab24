package ptrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

// runResult is what Run returned, for a test that must not hang on it.
type runResult struct {
	exit *Exit
	err  error
}

// runBounded runs p until it ends or ctx is cancelled, failing the test when
// Run has not returned within limit.
func runBounded(t *testing.T, p *Process, ctx context.Context, limit time.Duration, what string) runResult {
	t.Helper()
	done := make(chan runResult, 1)
	go func() {
		exit, err := p.Run(ctx)
		done <- runResult{exit, err}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(limit):
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.Pid())); err == nil {
			for _, e := range ents {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", p.Pid(), e.Name()))
				w, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", p.Pid(), e.Name()))
				t.Logf("task %s: %s (wchan %s)", e.Name(), b, w)
			}
		}
		t.Fatalf("%s: Run did not return within %v; tracee status:\n%s", what, limit, st)
	}
	return runResult{}
}

// Cancelling Run while the tracee is exiting (a multi-threaded Go program
// that calls os.Exit right after a hit whose handler cancels) returns
// promptly, with the exit status when the process ended first, else with
// the cancellation, under every strategy.
func TestCancelWhileExiting(t *testing.T) {
	strats := []Strategy{Emulate, SingleStep, OutOfLine, Boost}
	exited, detached := 0, 0
	for i := 0; i < 200; i++ {
		strat := strats[i%len(strats)]
		cmd := child("hitexit")
		// A tracer per process: one that outlived a detached child it
		// started would reap it (it is the child's parent thread).
		p, err := Start(cmd)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		_, err = p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), strat, func(int, *Probe, *regs.Regs, memio.Memory) { cancel() })
		require.NoError(t, err)
		r := runBounded(t, p, ctx, 10*time.Second, fmt.Sprintf("iteration %d (%v)", i, strat))
		cancel()
		if r.exit != nil {
			require.NoError(t, r.err, "iteration %d (%v)", i, strat)
			require.Equal(t, &Exit{Code: 3}, r.exit, "iteration %d (%v)", i, strat)
			exited++
			continue
		}
		require.ErrorIs(t, r.err, context.Canceled, "iteration %d (%v)", i, strat)
		// Detached before it ended: it ends on its own, untraced.
		err = cmd.Wait()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "iteration %d (%v): %v", i, strat, err)
		require.Equal(t, 3, ee.ExitCode(), "iteration %d (%v)", i, strat)
		detached++
	}
	t.Logf("exited while traced %d, detached first %d", exited, detached)
}

// Threads that end while the world is being stopped for a detach, or for a
// single step, do not hold the tracer up: a C program whose threads start,
// call probed functions a few times and end, over and over, is detached at
// an arbitrary moment, and another is left to end under SingleStep probes.
func TestThreadsEndingDuringDetach(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub")
	for i := 0; i < 40; i++ {
		cmd := exec.Command(path, "spin", "8", "300")
		p, err := Start(cmd)
		require.NoError(t, err)
		pr, err := p.Insert(sym["f_push"], SingleStep, nil)
		require.NoError(t, err)
		_, err = p.Insert(sym["f_sub"], Emulate, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		want := uint64(50 + 40*i)
		go func() {
			for pr.Hits() < want && ctx.Err() == nil {
				time.Sleep(100 * time.Microsecond)
			}
			cancel()
		}()
		r := runBounded(t, p, ctx, 10*time.Second, fmt.Sprintf("iteration %d", i))
		cancel()
		if r.exit != nil {
			require.NoError(t, r.err)
			require.Equal(t, &Exit{}, r.exit, "iteration %d", i)
			continue
		}
		require.ErrorIs(t, r.err, context.Canceled, "iteration %d", i)
		require.NoError(t, cmd.Wait(), "iteration %d: the detached program", i)
	}
}

// A process SIGKILLed while a thread is being stepped (out of line, or in
// place with the others stopped) ends Run with SIGKILL.
func TestKilledWhileStepping(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push")
	for _, strat := range []Strategy{SingleStep, OutOfLine} {
		for i := 0; i < 10; i++ {
			cmd := exec.Command(path, "spin", "8", "100000")
			p, err := Start(cmd)
			require.NoError(t, err)
			var pid int
			_, err = p.Insert(sym["f_push"], strat, func(_ int, pr *Probe, _ *regs.Regs, _ memio.Memory) {
				if pr.Hits() == uint64(20+i*7) {
					unix.Kill(pid, unix.SIGKILL)
				}
			})
			require.NoError(t, err)
			pid = p.Pid()
			r := runBounded(t, p, context.Background(), 10*time.Second, fmt.Sprintf("%v iteration %d", strat, i))
			require.NoError(t, r.err)
			assert.Equal(t, &Exit{Signal: unix.SIGKILL}, r.exit)
		}
	}
}

// A process whose main thread has ended alone (a zombie, which reports
// nothing until the last thread ends) is detached promptly while its other
// threads hit SingleStep probes, which stop the world, and finishes
// untraced.
func TestDetachWithZombieLeader(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub")
	for i := 0; i < 5; i++ {
		cmd := exec.Command(path, "leaderexit", "20000000")
		p, err := Start(cmd)
		require.NoError(t, err)
		pr, err := p.Insert(sym["f_push"], SingleStep, nil)
		require.NoError(t, err)
		_, err = p.Insert(sym["f_sub"], Emulate, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			for pr.Hits() < uint64(2000+500*i) && ctx.Err() == nil {
				time.Sleep(100 * time.Microsecond)
			}
			cancel()
		}()
		start := time.Now()
		r := runBounded(t, p, ctx, 10*time.Second, fmt.Sprintf("iteration %d", i))
		cancel()
		if r.exit != nil {
			t.Logf("iteration %d: ended before the cancel: %v, %d hits", i, r.exit, pr.Hits())
			continue
		}
		require.ErrorIs(t, r.err, context.Canceled)
		assert.Less(t, time.Since(start), 5*time.Second)
		require.NoError(t, cmd.Wait(), "iteration %d: the detached program", i)
	}
}
