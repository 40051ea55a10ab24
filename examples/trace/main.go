// Command trace counts, and optionally prints, the hits of probes put into a
// running program by name: the onetrap library's tracer.
//
//	go run ./examples/trace [flags] -- PROGRAM [ARGS...]
//	go run ./examples/trace [flags] -pid PID
//	go run ./examples/trace                      (the built-in demo)
//
// Probes are specs in the spirit of `perf probe` (-p, repeatable): FUNC,
// FUNC+OFF, FUNC%return, 0xADDR, FILE:LINE, globs, LIB:FUNC, each optionally
// followed by registers or argN to print on every hit. Each hit costs the
// traced thread one trap when its instruction is emulated, and no other
// thread is stopped. At exit, or on SIGINT/SIGTERM (which detach and leave
// the program running), a summary gives every probe's hits and the tracer's
// CPU time per hit.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/onetrap/onetrap/ptrace"
)

// options is a parsed command line.
type options struct {
	specs    []string
	pid      int
	verbose  bool
	json     bool
	out      string
	strategy ptrace.Strategy
	argv     []string // the program to start, when pid is 0
	env      []string // its environment; nil for the tracer's own

	stdout, stderr io.Writer // the tracer's own: diagnostics go to stderr
	report         io.Writer // per-hit lines and the summary: stderr or -o FILE
}

// specList collects the repeatable -p flag.
type specList []string

func (s *specList) String() string     { return strings.Join(*s, " ") }
func (s *specList) Set(v string) error { *s = append(*s, v); return nil }

const usage = `usage: trace [flags] -- PROGRAM [ARGS...]
       trace [flags] -pid PID
       trace                        (no program: the built-in demo)

Puts probes into a program and counts their hits; each hit is served with
one trap when the probed instruction can be emulated (or boosted). The
program's standard files are its own. At exit, or when the tracer gets
SIGINT or SIGTERM (it then detaches, and the program runs on), a summary
lists every probe: address, site, instruction, the decoder's verdict, the
strategy its hits ran with, hits, and the tracer's CPU time per hit.

Probe specs (-p, repeatable), as in perf probe:
  FUNC                 a function's first instruction (ELF symbols, or the
                       Go pclntab, stripped Go binaries included); for a Go
                       function, the one after its stack-bound check, which
                       runs twice when the stack grows (FUNC+0: the first)
  FUNC+OFF             OFF bytes in (decimal or 0x hex), an instruction boundary
  FUNC%return          every RET instruction of the function
  0xADDR               a file virtual address
  FILE:LINE            where the line's code begins (DWARF, or the Go pclntab)
  'GLOB'               every function a glob matches ('main.*', 'http.*')
  LIB:SPEC             in a shared library (libc:malloc), resolved as soon as
                       the library is mapped, dlopen included
  'SPEC w1 w2 ...'     print registers (rdi, esi, r8) or argN (the function's
                       calling convention, Go or C) on each hit; name=w labels

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
	var strategy string
	fs.Var(&specs, "p", "probe `SPEC` (repeatable; see above)")
	fs.IntVar(&o.pid, "pid", 0, "attach to the running process `PID` instead of starting a program")
	fs.BoolVar(&o.verbose, "v", false, "print a line per hit: thread, probe, arguments")
	fs.BoolVar(&o.json, "json", false, "write the summary as JSON (after -v's hits, one JSON object per line)")
	fs.StringVar(&o.out, "o", "", "write per-hit lines and the summary to `FILE` instead of stderr")
	fs.StringVar(&strategy, "strategy", "auto", "run every probed instruction as `S`: auto, emulate, boost, outofline or singlestep")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
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
	default:
		fmt.Fprintf(stderr, "trace: unknown -strategy %q (auto, emulate, boost, outofline, singlestep)\n", strategy)
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
	switch {
	case o.pid != 0 && len(o.argv) > 0:
		fmt.Fprintln(stderr, "trace: give either -pid or a program, not both")
		return 2
	case o.pid == 0 && len(o.argv) == 0:
		if len(o.specs) > 0 {
			fmt.Fprintln(stderr, "trace: probes given but no program (-- PROGRAM ARGS..., or -pid PID)")
			return 2
		}
		return demo(o)
	case len(o.specs) == 0:
		fmt.Fprintln(stderr, "trace: no probe given (-p SPEC)")
		return 2
	}
	_, code := trace(o)
	return code
}
