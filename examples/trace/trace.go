package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/probespec"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/uprobe"
	"golang.org/x/sys/unix"
)

// Result is what a trace found, and what -json prints.
type Result struct {
	Pid     int      `json:"pid"`
	Program []string `json:"program,omitempty"`
	// Exit is how the program ended; nil when the tracer detached first.
	Exit *ExitStatus `json:"exit,omitempty"`
	// Detached is set when the tracer let the program go (SIGINT, SIGTERM,
	// --max-events) before it ended: it keeps running untraced.
	Detached bool   `json:"detached"`
	Probes   []*Row `json:"probes"`
	// Calls summarises the calls of each function probe that were
	// reported (filters applied), busiest first.
	Calls []*FuncStats `json:"calls,omitempty"`
	// Errors are specs that resolved to nothing in a later image (after
	// exec) or libraries that were never mapped.
	Errors []string `json:"errors,omitempty"`
}

// ExitStatus is how the traced program ended.
type ExitStatus struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

// Row is one probe site: one address of one spec (for a function probe,
// its entry; its RET sites count in Calls).
type Row struct {
	Spec string `json:"spec"`
	Site string `json:"site"`           // FUNC+0xOFF, or 0xADDR
	File string `json:"file,omitempty"` // the ELF file holding the site, for library probes
	Addr uint64 `json:"addr"`           // in the process (the first one placed)
	Insn string `json:"insn,omitempty"`
	// Verdict is the decoder's and the emulator's together: "emulate" (the
	// emulator implements the instruction) or "outofline" (only the CPU can
	// run it).
	Verdict  string `json:"verdict,omitempty"`
	Strategy string `json:"strategy,omitempty"` // how the hits ran (-strategy, or the engine's choice)
	Hits     uint64 `json:"hits"`
	// Drops are the hits of a recording probe that were not printed: the
	// ring it writes to in the program was full.
	Drops uint64 `json:"drops,omitempty"`
	// CPUPerHitNs is the tracer thread's CPU time from one hit's handler to
	// the next one's, charged to the first: the hit's fixup (emulation or
	// out-of-line step), its resume, the wait for the next event and the
	// next hit's registers. 0 when not measured (fewer than two hits).
	CPUPerHitNs float64 `json:"tracer_cpu_ns_per_hit"`
	// Error says why the site has no probe (the decoder refused its
	// instruction, say).
	Error string `json:"error,omitempty"`

	fn        *fnInfo // the function whose calls the site starts, or nil for a plain hit
	args      []probespec.Arg
	cond      *probespec.Cond
	quoted    []byte // Site as a JSON string, for -json -v
	hits      uint64
	cpu       int64 // ns, see CPUPerHitNs
	intervals int64
	// counters are the row's probes that only count (no handler; see
	// counting): their hits are read from them, not counted here.
	counters []*ptrace.Probe
	// recorders are its recording probes (see recordable), whose drops
	// are read from them.
	recorders []*ptrace.Probe
}

// spec is one -e argument and what became of it.
type spec struct {
	sp     *probespec.Spec
	placed bool // it has had probes (a library unmapped since is not an error)
}

// calls reports whether the spec's function sites are calls: a function by
// name or glob, without an offset, not its returns.
func (sp *spec) calls() bool {
	return sp.sp.Func != "" && !sp.sp.Return && !sp.sp.ExplicitOffset()
}

// proc is one traced process: the one started or attached, or a child
// followed with -f.
type proc struct {
	p      *ptrace.Process
	pid    int
	exe    *uprobe.Executable // its program's file, opened once per image
	loader *uprobe.Loader     // places the LIB: specs
	calls  uprobe.Calls[call] // calls in progress, per thread or goroutine
	sym    *uprobe.Symbolizer // names stack frames
	placed map[string]*ptrace.Probe
}

// probeInfo is what a hit's handler needs to know of its probe.
type probeInfo struct {
	row  *Row
	proc *proc
	ret  *fnInfo // set for a RET site of a function's calls
}

// session is one trace. Handlers run on the tracer thread (every process,
// children included, is served by one tracer); mu guards what the main
// goroutine (setup, the periodic flush, the report) shares with them.
type session struct {
	o      *options
	tracer *ptrace.Tracer
	specs  []*spec
	out    *bufio.Writer // per-call and per-hit lines

	mu      sync.Mutex
	main    *proc
	procs   map[int]*proc
	byProbe map[*ptrace.Probe]*probeInfo
	rows    []*Row
	funcs   map[string]*fnInfo // by spec and function name
	fnList  []*fnInfo
	errs    []string
	last    *Row  // the row of the previous hit, which the CPU time since is charged to
	lastNs  int64 // the tracer thread's CPU clock at that hit
	running bool
	fatal   error // a LIB: spec that named nothing once its library was mapped

	printer
	sinks
	events  int                // calls and hits reported, for --max-events
	stop    context.CancelFunc // ends the trace early (--max-events)
	stopped bool
	wg      sync.WaitGroup // children's Run
}

// trace starts or attaches, places the probes, runs until the program ends or
// a signal asks to detach, and prints the summary. It returns the result (nil
// when nothing was traced) and the exit status for run.
func trace(o *options) (*Result, int) {
	s := &session{o: o, out: bufio.NewWriterSize(o.report, 64<<10), byProbe: map[*ptrace.Probe]*probeInfo{},
		procs: map[int]*proc{}, funcs: map[string]*fnInfo{}}
	s.printer.init(o, s.out)
	for _, raw := range o.specs {
		sp, err := probespec.Parse(raw)
		if err != nil {
			fmt.Fprintf(o.stderr, "trace: -e %q: %v\n", raw, err)
			return nil, 2
		}
		s.specs = append(s.specs, &spec{sp: sp})
	}
	if err := s.sinks.open(o); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return nil, 2
	}
	var err error
	if s.tracer, err = ptrace.NewTracer(); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return nil, 2
	}
	defer s.tracer.Close()
	if err := s.open(); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return nil, 2
	}
	for _, pr := range s.procList() {
		if err := s.place(pr); err != nil {
			fmt.Fprintln(o.stderr, "trace:", err)
			s.abandon()
			return nil, 2
		}
	}
	res, code := s.run()
	if s.fatal != nil {
		fmt.Fprintln(o.stderr, "trace:", s.fatal)
		return nil, 2
	}
	if err := s.report(res); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return res, 2
	}
	return res, code
}

// options of every process traced: -f follows children, and an exec
// places the probes again.
func (s *session) ptraceOptions() []ptrace.Option {
	// A ring of 256Ki records (32 MiB) for recording probes: a quarter of
	// a second of hits at a million a second before one is dropped.
	opts := []ptrace.Option{ptrace.OnExec(s.onExec), ptrace.RingSize(1 << 18)}
	if s.o.follow {
		opts = append(opts, ptrace.FollowForks(s.onFork))
	}
	return opts
}

// open starts the program, stopped before its first instruction, or
// attaches to each process, and opens their executables.
func (s *session) open() error {
	o := s.o
	if len(o.pids) == 0 {
		cmd := exec.Command(o.argv[0], o.argv[1:]...)
		if cmd.Err != nil {
			return cmd.Err
		}
		// The program's standard files are the tracer's own, passed as
		// they are: its output is unchanged and unbuffered by the tracer.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = o.env
		p, err := s.tracer.Start(cmd, s.ptraceOptions()...)
		if err != nil {
			return err
		}
		return s.adopt(p)
	}
	for _, pid := range o.pids {
		p, err := s.tracer.Attach(pid, s.ptraceOptions()...)
		if err == nil {
			err = s.adopt(p)
		}
		if err != nil {
			s.abandon()
			return fmt.Errorf("-p %d: %w", pid, err)
		}
	}
	return nil
}

// adopt makes p a traced process of the session.
func (s *session) adopt(p *ptrace.Process) error {
	pr := &proc{p: p, pid: p.Pid(), sym: uprobe.NewSymbolizer(p.Pid()), placed: map[string]*ptrace.Probe{}}
	s.mu.Lock()
	s.procs[pr.pid] = pr
	if s.main == nil {
		s.main = pr
	}
	s.mu.Unlock()
	var err error
	pr.exe, err = uprobe.OpenExecutable(fmt.Sprintf("/proc/%d/exe", pr.pid))
	return err
}

func (s *session) procList() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*proc
	for _, pr := range s.procs {
		out = append(out, pr)
	}
	return out
}

// place puts in the probes of every spec. Every spec of the main program
// must name something: a typo is reported before the program runs, as perf
// probe does. A LIB: spec goes in when its library is mapped, and must
// name something then.
func (s *session) place(pr *proc) error {
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			continue
		}
		if _, err := s.insertAll(pr, sp, pr.exe); err != nil {
			return fmt.Errorf("-e %q: %w", sp.sp.Raw, err)
		}
	}
	if err := s.watchLibraries(pr); err != nil {
		return err
	}
	for _, rw := range s.snapshot() {
		if rw.Error != "" {
			fmt.Fprintf(s.o.stderr, "trace: %s at %#x: not probed: %s\n", rw.Site, rw.Addr, rw.Error)
		}
	}
	return nil
}

// watchLibraries hands the LIB: specs to a Loader, which places each as soon
// as its library is mapped.
func (s *session) watchLibraries(pr *proc) error {
	var err error
	pr.loader, err = uprobe.WatchLoader(pr.p, s.onLibraryError)
	if err != nil && s.hasLib() {
		fmt.Fprintf(s.o.stderr, "trace: library probes are resolved only now, not after a dlopen: %v\n", err)
	}
	for _, sp := range s.specs {
		if sp.sp.Lib == "" {
			continue
		}
		sp := sp
		err := pr.loader.Add(uprobe.Library{
			Name: sp.sp.Lib,
			Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
				probes, err := s.insertAll(pr, sp, ex)
				if err != nil {
					return nil, fmt.Errorf("-e %q: %w", sp.sp.Raw, err)
				}
				return probes, nil
			},
			Removed: s.dropped,
		})
		if err != nil {
			return fmt.Errorf("-e %q: %w", sp.sp.Raw, err)
		}
	}
	return nil
}

// onLibraryError ends the trace when a LIB: spec names nothing in its
// library, before the program goes on (its main has not run when the
// library was loaded at start-up).
func (s *session) onLibraryError(lib string, err error) {
	if s.fatal == nil && s.running {
		s.fatal = err
		for _, pr := range s.procList() {
			unix.Kill(pr.pid, unix.SIGKILL)
		}
	}
}

// run lets the programs go until they end or a signal asks to detach.
func (s *session) run() (*Result, int) {
	o := s.o
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.stop = cancel
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
		case <-ctx.Done():
			return
		}
		if len(o.pids) == 0 {
			// A Ctrl-C at a terminal reaches the started program too:
			// give it the time to end (or handle it) by itself, so the
			// summary says how it ended rather than detaching from a
			// process about to die.
			select {
			case <-s.main.p.Done():
			case <-time.After(graceOnSignal):
			}
		}
		cancel()
	}()
	// Lines are written as they happen: a flush every tenth of a second
	// shows them live (also when attached) without a system call per line.
	flushDone := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.mu.Lock()
				s.out.Flush()
				s.mu.Unlock()
			case <-flushDone:
				return
			}
		}
	}()
	defer close(flushDone)

	s.mu.Lock()
	s.running = true
	var others []*proc
	for _, pr := range s.procs {
		if pr != s.main {
			others = append(others, pr)
		}
	}
	s.mu.Unlock()
	for _, pr := range others {
		s.runChild(ctx, pr)
	}
	exit, err := s.main.p.Run(ctx)
	// Children followed with -f (and the other attached processes) are
	// waited for too, as strace -f does.
	s.wg.Wait()
	res := &Result{Pid: s.main.pid, Program: o.argv}
	code := 0
	switch {
	case exit != nil:
		res.Exit = &ExitStatus{Code: exit.Code}
		code = exit.Code
		if exit.Signal != 0 {
			res.Exit.Signal = unix.SignalName(exit.Signal)
			code = 128 + int(exit.Signal)
		}
	case ctx.Err() != nil:
		res.Detached = true
		if s.stopped && len(o.pids) == 0 {
			// --max-events let a started program go: it is still the
			// tracer's child, and ends before the summary, as it would
			// have without the tracer.
			var ws unix.WaitStatus
			unix.Wait4(s.main.pid, &ws, 0, nil)
		}
	default:
		fmt.Fprintln(o.stderr, "trace:", err)
		code = 1
	}
	s.finish(res)
	return res, code
}

// runChild waits for a process other than the main one in the background.
func (s *session) runChild(ctx context.Context, pr *proc) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		pr.p.Run(ctx)
	}()
}

// graceOnSignal is how long a started program may take to end by itself
// after the tracer got SIGINT or SIGTERM, before the tracer detaches.
const graceOnSignal = 200 * time.Millisecond

// abandon lets go of the processes the tracer will not run: a started
// program that never ran its first instruction is killed, attached ones
// left as they were.
func (s *session) abandon() {
	for _, pr := range s.procList() {
		if pr.exe != nil {
			pr.exe.Close()
		}
		if len(s.o.pids) != 0 {
			pr.p.Detach()
			continue
		}
		// Killed while still stopped, then reaped by the engine: detaching
		// first would let the program run, however briefly, and print.
		unix.Kill(pr.pid, unix.SIGKILL)
		pr.p.Run(context.Background())
	}
}

func (s *session) hasLib() bool {
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			return true
		}
	}
	return false
}

// progressOver is the number of sites from which placing them shows a
// progress line on stderr.
const progressOver = 2000

// insertAll resolves sp in ex and inserts a probe at every site (and, for
// calls, at every RET of each function). A site whose instruction cannot
// be probed keeps a row with the reason; a spec that names nothing is an
// error.
func (s *session) insertAll(pr *proc, sp *spec, ex *uprobe.Executable) ([]*ptrace.Probe, error) {
	sites, err := sp.sp.Resolve(ex, pr.p)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, errors.New("matches no function")
	}
	sp.placed = true
	calls := sp.calls() && !s.o.count
	progress := len(sites) >= progressOver
	start := time.Now()
	var probes []*ptrace.Probe
	for i := range sites {
		if progress && i%500 == 0 {
			fmt.Fprintf(s.o.stderr, "\rtrace: %q: placing probes at %d of %d functions", sp.sp.Raw, i, len(sites))
		}
		site := &sites[i]
		var fi *fnInfo
		if calls && site.Func != nil {
			fi = s.fnFor(sp, ex, site)
		}
		p := s.insert(pr, sp, ex, site, fi)
		if p == nil {
			continue
		}
		probes = append(probes, p)
		if fi != nil {
			probes = append(probes, s.insertReturns(pr, ex, site, fi)...)
		}
	}
	if progress {
		fmt.Fprintf(s.o.stderr, "\rtrace: %q: %d probes placed at %d functions in %.1fs\n", sp.sp.Raw, len(probes), len(sites), time.Since(start).Seconds())
	}
	return probes, nil
}

// insertReturns probes the RET instructions of a call's function. A RET
// that cannot be probed leaves its calls to end unseen (abandoned at the
// next call on that stack).
func (s *session) insertReturns(pr *proc, ex *uprobe.Executable, site *probespec.Site, fi *fnInfo) []*ptrace.Probe {
	rets, err := ex.ReturnSites(pr.p, site.Func)
	if err != nil {
		s.note(fmt.Sprintf("%s: returns not probed: %v", fi.Name, err))
		return nil
	}
	var out []*ptrace.Probe
	for _, r := range rets {
		p, err := pr.p.Insert(r.PC, s.o.strategy, s.onReturn)
		if err != nil {
			s.note(fmt.Sprintf("%s: a return not probed: %v", fi.Name, err))
			continue
		}
		s.mu.Lock()
		s.byProbe[p] = &probeInfo{proc: pr, ret: fi}
		s.mu.Unlock()
		out = append(out, p)
	}
	return out
}

// insert puts one probe in, reusing the row of the same site (in another
// process, or an earlier image or mapping) so hits add up.
func (s *session) insert(pr *proc, sp *spec, ex *uprobe.Executable, ps *probespec.Site, fi *fnInfo) *ptrace.Probe {
	name := ps.String()
	file := ""
	if sp.sp.Lib != "" {
		file = filepath.Base(ex.Path())
		name = file + ":" + name
	}
	s.mu.Lock()
	var rw *Row
	for _, r := range s.rows {
		if r.Spec == sp.sp.Raw && r.Site == name {
			rw = r
			break
		}
	}
	if rw == nil {
		rw = &Row{Spec: sp.sp.Raw, Site: name, File: file, Addr: ps.PC, fn: fi, quoted: quote(name)}
		s.rows = append(s.rows, rw)
	}
	rw.args, rw.cond = ps.Args, ps.Cond
	s.mu.Unlock()

	var handler ptrace.Handler = s.onHit
	counting := s.counting(ps, fi)
	switch {
	case fi != nil:
		handler = s.onEntry
	case counting:
		handler = nil
	}
	var p *ptrace.Probe
	var err error
	rec, recording := s.recordable(ps, fi)
	if recording {
		// Its hits are recorded in the program (no trap where the site
		// takes a jump) and printed as they are drained.
		in := &probeInfo{row: rw, proc: pr}
		p, err = pr.p.Record(ps.PC, ptrace.RecordSpec{Regs: rec}, func(r ptrace.Record) { s.onRecord(in, rec, r) })
	} else {
		p, err = pr.p.Insert(ps.PC, s.o.strategy, handler)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if rw.Insn == "" {
			rw.Error = err.Error()
		}
		return nil
	}
	rw.Error = ""
	rw.Insn, rw.Verdict, rw.Strategy = p.Insn.String(), verdict(p.Insn), p.Strategy.String()
	if p.NoJump != "" {
		rw.Strategy += " (no jump: " + p.NoJump + ")"
	}
	if counting {
		rw.counters = append(rw.counters, p)
	}
	if recording {
		rw.recorders = append(rw.recorders, p)
	}
	s.byProbe[p] = &probeInfo{row: rw, proc: pr}
	return p
}

// counting says whether the probe at ps only counts: nothing is done per
// hit but counting it (no line, value, filter, stack or event limit, and
// not a call), so it runs with no handler, and with no trap at all where
// its site can take a jump to a counting pad.
func (s *session) counting(ps *probespec.Site, fi *fnInfo) bool {
	o := s.o
	return fi == nil && (!o.verbose || o.summaryOnly) && len(ps.Args) == 0 && ps.Cond == nil &&
		o.stack == 0 && o.folded == "" && o.chrome == "" && o.tids == nil && o.maxEvents == 0 &&
		(o.strategy == ptrace.Auto || o.strategy == ptrace.Jump)
}

// dropped forgets a library probe the Loader took out before an unmap;
// the row gets a new probe when the library is back.
func (s *session) dropped(p *ptrace.Probe) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.byProbe[p]; in != nil && in.row != nil {
		rw := in.row
		for i, c := range rw.counters {
			if c == p {
				// Its count is final now that it is out.
				rw.hits += p.Hits()
				rw.counters = append(rw.counters[:i:i], rw.counters[i+1:]...)
				break
			}
		}
	}
	delete(s.byProbe, p)
	// The time the loader's work takes is not a probe's.
	s.last = nil
}

// account charges the tracer thread's CPU time since the previous hit to
// that hit's row. A thread CPU clock counts only the time the tracer spends
// working, not the time it sleeps in wait4, so this is the tracer's cost per
// hit, handler and clock reading included. Called with mu held.
func (s *session) account(rw *Row) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	now := ts.Nano()
	if s.last != nil {
		s.last.cpu += now - s.lastNs
		s.last.intervals++
	}
	s.last, s.lastNs = rw, now
}

// quote returns v as a JSON string.
func quote(v string) []byte {
	b, _ := json.Marshal(v)
	return b
}

// snapshot copies the row list.
func (s *session) snapshot() []*Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Row(nil), s.rows...)
}

// onFork runs on the tracer thread when a followed process forks: the
// child has copies of its parent's probes, which are mapped to the rows of
// the parent's, and it is waited for in the background.
func (s *session) onFork(child *ptrace.Process) {
	s.mu.Lock()
	parent := s.procOf(child)
	s.mu.Unlock()
	pr := &proc{p: child, pid: child.Pid(), sym: uprobe.NewSymbolizer(child.Pid()), placed: map[string]*ptrace.Probe{}}
	if parent != nil && parent.exe != nil {
		if ex, err := uprobe.OpenExecutable(parent.exe.Path()); err == nil {
			pr.exe = ex
		}
	}
	// The parent's probes by address, to find what each copy is.
	byAddr := map[uint64]*probeInfo{}
	s.mu.Lock()
	for p, info := range s.byProbe {
		if info.proc == parent {
			byAddr[p.Addr] = info
		}
	}
	s.mu.Unlock()
	copies := child.Probes()
	s.mu.Lock()
	for _, p := range copies {
		if info := byAddr[p.Addr]; info != nil {
			c := *info
			c.proc = pr
			s.byProbe[p] = &c
		}
	}
	s.procs[pr.pid] = pr
	ctx := context.Background()
	s.mu.Unlock()
	s.runChild(ctx, pr)
}

// procOf finds the session's record of a process. Called with mu held.
func (s *session) procOf(p *ptrace.Process) *proc {
	for _, pr := range s.procs {
		if pr.p == p {
			return pr
		}
	}
	return nil
}

// onExec runs on the tracer thread when a process calls execve: the
// probes went with the old image, so every spec is placed again in the new
// one (which may not have the functions: then it is noted, not fatal).
func (s *session) onExec(p *ptrace.Process) {
	s.mu.Lock()
	pr := s.procOf(p)
	if pr == nil {
		pr = &proc{p: p, pid: p.Pid(), sym: uprobe.NewSymbolizer(p.Pid()), placed: map[string]*ptrace.Probe{}}
		s.procs[pr.pid] = pr
	}
	for pb, info := range s.byProbe {
		if info.proc == pr {
			delete(s.byProbe, pb)
		}
	}
	pr.calls.Reset()
	pr.sym.Close()
	pr.sym = uprobe.NewSymbolizer(pr.pid)
	s.last = nil
	s.mu.Unlock()
	if pr.exe != nil {
		pr.exe.Close()
	}
	var err error
	if pr.exe, err = uprobe.OpenExecutable(fmt.Sprintf("/proc/%d/exe", pr.pid)); err != nil {
		s.note(fmt.Sprintf("pid %d after exec: %v", pr.pid, err))
		return
	}
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			continue
		}
		if _, err := s.insertAll(pr, sp, pr.exe); err != nil {
			s.note(fmt.Sprintf("-e %q in pid %d after exec: %v", sp.sp.Raw, pr.pid, err))
		}
	}
	if pr.loader != nil {
		pr.loader.Exec()
	} else if s.hasLib() {
		s.watchLibraries(pr)
	}
}

func (s *session) note(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

// finish fills the result with the final counts, and ends the calls still
// in progress.
func (s *session) finish(res *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeOpen()
	for _, rw := range s.rows {
		rw.Hits = rw.hits
		for _, c := range rw.counters {
			rw.Hits += c.Hits()
		}
		for _, c := range rw.recorders {
			// A record the ring had no room for was not printed: it is a
			// hit all the same.
			rw.Drops += c.Drops()
			rw.Hits += c.Drops()
		}
		if rw.intervals > 0 {
			rw.CPUPerHitNs = float64(rw.cpu) / float64(rw.intervals)
		}
		res.Probes = append(res.Probes, rw)
	}
	for _, pr := range s.procs {
		pr.calls.Pending(func(_ uint64, fr *uprobe.Frame[call]) {
			if fr.Value.fn != nil {
				fr.Value.fn.stats.Unfinished++
			}
		})
	}
	res.Calls = s.callStats()
	res.Errors = append(res.Errors, s.errs...)
	for _, sp := range s.specs {
		if sp.sp.Lib != "" && !sp.placed {
			res.Errors = append(res.Errors, fmt.Sprintf("-e %q: library %q was never mapped", sp.sp.Raw, sp.sp.Lib))
		}
	}
	if res.Probes == nil {
		res.Probes = []*Row{}
	}
}

// verdict names, in the DECODER column's words, what can run in: the
// emulator, else a copy on the CPU, else nothing.
func verdict(in *decode.Insn) string {
	switch ok, _ := emu.Supports(in); {
	case ok:
		return "emulate"
	case in.Verdict == decode.CanRun:
		return "outofline"
	}
	return "reject"
}
