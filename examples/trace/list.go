package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/uprobe"
)

// list prints, for -l PATTERN PROGRAM, the functions a glob matches with
// their first probed instruction, the decoder's verdict and the strategy
// Auto would give a probe there; for -l FUNC:* the function's source lines
// and where each begins.
func list(o *options) int {
	ex, err := uprobe.OpenExecutable(o.argv[0])
	if err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return 2
	}
	defer ex.Close()
	if fn, ok := strings.CutSuffix(o.list, ":*"); ok {
		return listLines(o, ex, fn)
	}
	fns := ex.File.Match(o.list)
	if len(fns) == 0 {
		fmt.Fprintf(o.stderr, "trace: no function matches %q in %s\n", o.list, o.argv[0])
		return 2
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tFUNCTION\tINSTRUCTION\tDECODER\tSTRATEGY")
	for _, fn := range fns {
		if fn.IFunc {
			fmt.Fprintf(tw, "%#x\t%s\t(IFUNC: the implementation is chosen at run time)\t-\t-\n", fn.Addr, fn.Name)
			continue
		}
		site, err := ex.EntrySite(nil, fn, nil)
		if err != nil {
			fmt.Fprintf(tw, "%#x\t%s\t%v\t-\t-\n", fn.Addr, fn.Name, err)
			continue
		}
		var code [15]byte
		n, _ := ex.File.ReadAt(code[:], site.Addr)
		in, err := decode.Decode(code[:n], site.Addr)
		if err != nil {
			fmt.Fprintf(tw, "%#x\t%s\t%v\tundecoded\t-\n", site.Addr, site.String(), err)
			continue
		}
		fmt.Fprintf(tw, "%#x\t%s\t%s\t%s\t%s\n", site.Addr, site.String(), in, verdict(in), autoStrategy(in))
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	fmt.Fprintf(o.stdout, "%d functions. STRATEGY is what -strategy auto picks, unless a rip-relative copy is out of reach of its slot (then outofline).\n", len(fns))
	return 0
}

// listLines prints the source lines of a function and the first address of
// each.
func listLines(o *options, ex *uprobe.Executable, name string) int {
	fn, err := ex.File.LookupFunc(name)
	if err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return 2
	}
	type line struct {
		file string
		line int
		addr uint64
	}
	var lines []line
	seen := map[string]bool{}
	err = ex.File.Walk(fn, func(in *decode.Insn) bool {
		file, l, _ := ex.File.PCToLine(in.Addr)
		if key := fmt.Sprintf("%s:%d", file, l); file != "" && !seen[key] {
			seen[key] = true
			lines = append(lines, line{file, l, in.Addr})
		}
		return true
	})
	if len(lines) == 0 {
		fmt.Fprintf(o.stderr, "trace: %s: no line information (%v)\n", name, err)
		return 2
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tLINE\tSPEC")
	for _, l := range lines {
		short := l.file
		if i := strings.LastIndexByte(short, '/'); i >= 0 {
			short = short[i+1:]
		}
		fmt.Fprintf(tw, "%#x\t%s:%d\t%s:%d\n", l.addr, l.file, l.line, short, l.line)
	}
	tw.Flush()
	return 0
}

// autoStrategy is the choice ptrace.Auto makes for in, or "refused".
func autoStrategy(in *decode.Insn) string {
	if emulated, _ := emu.Supports(in); in.Verdict == decode.Refused || in.Verdict == decode.EmulateOnly && !emulated {
		return "refused"
	}
	return ptrace.AutoStrategy(in, true).String()
}
