package main

import (
	"bufio"
	"math/bits"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/probespec"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
)

// fnInfo is a function whose calls a spec traces: what to print of its
// arguments and result, its filter, and its statistics.
type fnInfo struct {
	Name   string
	id     uint64 // tells its frames apart in uprobe.Calls
	goFunc bool
	args   []probespec.Arg // printed at the entry
	ret    *probespec.Arg  // printed at the return
	cond   *probespec.Cond
	stats  FuncStats
	stacks map[string]uint64 // folded stack → calls, with --stack
}

// FuncStats is the summary of one function's calls.
type FuncStats struct {
	Func    string  `json:"func"`
	Calls   uint64  `json:"calls"`
	TotalNs int64   `json:"total_ns"`
	MinNs   int64   `json:"min_ns"`
	MaxNs   int64   `json:"max_ns"`
	AvgNs   float64 `json:"avg_ns"`
	// Unfinished counts calls whose return was never seen: still running
	// at the end, or left by longjmp, an exception or an exit.
	Unfinished uint64 `json:"unfinished,omitempty"`
	// Hist counts calls by the log2 of their duration in whole µs: Hist[0]
	// holds those under 1 µs, Hist[i] 2^(i-1) to 2^i-1 µs.
	Hist []uint64 `json:"hist,omitempty"`
	// TopStacks are the most frequent call stacks (with --stack).
	TopStacks []StackCount `json:"top_stacks,omitempty"`
}

// StackCount is a folded stack and the calls made through it.
type StackCount struct {
	Stack string `json:"stack"`
	Calls uint64 `json:"calls"`
}

// call is a call in progress.
type call struct {
	fn    *fnInfo
	start int64 // monotonic ns
	tid   int
	depth int
	keep  bool       // passed the filters known at the entry
	open  bool       // its line is printed up to the arguments
	args  string     // the printed arguments, when printed at the return
	entry *regs.Regs // the entry registers, for a filter on retval
	stack []uint64   // with --stack
	id    uint64     // its number, telling it from the open line's call
}

// fnFor returns the record of the function of site for spec sp: one per
// spec and function name, shared by processes and images.
func (s *session) fnFor(sp *spec, ex *uprobe.Executable, site *probespec.Site) *fnInfo {
	key := sp.sp.Raw + "\x00" + site.Func.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi := s.funcs[key]; fi != nil {
		return fi
	}
	fi := &fnInfo{Name: site.Func.Name, id: uint64(len(s.fnList) + 1), goFunc: site.Func.Go, cond: site.Cond}
	fi.stats.Func = fi.Name
	for i := range site.Args {
		if a := site.Args[i]; a.Ret {
			fi.ret = &a
		} else {
			fi.args = append(fi.args, a)
		}
	}
	if len(sp.sp.Args) == 0 {
		fi.args, fi.ret = defaultArgs(ex, site)
	}
	s.funcs[key] = fi
	s.fnList = append(s.fnList, fi)
	return fi
}

// now is the monotonic clock in ns.
func now() int64 {
	return time.Since(epoch).Nanoseconds()
}

var epoch = time.Now()

// info returns what the session knows of probe p, with mu held.
func (s *session) info(p *ptrace.Probe) *probeInfo {
	return s.byProbe[p]
}

// hit counts a hit of an entry or plain probe and charges the tracer's
// time; nil for a probe the session no longer knows (dropped with its
// image). Called with mu held.
func (s *session) hit(p *ptrace.Probe) *probeInfo {
	in := s.info(p)
	if in != nil {
		in.row.hits++
		s.account(in.row)
	}
	return in
}

// onHit serves a probe that is not a call.
func (s *session) onHit(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.hit(p)
	if in == nil {
		return
	}
	rw := in.row
	if !s.wanted(tid) || !rw.cond.Eval(r, r, m, s.o.strSize) {
		return
	}
	var stack []uint64
	if s.o.stack > 0 || s.sinks.folded != nil {
		stack = s.unwind(r, m, false)
		s.sinks.fold(in.proc, stack)
	}
	if s.o.verbose && !s.o.summaryOnly {
		s.printHit(tid, in.proc, rw, r, m, t)
		s.printStack(in.proc, stack)
	}
	s.sinks.instant(rw.Site, in.proc.pid, tid, t)
	s.counted()
}

// recordable says whether the probe at ps can record its hits instead of
// trapping: it prints lines (-v) of register values only (no string, no
// filter, stack or event limit, not a call), and which registers, at most
// eight, its records hold.
func (s *session) recordable(ps *probespec.Site, fi *fnInfo) ([]ptrace.Reg, bool) {
	o := s.o
	if fi != nil || !o.verbose || o.summaryOnly || ps.Cond != nil || o.stack > 0 || o.folded != "" || o.chrome != "" ||
		o.maxEvents > 0 || (o.strategy != ptrace.Auto && o.strategy != ptrace.Jump) {
		return nil, false
	}
	var list []ptrace.Reg
	for _, a := range ps.Args {
		i, ok := regs.Index(a.Reg)
		if !ok || a.Ret || a.Type.IsString() {
			return nil, false
		}
		if !slices.Contains(list, ptrace.Reg(i)) {
			list = append(list, ptrace.Reg(i))
		}
	}
	if len(list) > ptrace.MaxRecordRegs {
		return nil, false
	}
	return list, true
}

// onRecord prints a recorded hit as onHit prints a trapped one: the
// registers are those the record holds.
func (s *session) onRecord(in *probeInfo, list []ptrace.Reg, rec ptrace.Record) {
	var r regs.Regs
	for i, g := range list {
		r.GPR[g] = rec.Regs[i]
	}
	r.RIP = rec.Probe.Addr
	t := rec.Time - monoEpoch
	s.mu.Lock()
	defer s.mu.Unlock()
	in.row.hits++
	if !s.wanted(rec.Tid) {
		return
	}
	s.printHit(rec.Tid, in.proc, in.row, &r, nil, t)
	s.counted()
}

// monoEpoch is epoch in CLOCK_MONOTONIC nanoseconds, the clock of records.
var monoEpoch = func() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() - now()
}()

// onEntry serves a function's entry: the call is pushed on its stack, and
// its line started.
func (s *session) onEntry(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.hit(p)
	if in == nil {
		return
	}
	pr, fi := in.proc, in.row.fn
	stack, pos, ret := uprobe.StackOf(tid, r, m, fi.goFunc)
	s.seq++
	c := call{fn: fi, start: t, tid: tid, depth: pr.calls.Depth(stack), id: s.seq}
	c.keep = s.wanted(tid) && fi.cond.Eval(r, nil, m, s.o.strSize)
	if c.keep {
		if s.o.stack > 0 || s.sinks.folded != nil {
			c.stack = s.unwind(r, m, true)
			s.sinks.fold(pr, c.stack)
		}
		if fi.cond != nil && fi.cond.NeedsRet {
			e := *r
			c.entry = &e
		}
		// Past --max-events nothing more is reported, a call's start
		// included.
		if s.o.verbose && !s.o.summaryOnly && !s.stopped {
			args := s.appendArgs(nil, fi.args, r, m)
			if s.deferred(fi) {
				c.args = string(args)
			} else {
				s.startLine(tid, pr, &c, args)
			}
		}
	}
	for _, gone := range pr.calls.Enter(stack, pos, ret, fi.id, c) {
		gone.Value.fn.stats.Unfinished++
	}
}

// onReturn serves a RET of a function with calls: the calls it ends are
// reported.
func (s *session) onReturn(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
	t := now()
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.info(p)
	if in == nil {
		return
	}
	pr, fi := in.proc, in.ret
	stack, pos, _ := uprobe.StackOf(tid, r, m, fi.goFunc)
	done, gone := pr.calls.Return(stack, pos, fi.id)
	for _, g := range gone {
		g.Value.fn.stats.Unfinished++
	}
	for i := range done {
		s.endCall(tid, pr, &done[i].Value, r, m, t)
	}
}

// deferred reports whether fi's lines wait for the return: whether a call
// is reported depends on its result or duration.
func (s *session) deferred(fi *fnInfo) bool {
	return s.o.minDur > 0 || (fi.cond != nil && fi.cond.NeedsRet)
}

// wanted applies --tid.
func (s *session) wanted(tid int) bool {
	return s.o.tids == nil || s.o.tids[tid]
}

// endCall reports a call that returned, when the filters keep it.
func (s *session) endCall(tid int, pr *proc, c *call, r *regs.Regs, m memio.Memory, t int64) {
	if !c.keep {
		return
	}
	fi := c.fn
	if fi.cond != nil && fi.cond.NeedsRet && !fi.cond.Eval(c.entry, r, m, s.o.strSize) {
		return
	}
	dur := t - c.start
	if dur < s.o.minDur.Nanoseconds() {
		return
	}
	st := &fi.stats
	st.Calls++
	st.TotalNs += dur
	if st.Calls == 1 || dur < st.MinNs {
		st.MinNs = dur
	}
	st.MaxNs = max(st.MaxNs, dur)
	if st.Hist == nil {
		st.Hist = make([]uint64, 64)
	}
	st.Hist[bits.Len64(uint64(dur/1000))]++
	if s.o.stack > 0 && c.stack != nil {
		if fi.stacks == nil {
			fi.stacks = map[string]uint64{}
		}
		fi.stacks[foldStack(pr, c.stack)]++
	}
	if s.o.verbose && !s.o.summaryOnly && !s.stopped {
		s.endLine(tid, pr, c, r, m, t)
	}
	s.sinks.complete(fi.Name, pr.pid, tid, c.start, dur)
	s.counted()
}

// counted counts a reported event, and ends the trace at --max-events.
func (s *session) counted() {
	s.events++
	if s.o.maxEvents > 0 && s.events >= s.o.maxEvents && !s.stopped {
		s.stopped = true
		s.stop()
	}
}

// unwind returns the stack of a stopped thread, --stack frames deep (64
// for --folded alone).
func (s *session) unwind(r *regs.Regs, m memio.Memory, atBoundary bool) []uint64 {
	n := s.o.stack
	if s.sinks.folded != nil {
		n = max(n, 64)
	}
	return uprobe.FrameStack(r, m, atBoundary, n, nil)
}

// foldStack returns a stack as folded-format frames, outermost first.
func foldStack(pr *proc, stack []uint64) string {
	var b strings.Builder
	for i := len(stack) - 1; i >= 0; i-- {
		pc := stack[i]
		if i < len(stack)-1 {
			pc-- // a return address: the call is the byte before
		}
		b.WriteString(pr.sym.FuncName(pc))
		if i > 0 {
			b.WriteByte(';')
		}
	}
	return b.String()
}

// callStats returns the calls summary, busiest first. Called with mu held.
func (s *session) callStats() []*FuncStats {
	var out []*FuncStats
	for _, fi := range s.fnList {
		st := fi.stats
		if st.Calls == 0 && st.Unfinished == 0 {
			continue
		}
		if st.Calls > 0 {
			st.AvgNs = float64(st.TotalNs) / float64(st.Calls)
		}
		for k, v := range fi.stacks {
			st.TopStacks = append(st.TopStacks, StackCount{k, v})
		}
		sort.Slice(st.TopStacks, func(i, j int) bool {
			a, b := st.TopStacks[i], st.TopStacks[j]
			return a.Calls > b.Calls || (a.Calls == b.Calls && a.Stack < b.Stack)
		})
		if len(st.TopStacks) > 5 {
			st.TopStacks = st.TopStacks[:5]
		}
		out = append(out, &st)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].TotalNs > out[j].TotalNs })
	return out
}

// printer writes the per-call and per-hit lines, ltrace style: a call's
// line is started at its entry ("f(args") and ended at its return
// (") = ret <dur>"); when anything else is printed in between, the line is
// ended with "<unfinished ...>" and the return printed as
// "<... f resumed> ) = ret".
type printer struct {
	w      *bufio.Writer
	o      *options
	line   []byte
	openID uint64 // the call whose line is open, 0 for none
	seq    uint64
}

func (p *printer) init(o *options, w *bufio.Writer) { p.o, p.w = o, w }

// closeOpen ends an open line as unfinished.
func (p *printer) closeOpen() {
	if p.openID != 0 {
		p.w.WriteString(" <unfinished ...>\n")
		p.openID = 0
	}
}

// prefix appends "[pid TID] " (with -f, or several processes), the time
// with -tt, and the indent of a call at depth.
func (p *printer) prefix(b []byte, tid int, t int64, depth int) []byte {
	b = append(b, "[pid "...)
	b = strconv.AppendInt(b, int64(tid), 10)
	b = append(b, "] "...)
	if p.o.timestamps {
		b = epoch.Add(time.Duration(t)).AppendFormat(b, "15:04:05.000000 ")
	}
	for i := 0; i < depth; i++ {
		b = append(b, "  "...)
	}
	return b
}

// appendArgs appends the values of args, comma-separated.
func (s *session) appendArgs(b []byte, args []probespec.Arg, r *regs.Regs, m memio.Memory) []byte {
	for i := range args {
		if i > 0 {
			b = append(b, ", "...)
		}
		a := &args[i]
		if a.Label != "" && !isArgWord(a.Label) {
			b = append(b, a.Label...)
			b = append(b, '=')
		}
		b = a.Append(b, r, m, s.o.strSize)
	}
	return b
}

// isArgWord reports whether a label is only the word it prints (arg0,
// retval), not worth repeating on the line.
func isArgWord(l string) bool {
	if rest, ok := strings.CutPrefix(l, "arg"); ok {
		_, err := strconv.Atoi(rest)
		return err == nil
	}
	return l == "retval"
}

// startLine prints a call's entry: "[pid N] f(args", left open.
func (s *session) startLine(tid int, pr *proc, c *call, args []byte) {
	s.closeOpen()
	b := s.prefix(s.line[:0], tid, c.start, c.depth)
	b = append(b, c.fn.Name...)
	b = append(b, '(')
	b = append(b, args...)
	s.w.Write(b)
	s.line = b
	s.openID = c.id
	c.open = true
	if c.stack != nil {
		s.closeOpen()
		s.printStack(pr, c.stack)
	}
}

// endLine prints a call's return.
func (s *session) endLine(tid int, pr *proc, c *call, r *regs.Regs, m memio.Memory, t int64) {
	b := s.line[:0]
	switch {
	case c.open && s.openID == c.id:
		s.openID = 0
		b = append(b, ')')
	case c.open:
		s.closeOpen()
		b = s.prefix(b, tid, t, c.depth)
		b = append(b, "<... "...)
		b = append(b, c.fn.Name...)
		b = append(b, " resumed> )"...)
	default:
		s.closeOpen()
		b = s.prefix(b, tid, c.start, c.depth)
		b = append(b, c.fn.Name...)
		b = append(b, '(')
		b = append(b, c.args...)
		b = append(b, ')')
	}
	if ret := c.fn.ret; ret == nil || ret.Type != probespec.TypeVoid {
		b = append(b, " = "...)
		if ret != nil {
			b = ret.Append(b, r, m, s.o.strSize)
		} else {
			b = append(b, "0x"...)
			b = strconv.AppendUint(b, r.GPR[regs.RAX], 16)
		}
	}
	if s.o.durations {
		b = append(b, " <"...)
		b = strconv.AppendFloat(b, float64(t-c.start)/1e9, 'f', 6, 64)
		b = append(b, '>')
	}
	b = append(b, '\n')
	s.w.Write(b)
	s.line = b
	if !c.open && c.stack != nil {
		s.printStack(pr, c.stack)
	}
}

// printHit writes "[pid 1234] main.f+0x4 x=0x2a rsi=0x0", or with -json
// {"tid":1234,"probe":"main.f+0x4","args":{"x":"0x2a","rsi":"0x0"}} (one
// object per line, before the summary).
func (s *session) printHit(tid int, pr *proc, rw *Row, r *regs.Regs, m memio.Memory, t int64) {
	s.closeOpen()
	b := s.line[:0]
	if s.o.json {
		b = append(b, `{"tid":`...)
		b = strconv.AppendInt(b, int64(tid), 10)
		b = append(b, `,"pid":`...)
		b = strconv.AppendInt(b, int64(pr.pid), 10)
		b = append(b, `,"probe":`...)
		b = append(b, rw.quoted...)
		if len(rw.args) > 0 {
			b = append(b, `,"args":{`...)
			for i := range rw.args {
				a := &rw.args[i]
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendQuote(b, a.Label)
				b = append(b, ':')
				b = strconv.AppendQuote(b, string(a.Append(nil, r, m, s.o.strSize)))
			}
			b = append(b, '}')
		}
		b = append(b, "}\n"...)
	} else {
		b = s.prefix(b, tid, t, 0)
		b = append(b, rw.Site...)
		for i := range rw.args {
			a := &rw.args[i]
			b = append(b, ' ')
			b = append(b, a.Label...)
			b = append(b, '=')
			b = a.Append(b, r, m, s.o.strSize)
		}
		b = append(b, '\n')
	}
	s.w.Write(b)
	s.line = b
}

// printStack writes a stack, a frame a line, under the line it belongs to.
func (s *session) printStack(pr *proc, stack []uint64) {
	if s.o.stack == 0 {
		return
	}
	for i, pc := range stack {
		if i >= s.o.stack {
			break
		}
		s.w.WriteString("        ")
		if i > 0 {
			pc--
		}
		s.w.WriteString(pr.sym.Name(pc))
		s.w.WriteByte('\n')
	}
}

// sinks are the files written besides the lines: --chrome and --folded.
type sinks struct {
	chrome     *bufio.Writer
	chromeFile *os.File
	chromeN    int
	folded     map[string]uint64
	foldedPath string
}

func (k *sinks) open(o *options) error {
	if o.chrome != "" {
		f, err := os.Create(o.chrome)
		if err != nil {
			return err
		}
		k.chromeFile, k.chrome = f, bufio.NewWriterSize(f, 64<<10)
		k.chrome.WriteString(`{"displayTimeUnit":"ns","traceEvents":[`)
	}
	if o.folded != "" {
		k.folded, k.foldedPath = map[string]uint64{}, o.folded
	}
	return nil
}

// complete writes a call as a complete ("X") event, times in µs.
func (k *sinks) complete(name string, pid, tid int, start, dur int64) {
	if k.chrome == nil {
		return
	}
	k.event(name, "X", pid, tid, start)
	k.chrome.WriteString(`,"dur":`)
	k.chrome.Write(strconv.AppendFloat(nil, float64(dur)/1e3, 'f', 3, 64))
	k.chrome.WriteByte('}')
}

// instant writes a hit as an instant ("i") event on its thread's track.
func (k *sinks) instant(name string, pid, tid int, t int64) {
	if k.chrome == nil {
		return
	}
	k.event(name, "i", pid, tid, t)
	k.chrome.WriteString(`,"s":"t"}`)
}

func (k *sinks) event(name, ph string, pid, tid int, t int64) {
	w := k.chrome
	if k.chromeN > 0 {
		w.WriteByte(',')
	}
	k.chromeN++
	w.WriteString("\n{\"name\":")
	w.Write(strconv.AppendQuote(nil, name))
	w.WriteString(`,"ph":"` + ph + `","pid":`)
	w.Write(strconv.AppendInt(nil, int64(pid), 10))
	w.WriteString(`,"tid":`)
	w.Write(strconv.AppendInt(nil, int64(tid), 10))
	w.WriteString(`,"ts":`)
	w.Write(strconv.AppendFloat(nil, float64(t)/1e3, 'f', 3, 64))
}

// fold counts a hit's stack for --folded.
func (k *sinks) fold(pr *proc, stack []uint64) {
	if k.folded == nil {
		return
	}
	k.folded[foldStack(pr, stack)]++
}

// close ends the files.
func (k *sinks) close() error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	if k.chrome != nil {
		k.chrome.WriteString("\n]}\n")
		keep(k.chrome.Flush())
		keep(k.chromeFile.Close())
	}
	if k.folded != nil {
		var lines []string
		for st, n := range k.folded {
			lines = append(lines, st+" "+strconv.FormatUint(n, 10))
		}
		sort.Strings(lines)
		keep(os.WriteFile(k.foldedPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	}
	return first
}
