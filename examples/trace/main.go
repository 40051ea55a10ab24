// Command trace counts, and optionally prints, the hits of probes put into a
// running program by name: the onetrap library's tracer.
//
//	go run ./examples/trace [flags] -e SPEC... -- PROGRAM [ARGS...]
//	go run ./examples/trace [flags] -e SPEC... -p PID[,PID...]
//	go run ./examples/trace -l 'GLOB' PROGRAM
//	go run ./examples/trace                      (the built-in demo)
//
// Probes are specs in the spirit of `perf probe` (-e, repeatable): FUNC,
// FUNC+OFF, FUNC%return, 0xADDR, FILE:LINE, globs, LIB:FUNC, each optionally
// followed by typed values to print (arg0:str, retval) and a filter (if
// arg0 > 4096). A function probe reports calls, with their durations and
// return values, as ltrace does. Each hit costs the traced thread one trap
// when its instruction is emulated, and no other thread is stopped; a probe
// that only counts (--count, or a plain hit with nothing printed) takes no
// trap at all where its site can take a jump to a counting pad. At
// exit, or on SIGINT/SIGTERM (which detach and leave the program running),
// a summary gives every probe's hits and every function's calls.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/onetrap/onetrap/ptrace"
)

// options is a parsed command line.
type options struct {
	specs    []string
	pids     []int
	verbose  bool
	json     bool
	out      string
	strategy ptrace.Strategy
	argv     []string // the program to start, when pids is empty
	env      []string // its environment; nil for the tracer's own

	follow      bool          // -f: children too
	durations   bool          // -T: each call's duration on its line
	timestamps  bool          // -tt: wall-clock time on each line
	summaryOnly bool          // -c: no per-call lines, the summary of calls
	hist        bool          // --hist: log2 latency histograms
	strSize     int           // -s: bytes of a string printed
	tids        map[int]bool  // --tid: only these threads
	minDur      time.Duration // --duration: only calls at least that long
	maxEvents   int           // --max-events: stop after that many
	stack       int           // --stack: frames per hit
	folded      string        // --folded FILE
	chrome      string        // --chrome FILE
	list        string        // -l PATTERN: list, do not trace
	count       bool          // --count: hits only, no calls; trapless where a site allows

	stdout, stderr io.Writer // the tracer's own: diagnostics go to stderr
	report         io.Writer // per-hit lines and the summary: stderr or -o FILE
}

// specList collects the repeatable -e flag.
type specList []string

func (s *specList) String() string     { return strings.Join(*s, " ") }
func (s *specList) Set(v string) error { *s = append(*s, v); return nil }

// pidList collects -p PID, a comma list or repeated.
type pidList []int

func (p *pidList) String() string { return fmt.Sprint([]int(*p)) }
func (p *pidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		*p = append(*p, n)
	}
	return nil
}

// tidList collects --tid TID, a comma list or repeated.
type tidList map[int]bool

func (t tidList) String() string { return fmt.Sprint(map[int]bool(t)) }
func (t tidList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("bad tid %q", f)
		}
		t[n] = true
	}
	return nil
}

const usage = `usage: trace [flags] -e SPEC [-e SPEC...] -- PROGRAM [ARGS...]
       trace [flags] -e SPEC [-e SPEC...] -p PID[,PID...]
       trace -l 'GLOB' PROGRAM      (list functions: first instruction, verdict, strategy)
       trace -l 'FUNC:*' PROGRAM    (list a function's lines)
       trace                        (no program: the built-in demo)

Puts probes into a program and reports the calls and hits; each hit is
served with one trap when the probed instruction can be emulated (or
boosted), and no other thread is stopped. A function probe pairs each entry
with its return (a probe on every RET instruction, no return address
rewritten, so Go programs are safe): with -v a line per call,
  malloc(4096) = 0x55d0c2a0 <0.000012>
nested calls indented, <unfinished ...> and <... resumed> when threads
interleave. The program's standard files are its own. At exit, or when the
tracer gets SIGINT or SIGTERM (it then detaches, and the program runs on),
a summary lists every probe (hits, instruction, the decoder's verdict, the
strategy) and every function's calls: count, total, avg, min, max.

Probe specs (-e, repeatable), as in perf probe:
  FUNC                 a function: its calls (entry and returns); for a Go
                       function the entry is past its stack-bound check, so
                       a call that grows the stack counts once
  FUNC+OFF             OFF bytes in (decimal or 0x hex), an instruction
                       boundary: a hit, not a call (FUNC+0: the first byte)
  FUNC%return          every RET instruction of the function (hits)
  0xADDR               a file virtual address
  FILE:LINE            where the line's code begins (DWARF, or the Go pclntab)
  'GLOB'               every function a glob matches ('main.*', 'http.*')
  LIB:SPEC             in a shared library (libc:malloc), resolved as soon as
                       the library is mapped, dlopen included
  'SPEC w1 w2 ...'     values to print: argN (from arg0, as in bpftrace; the
                       function's calling convention, Go or C), retval, or a
                       register (rdi, esi), each optionally typed: arg0:str
                       (C string, -s bytes), :x :d :u :i32 :u32, :string and
                       :bytes (Go, pointer and length words); name=w labels.
                       Without words, libc functions print from a built-in
                       prototype table (malloc, free, open, read, ...) and
                       functions with DWARF from their parameters.
  'SPEC ... if COND'   a filter, evaluated in the tracer: comparisons
                       (== != < <= > >=) of argN, retval or registers with
                       numbers or "strings", joined by && and ||:
                       'malloc if arg0 > 4096', 'read if retval:d < 0'

Flags:
`

func main() {
	if os.Getenv(demoEnv) != "" {
		os.Exit(demoWorkload(os.Stdout))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the tracer's main, returning its exit status: the traced program's
// (128+signal when a signal killed it), 0 after a detach, 2 for a usage or
// setup error, 1 for a failed demo.
func run(args []string, stdout, stderr io.Writer) int {
	o := &options{stdout: stdout, stderr: stderr, report: stderr}
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var specs specList
	var pids pidList
	var strategy string
	tids := tidList{}
	fs.Var(&specs, "e", "probe `SPEC` (repeatable; see above)")
	fs.Var(&pids, "p", "attach to the running process `PID` (a comma list, or repeated) instead of starting a program")
	fs.BoolVar(&o.verbose, "v", false, "print a line per call (and per hit of probes that are not calls)")
	fs.BoolVar(&o.json, "json", false, "write the summary as JSON (after -v's hits, one JSON object per line)")
	fs.StringVar(&o.out, "o", "", "write per-call lines and the summary to `FILE` instead of stderr")
	fs.StringVar(&strategy, "strategy", "auto", "run every probed instruction as `S`: auto, emulate, boost, outofline, singlestep or jump (counting probes only)")
	fs.BoolVar(&o.count, "count", false, "count hits only, functions too (no calls, durations or values): a probe then costs no trap where its site can take a jump to a counting pad in the program, one trap elsewhere")
	fs.BoolVar(&o.follow, "f", false, "follow forks, vforks and execs (probes placed again by name in a new image); lines say [pid N]")
	fs.BoolVar(&o.durations, "T", false, "print each call's duration, <seconds>")
	fs.BoolVar(&o.timestamps, "tt", false, "print the wall-clock time, to the microsecond, on each line")
	fs.BoolVar(&o.summaryOnly, "c", false, "print no per-call line, only the summary of calls")
	fs.BoolVar(&o.hist, "hist", false, "print a log2 histogram of each function's call durations")
	fs.IntVar(&o.strSize, "s", 32, "print at most `N` bytes of a string")
	fs.Var(tids, "tid", "report only the threads `TID` (a comma list, or repeated)")
	fs.DurationVar(&o.minDur, "duration", 0, "report only calls lasting at least `D` (1ms, 50us)")
	fs.IntVar(&o.maxEvents, "max-events", 0, "stop tracing (detach) after `N` calls or hits reported")
	fs.IntVar(&o.stack, "stack", 0, "print `N` frames of user stack per call (frame pointers), and the top stacks in the summary")
	fs.StringVar(&o.folded, "folded", "", "write each call's stack to `FILE` in the folded format of flame graph tools")
	fs.StringVar(&o.chrome, "chrome", "", "write the calls to `FILE` as Chrome trace-event JSON (Perfetto, chrome://tracing)")
	fs.StringVar(&o.list, "l", "", "list the functions matching `PATTERN` (or FUNC:* for its lines) in PROGRAM, and exit")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	o.pids = pids
	if len(tids) > 0 {
		o.tids = tids
	}
	o.specs = specs
	o.argv = fs.Args()
	switch strategy {
	case "auto":
		o.strategy = ptrace.Auto
	case "emulate":
		o.strategy = ptrace.Emulate
	case "boost":
		o.strategy = ptrace.Boost
	case "outofline", "xol":
		o.strategy = ptrace.OutOfLine
	case "singlestep", "step":
		o.strategy = ptrace.SingleStep
	case "jump":
		o.strategy = ptrace.Jump
	default:
		fmt.Fprintf(stderr, "trace: unknown -strategy %q (auto, emulate, boost, outofline, singlestep, jump)\n", strategy)
		return 2
	}
	if o.strSize < 0 || o.stack < 0 || o.maxEvents < 0 {
		fmt.Fprintln(stderr, "trace: -s, --stack and --max-events take a count >= 0")
		return 2
	}
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			fmt.Fprintln(stderr, "trace:", err)
			return 2
		}
		defer f.Close()
		o.report = f
	}
	if o.list != "" {
		if len(o.argv) != 1 {
			fmt.Fprintln(stderr, "trace: -l PATTERN takes one PROGRAM")
			return 2
		}
		return list(o)
	}
	switch {
	case len(o.pids) > 0 && len(o.argv) > 0:
		fmt.Fprintln(stderr, "trace: give either -p PID or a program, not both")
		return 2
	case len(o.pids) == 0 && len(o.argv) == 0:
		if len(o.specs) > 0 {
			fmt.Fprintln(stderr, "trace: probes given but no program (-- PROGRAM ARGS..., or -p PID)")
			return 2
		}
		return demo(o)
	case len(o.specs) == 0:
		fmt.Fprintln(stderr, "trace: no probe given (-e SPEC)")
		return 2
	}
	_, code := trace(o)
	return code
}
