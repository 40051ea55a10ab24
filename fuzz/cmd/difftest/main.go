// Command difftest runs a differential campaign: instructions of every
// emulated form, from random states, on the real CPU (in a ptrace sandbox)
// and through emu.Step, compared register by register, flag by defined flag
// and byte by byte. With -lengths it also walks the function bodies of ELF
// files and has the CPU referee every length that decode gives.
//
//	go run ./fuzz/cmd/difftest -n 1000000 [-seed S] [-forms REGEXP] [-lengths FILE...]
//
// Each mismatch is printed on stdout as a reproducer that the regression
// file (fuzz/testdata/regressions.txt) accepts as it is. Progress goes to
// stderr. The exit status is 1 when anything disagreed, and the last line is
//
//	cases=<n> mismatches=<m> forms=<k> rate=<cases per second>/s
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/onetrap/onetrap/fuzz"
)

// fileList is a repeatable flag.
type fileList []string

// String lists the files.
func (f *fileList) String() string { return strings.Join(*f, ",") }

// Set adds a file.
func (f *fileList) Set(s string) error { *f = append(*f, s); return nil }

func main() {
	var lengths fileList
	n := flag.Int("n", 100000, "emulation cases to run (0: none)")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the case generator")
	forms := flag.String("forms", "", "only forms whose names match this regular expression")
	flag.Var(&lengths, "lengths", "ELF file whose function bodies' lengths are checked against the CPU (repeatable; further arguments are more files)")
	maxLen := flag.Int("length-max", 0, "stop the length campaign after this many instructions (0: all)")
	perFile := flag.Int("length-per-file", 0, "decode at most this many instructions of each file (0: all)")
	verbose := flag.Bool("v", false, "print every form's counts")
	process := flag.Bool("process", false, "emulate on the sandbox's own memory through memio.Process (as on a probe hit) rather than on in-memory pages")
	flag.Parse()
	if len(lengths) > 0 {
		lengths = append(lengths, flag.Args()...)
	} else if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "difftest: unexpected arguments %q (files go after -lengths)\n", flag.Args())
		os.Exit(2)
	}
	os.Exit(run(*n, *seed, *forms, lengths, *maxLen, *perFile, *verbose, *process))
}

func run(n int, seed uint64, forms string, lengths []string, maxLen, perFile int, verbose, process bool) int {
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	var re *regexp.Regexp
	if forms != "" {
		var err error
		if re, err = regexp.Compile(forms); err != nil {
			fmt.Fprintf(os.Stderr, "difftest: -forms: %v\n", err)
			return 2
		}
	}
	o, err := fuzz.NewOracle()
	if err != nil {
		fmt.Fprintf(os.Stderr, "difftest: %v\n", err)
		return 2
	}
	defer o.Close()
	var ch *fuzz.Checker
	if process {
		if ch, err = fuzz.NewProcessChecker(o); err != nil {
			fmt.Fprintf(os.Stderr, "difftest: %v\n", err)
			return 2
		}
		defer ch.Close()
	}
	c, err := fuzz.NewCampaign(o, seed, re, ch)
	if err != nil {
		fmt.Fprintf(os.Stderr, "difftest: %v\n", err)
		return 2
	}
	fmt.Fprintf(out, "# seed=%d forms=%d process=%v\n", seed, len(c.Forms), process)
	c.OnMismatch = func(m *fuzz.Mismatch) {
		fmt.Fprintf(out, "%s\n", m)
		out.Flush()
	}
	bar := newProgress()
	start := time.Now()
	if n > 0 {
		err = c.Run(n, func(done int) { bar.show(done, n, c.Mismatches, "cases") })
		bar.done()
		if err != nil {
			fmt.Fprintf(os.Stderr, "difftest: %v\n", err)
			return 2
		}
	}
	elapsed := time.Since(start)
	if verbose {
		fmt.Fprint(out, c.Report())
	}
	if d := c.Checker.FaultAddrDiffs; d > 0 {
		fmt.Fprintf(out, "# %d faults named a different address on the two sides (not mismatches: after a fault the CPU runs the instruction):\n", d)
		kinds := make([]string, 0, len(c.Checker.FaultAddrExamples))
		for k := range c.Checker.FaultAddrExamples {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(out, "#   %s: e.g. %s\n", k, c.Checker.FaultAddrExamples[k])
		}
	}
	if c.Foreign > 0 {
		fmt.Fprintf(out, "# skipped %d cases that touched the sandbox's own mappings\n", c.Foreign)
	}
	if c.Unrunnable > 0 {
		fmt.Fprintf(out, "# skipped %d cases whose non-canonical rsp the CPU cannot be resumed with here\n", c.Unrunnable)
	}
	if n > 0 {
		for _, m := range c.Missing() {
			fmt.Fprintf(out, "not generated: %s\n", m)
		}
		if re == nil {
			for _, s := range c.Ungenerated(fuzz.EmulatedShapes(fuzz.ShapePrefixes)) {
				fmt.Fprintf(out, "not generated: decode emulates %s\n", s)
			}
		}
	}
	mismatches := c.Mismatches
	if len(lengths) > 0 {
		lc := &fuzz.LengthChecker{O: o, Max: maxLen, PerFile: perFile}
		lc.OnDisagree = func(d *fuzz.LengthDisagreement) {
			fmt.Fprintf(out, "%s\n", d)
			out.Flush()
		}
		lc.Progress = func(s *fuzz.LengthStats) {
			total := maxLen
			bar.show(s.Insns, total, s.Disagree, "insns")
		}
		lstart := time.Now()
		skipped := 0
		seen := map[string]bool{}
		o.Do(func() {
			for _, f := range lengths {
				if maxLen > 0 && lc.Stats.Insns >= maxLen {
					break
				}
				// A library is often listed under several names.
				if p, err := filepath.EvalSymlinks(f); err == nil {
					if seen[p] {
						continue
					}
					seen[p] = true
				}
				if err := lc.File(f); err != nil {
					// Scripts and other non-ELF files in a directory
					// listing are passed over quietly.
					if skipped++; skipped <= 5 {
						fmt.Fprintf(out, "# lengths: skipped %s: %v\n", f, err)
					}
				}
			}
		})
		if skipped > 5 {
			fmt.Fprintf(out, "# lengths: skipped %d files in all\n", skipped)
		}
		bar.done()
		ls := lc.Stats
		fmt.Fprintf(out, "lengths: %s rate=%.0f/s\n", ls, float64(ls.Insns)/time.Since(lstart).Seconds())
		mismatches += ls.Disagree
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(c.Cases) / elapsed.Seconds()
	}
	fmt.Fprintf(out, "cases=%d mismatches=%d forms=%d rate=%.0f/s\n", c.Cases, mismatches, c.FormsCovered(), rate)
	if mismatches > 0 {
		return 1
	}
	return 0
}

// progress draws a bar on stderr at most ten times a second.
type progress struct {
	start, last time.Time
	drawn       bool
}

func newProgress() *progress { return &progress{start: time.Now()} }

func (p *progress) show(done, total, bad int, what string) {
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && done != total {
		return
	}
	p.last, p.drawn = now, true
	rate := float64(done) / now.Sub(p.start).Seconds()
	if total <= 0 {
		fmt.Fprintf(os.Stderr, "\r%d %s %.0f/s mismatches=%d ", done, what, rate, bad)
		return
	}
	const width = 30
	fill := min(width, done*width/total)
	fmt.Fprintf(os.Stderr, "\r[%s%s] %3d%% %d/%d %s %.0f/s mismatches=%d ",
		strings.Repeat("#", fill), strings.Repeat(".", width-fill), done*100/total, done, total, what, rate, bad)
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(os.Stderr)
	}
	p.start, p.drawn = time.Now(), false
}
