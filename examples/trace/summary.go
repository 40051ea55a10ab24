package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
)

// report writes the per-hit lines still buffered, then the summary, as a
// table or as JSON.
func (s *session) report(res *Result) error {
	if err := s.out.Flush(); err != nil {
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
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tPROBE\tINSTRUCTION\tDECODER\tSTRATEGY\tHITS\tTRACER CPU/HIT")
	var total uint64
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
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d hits.\nDECODER: emulate when the emulator implements the instruction, outofline when only\n"+
		"the CPU can run it. STRATEGY: how hits ran (emulate: one trap; boost: a copy plus a jump back, one trap;\n"+
		"outofline: a copy stepped, two traps; singlestep: every thread stopped, as debuggers do).\nTRACER CPU/HIT: the tracer thread's CPU time from a hit's handler to the next hit's\n"+
		"(fixup, resume, wait, the next hit's registers), charged to the first; time asleep is not counted.\n", total)
	for _, e := range res.Errors {
		fmt.Fprintln(w, "trace:", e)
	}
	return nil
}
