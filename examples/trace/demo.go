package main

import (
	"fmt"
	"io"
	"os"

	"github.com/onetrap/onetrap/ptrace"
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
// decoder's verdict expected for each (emulate, or outofline for what only
// the CPU can run), so the demo checks that too. How each probe runs is the
// engine's choice (or -strategy's).
var demoFuncs = []struct {
	name    string
	verdict string
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
	want := uint64(demoThreads * demoCalls)
	for _, f := range demoFuncs {
		var rw *Row
		for _, r := range res.Probes {
			if r.Spec == f.name {
				rw = r
			}
		}
		switch {
		case rw == nil:
			fmt.Fprintf(o.report, "demo: %-20s no probe: WRONG\n", f.name)
			ok = false
		case rw.Error != "" && o.strategy == ptrace.Emulate && f.verdict != "emulate":
			// -strategy emulate: what only the CPU runs is refused, as it must be.
			fmt.Fprintf(o.report, "demo: %-20s refused under -strategy emulate, as expected: ok\n", f.name)
		case rw.Error != "":
			fmt.Fprintf(o.report, "demo: %-20s not probed (%s): WRONG\n", f.name, rw.Error)
			ok = false
		default:
			v := "ok"
			if rw.Hits != want || rw.Verdict != f.verdict {
				v = "WRONG"
				ok = false
			}
			fmt.Fprintf(o.report, "demo: %-20s decoder %-9s (expected %-9s) ran as %-10s hits %5d (expected %5d): %s\n",
				f.name, rw.Verdict, f.verdict, rw.Strategy, rw.Hits, want, v)
		}
	}
	if !ok {
		fmt.Fprintln(o.report, "demo: FAILED: hit counts, verdicts or the workload's checksum differ from what was expected")
		return 1
	}
	fmt.Fprintln(o.report, "demo: PASSED: every probe counted exactly the calls made, and the workload's results are unchanged")
	return 0
}
