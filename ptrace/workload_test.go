package ptrace

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

var workload struct {
	once sync.Once
	path string
	err  error
}

// buildWorkload compiles testdata/workload.c once per test run.
func buildWorkload(t testing.TB) string {
	workload.once.Do(func() {
		dir, err := os.MkdirTemp("", "onetrap-workload")
		if err != nil {
			workload.err = err
			return
		}
		workload.path = filepath.Join(dir, "workload")
		out, err := exec.Command("cc", "-O1", "-pthread", "-no-pie", "-o", workload.path, "testdata/workload.c").CombinedOutput()
		if err != nil {
			workload.err = fmt.Errorf("cc: %v\n%s", err, out)
		}
	})
	require.NoError(t, workload.err)
	return workload.path
}

// symbols returns the values of the named symbols of an ELF file, from its
// symbol table and its dynamic symbols (a stripped library has only
// those).
func symbols(t testing.TB, path string, names ...string) map[string]uint64 {
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		require.NoError(t, err)
	}
	dyn, _ := f.DynamicSymbols()
	syms = append(syms, dyn...)
	out := map[string]uint64{}
	for _, s := range syms {
		for _, n := range names {
			if s.Name == n {
				out[n] = s.Value
			}
		}
	}
	require.Len(t, out, len(names))
	return out
}

// Eight threads call probed functions 100,000 times each while SIGUSR1
// signals arrive, one at a time, whose handler calls a probed function; the
// program also raises its own int3 and SIGTRAP, forks a child that calls
// the probed functions, vforks one that does too, and execs.
func TestWorkloadThreadsSignalsForkExec(t *testing.T) {
	t.Run("fork child free", func(t *testing.T) { testWorkload(t, 100000, false) })
	t.Run("fork child followed", func(t *testing.T) { testWorkload(t, 4000, true) })
}

func testWorkload(t *testing.T, iters int, follow bool) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub", "f_riprel", "g_sig")

	var want bytes.Buffer
	ucmd := exec.Command(path, fmt.Sprint(iters))
	ucmd.Stdout = &want
	require.NoError(t, ucmd.Run())

	cmd := exec.Command(path, fmt.Sprint(iters))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	execs := 0
	var afterExec *Probe
	var forked *Process
	var forkedProbes []*Probe
	opts := []Option{}
	if follow {
		opts = append(opts, FollowForks(func(c *Process) {
			forked = c
			forkedProbes = c.Probes()
		}))
	}
	p, err := Start(cmd, append(opts, OnExec(func(p *Process) {
		execs++
		// The new image: probe it again.
		var err error
		afterExec, err = p.Insert(sym["f_push"], Auto, nil)
		if err != nil {
			panic(err)
		}
	}))...)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		cmd.Process.Kill()
	})

	// Hits per probe and thread, counted on the tracer thread.
	counts := map[string]map[int]int{}
	count := func(name string) Handler {
		counts[name] = map[int]int{}
		return func(tid int, pr *Probe, r *regs.Regs, m memio.Memory) {
			counts[name][tid]++
		}
	}
	strategies := map[string]Strategy{"f_push": Auto, "f_sub": Auto, "f_riprel": OutOfLine, "g_sig": SingleStep}
	probes := map[string]*Probe{}
	for name, s := range strategies {
		pr, err := p.Insert(sym[name], s, count(name))
		require.NoError(t, err, name)
		t.Logf("%s: %v, %v", name, pr.Insn, pr.Strategy)
		probes[name] = pr
	}
	assert.Equal(t, Boost, probes["f_push"].Strategy, "push writes memory: boosted rather than emulated")
	assert.Equal(t, Emulate, probes["f_sub"].Strategy, "sub rsp changes registers only: emulated")

	// About 900,000 hits: seconds on an idle machine, minutes on one
	// loaded ten times over (each hit waits for the tracer thread's turn).
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	stuck := time.AfterFunc(235*time.Second, func() { t.Logf("stuck:\n%s", dumpTracer(p.t)) })
	defer stuck.Stop()
	start := time.Now()
	exit, err := p.Run(ctx)
	require.NoError(t, err)
	t.Logf("%v in %v", exit, time.Since(start))
	assert.Equal(t, &Exit{}, exit)
	assert.Equal(t, want.String(), out.String(), "stdout, traced and not")
	assert.Contains(t, out.String(), "signals 200 ")
	assert.Contains(t, out.String(), "traps 2\n")
	assert.Contains(t, out.String(), "fork child exit 0\n")
	assert.Contains(t, out.String(), "vfork child exit 0\n")
	assert.Equal(t, 1, execs)

	// Each thread's own account of its calls against the hits seen.
	var vfork int
	threads := 0
	for _, l := range strings.Split(errOut.String(), "\n") {
		var tid, push, sub, rip int
		if n, _ := fmt.Sscanf(l, "tid %d push %d sub %d rip %d", &tid, &push, &sub, &rip); n == 4 {
			threads++
			assert.Equal(t, push, counts["f_push"][tid], "f_push in thread %d", tid)
			assert.Equal(t, sub, counts["f_sub"][tid], "f_sub in thread %d", tid)
			assert.Equal(t, rip, counts["f_riprel"][tid], "f_riprel in thread %d", tid)
		}
		fmt.Sscanf(l, "vfork %d", &vfork)
	}
	assert.Equal(t, 8, threads)
	require.NotZero(t, vfork)
	assert.Equal(t, 2, counts["f_sub"][vfork], "the vfork child's calls")
	assert.Equal(t, uint64(8*iters/2), probes["f_push"].Hits(), "no hit from the fork child")
	if follow {
		require.NotNil(t, forked)
		exit, err := forked.Run(ctx)
		require.NoError(t, err)
		assert.Equal(t, &Exit{}, exit, "the followed fork child")
		require.Len(t, forkedProbes, 4)
		for _, pr := range forkedProbes {
			want := uint64(1000)
			if pr.Addr == sym["g_sig"] {
				want = 0
			}
			assert.Equal(t, want, pr.Hits(), "%v in the fork child", pr.Insn)
			assert.Equal(t, int(want), counts[nameOf(sym, pr.Addr)][forked.Pid()])
		}
	} else {
		assert.Nil(t, forked)
	}
	assert.Equal(t, uint64(8*iters/2+2), probes["f_sub"].Hits())
	assert.Equal(t, uint64(8*iters/10), probes["f_riprel"].Hits())
	assert.Equal(t, uint64(200), probes["g_sig"].Hits())
	require.NotNil(t, afterExec)
	assert.Equal(t, uint64(5), afterExec.Hits())
}

// A signal that arrives while a thread is stepped (out of line or in place)
// is held and delivered after the fixup: the tracee's handler finds the
// thread in the program's text, never in the XOL area. The handlers here
// send the signal to the stopped thread itself, so it is pending during the
// step every time.
func TestSignalDuringStepIsDeliveredAfterFixup(t *testing.T) {
	// With Boost the signal is pending when the thread is sent into the
	// slot: it is stepped through the copy and gets the signal at the
	// next original instruction.
	for _, strats := range []map[string]Strategy{
		{"f_riprel": OutOfLine, "f_sub": SingleStep, "f_push": Emulate},
		{"f_riprel": Boost, "f_sub": Boost, "f_push": Boost},
	} {
		t.Run(fmt.Sprint(strats["f_push"]), func(t *testing.T) { testSignalDuringStep(t, strats) })
	}
}

func testSignalDuringStep(t *testing.T, strats map[string]Strategy) {
	const n = 300
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub", "f_riprel")
	cmd := exec.Command(path, "sigstep", fmt.Sprint(n))
	var out bytes.Buffer
	cmd.Stdout = &out
	p, err := Start(cmd)
	require.NoError(t, err)
	t.Cleanup(func() {
		p.Detach()
		cmd.Process.Kill()
	})
	signal := func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
		if err := unix.Tgkill(p.Pid(), tid, unix.SIGUSR2); err != nil {
			panic(err)
		}
	}
	for name, s := range strats {
		pr, err := p.Insert(sym[name], s, signal)
		require.NoError(t, err, name)
		require.Equal(t, s, pr.Strategy, name)
	}
	exit, err := p.Run(runCtx(t))
	require.NoError(t, err)
	assert.Equal(t, &Exit{}, exit)
	sum := n*1000 + 3*(n*(n-1)/2) + 3*n
	assert.Equal(t, fmt.Sprintf("sum %d usr2 %d outside text 0\n", sum, 3*n), out.String())
}

func nameOf(sym map[string]uint64, addr uint64) string {
	for n, a := range sym {
		if a == addr {
			return n
		}
	}
	return ""
}

// A SIGTRAP sent to a thread (si_code SI_TKILL) that stops it one byte past
// a probe, where an INT3 hit would leave it, is the tracee's and is
// delivered: the handler sends it while serving a hit on a one-byte push rbp,
// so it arrives exactly there (or during the step).
func TestSIGTRAPOneBytePastAProbe(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push")
	for _, strat := range []Strategy{Emulate, OutOfLine, SingleStep, Boost} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := exec.Command(path, "tkill", "50")
			var out bytes.Buffer
			cmd.Stdout = &out
			p, err := Start(cmd)
			require.NoError(t, err)
			t.Cleanup(func() {
				p.Detach()
				cmd.Process.Kill()
			})
			pr, err := p.Insert(sym["f_push"], strat, func(tid int, _ *Probe, _ *regs.Regs, _ memio.Memory) {
				unix.Tgkill(p.Pid(), tid, unix.SIGTRAP)
			})
			require.NoError(t, err)
			require.Equal(t, 1, pr.Insn.Len)
			exit, err := p.Run(runCtx(t))
			require.NoError(t, err)
			assert.Equal(t, &Exit{}, exit)
			assert.Equal(t, "SIGTRAPs: 50\n", out.String())
			assert.Equal(t, uint64(50), pr.Hits())
		})
	}
}
