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
	"strconv"
	"sync"
	"time"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/probespec"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
	"golang.org/x/sys/unix"
)

// Result is what a trace found, and what -json prints.
type Result struct {
	Pid     int      `json:"pid"`
	Program []string `json:"program,omitempty"`
	// Exit is how the program ended; nil when the tracer detached first.
	Exit *ExitStatus `json:"exit,omitempty"`
	// Detached is set when the tracer let the program go (SIGINT, SIGTERM)
	// before it ended: it keeps running untraced.
	Detached bool   `json:"detached"`
	Probes   []*Row `json:"probes"`
	// Errors are specs that resolved to nothing in a later image (after
	// exec) or libraries that were never mapped.
	Errors []string `json:"errors,omitempty"`
}

// ExitStatus is how the traced program ended.
type ExitStatus struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
}

// Row is one probe site: one address of one spec.
type Row struct {
	Spec string `json:"spec"`
	Site string `json:"site"`           // FUNC+0xOFF, or 0xADDR
	File string `json:"file,omitempty"` // the ELF file holding the site, for library probes
	Addr uint64 `json:"addr"`           // in the process
	Insn string `json:"insn,omitempty"`
	// Verdict is the decoder's and the emulator's together: "emulate" (the
	// emulator implements the instruction) or "outofline" (only the CPU can
	// run it).
	Verdict  string `json:"verdict,omitempty"`
	Strategy string `json:"strategy,omitempty"` // how the hits ran (-strategy, or the engine's choice)
	Hits     uint64 `json:"hits"`
	// CPUPerHitNs is the tracer thread's CPU time from one hit's handler to
	// the next one's, charged to the first: the hit's fixup (emulation or
	// out-of-line step), its resume, the wait for the next event and the
	// next hit's registers. 0 when not measured (fewer than two hits).
	CPUPerHitNs float64 `json:"tracer_cpu_ns_per_hit"`
	// Error says why the site has no probe (the decoder refused its
	// instruction, say).
	Error string `json:"error,omitempty"`

	args       []probespec.Arg
	quoted     []byte        // Site as a JSON string, for -json -v
	quotedArgs [][]byte      // the args' labels as JSON strings
	probe      *ptrace.Probe // nil when refused, or dropped (exec, dlclose)
	base       uint64        // hits of earlier probes of this site (before a dlclose)
	cpu        int64         // ns, see CPUPerHitNs
	intervals  int64
}

func (rw *Row) hits() uint64 {
	if rw.probe == nil {
		return rw.base
	}
	return rw.base + rw.probe.Hits()
}

// spec is one -p argument and what became of it.
type spec struct {
	sp     *probespec.Spec
	placed bool // it has had probes (a library unmapped since is not an error)
}

// session is one traced process. Handlers run on the tracer thread; mu
// guards what setup on the main goroutine shares with them.
type session struct {
	o     *options
	proc  *ptrace.Process
	pid   int
	specs []*spec
	out   *bufio.Writer // per-hit lines

	mu     sync.Mutex
	rows   []*Row
	errs   []string
	last   *Row  // the row of the previous hit, which the CPU time since is charged to
	lastNs int64 // the tracer thread's CPU clock at that hit

	exe     *uprobe.Executable     // the program's file, opened once per image
	loader  *uprobe.Loader         // places the LIB: specs
	byProbe map[*ptrace.Probe]*Row // the row of each probe in place
	running bool
	fatal   error  // a LIB: spec that named nothing once its library was mapped
	line    []byte // per-hit line buffer, reused
}

// trace starts or attaches, places the probes, runs until the program ends or
// a signal asks to detach, and prints the summary. It returns the result (nil
// when nothing was traced) and the exit status for run.
func trace(o *options) (*Result, int) {
	s := &session{o: o, out: bufio.NewWriterSize(o.report, 64<<10), byProbe: map[*ptrace.Probe]*Row{}}
	for _, raw := range o.specs {
		sp, err := probespec.Parse(raw)
		if err != nil {
			fmt.Fprintf(o.stderr, "trace: -p %q: %v\n", raw, err)
			return nil, 2
		}
		s.specs = append(s.specs, &spec{sp: sp})
	}
	if err := s.open(); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		return nil, 2
	}
	if err := s.place(); err != nil {
		fmt.Fprintln(o.stderr, "trace:", err)
		s.abandon()
		return nil, 2
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

// open starts the program, stopped before its first instruction, or
// attaches to it, and opens its executable.
func (s *session) open() error {
	o := s.o
	opt := ptrace.OnExec(s.onExec)
	var err error
	if o.pid != 0 {
		s.proc, err = ptrace.Attach(o.pid, opt)
	} else {
		cmd := exec.Command(o.argv[0], o.argv[1:]...)
		if cmd.Err != nil {
			return cmd.Err
		}
		// The program's standard files are the tracer's own, passed as
		// they are: its output is unchanged and unbuffered by the tracer.
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = o.env
		s.proc, err = ptrace.Start(cmd, opt)
	}
	if err != nil {
		return err
	}
	s.pid = s.proc.Pid()
	if s.exe, err = uprobe.OpenExecutable(fmt.Sprintf("/proc/%d/exe", s.pid)); err != nil {
		s.abandon()
		return err
	}
	return nil
}

// place puts in the probes of every spec. Every spec of the main program
// must name something: a typo is reported before the program runs, as perf
// probe does. A LIB: spec goes in when its library is mapped, and must
// name something then.
func (s *session) place() error {
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			continue
		}
		if err := s.placeIn(sp, s.exe); err != nil {
			return fmt.Errorf("-p %q: %w", sp.sp.Raw, err)
		}
	}
	if err := s.watchLibraries(); err != nil {
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
func (s *session) watchLibraries() error {
	var err error
	s.loader, err = uprobe.WatchLoader(s.proc, s.onLibraryError)
	if err != nil && s.hasLib() {
		fmt.Fprintf(s.o.stderr, "trace: library probes are resolved only now, not after a dlopen: %v\n", err)
	}
	for _, sp := range s.specs {
		if sp.sp.Lib == "" {
			continue
		}
		sp := sp
		err := s.loader.Add(uprobe.Library{
			Name: sp.sp.Lib,
			Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
				return s.placeLib(sp, ex)
			},
			Removed: s.dropped,
		})
		if err != nil {
			return fmt.Errorf("-p %q: %w", sp.sp.Raw, err)
		}
	}
	return nil
}

// onLibraryError ends the trace when a LIB: spec names nothing in its
// library, before the program goes on (its main has not run when the
// library was loaded at start-up).
func (s *session) onLibraryError(lib string, err error) {
	if s.fatal == nil && s.loader != nil && s.running {
		s.fatal = err
		unix.Kill(s.pid, unix.SIGKILL)
	}
}

// run lets the program go until it ends or a signal asks to detach.
func (s *session) run() (*Result, int) {
	o := s.o
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
		case <-ctx.Done():
			return
		}
		if o.pid == 0 {
			// A Ctrl-C at a terminal reaches the started program too:
			// give it the time to end (or handle it) by itself, so the
			// summary says how it ended rather than detaching from a
			// process about to die.
			select {
			case <-s.proc.Done():
			case <-time.After(graceOnSignal):
			}
		}
		cancel()
	}()

	s.running = true
	exit, err := s.proc.Run(ctx)
	res := &Result{Pid: s.pid, Program: o.argv}
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
	default:
		fmt.Fprintln(o.stderr, "trace:", err)
		code = 1
	}
	s.finish(res)
	return res, code
}

// graceOnSignal is how long a started program may take to end by itself
// after the tracer got SIGINT or SIGTERM, before the tracer detaches.
const graceOnSignal = 200 * time.Millisecond

// abandon lets go of a process the tracer will not run: a started program
// that never ran its first instruction is killed, an attached one left as
// it was.
func (s *session) abandon() {
	if s.exe != nil {
		s.exe.Close()
	}
	if s.o.pid != 0 {
		s.proc.Detach()
		return
	}
	// Killed while still stopped, then reaped by the engine: detaching first
	// would let the program run, however briefly, and print.
	unix.Kill(s.pid, unix.SIGKILL)
	s.proc.Run(context.Background())
}

func (s *session) hasLib() bool {
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			return true
		}
	}
	return false
}

// placeIn resolves sp in ex and inserts a probe at every site. A site whose
// instruction cannot be probed keeps a row with the reason; a spec that
// names nothing is an error.
func (s *session) placeIn(sp *spec, ex *uprobe.Executable) error {
	_, err := s.insertAll(sp, ex)
	return err
}

// placeLib is the Place function of a LIB: spec.
func (s *session) placeLib(sp *spec, ex *uprobe.Executable) ([]*ptrace.Probe, error) {
	probes, err := s.insertAll(sp, ex)
	if err != nil {
		return nil, fmt.Errorf("-p %q: %w", sp.sp.Raw, err)
	}
	return probes, nil
}

func (s *session) insertAll(sp *spec, ex *uprobe.Executable) ([]*ptrace.Probe, error) {
	sites, err := sp.sp.Resolve(ex, s.proc)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, errors.New("matches no function")
	}
	sp.placed = true
	var probes []*ptrace.Probe
	for i := range sites {
		if pr := s.insert(sp, ex, &sites[i]); pr != nil {
			probes = append(probes, pr)
		}
	}
	return probes, nil
}

// insert puts one probe in, reusing the row of an earlier probe at the same
// site (one dropped at a dlclose, say) so hits add up.
func (s *session) insert(sp *spec, ex *uprobe.Executable, ps *probespec.Site) *ptrace.Probe {
	name := ps.String()
	file := ""
	if sp.sp.Lib != "" {
		file = filepath.Base(ex.Path())
		name = file + ":" + name
	}
	s.mu.Lock()
	var rw *Row
	for _, r := range s.rows {
		if r.probe == nil && r.Spec == sp.sp.Raw && r.Site == name {
			rw = r
			break
		}
	}
	if rw == nil {
		rw = &Row{Spec: sp.sp.Raw, Site: name, File: file}
		s.rows = append(s.rows, rw)
	}
	rw.Addr, rw.args, rw.Error = ps.PC, ps.Args, ""
	rw.quoted, rw.quotedArgs = quote(name), nil
	for _, a := range ps.Args {
		rw.quotedArgs = append(rw.quotedArgs, quote(a.Label))
	}
	s.mu.Unlock()

	pr, err := s.proc.Insert(ps.PC, s.o.strategy, s.handler(rw))

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		rw.Error = err.Error()
		return nil
	}
	rw.probe, rw.Insn, rw.Verdict, rw.Strategy = pr, pr.Insn.String(), verdict(pr.Insn), pr.Strategy.String()
	s.byProbe[pr] = rw
	return pr
}

// dropped keeps the hits of a library probe the Loader took out before an
// unmap; the row gets a new probe when the library is back.
func (s *session) dropped(pr *ptrace.Probe) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rw := s.byProbe[pr]; rw != nil {
		rw.base += pr.Hits()
		rw.probe = nil
		delete(s.byProbe, pr)
	}
	// The time the loader's work takes is not a probe's.
	s.last = nil
}

// handler returns the function run on each hit of rw's probe.
func (s *session) handler(rw *Row) ptrace.Handler {
	return func(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		s.account(rw)
		if s.o.verbose {
			s.printHit(tid, rw, r)
		}
	}
}

// account charges the tracer thread's CPU time since the previous hit to
// that hit's row. A thread CPU clock counts only the time the tracer spends
// working, not the time it sleeps in wait4, so this is the tracer's cost per
// hit, handler and clock reading included.
func (s *session) account(rw *Row) {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	now := ts.Nano()
	s.mu.Lock()
	if s.last != nil {
		s.last.cpu += now - s.lastNs
		s.last.intervals++
	}
	s.last, s.lastNs = rw, now
	s.mu.Unlock()
}

// printHit writes "tid 1234 main.f+0x4 x=0x2a rsi=0x0", or with -json
// {"tid":1234,"probe":"main.f+0x4","args":{"x":"0x2a","rsi":"0x0"}} (one
// object per line, before the summary), through a reused buffer.
func (s *session) printHit(tid int, rw *Row, r *regs.Regs) {
	b := s.line[:0]
	if s.o.json {
		b = append(b, `{"tid":`...)
		b = strconv.AppendInt(b, int64(tid), 10)
		b = append(b, `,"probe":`...)
		b = append(b, rw.quoted...)
		if len(rw.args) > 0 {
			b = append(b, `,"args":{`...)
			for i, a := range rw.args {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(b, rw.quotedArgs[i]...)
				b = append(b, `:"0x`...)
				b = strconv.AppendUint(b, r.Get(a.Reg), 16)
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, "}\n"...)
	} else {
		b = append(b, "tid "...)
		b = strconv.AppendInt(b, int64(tid), 10)
		b = append(b, ' ')
		b = append(b, rw.Site...)
		for _, a := range rw.args {
			b = append(b, ' ')
			b = append(b, a.Label...)
			b = append(b, "=0x"...)
			b = strconv.AppendUint(b, r.Get(a.Reg), 16)
		}
		b = append(b, '\n')
	}
	s.out.Write(b)
	s.line = b
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

// onExec runs on the tracer thread when the program calls execve: the
// probes went with the old image, so every spec is placed again in the new
// one (which may not have the functions: then it is noted, not fatal).
func (s *session) onExec(p *ptrace.Process) {
	s.mu.Lock()
	for _, rw := range s.rows {
		if rw.probe != nil {
			rw.base += rw.probe.Hits()
			rw.probe = nil
		}
	}
	s.byProbe = map[*ptrace.Probe]*Row{}
	s.last = nil
	s.mu.Unlock()
	if s.exe != nil {
		s.exe.Close()
	}
	var err error
	if s.exe, err = uprobe.OpenExecutable(fmt.Sprintf("/proc/%d/exe", s.pid)); err != nil {
		s.note(fmt.Sprintf("after exec: %v", err))
		return
	}
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			continue
		}
		if err := s.placeIn(sp, s.exe); err != nil {
			s.note(fmt.Sprintf("-p %q after exec: %v", sp.sp.Raw, err))
		}
	}
	if s.loader != nil {
		s.loader.Exec()
	}
}

func (s *session) note(msg string) {
	s.mu.Lock()
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

// finish fills the result with the final counts.
func (s *session) finish(res *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rw := range s.rows {
		rw.Hits = rw.hits()
		if rw.intervals > 0 {
			rw.CPUPerHitNs = float64(rw.cpu) / float64(rw.intervals)
		}
		res.Probes = append(res.Probes, rw)
	}
	res.Errors = append(res.Errors, s.errs...)
	for _, sp := range s.specs {
		if sp.sp.Lib != "" && !sp.placed {
			res.Errors = append(res.Errors, fmt.Sprintf("-p %q: library %q was never mapped", sp.sp.Raw, sp.sp.Lib))
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
