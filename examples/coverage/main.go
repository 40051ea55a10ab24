// Command coverage measures how the probe sites of real binaries would run:
// for every function symbol of every ELF file given, it decodes the first N
// instructions of the function and counts how many onetrap would emulate,
// run out of line, reject, or fail to decode.
//
//	go run ./examples/coverage [-depth N] [-json] [-top K] [-files=false] FILE|DIR...
//
// Directories are walked; files that are not x86-64 ELF are skipped. The
// walk of a function stops early after an unconditional jmp or a ret (what
// follows may be another function's padding) and at an instruction that does
// not decode (its length is unknown).
//
// The last line of the text output is exactly
//
//	entries=<n> emulate=<n> (<pct>%) outofline=<n> rejected=<n> undecoded=<n>
//
// where the four counts are disjoint and add up to entries. With -json the
// JSON document goes to standard output and that line to standard error.
//
// Whatever the depth, it also counts the function entries where a trapless
// (Jump) probe's jmp rel32 could go: jump1 when the entry's instruction is
// 5 bytes or more and runs from a copy alone (region.Alone, GDB's rule for
// fast tracepoints), jump when that holds or package region proves a run of
// shorter instructions replaceable (region.Plan over the whole body); the
// entries where neither holds are counted by the rule that refused them.
package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/region"
	"github.com/onetrap/onetrap/symbols"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Class is one of the four disjoint outcomes for an instruction.
type Class int

// The outcomes, in report order.
const (
	Emulate Class = iota
	OutOfLine
	Rejected
	Undecoded
	nClass
)

var classNames = [nClass]string{"emulate", "outofline", "rejected", "undecoded"}

// String is the class's name in the summary line.
func (c Class) String() string { return classNames[c] }

// Shape is one instruction form (mnemonic and operand shape) with its count
// and one example.
type Shape struct {
	Shape  string `json:"shape"`
	Count  int    `json:"count"`
	Files  int    `json:"files"`  // how many files have the form
	Bytes  string `json:"bytes"`  // hex of one example
	Text   string `json:"text"`   // its Intel syntax
	Where  string `json:"where"`  // file:function+offset of the example
	Reason string `json:"reason"` // why not emulated (OutOfLine and Rejected)
}

// Failure is an instruction that did not decode.
type Failure struct {
	File  string `json:"file"`
	Func  string `json:"func"`
	Addr  uint64 `json:"addr"`
	Bytes string `json:"bytes"`
	Why   string `json:"why"`
}

// Counts are the four disjoint counts, and the trapless counts of function
// entries.
type Counts struct {
	Entries   int      `json:"entries"`
	Emulate   int      `json:"emulate"`
	OutOfLine int      `json:"outofline"`
	Rejected  int      `json:"rejected"`
	Undecoded int      `json:"undecoded"`
	Trapless  Trapless `json:"trapless"`
}

// Trapless counts function entries (one per function, whatever the depth)
// by whether a jump to a pad can replace their first bytes.
type Trapless struct {
	Functions int `json:"functions"`
	// Jump1: the entry's instruction is 5 bytes or more and a jump can
	// replace it alone, with no proof about the rest of the function.
	Jump1 int `json:"jump1"`
	// Jump: Jump1, or region.Plan proves a run of instructions replaceable.
	Jump int `json:"jump"`
	// Refused counts the other entries by the region.Rule that refused
	// them ("unreadable" when the body could not be read).
	Refused map[string]int `json:"refused"`
}

func (t *Trapless) merge(o *Trapless) {
	t.Functions += o.Functions
	t.Jump1 += o.Jump1
	t.Jump += o.Jump
	for k, n := range o.Refused {
		if t.Refused == nil {
			t.Refused = map[string]int{}
		}
		t.Refused[k] += n
	}
}

// Line is the trapless counts in one line.
func (t *Trapless) Line() string {
	return fmt.Sprintf("funcs=%d jump1=%d (%.1f%%) jump=%d (%.1f%%)",
		t.Functions, t.Jump1, pct(t.Jump1, t.Functions), t.Jump, pct(t.Jump, t.Functions))
}

// RefusedLine lists the refusal counts, most frequent first.
func (t *Trapless) RefusedLine() string {
	keys := make([]string, 0, len(t.Refused))
	for k := range t.Refused {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if t.Refused[keys[i]] != t.Refused[keys[j]] {
			return t.Refused[keys[i]] > t.Refused[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, t.Refused[k])
	}
	return strings.Join(parts, " ")
}

func (c *Counts) add(k Class, n int) {
	c.Entries += n
	switch k {
	case Emulate:
		c.Emulate += n
	case OutOfLine:
		c.OutOfLine += n
	case Rejected:
		c.Rejected += n
	case Undecoded:
		c.Undecoded += n
	}
}

func (c *Counts) merge(o *Counts) {
	c.Entries += o.Entries
	c.Emulate += o.Emulate
	c.OutOfLine += o.OutOfLine
	c.Rejected += o.Rejected
	c.Undecoded += o.Undecoded
	c.Trapless.merge(&o.Trapless)
}

func pct(n, d int) float64 {
	if d == 0 {
		return 0
	}
	return 100 * float64(n) / float64(d)
}

// Line is the summary line that ends the text output.
func (c *Counts) Line() string {
	return fmt.Sprintf("entries=%d emulate=%d (%.1f%%) outofline=%d rejected=%d undecoded=%d",
		c.Entries, c.Emulate, pct(c.Emulate, c.Entries), c.OutOfLine, c.Rejected, c.Undecoded)
}

// FileResult is what one file contributed.
type FileResult struct {
	Path      string `json:"path"`
	Go        bool   `json:"go"`
	Functions int    `json:"functions"`
	Counts
	Top      map[string][]Shape `json:"top"`
	Failures []Failure          `json:"failures"`
	Error    string             `json:"error,omitempty"`
	// JumpRefusals holds one example refusal per rule.
	JumpRefusals map[string]string `json:"jump_refusals,omitempty"`

	shapes [nClass]map[string]*Shape
}

// Report is the -json document.
type Report struct {
	Depth    int                `json:"depth"`
	Files    []*FileResult      `json:"files"`
	Skipped  int                `json:"skipped"` // not ELF, or not x86-64
	Total    Counts             `json:"total"`
	C        Counts             `json:"c"`  // files without a Go pclntab
	Go       Counts             `json:"go"` // Go binaries
	Pct      float64            `json:"emulate_pct"`
	Top      map[string][]Shape `json:"top"`
	Failures []Failure          `json:"failures"`
	// JumpRefusals holds one example refusal per rule.
	JumpRefusals map[string]string `json:"jump_refusals"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coverage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	depth := fs.Int("depth", 1, "instructions decoded from each function's entry")
	asJSON := fs.Bool("json", false, "write a JSON report to stdout (the summary line goes to stderr)")
	top := fs.Int("top", 30, "forms listed per class in the totals")
	perFile := fs.Bool("files", true, "print a section per file")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: coverage [-depth N] [-json] [-top K] [-files=false] FILE|DIR...\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 || *depth < 1 {
		fs.Usage()
		return 2
	}

	paths, skipped, err := collect(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "coverage: %v\n", err)
		return 1
	}

	results := make([]*FileResult, len(paths))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = measure(paths[i], *depth)
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()

	rep := &Report{Depth: *depth, Files: results, Skipped: skipped, JumpRefusals: map[string]string{}}
	var total [nClass]map[string]*Shape
	for k := range total {
		total[k] = map[string]*Shape{}
	}
	for _, r := range results {
		rep.Total.merge(&r.Counts)
		if r.Go {
			rep.Go.merge(&r.Counts)
		} else {
			rep.C.merge(&r.Counts)
		}
		rep.Failures = append(rep.Failures, r.Failures...)
		for k, ex := range r.JumpRefusals {
			if _, ok := rep.JumpRefusals[k]; !ok {
				rep.JumpRefusals[k] = ex
			}
		}
		for k := range r.shapes {
			for key, s := range r.shapes[k] {
				t := total[k][key]
				if t == nil {
					c := *s
					c.Count = 0
					t = &c
					total[k][key] = t
				}
				t.Count += s.Count
				t.Files++
			}
		}
		r.Top = topOf(r.shapes, 5)
	}
	rep.Top = topOf(total, *top)
	rep.Pct = pct(rep.Total.Emulate, rep.Total.Entries)

	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "coverage: %v\n", err)
			return 1
		}
		fmt.Fprintln(stderr, rep.Total.Line())
		return 0
	}
	printText(stdout, rep, *perFile)
	return 0
}

func topOf(shapes [nClass]map[string]*Shape, n int) map[string][]Shape {
	out := map[string][]Shape{}
	for k := Class(0); k < nClass; k++ {
		if k == Undecoded {
			continue // failures are listed one by one
		}
		var list []Shape
		for _, s := range shapes[k] {
			list = append(list, *s)
		}
		sort.Slice(list, func(i, j int) bool {
			if list[i].Count != list[j].Count {
				return list[i].Count > list[j].Count
			}
			return list[i].Shape < list[j].Shape
		})
		if len(list) > n {
			list = list[:n]
		}
		out[k.String()] = list
	}
	return out
}

func printText(w io.Writer, rep *Report, perFile bool) {
	errs := 0
	for _, r := range rep.Files {
		if r.Error != "" {
			errs++
		}
		if !perFile {
			continue
		}
		if r.Error != "" {
			fmt.Fprintf(w, "%s: error: %s\n", r.Path, r.Error)
			continue
		}
		lang := "C"
		if r.Go {
			lang = "Go"
		}
		fmt.Fprintf(w, "%s (%s): functions=%d %s\n", r.Path, lang, r.Functions, r.Counts.Line())
		fmt.Fprintf(w, "  trapless: %s", r.Trapless.Line())
		if len(r.Trapless.Refused) > 0 {
			fmt.Fprintf(w, "; refused: %s", r.Trapless.RefusedLine())
		}
		fmt.Fprintln(w)
		for _, k := range []Class{OutOfLine, Rejected} {
			list := r.Top[k.String()]
			if len(list) == 0 {
				continue
			}
			parts := make([]string, len(list))
			for i, s := range list {
				parts[i] = fmt.Sprintf("%s x%d", s.Shape, s.Count)
			}
			fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(parts, "; "))
		}
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  undecoded %#x %s [%s]: %s\n", f.Addr, f.Func, f.Bytes, f.Why)
		}
	}
	fmt.Fprintf(w, "\n== total over %d files (%d errors, %d skipped: not x86-64 ELF), depth %d\n",
		len(rep.Files), errs, rep.Skipped, rep.Depth)
	t := &rep.Total
	for _, k := range []Class{Emulate, OutOfLine, Rejected} {
		n := []int{t.Emulate, t.OutOfLine, t.Rejected}[k]
		fmt.Fprintf(w, "\n%s: %d (%.2f%%)\n", k, n, pct(n, t.Entries))
		for _, s := range rep.Top[k.String()] {
			fmt.Fprintf(w, "  %8d %6.2f%% %5d files  %-34s %-30s %-40s", s.Count, pct(s.Count, t.Entries), s.Files, s.Shape, "["+s.Bytes+"]", s.Text)
			if k != Emulate && s.Reason != "" {
				fmt.Fprintf(w, "  -- %s", s.Reason)
			}
			fmt.Fprintf(w, "  (%s)\n", s.Where)
		}
	}
	fmt.Fprintf(w, "\nundecoded: %d\n", t.Undecoded)
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "  %s %#x %s [%s]: %s\n", f.File, f.Addr, f.Func, f.Bytes, f.Why)
	}
	fmt.Fprintf(w, "\ntrapless at function entries (jump1: one instruction of 5 bytes or more; jump: that, or a region proven by region.Plan):\n")
	fmt.Fprintf(w, "  C and other files: %s\n  Go binaries:        %s\n  all:                %s\n",
		rep.C.Trapless.Line(), rep.Go.Trapless.Line(), t.Trapless.Line())
	fmt.Fprintf(w, "  refused: %s\n", t.Trapless.RefusedLine())
	keys := make([]string, 0, len(rep.JumpRefusals))
	for k := range rep.JumpRefusals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "    %-16s e.g. %s\n", k, rep.JumpRefusals[k])
	}
	fmt.Fprintf(w, "\nC and other files: %s\nGo binaries:        %s\n", rep.C.Line(), rep.Go.Line())
	fmt.Fprintln(w, t.Line())
}

// collect expands the arguments into x86-64 ELF files, each once (by device
// and inode: /usr/lib holds many symlinks to the same library).
func collect(args []string) (paths []string, skipped int, err error) {
	type key struct{ dev, ino uint64 }
	seen := map[key]bool{}
	consider := func(p string) {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return
		}
		k := key{uint64(st.Dev), st.Ino}
		if seen[k] {
			return
		}
		seen[k] = true
		if !isX8664ELF(p) {
			skipped++
			return
		}
		paths = append(paths, p)
	}
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, 0, err
		}
		if !fi.IsDir() {
			consider(a)
			continue
		}
		err = filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable parts of a tree are not ours to measure
			}
			if !d.IsDir() {
				consider(p)
			}
			return nil
		})
		if err != nil {
			return nil, 0, err
		}
	}
	sort.Strings(paths)
	return paths, skipped, nil
}

func isX8664ELF(p string) bool {
	fh, err := os.Open(p)
	if err != nil {
		return false
	}
	defer fh.Close()
	var h [20]byte
	if _, err := io.ReadFull(fh, h[:]); err != nil {
		return false
	}
	return string(h[:4]) == "\x7fELF" && h[4] == 2 && h[5] == 1 && h[18] == 62 && h[19] == 0
}

// measure decodes the first depth instructions of every function of path.
func measure(path string, depth int) (r *FileResult) {
	r = &FileResult{Path: path}
	for k := range r.shapes {
		r.shapes[k] = map[string]*Shape{}
	}
	defer func() {
		if p := recover(); p != nil {
			r.Error = fmt.Sprintf("panic while measuring: %v", p)
		}
	}()
	f, err := symbols.Open(path)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer f.Close()
	r.Go = f.IsGo
	r.Functions = len(f.Funcs)
	base := filepath.Base(path)
	buf := make([]byte, depth*decode.MaxLen)
	for i := range f.Funcs {
		fn := &f.Funcs[i]
		n := uint64(len(buf))
		if fn.Size < n {
			n = fn.Size
		}
		got, err := f.ReadAt(buf[:n], fn.Addr)
		if err != nil && uint64(got) != n {
			r.Error = err.Error()
			return r
		}
		code := buf[:n]
		var entry *decode.Insn
		for off, k := 0, 0; k < depth && off < len(code); k++ {
			pc := fn.Addr + uint64(off)
			in, err := decode.Decode(code[off:], pc)
			if err != nil {
				r.add(Undecoded, nil, "", "")
				end := min(off+decode.MaxLen, len(code))
				r.Failures = append(r.Failures, Failure{File: path, Func: fmt.Sprintf("%s+%#x", fn.Name, off),
					Addr: pc, Bytes: hex.EncodeToString(code[off:end]), Why: err.Error()})
				break
			}
			if k == 0 {
				entry = in
			}
			cls := Rejected
			emulated, why := emu.Supports(in)
			switch {
			case emulated:
				cls = Emulate
			case in.Verdict == decode.CanRun:
				cls = OutOfLine
			}
			r.add(cls, in, fmt.Sprintf("%s:%s+%#x", base, fn.Name, off), why)
			if in.Flow == decode.FlowJump || in.Flow == decode.FlowIndirectJump || in.Flow == decode.FlowRet {
				break
			}
			off += in.Len
		}
		r.jumpAt(f, fn, entry, base)
	}
	return r
}

// fileImage is a file as region.PlanIn reads it: jump tables from its
// loaded segments as the file holds them.
type fileImage struct{ f *symbols.File }

func (i fileImage) ReadAt(b []byte, addr uint64) (int, error) { return i.f.ReadData(b, addr) }
func (i fileImage) Executable(addr uint64) bool               { return i.f.Executable(addr) }

// jumpAt counts whether a jump can replace the entry of fn, whose first
// instruction is entry (nil when it does not decode): alone, or as a
// region that region.PlanIn proves from the whole body and its jump tables.
func (r *FileResult) jumpAt(f *symbols.File, fn *symbols.Func, entry *decode.Insn, base string) {
	t := &r.Trapless
	t.Functions++
	if entry != nil && region.Alone(entry) == nil {
		t.Jump1++
		t.Jump++
		return
	}
	rule, why := "unreadable", ""
	body, err := f.Body(fn)
	if err == nil {
		if _, err = region.PlanIn(fileImage{f}, body, fn.Addr, fn.Addr); err == nil {
			t.Jump++
			return
		}
		var ref *region.Refusal
		if errors.As(err, &ref) {
			rule = string(ref.Rule)
		}
	}
	why = err.Error()
	if t.Refused == nil {
		t.Refused = map[string]int{}
		r.JumpRefusals = map[string]string{}
	}
	t.Refused[rule]++
	if _, ok := r.JumpRefusals[rule]; !ok {
		r.JumpRefusals[rule] = fmt.Sprintf("%s:%s: %s", base, fn.Name, why)
	}
}

func (r *FileResult) add(k Class, in *decode.Insn, where, reason string) {
	r.Counts.add(k, 1)
	if in == nil {
		return
	}
	key := ShapeOf(in)
	s := r.shapes[k][key]
	if s == nil {
		s = &Shape{Shape: key, Bytes: hex.EncodeToString(in.Code()), Text: in.String(), Where: where, Reason: reason}
		r.shapes[k][key] = s
	}
	s.Count++
}

// ShapeOf names an instruction's form: prefixes that change its meaning,
// the mnemonic, and each operand's kind and width, as in `mov r64, m64`,
// `movaps m128, xmm`, `lock cmpxchg m32, r32`, `mov r64, fs:m64`,
// `lea r64, m[rip]`.
func ShapeOf(in *decode.Insn) string {
	inst := &in.Inst
	if inst.Op == 0 {
		s := in.String()
		if strings.HasPrefix(s, "endbr") {
			return s
		}
		return fmt.Sprintf("unknown-to-x86asm opcode %s", opcodeHex(in))
	}
	var b strings.Builder
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&(x86asm.PrefixImplicit|x86asm.PrefixIgnored) != 0 {
			continue
		}
		switch p &^ (x86asm.PrefixImplicit | x86asm.PrefixIgnored | x86asm.PrefixInvalid) {
		case x86asm.PrefixLOCK:
			b.WriteString("lock ")
		case x86asm.PrefixREP:
			b.WriteString("rep ")
		case x86asm.PrefixREPN:
			b.WriteString("repne ")
		case x86asm.PrefixBND:
			b.WriteString("bnd ")
		case x86asm.PrefixXACQUIRE:
			b.WriteString("xacquire ")
		case x86asm.PrefixXRELEASE:
			b.WriteString("xrelease ")
		}
	}
	b.WriteString(strings.ToLower(inst.Op.String()))
	for i, a := range inst.Args {
		if a == nil {
			break
		}
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteString(", ")
		}
		b.WriteString(argShape(inst, a))
	}
	return b.String()
}

func opcodeHex(in *decode.Insn) string {
	return hex.EncodeToString(in.Code())
}

func argShape(inst *x86asm.Inst, a x86asm.Arg) string {
	switch a := a.(type) {
	case x86asm.Reg:
		return regShape(a)
	case x86asm.Mem:
		s := "m"
		if inst.MemBytes > 0 {
			s = fmt.Sprintf("m%d", inst.MemBytes*8)
		}
		if a.Base == x86asm.RIP {
			s += "[rip]"
		}
		switch a.Segment {
		case x86asm.FS:
			s = "fs:" + s
		case x86asm.GS:
			s = "gs:" + s
		}
		return s
	case x86asm.Imm:
		return "imm"
	case x86asm.Rel:
		return "rel"
	}
	return fmt.Sprintf("%T", a)
}

func regShape(r x86asm.Reg) string {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		return "r8"
	case r >= x86asm.AX && r <= x86asm.R15W:
		return "r16"
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return "r32"
	case r >= x86asm.RAX && r <= x86asm.R15:
		return "r64"
	case r == x86asm.RIP || r == x86asm.EIP:
		return "rip"
	case r >= x86asm.F0 && r <= x86asm.F7:
		return "st"
	case r >= x86asm.M0 && r <= x86asm.M7:
		return "mm"
	case r >= x86asm.X0 && r <= x86asm.X31:
		return "xmm"
	case r >= x86asm.Y0 && r <= x86asm.Y31:
		return "ymm"
	case r >= x86asm.Z0 && r <= x86asm.Z31:
		return "zmm"
	case r >= x86asm.K0 && r <= x86asm.K7:
		return "k"
	}
	return strings.ToLower(r.String())
}
