package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// demoEnv, when set in the environment, makes the program the demo's
// workload instead of the tracer: the demo traces its own binary, so the
// probed functions and their first instructions are known in advance.
const demoEnv = "ONETRAP_TRACE_DEMO"

// The workload's shape: every thread calls every demo function demoCalls
// times, so each probe must count demoThreads*demoCalls hits.
const (
	demoThreads = 4
	demoCalls   = 1000
)

// Implemented in demo_amd64.s; each returns a small constant (demoRipLoad
// returns demoWord) so the workload's checksum does not depend on tracing.
func demoPush() uint64
func demoSub() uint64
func demoStackCheck() uint64
func demoRipLoad() uint64
func demoLockInc() uint64
func demoCpuid() uint64
func demoSSE() uint64

var (
	demoWord    uint64 = 10
	demoCounter uint64 // incremented by demoLockInc, out of line under the demo
)

// demoFuncs names the workload's functions as the symbol table does, with the
// strategy Auto is expected to pick for each, so the demo checks that too.
var demoFuncs = []struct {
	name     string
	strategy string
}{
	{"main.demoPush", "emulate"},
	{"main.demoSub", "emulate"},
	{"main.demoStackCheck", "emulate"},
	{"main.demoRipLoad", "emulate"},
	{"main.demoLockInc", "outofline"},
	{"main.demoCpuid", "outofline"},
	{"main.demoSSE", "outofline"},
}

// demoWorkload is the child: several OS threads (LockOSThread keeps each
// goroutine on its own) call every function demoCalls times. It prints a
// checksum that a wrong emulation would change.
func demoWorkload(stdout io.Writer) int {
	var sum atomic.Uint64
	var wg sync.WaitGroup
	for i := 0; i < demoThreads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			var s uint64
			for j := 0; j < demoCalls; j++ {
				s += demoPush() + demoSub() + demoStackCheck() + demoRipLoad() + demoLockInc() + demoCpuid() + demoSSE()
			}
			sum.Add(s)
		}()
	}
	wg.Wait()
	want := uint64(demoThreads * demoCalls * (1 + 2 + 3 + 10 + 4 + 5 + 6))
	fmt.Fprintf(stdout, "workload: %d threads x %d calls of %d functions: checksum %d (want %d), counter %d (want %d)\n",
		demoThreads, demoCalls, len(demoFuncs), sum.Load(), want, atomic.LoadUint64(&demoCounter), demoThreads*demoCalls)
	if sum.Load() != want || atomic.LoadUint64(&demoCounter) != demoThreads*demoCalls {
		return 1
	}
	return 0
}

// demo traces the workload (this program re-executed with demoEnv set) with
// a probe on each function by name, prints the summary, and checks that
// every probe counted exactly the calls made and ran with the expected
// strategy.
func demo(o *options) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(o.stderr, "trace: demo:", err)
		return 2
	}
	fmt.Fprintf(o.stderr, "trace: no program given: tracing the built-in demo workload (%s with %s=1)\n", exe, demoEnv)
	o.argv = []string{exe}
	o.env = append(os.Environ(), demoEnv+"=1")
	o.specs = nil
	for _, f := range demoFuncs {
		o.specs = append(o.specs, f.name)
	}
	res, code := trace(o)
	if res == nil {
		return code
	}
	ok := code == 0
	for _, f := range demoFuncs {
		var hits uint64
		strat := ""
		for _, r := range res.Probes {
			if r.Spec == f.name {
				hits += r.Hits
				strat = r.Strategy
			}
		}
		want := uint64(demoThreads * demoCalls)
		verdict := "ok"
		if hits != want || strat != f.strategy {
			verdict = "WRONG"
			ok = false
		}
		fmt.Fprintf(o.report, "demo: %-20s %-9s hits %6d, expected %6d (%s): %s\n", f.name, strat, hits, want, f.strategy, verdict)
	}
	if !ok {
		fmt.Fprintln(o.report, "demo: FAILED: hit counts, strategies or the workload's checksum differ from what was expected")
		return 1
	}
	fmt.Fprintln(o.report, "demo: PASSED: every probe counted exactly the calls made, and the workload's results are unchanged")
	return 0
}
