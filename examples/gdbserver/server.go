package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
)

// counts are a breakpoint address's hits and the stops reported to gdb.
// They outlive the probe: gdb removes and inserts its breakpoints at every
// stop in all-stop mode.
type counts struct{ hits, reported atomic.Uint64 }

// breakpoint is one of gdb's Z0 breakpoints: a probe whose handler
// evaluates the target-side conditions and parks the thread when one
// holds (or when there is none).
type breakpoint struct {
	probe *ptrace.Probe
	conds atomic.Pointer[[][]byte] // agent expressions, any true stops; nil: always
	n     *counts
}

// server is one gdb session on one process. Everything but the probe
// handlers runs on the goroutine of serve.
type server struct {
	c        *conn
	p        *ptrace.Process
	pid      int
	attached bool
	log      io.Writer

	bps    map[uint64]*breakpoint
	counts map[uint64]*counts
	pass   map[unix.Signal]bool // QPassSignals: delivered without a stop

	nonStop bool
	// stopped holds the threads parked for gdb, with the stop that parked
	// them; stepping and halting mark what gdb asked of a thread.
	stopped  map[int]ptrace.Stop
	stepping map[int]bool
	halting  map[int]bool // vCont;t in non-stop: report the stop with signal 0
	current  int          // the thread of the last stop reported
	gThread  int          // Hg: registers and memory; 0 for current
	exit     string       // the W/X reply once the process has ended

	// All-stop mode: gdb waits for a reply after a resume (waiting); the
	// first event to report is held (event) while every other thread is
	// interrupted (interrupting); later events wait in pending and are
	// reported, one per resume, before anything runs again.
	waiting      bool
	event        *ptrace.Stop
	interrupting map[int]bool
	pending      []ptrace.Stop
	last         ptrace.Stop

	// Non-stop mode: stop replies not yet taken by vStopped; the first has
	// been sent as a %Stop notification.
	notes []string
}

func newServer(c *conn, p *ptrace.Process, attached bool, log io.Writer) *server {
	return &server{
		c: c, p: p, pid: p.Pid(), attached: attached, log: log,
		bps: map[uint64]*breakpoint{}, counts: map[uint64]*counts{},
		pass: map[unix.Signal]bool{}, stopped: map[int]ptrace.Stop{},
		stepping: map[int]bool{}, halting: map[int]bool{}, interrupting: map[int]bool{},
	}
}

// stopStream feeds the process's stops to a channel read by serve.
func stopStream(p *ptrace.Process) <-chan ptrace.Stop {
	ch := make(chan ptrace.Stop, 64)
	go func() {
		defer close(ch)
		for {
			s, err := p.NextStop(context.Background())
			if err != nil {
				return
			}
			ch <- s
		}
	}()
	return ch
}

// stopAll stops every thread before gdb's first packet is answered, as a
// debugger finds a process it attaches to or starts.
func (s *server) stopAll(stops <-chan ptrace.Stop, first ptrace.Stop) {
	s.stopped[first.Tid] = first
	s.last, s.current = first, first.Tid
	s.interruptOthers()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for len(s.interrupting) > 0 {
		select {
		case st, ok := <-stops:
			if !ok {
				return
			}
			s.note(st)
		case <-tick.C:
			s.interruptOthers()
		}
	}
}

// serve answers gdb until it detaches, kills or hangs up.
func (s *server) serve(pkts <-chan incoming, stops <-chan ptrace.Stop) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case in, ok := <-pkts:
			if !ok {
				s.hangup()
				return
			}
			if in.interrupt {
				s.ctrlC()
				continue
			}
			if s.handle(in.pkt) {
				return
			}
		case st, ok := <-stops:
			if !ok {
				stops = nil
				continue
			}
			s.onStop(st)
		case <-tick.C:
			if s.event != nil {
				s.interruptOthers()
				s.maybeReport()
			}
		}
	}
}

// note records a thread's stop, and says whether gdb is to hear of it.
func (s *server) note(st ptrace.Stop) bool {
	delete(s.interrupting, st.Tid)
	switch st.Reason {
	case ptrace.StopExited:
		s.exit = stopReply(st)
		return true
	case ptrace.StopSignal:
		if s.pass[st.Signal] && !s.stepping[st.Tid] {
			// gdb said it does not want to see it: delivered at once.
			s.p.Resume(st.Tid)
			return false
		}
	}
	s.stopped[st.Tid] = st
	switch st.Reason {
	case ptrace.StopStep:
		if !s.stepping[st.Tid] {
			return false
		}
		delete(s.stepping, st.Tid)
	case ptrace.StopInterrupt:
		if !s.halting[st.Tid] {
			return false // stopped by the server for all-stop
		}
	}
	delete(s.stepping, st.Tid)
	return true
}

func (s *server) onStop(st ptrace.Stop) {
	report := s.note(st)
	if st.Reason == ptrace.StopExited {
		s.event, s.pending, s.interrupting = nil, nil, map[int]bool{}
		if s.nonStop {
			s.queueNote(s.exit)
		} else if s.waiting {
			s.waiting = false
			s.c.send(s.exit)
		}
		return
	}
	if s.nonStop {
		if report {
			s.queueNote(s.reply(st))
		}
		return
	}
	if report {
		if s.waiting && s.event == nil {
			s.event = &st
			s.interruptOthers()
		} else {
			s.pending = append(s.pending, st)
		}
	}
	s.maybeReport()
}

// maybeReport sends the held all-stop event once every thread is still.
func (s *server) maybeReport() {
	if s.event == nil || len(s.interrupting) > 0 {
		return
	}
	st := *s.event
	s.event, s.waiting = nil, false
	s.last = st
	s.c.send(s.reply(st))
}

// interruptOthers interrupts every thread that is neither parked nor
// being interrupted, and forgets those that are gone; listed afresh each
// time, since threads come and go while the others stop.
func (s *server) interruptOthers() {
	tids := s.threads()
	alive := map[int]bool{}
	for _, tid := range tids {
		alive[tid] = true
		if _, ok := s.stopped[tid]; ok || s.interrupting[tid] {
			continue
		}
		if s.p.Interrupt(tid) == nil {
			s.interrupting[tid] = true
		}
	}
	for tid := range s.interrupting {
		if !alive[tid] {
			delete(s.interrupting, tid)
		}
	}
	for tid := range s.stopped {
		if !alive[tid] {
			delete(s.stopped, tid)
		}
	}
}

// threads lists the process's threads, the main one first.
func (s *server) threads() []int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", s.pid))
	if err != nil {
		return nil
	}
	var tids []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Ints(tids)
	return tids
}

// reply is the stop reply packet for a thread's stop.
func (s *server) reply(st ptrace.Stop) string {
	s.current = st.Tid
	delete(s.halting, st.Tid)
	return stopReply(st)
}

// stopReply is the T, W or X packet for st.
func stopReply(st ptrace.Stop) string {
	switch st.Reason {
	case ptrace.StopExited:
		if st.Exit.Signal != 0 {
			return fmt.Sprintf("X%02x", toGDB(st.Exit.Signal))
		}
		return fmt.Sprintf("W%02x", st.Exit.Code&0xff)
	case ptrace.StopSignal:
		return fmt.Sprintf("T%02xthread:%x;", toGDB(st.Signal), st.Tid)
	case ptrace.StopInterrupt:
		return fmt.Sprintf("T00thread:%x;", st.Tid)
	case ptrace.StopBreakpoint:
		// swbreak: the pc is the breakpoint's own address already, so gdb
		// must not move it back over the INT3.
		return fmt.Sprintf("T05thread:%x;swbreak:;", st.Tid)
	}
	return fmt.Sprintf("T05thread:%x;", st.Tid)
}

// queueNote queues a non-stop stop reply; the first goes as a
// notification, the rest as answers to gdb's vStopped.
func (s *server) queueNote(r string) {
	s.notes = append(s.notes, r)
	if len(s.notes) == 1 {
		s.c.notify("Stop:" + r)
	}
}

// ctrlC is gdb's interrupt in all-stop mode: every thread stops and the
// main one reports SIGINT.
func (s *server) ctrlC() {
	if s.nonStop || !s.waiting || s.event != nil {
		return
	}
	s.event = &ptrace.Stop{Tid: s.pid, Reason: ptrace.StopSignal, Signal: unix.SIGINT}
	s.interruptOthers()
	if _, ok := s.stopped[s.pid]; !ok {
		s.interrupting[s.pid] = true
	}
	s.maybeReport()
}

// An action of vCont: what one thread (tid > 0) or all (tid -1) do.
type action struct {
	kind byte // c s t
	sig  unix.Signal
	tid  int
}

func parseVCont(args string) ([]action, error) {
	var acts []action
	for _, f := range strings.Split(args, ";") {
		if f == "" {
			continue
		}
		a := action{kind: f[0] | 0x20, tid: -1}
		body, th, hasTid := strings.Cut(f[1:], ":")
		if hasTid {
			t, err := parseTid(th)
			if err != nil {
				return nil, err
			}
			if t > 0 {
				a.tid = t
			}
		}
		switch f[0] {
		case 'C', 'S':
			n, err := strconv.ParseUint(body, 16, 8)
			if err != nil {
				return nil, err
			}
			a.sig = fromGDB(int(n))
		case 'c', 's', 't':
		default:
			return nil, fmt.Errorf("vCont action %q not supported", f)
		}
		acts = append(acts, a)
	}
	return acts, nil
}

// parseTid reads a thread id: hex, -1 for all, 0 for any.
func parseTid(s string) (int, error) {
	if s == "-1" {
		return -1, nil
	}
	n, err := strconv.ParseUint(s, 16, 32)
	return int(n), err
}

// actionFor is the leftmost action that names tid, or names all threads.
func actionFor(acts []action, tid int) *action {
	for i := range acts {
		if acts[i].tid == tid || acts[i].tid == -1 {
			return &acts[i]
		}
	}
	return nil
}

// resume carries out vCont. In all-stop mode a held event of a thread
// being resumed is reported instead, with nothing let go.
func (s *server) resume(acts []action) {
	if !s.nonStop {
		s.waiting = true
		for i := 0; i < len(s.pending); i++ {
			st := s.pending[i]
			if actionFor(acts, st.Tid) == nil {
				continue
			}
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			i--
			if st.Reason == ptrace.StopBreakpoint && s.bps[st.Addr] == nil {
				continue // gdb took the breakpoint out meanwhile: nothing to say
			}
			s.event = &st
			s.maybeReport()
			return
		}
	}
	tids := make([]int, 0, len(s.stopped))
	for tid := range s.stopped {
		tids = append(tids, tid)
	}
	sort.Ints(tids)
	for _, tid := range tids {
		a := actionFor(acts, tid)
		if a == nil {
			continue
		}
		switch a.kind {
		case 'c':
			s.p.SetSignal(tid, a.sig)
			delete(s.stopped, tid)
			s.p.Resume(tid)
		case 's':
			s.p.SetSignal(tid, a.sig)
			delete(s.stopped, tid)
			s.stepping[tid] = true
			if err := s.p.Step(tid); err != nil {
				fmt.Fprintf(s.log, "gdbserver: step thread %d: %v\n", tid, err)
				s.stopped[tid] = ptrace.Stop{Tid: tid, Reason: ptrace.StopSignal, Signal: unix.SIGILL}
				s.onStop(s.stopped[tid])
			}
		}
	}
	if s.nonStop {
		// vCont;t: stop running threads, each reported with signal 0.
		for _, tid := range s.threads() {
			if _, ok := s.stopped[tid]; ok {
				continue
			}
			if a := actionFor(acts, tid); a != nil && a.kind == 't' && !s.halting[tid] {
				s.halting[tid] = true
				s.p.Interrupt(tid)
			}
		}
	}
}

// thread is the thread whose registers gdb reads and writes.
func (s *server) thread() int {
	if s.gThread > 0 {
		return s.gThread
	}
	return s.current
}

// insert is Z0: a new probe, or new conditions for one in place.
func (s *server) insert(addr uint64, conds [][]byte) error {
	if b := s.bps[addr]; b != nil {
		s.setConds(b, conds)
		return nil
	}
	n := s.counts[addr]
	if n == nil {
		n = &counts{}
		s.counts[addr] = n
	}
	b := &breakpoint{n: n}
	s.setConds(b, conds)
	pr, err := s.p.Insert(addr, ptrace.Auto, func(tid int, _ *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		b.n.hits.Add(1)
		if c := b.conds.Load(); c != nil && !anyTrue(*c, r, m) {
			return // one trap, and gdb never hears of it
		}
		b.n.reported.Add(1)
		s.p.Park(tid)
	})
	if err != nil {
		return err
	}
	b.probe = pr
	s.bps[addr] = b
	return nil
}

func (s *server) setConds(b *breakpoint, conds [][]byte) {
	if len(conds) == 0 {
		b.conds.Store(nil)
		return
	}
	b.conds.Store(&conds)
}

// anyTrue evaluates the conditions; one that cannot be evaluated counts as
// true, so that gdb sees the stop and decides (as gdbserver does).
func anyTrue(conds [][]byte, r *regs.Regs, m memio.Memory) bool {
	for _, c := range conds {
		if v, err := eval(c, r, m); err != nil || v != 0 {
			return true
		}
	}
	return false
}

func (s *server) remove(addr uint64) {
	if b := s.bps[addr]; b != nil {
		s.p.Remove(b.probe)
		delete(s.bps, addr)
	}
}

// stats is what "monitor hits" says: each breakpoint address's hits, and
// how many of them stopped for gdb.
func (s *server) stats() string {
	addrs := make([]uint64, 0, len(s.counts))
	for a := range s.counts {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	var b strings.Builder
	for _, a := range addrs {
		n := s.counts[a]
		fmt.Fprintf(&b, "breakpoint %#x: %d hits, %d reported\n", a, n.hits.Load(), n.reported.Load())
	}
	return b.String()
}

// detach lets the process go as if never traced: parked threads first go
// on with the registers gdb left them.
func (s *server) detach() {
	for addr := range s.bps {
		s.remove(addr)
	}
	s.p.ResumeAll()
	s.p.Detach()
}

// kill ends the process and waits for the tracer to see it go.
func (s *server) kill() {
	unix.Kill(s.pid, unix.SIGKILL)
	select {
	case <-s.p.Done():
	case <-time.After(5 * time.Second):
	}
}

// hangup: gdb went away without a word; a process it started dies with
// the session, one attached to is left running.
func (s *server) hangup() {
	if s.exit != "" {
		return
	}
	if s.attached {
		s.detach()
	} else {
		s.kill()
	}
}

// xfer answers a qXfer read of data at "offset,length".
func xfer(data []byte, args string) string {
	o, l, _ := strings.Cut(args, ",")
	off, err1 := strconv.ParseUint(o, 16, 64)
	n, err2 := strconv.ParseUint(l, 16, 64)
	if err1 != nil || err2 != nil {
		return "E01"
	}
	if off >= uint64(len(data)) {
		return "l"
	}
	end := off + n
	if end >= uint64(len(data)) {
		return "l" + escape(data[off:])
	}
	return "m" + escape(data[off:end])
}

func hexBytes(s string) ([]byte, error) { return hex.DecodeString(s) }

// syncWriter serialises a log shared by the probe handlers and serve.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}
