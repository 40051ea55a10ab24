package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// report writes the lines still buffered, closes --chrome and --folded,
// then writes the summary, as tables or as JSON.
func (s *session) report(res *Result) error {
	s.mu.Lock()
	err := s.out.Flush()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.sinks.close(); err != nil {
		return err
	}
	w := s.o.report
	if s.o.json {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(res)
	}
	switch {
	case res.Detached:
		fmt.Fprintf(w, "\ntrace: detached from pid %d, which runs on untraced\n", res.Pid)
	case res.Exit != nil && res.Exit.Signal != "":
		fmt.Fprintf(w, "\ntrace: pid %d killed by %s\n", res.Pid, res.Exit.Signal)
	case res.Exit != nil:
		fmt.Fprintf(w, "\ntrace: pid %d exited with status %d\n", res.Pid, res.Exit.Code)
	}
	if !s.o.summaryOnly {
		if err := probeTable(w, res); err != nil {
			return err
		}
	}
	if len(res.Calls) > 0 {
		if err := callTable(w, res.Calls); err != nil {
			return err
		}
	}
	if s.o.hist {
		for _, st := range res.Calls {
			histogram(w, st)
		}
	}
	if s.o.stack > 0 {
		for _, st := range res.Calls {
			if len(st.TopStacks) == 0 {
				continue
			}
			fmt.Fprintf(w, "\ntop stacks of %s:\n", st.Func)
			for _, sc := range st.TopStacks {
				fmt.Fprintf(w, "  %8d  %s\n", sc.Calls, sc.Stack)
			}
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintln(w, "trace:", e)
	}
	return nil
}

// probeTable writes a row per probe site.
func probeTable(w io.Writer, res *Result) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tPROBE\tINSTRUCTION\tDECODER\tSTRATEGY\tHITS\tTRACER CPU/HIT")
	var total, drops uint64
	for _, rw := range res.Probes {
		if rw.Error != "" {
			fmt.Fprintf(tw, "%#x\t%s\t%s\t-\tnot probed\t-\t-\n", rw.Addr, rw.Site, rw.Error)
			continue
		}
		cpu := "-"
		if rw.CPUPerHitNs > 0 {
			cpu = fmt.Sprintf("%.1f µs", rw.CPUPerHitNs/1e3)
		}
		fmt.Fprintf(tw, "%#x\t%s\t%s\t%s\t%s\t%d\t%s\n", rw.Addr, rw.Site, rw.Insn, rw.Verdict, rw.Strategy, rw.Hits, cpu)
		total += rw.Hits
		drops += rw.Drops
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if drops > 0 {
		fmt.Fprintf(w, "%d hits recorded in the program were dropped, not printed: its ring was full.\n", drops)
	}
	fmt.Fprintf(w, "%d hits.\nDECODER: emulate when the emulator implements the instruction, outofline when only\n"+
		"the CPU can run it. STRATEGY: how hits ran (emulate: one trap; boost: a copy plus a jump back, one trap;\n"+
		"outofline: a copy stepped, two traps; singlestep: every thread stopped, as debuggers do; jump: no trap,\n"+
		"a jump to a pad in the program that counts the hit, or records it for -v lines of register values;\n"+
		"\"no jump\" says why not).\nTRACER CPU/HIT: the tracer thread's CPU time from a hit's handler to the next hit's\n"+
		"(fixup, resume, wait, the next hit's registers), charged to the first; time asleep is not counted.\n", total)
	return nil
}

// callTable writes the calls summary, as strace -c and uftrace report do.
func callTable(w io.Writer, calls []*FuncStats) error {
	var all int64
	for _, st := range calls {
		all += st.TotalNs
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "% TIME\tTOTAL\tCALLS\tAVG\tMIN\tMAX\tUNFINISHED\tFUNCTION\t")
	for _, st := range calls {
		pct := 0.0
		if all > 0 {
			pct = 100 * float64(st.TotalNs) / float64(all)
		}
		fmt.Fprintf(tw, "%.2f\t%s\t%d\t%s\t%s\t%s\t%d\t%s\t\n", pct, dur(float64(st.TotalNs)), st.Calls,
			dur(st.AvgNs), dur(float64(st.MinNs)), dur(float64(st.MaxNs)), st.Unfinished, st.Func)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Durations are from entry to return as the tracer saw them, each hit's trap included; a call whose\n"+
		"return was never seen (still running, or left by longjmp or an exit) is UNFINISHED.")
	return nil
}

func dur(ns float64) string {
	return time.Duration(ns).Round(time.Duration(1)).String()
}

// histogram writes a function's call durations as a log2 histogram, in
// the layout of funclatency and bpftrace's hist().
func histogram(w io.Writer, st *FuncStats) {
	last := -1
	for i, n := range st.Hist {
		if n > 0 {
			last = i
		}
	}
	if last < 0 {
		return
	}
	var peak uint64
	for _, n := range st.Hist {
		peak = max(peak, n)
	}
	fmt.Fprintf(w, "\n%s\n%20s : %-9s %s\n", st.Func, "usecs", "count", "distribution")
	for i := 0; i <= last; i++ {
		lo, hi := uint64(0), uint64(0)
		if i > 0 {
			lo, hi = 1<<(i-1), 1<<i-1
		}
		stars := int(40 * st.Hist[i] / peak)
		fmt.Fprintf(w, "%10d -> %-7d : %-9d |%-40s|\n", lo, hi, st.Hist[i], strings.Repeat("*", stars))
	}
}
