package ptrace

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// waitBounded waits for a detached command, failing the test when it has
// not ended within limit (a signal lost at detach leaves the sigstep
// program waiting for it forever).
func waitBounded(t *testing.T, cmd *exec.Cmd, limit time.Duration, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, what)
	case <-time.After(limit):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: the detached program did not end within %v", what, limit)
	}
}

// Detaching while every hit's handler sends the thread a signal (so that
// the thread is often stopped for one, or has one held, at the detach)
// loses none: the sigcount program counts the SIGUSR2s it gets, one per
// hit, and where they arrive (never in the XOL area).
func TestDetachKeepsSignals(t *testing.T) {
	const n = 400000
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub", "f_riprel")
	strats := []map[string]Strategy{
		{"f_riprel": OutOfLine, "f_sub": SingleStep, "f_push": Emulate},
		{"f_riprel": Boost, "f_sub": Boost, "f_push": Boost},
	}
	sum := n*1000 + 3*(n*(n-1)/2) + 3*n
	passed := 0
	for i := 0; i < 16; i++ {
		cmd := exec.Command(path, "sigcount", fmt.Sprint(n))
		var out bytes.Buffer
		cmd.Stdout = &out
		p, err := Start(cmd)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		var probes []*Probe
		var pr *Probe
		stopAt := uint64(20 + 13*i)
		signal := func(tid int, q *Probe, _ *regs.Regs, _ memio.Memory) {
			unix.Tgkill(p.Pid(), tid, unix.SIGUSR2)
			if q == pr && q.Hits() == stopAt {
				cancel()
			}
		}
		for name, s := range strats[i%2] {
			q, err := p.Insert(sym[name], s, signal)
			require.NoError(t, err, name)
			probes = append(probes, q)
			if name == "f_push" {
				pr = q
			}
		}
		p.t.sigsAtDetach = 0
		r := runBounded(t, p, ctx, 10*time.Second, fmt.Sprintf("iteration %d", i))
		cancel()
		require.Nil(t, r.exit, "iteration %d: detached long before the end", i)
		require.ErrorIs(t, r.err, context.Canceled)
		passed += p.t.sigsAtDetach
		var hits uint64
		for _, q := range probes {
			hits += q.Hits()
		}
		waitBounded(t, cmd, 10*time.Second, fmt.Sprintf("iteration %d", i))
		assert.Equal(t, fmt.Sprintf("sum %d usr2 %d outside text 0\n", sum, hits), out.String(), "iteration %d (%v)", i, strats[i%2])
	}
	t.Logf("signals passed on at detach: %d", passed)
}

// A second XOL area (mapped near code far from the text) is unmapped at
// detach too: the process goes on with no area left and ends as untraced.
func TestDetachUnmapsEveryArea(t *testing.T) {
	const far = 0x600000000000
	const n = 3000000
	path := buildWorkload(t)
	sym := symbols(t, path, "ready", "f_riprel")
	want, err := exec.Command(path, "far", fmt.Sprint(n)).Output()
	require.NoError(t, err)
	cmd := exec.Command(path, "far", fmt.Sprint(n))
	var out bytes.Buffer
	cmd.Stdout = &out
	p, err := Start(cmd)
	require.NoError(t, err)
	_, err = p.Insert(sym["f_riprel"], Boost, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var farProbe *Probe
	var bases []uint64
	_, err = p.Insert(sym["ready"], Emulate, func(int, *Probe, *regs.Regs, memio.Memory) {
		farProbe, err = p.Insert(far, Boost, func(_ int, q *Probe, _ *regs.Regs, _ memio.Memory) {
			if q.Hits() == 100 {
				for x := p.xol; x != nil; x = x.also {
					bases = append(bases, x.base)
				}
				cancel()
			}
		})
		if err != nil {
			panic(err)
		}
	})
	require.NoError(t, err)
	r := runBounded(t, p, ctx, 10*time.Second, "far")
	require.Nil(t, r.exit)
	require.ErrorIs(t, r.err, context.Canceled)
	require.NotNil(t, farProbe)
	require.Len(t, bases, 2, "an area near the text and one near the far code")
	for _, b := range bases {
		assert.False(t, hasMapping(t, p.Pid(), b, b+xolSize), "area at %#x", b)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	require.NoError(t, err)
	assert.Contains(t, string(st), "TracerPid:\t0")
	waitBounded(t, cmd, 20*time.Second, "far")
	assert.Equal(t, string(want), out.String())
}

// An execve made by a thread other than the leader while probes are in
// (one stepped in place, stopping the world, in the leader's loop) gives
// the process its new image under the leader's pid: the old probes go,
// OnExec probes the new image, which runs as untraced.
func TestExecFromOtherThread(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub")
	want, err := exec.Command(path, "after-exec").Output()
	require.NoError(t, err)
	for _, strat := range []Strategy{SingleStep, Emulate, OutOfLine, Boost} {
		cmd := exec.Command(path, "threadexec")
		var out bytes.Buffer
		cmd.Stdout = &out
		var after *Probe
		var afterErr error
		p, err := Start(cmd, OnExec(func(p *Process) {
			after, afterErr = p.Insert(sym["f_push"], strat, nil)
		}))
		require.NoError(t, err)
		before, err := p.Insert(sym["f_push"], Emulate, nil)
		require.NoError(t, err)
		loop, err := p.Insert(sym["f_sub"], strat, nil)
		require.NoError(t, err)
		r := runBounded(t, p, context.Background(), 10*time.Second, strat.String())
		require.NoError(t, r.err, "%v", strat)
		assert.Equal(t, &Exit{}, r.exit, "%v", strat)
		assert.Equal(t, string(want), out.String(), "%v", strat)
		assert.Equal(t, uint64(200), before.Hits(), "%v", strat)
		assert.NotZero(t, loop.Hits(), "%v", strat)
		require.NoError(t, afterErr, "%v", strat)
		require.NotNil(t, after, "%v", strat)
		assert.Equal(t, uint64(5), after.Hits(), "%v", strat)
	}
}
