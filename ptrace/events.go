package ptrace

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
)

// event handles one wait4 report.
func (t *Tracer) event(tid int, ws unix.WaitStatus) {
	th := t.threads[tid]
	if th == nil {
		t.unknown(tid, ws)
		return
	}
	t.dispatch(th, ws)
}

// unknown handles a report from a tid the tracer has no record of: a new
// thread whose initial stop came before its creator's clone event, a forked
// child before its parent's fork event, or a thread that ended with an exec.
func (t *Tracer) unknown(tid int, ws unix.WaitStatus) {
	if !ws.Stopped() {
		return
	}
	if p := t.procs[tgid(tid)]; p != nil && !p.finished {
		th := p.addThread(tid, running)
		t.dispatch(th, ws)
		return
	}
	t.orphans[tid] = ws
}

// tgid returns the process a thread belongs to, or 0.
func tgid(tid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func isStopSignal(s unix.Signal) bool {
	return s == unix.SIGSTOP || s == unix.SIGTSTP || s == unix.SIGTTIN || s == unix.SIGTTOU
}

// dispatch handles a stop or the end of a known thread, and lets the thread
// go on.
func (t *Tracer) dispatch(th *thread, ws unix.WaitStatus) {
	if ws.Exited() || ws.Signaled() {
		t.gone(th, ws)
		return
	}
	if !ws.Stopped() {
		return
	}
	tid, p := th.tid, th.p
	sig := ws.StopSignal()
	// Stopped until resumed: a handler that stops the world or detaches
	// meanwhile must not wait for this thread to stop.
	th.state = held
	switch ptraceEvent(ws) {
	case 0:
		if sig == unix.SIGTRAP {
			t.trap(th)
			return
		}
		// A signal for the tracee: deliver it as it came (same signal, so
		// the kernel keeps its siginfo).
		t.signalled(th, sig, false)
	case unix.PTRACE_EVENT_STOP:
		if isStopSignal(sig) {
			// Group-stop: stay stopped, as without a tracer, until SIGCONT.
			th.state = listening
			ptraceRaw(unix.PTRACE_LISTEN, tid, 0, 0)
			return
		}
		// An interrupt or a new thread's first stop.
		t.release(th)
	case unix.PTRACE_EVENT_CLONE:
		if m, e := eventMsg(tid); e == 0 {
			t.cloned(p, int(m))
		}
		t.resume(th, 0)
	case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		if m, e := eventMsg(tid); e == 0 {
			t.forked(p, int(m), ptraceEvent(ws) == unix.PTRACE_EVENT_VFORK)
		}
		t.resume(th, 0)
	case unix.PTRACE_EVENT_EXEC:
		t.execed(t.execer(th))
	default:
		t.resume(th, 0)
	}
}

// gone removes a thread that ended; the end of the leader is the end of
// the process.
func (t *Tracer) gone(th *thread, ws unix.WaitStatus) {
	p := th.p
	delete(p.threads, th.tid)
	if t.threads[th.tid] == th {
		delete(t.threads, th.tid)
	}
	if th.vfork || th.tid != p.pid {
		return
	}
	// A leader's end is reported only once every other thread has been
	// reaped: it is the process's.
	p.end(exitOf(ws), nil)
}

// cloned registers a new thread of p. Its first stop may already have been
// seen.
func (t *Tracer) cloned(p *Process, tid int) {
	if t.threads[tid] != nil {
		return
	}
	th := p.addThread(tid, running)
	if ws, ok := t.orphans[tid]; ok {
		delete(t.orphans, tid)
		t.dispatch(th, ws)
	}
}

// firstStop waits for the first stop of an automatically attached child.
func (t *Tracer) firstStop(child int) (unix.WaitStatus, bool) {
	if ws, ok := t.orphans[child]; ok {
		delete(t.orphans, child)
		return ws, true
	}
	var ws unix.WaitStatus
	if !t.waitFor(child, &ws) {
		return ws, false
	}
	return ws, true
}

// forked deals with a child of p. A fork child gets its own copy of the
// text, INT3s included: they are replaced by the original bytes and the
// child runs free. A vfork child shares p's memory until it execs or exits,
// so it stays traced and its hits are served like p's.
func (t *Tracer) forked(p *Process, child int, vfork bool) {
	ws, ok := t.firstStop(child)
	if !ok || !ws.Stopped() {
		return
	}
	if vfork {
		th := p.addThread(child, running)
		th.vfork = true
		cont(child, 0)
		return
	}
	if p.cfg.onFork != nil && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP {
		if t.follow(p, child) {
			return
		}
	}
	if m, err := memio.OpenProcess(child); err == nil {
		for _, s := range p.sites {
			t.one[0] = s.orig
			m.ForceWriteAt(t.one[:], int64(s.addr))
		}
		if p.xol != nil && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP {
			// The child's copy of the XOL area goes too. Its first stop
			// is on the way to user mode, where a call can be injected.
			c := &Process{t: t, pid: child, mem: m, threads: map[int]*thread{}, xol: p.xol, xolAt: p.xolAt}
			th := c.addThread(child, held)
			delete(t.threads, child)
			for x := p.xol; x != nil; x = x.also {
				t.inject(th, p.xolAt, unix.SYS_MUNMAP, x.base, xolSize)
			}
		}
		m.Close()
	}
	unix.PtraceDetach(child)
}

// execer returns the record of the thread that made the execve th, a
// thread-group leader, reports. When another thread made it, the leader
// was killed and that thread took its tid (the event message names its
// old one): that thread's record, when there is one, goes on as the
// leader's (newImage renames it); else th's does, cleared of what belonged
// to the dead leader.
func (t *Tracer) execer(th *thread) *thread {
	p := th.p
	m, e := eventMsg(th.tid)
	if e != 0 || int(m) == th.tid || th.vfork {
		return th
	}
	if o := t.threads[int(m)]; o != nil && o.p == p && o != th && !o.vfork {
		o.state, o.deferred, o.vanished = held, false, false
		return o
	}
	th.nheld, th.hit, th.deferred, th.vanished = 0, 0, false, false
	return th
}

// execed handles an execve: a vfork child leaves p's memory and is let go;
// p itself gets a new image, without the old probes or XOL area.
func (t *Tracer) execed(th *thread) {
	if th.vfork {
		delete(th.p.threads, th.tid)
		delete(t.threads, th.tid)
		unix.PtraceDetach(th.tid)
		return
	}
	t.newImage(th)
	if !th.p.finished {
		t.resume(th, 0)
	}
}

// newImage resets p after th's execve succeeded, and tells the caller.
func (t *Tracer) newImage(th *thread) {
	p := th.p
	for tid, o := range p.threads {
		if o != th && !o.vfork {
			delete(p.threads, tid)
			delete(t.threads, tid)
		}
	}
	if th.tid != p.pid {
		delete(p.threads, th.tid)
		delete(t.threads, th.tid)
		th.tid = p.pid
		p.threads[p.pid] = th
		t.threads[p.pid] = th
	}
	for _, s := range p.sites {
		for _, pr := range s.probes {
			pr.s = nil
		}
	}
	p.sites = map[uint64]*site{}
	p.removed = map[uint64]bool{}
	p.xol = nil
	if m, err := memio.OpenProcess(p.pid); err == nil {
		p.mem.Close()
		p.mem = m
	}
	if p.cfg.onExec != nil {
		// The exec stop is inside execve, whose return would overwrite rax
		// after a register change (a system call injected to map an XOL
		// area, say): stop again on the way to user mode first.
		if !t.userStop(th) {
			return
		}
		p.cfg.onExec(p)
	}
}

// userStop moves th, stopped inside execve, to a stop on its way back to
// user mode. A signal arriving meanwhile is held. It reports false when
// the thread ended.
func (t *Tracer) userStop(th *thread) bool {
	if ptraceRaw(unix.PTRACE_INTERRUPT, th.tid, 0, 0) != 0 || cont(th.tid, 0) != 0 {
		return true // gone, or already where it should be; nothing to undo
	}
	for {
		if !t.waitFor(th.tid, &t.ws) {
			return false
		}
		ws := t.ws
		switch {
		case ws.Exited() || ws.Signaled():
			t.gone(th, ws)
			return false
		case !ws.Stopped():
			continue
		case ptraceEvent(ws) == unix.PTRACE_EVENT_STOP:
			return true
		case ptraceEvent(ws) == 0 && getSiginfo(th.tid, &t.si) == 0:
			th.hold(&t.si)
		}
		if cont(th.tid, 0) != 0 {
			return false
		}
	}
}

// stopWorld interrupts p's running threads other than keep (listening ones
// too when all is set) and waits until each has stopped. A thread that
// reports something else than the interrupt keeps that report for
// resumeWorld (or detach), and so does a thread of p whose report came
// while waiting for another (see waitFor), which joins the list. A thread
// that ended reports its end that way; one that vanished without a report
// is marked so. It returns the threads it stopped.
func (t *Tracer) stopWorld(p *Process, keep *thread, all bool) []*thread {
	// Lists are recycled (worlds can nest: a deferred report handled while
	// resuming may stop the world again) so a single-step hit allocates
	// nothing once warm.
	var stopped []*thread
	if n := len(t.spare); n > 0 {
		stopped, t.spare = t.spare[n-1][:0], t.spare[:n-1]
	}
	for _, th := range p.threads {
		if th == keep || th.state == held || (th.state == listening && !all) {
			continue
		}
		if th.tid == p.pid && !th.vfork && t.zombie(th.tid) {
			// A leader that exited alone: it reports nothing until the
			// process ends. Left as it is.
			continue
		}
		if e := ptraceRaw(unix.PTRACE_INTERRUPT, th.tid, 0, 0); e != 0 {
			continue // gone: its end is reported
		}
		th.state = held
		stopped = append(stopped, th)
	}
	// The leader is waited for last, once the others are stopped: it may
	// have exited alone since the check above, and then never reports
	// (see waitLeader).
	var leader *thread
	for _, th := range stopped {
		if th.tid == p.pid && !th.vfork {
			leader = th
			continue
		}
		t.waitStopped(th, t.waitFor(th.tid, &th.ws))
	}
	if leader != nil {
		ok, zombie := t.waitLeader(leader.tid, &leader.ws)
		if zombie {
			// Exited: not stopped, not the world's.
			leader.state, leader.deferred, leader.vanished = running, false, false
			n := 0
			for _, th := range stopped {
				if th != leader {
					stopped[n] = th
					n++
				}
			}
			clear(stopped[n:])
			stopped = stopped[:n]
		} else {
			t.waitStopped(leader, ok)
		}
	}
	return t.claim(p, keep, stopped)
}

// waitStopped records the report stopWorld waited for from th (ok false:
// th can no longer report).
func (t *Tracer) waitStopped(th *thread, ok bool) {
	if !ok {
		th.ws, th.deferred, th.vanished = 0, true, true
		return
	}
	ws := th.ws
	th.deferred = !(ws.Stopped() && ptraceEvent(ws) == unix.PTRACE_EVENT_STOP && ws.StopSignal() == unix.SIGTRAP)
	th.vanished = false
}

// resumeWorld lets the threads stopWorld stopped go, handling the reports
// they had instead of the interrupt.
func (t *Tracer) resumeWorld(stopped []*thread) {
	defer func() {
		clear(stopped)
		t.spare = append(t.spare, stopped[:0])
	}()
	for _, th := range stopped {
		if th.state != held || th.p.finished || th.p.threads[th.tid] != th {
			continue
		}
		if th.deferred {
			th.deferred = false
			if th.vanished {
				th.vanished = false
				t.lost(th)
				continue
			}
			t.dispatch(th, th.ws)
			continue
		}
		t.release(th)
	}
}

// release continues a stopped thread, delivering the signals held while it
// was being stepped: the first with its own siginfo, any others re-sent.
func (t *Tracer) release(th *thread) {
	if th.nheld == 0 {
		t.resume(th, 0)
		return
	}
	th.state = running
	sig := int(th.held[0].signo())
	setSiginfo(th.tid, &th.held[0])
	cont(th.tid, sig)
	for i := 1; i < th.nheld; i++ {
		unix.Tgkill(th.p.pid, th.tid, unix.Signal(th.held[i].signo()))
	}
	th.nheld = 0
}

// signalled delivers sig, which th stopped with and which is not a hit,
// never with rip inside a boosted slot, so that no handler sees an address
// in the XOL area (kprobes lets them; nothing needs to): a thread past the
// copy is moved to the next original instruction; a fault the copy raised
// is moved back to the original instruction (rip, and si_addr where it
// names the instruction); a thread that has not run the copy yet (the
// signal was pending when it was sent there) steps it first, with the
// signal held, and gets it at the next original instruction. haveRegs says
// t.pregs already holds th's registers.
func (t *Tracer) signalled(th *thread, sig unix.Signal, haveRegs bool) {
	x := th.p.xol
	if !x.boosting() {
		t.resume(th, int(sig))
		return
	}
	tid := th.tid
	if !haveRegs && getRegs(tid, &t.pregs) != 0 {
		t.resume(th, int(sig))
		return
	}
	s, off, ok := x.siteOfSlot(t.pregs.Rip)
	if !ok {
		t.resume(th, int(sig))
		return
	}
	if off != 0 {
		t.pregs.Rip = s.insn.Next()
		setRegs(tid, &t.pregs)
		t.resume(th, int(sig))
		return
	}
	if getSiginfo(tid, &t.si) != 0 {
		return // gone
	}
	if sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL || sig == unix.SIGFPE {
		if t.si.code() > 0 { // raised by the copy itself
			t.pregs.Rip = s.addr
			setRegs(tid, &t.pregs)
			if sig == unix.SIGILL || sig == unix.SIGFPE {
				t.si.setAddr(s.addr)
				setSiginfo(tid, &t.si)
			}
			t.resume(th, int(sig))
			return
		}
	}
	th.hold(&t.si)
	switch t.step(th, s.slot) {
	case stepGone:
		return
	case stepFault:
		t.pregs.Rip = s.addr
		th.hold(&t.si)
	default:
		t.pregs.Rip = s.insn.Next()
	}
	setRegs(tid, &t.pregs)
	t.release(th)
}

// resume continues a stopped thread with signal sig (0 for none).
func (t *Tracer) resume(th *thread, sig int) {
	th.state = running
	cont(th.tid, sig)
}

// hold keeps a signal that arrived while the thread was being stepped.
func (th *thread) hold(si *siginfo) {
	if th.nheld < len(th.held) {
		th.held[th.nheld] = *si
		th.nheld++
	}
}

// detach restores p as if never traced and lets it go.
func (p *Process) detach() error {
	t := p.t
	if p.finished {
		return nil
	}
	stopped := t.stopWorld(p, nil, true)
	_ = stopped
	for _, th := range stopped {
		if !th.deferred {
			t.collectTrap(th)
		}
	}
	// Threads that stopped with something else than the interrupt: an INT3
	// hit is undone, a signal is passed on at detach, a new thread or child
	// is let go too.
	sigs := map[int]int{}
	for _, th := range p.threads {
		if !th.deferred {
			continue
		}
		th.deferred = false
		ws := th.ws
		if th.vanished {
			th.vanished = false
			t.lost(th)
			if p.finished {
				return nil
			}
			continue
		}
		if ws.Exited() || ws.Signaled() {
			t.gone(th, ws)
			if p.finished {
				return nil
			}
			continue
		}
		switch ev := ptraceEvent(ws); {
		case ev == 0 && ws.StopSignal() == unix.SIGTRAP:
			if getRegs(th.tid, &t.pregs) == 0 && getSiginfo(th.tid, &t.si) == 0 && t.si.code() == siKernel &&
				(p.sites[t.pregs.Rip-1] != nil || p.removed[t.pregs.Rip-1]) {
				t.pregs.Rip--
				setRegs(th.tid, &t.pregs)
			} else {
				sigs[th.tid] = int(unix.SIGTRAP)
			}
		case ev == 0:
			sigs[th.tid] = int(ws.StopSignal())
		case ev == unix.PTRACE_EVENT_CLONE:
			if m, e := eventMsg(th.tid); e == 0 {
				if _, ok := t.firstStop(int(m)); ok {
					unix.PtraceDetach(int(m))
				}
			}
		case ev == unix.PTRACE_EVENT_FORK || ev == unix.PTRACE_EVENT_VFORK:
			if m, e := eventMsg(th.tid); e == 0 {
				t.forked(p, int(m), false)
			}
		case ev == unix.PTRACE_EVENT_EXEC:
			// A new image: no INT3 nor XOL area of ours is left, and no
			// other thread.
			for tid, o := range p.threads {
				if o != th && !o.vfork {
					delete(p.threads, tid)
					delete(t.threads, tid)
				}
			}
			for _, s := range p.sites {
				for _, pr := range s.probes {
					pr.s = nil
				}
			}
			p.sites, p.removed, p.xol = map[uint64]*site{}, map[uint64]bool{}, nil
		}
	}
	if p.xol.boosting() {
		// A thread inside a boosted slot goes back to the same point of
		// the original code (the instruction, or the one after it) before
		// the area goes.
		for _, th := range p.threads {
			if th.hit != 0 || th.state != held || getRegs(th.tid, &t.pregs) != 0 {
				continue
			}
			if s, off, ok := p.xol.siteOfSlot(t.pregs.Rip); ok {
				t.pregs.Rip = s.addr + off
				setRegs(th.tid, &t.pregs)
				p.t.slotExits++
			}
		}
	}
	for _, th := range p.threads {
		if th.hit != 0 {
			// Detached from a handler: the thread goes back to the probed
			// instruction, with what the handler changed.
			t.r.RIP = th.hit
			t.r.StorePtrace(&t.pregs)
			setRegs(th.tid, &t.pregs)
		}
	}
	for _, s := range p.sites {
		t.one[0] = s.orig
		p.mem.ForceWriteAt(t.one[:], int64(s.addr))
		for _, pr := range s.probes {
			pr.s = nil
		}
	}
	var err error
	if p.xol != nil {
		err = t.unmapXOL(p, sigs)
	}
	// A signal held while a thread was stepped (a pending one the step of
	// the injected munmap dequeued, say) goes with the detach: the thread
	// is in the step's signal-delivery-stop, where PTRACE_DETACH delivers
	// a signal with the siginfo set. More than one are sent again after.
	var resend []report
	for tid, th := range p.threads {
		if th.nheld == 0 {
			continue
		}
		first := 0
		if sigs[tid] == 0 && setSiginfo(tid, &th.held[0]) == 0 {
			sigs[tid] = int(th.held[0].signo())
			first = 1
		}
		for i := first; i < th.nheld; i++ {
			resend = append(resend, report{tid, unix.WaitStatus(th.held[i].signo())})
		}
		th.nheld = 0
	}
	p.sites = map[uint64]*site{}
	// The leader last: once it has exited, it can be reaped only after
	// every other thread.
	order := make([]*thread, 0, len(p.threads))
	for _, th := range p.threads {
		if th.tid != p.pid {
			order = append(order, th)
		}
	}
	if th := p.threads[p.pid]; th != nil {
		order = append(order, th)
	}
	var exit *Exit
	for _, th := range order {
		tid := th.tid
		if sigs[tid] != 0 {
			t.sigsAtDetach++
		}
		e := ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sigs[tid]))
		if e == unix.ESRCH {
			// A thread detached before let the process exit: this one is
			// dying (PTRACE_DETACH refuses a thread with SIGKILL pending)
			// and, still traced, would stay a zombie nobody reaps.
			var ws unix.WaitStatus
			var reaped bool
			e, reaped = t.reapOrDetach(tid, sigs[tid], &ws)
			if reaped && tid == p.pid && !th.vfork {
				exit = exitOf(ws)
			}
		}
		if e != 0 && e != unix.ESRCH && err == nil {
			err = errno("detach", tid, e)
		}
		th.nheld = 0
	}
	for _, r := range resend {
		unix.Tgkill(p.pid, r.tid, unix.Signal(r.ws))
	}
	if exit != nil {
		// The process ended before it could be let go: say how.
		err = nil
	}
	p.end(exit, nil)
	return err
}

// exitOf says how a process ended from its leader's wait status.
func exitOf(ws unix.WaitStatus) *Exit {
	e := &Exit{}
	if ws.Signaled() {
		e.Signal = ws.Signal()
	} else {
		e.Code = ws.ExitStatus()
	}
	return e
}

// collectTrap deals with a thread that the world-stop interrupt caught
// after it ran an INT3 but before its SIGTRAP was reported (the interrupt is
// reported first): once detached it would get that SIGTRAP, fatal, at an
// address whose INT3 is gone. When a SIGTRAP is pending and rip is one past
// a probe, the thread is let go as far as reporting it, and the report is
// kept as if stopWorld had seen it.
func (t *Tracer) collectTrap(th *thread) {
	p := th.p
	if getRegs(th.tid, &t.pregs) != 0 || (p.sites[t.pregs.Rip-1] == nil && !p.removed[t.pregs.Rip-1]) {
		return
	}
	if !sigPending(p.pid, th.tid, unix.SIGTRAP) {
		return
	}
	if cont(th.tid, 0) != 0 {
		return
	}
	th.deferred = true
	if !t.waitFor(th.tid, &th.ws) {
		th.ws, th.vanished = 0, true
	}
}

// sigPending says whether sig is pending for thread tid (in its own set;
// a SIGTRAP an int3 raises is sent to the thread).
func sigPending(pid, tid int, sig unix.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigPnd:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && m&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// reapOrDetach waits, briefly, for a thread PTRACE_DETACH refused: it
// reaps it if it ends (reaped, with its status in ws), and detaches it if
// it stops. Reports of other threads that come meanwhile are kept for the
// main loop. A zombie leader is waited for only as long as its process
// has other threads that are ending.
func (t *Tracer) reapOrDetach(tid int, sig int, ws *unix.WaitStatus) (e unix.Errno, reaped bool) {
	for i := 0; i < 1000; i++ {
		r, e := tid, unix.Errno(0)
		if !t.unstash(tid, ws) {
			r, e = wait4(tid, ws, wall|unix.WNOHANG)
		}
		switch {
		case e != 0:
			return 0, false // already reaped: nothing is left attached
		case r == tid && (ws.Exited() || ws.Signaled()):
			return 0, true
		case r == tid && ws.Stopped():
			if e := ptraceRaw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); e != unix.ESRCH {
				return e, false
			}
		case i >= 20 && t.zombie(tid):
			// A leader that exited alone, its threads (detached) still
			// running: it stays attached, and is let go with the
			// tracer thread.
			return unix.ESRCH, false
		}
		time.Sleep(time.Millisecond)
	}
	return unix.ESRCH, false
}

// follow makes a traced Process of p's fork child, stopped at its first
// stop, with copies of p's probes and XOL area, and hands it over.
func (t *Tracer) follow(p *Process, child int) bool {
	c, err := t.newProcess(child, p.cfg)
	if err != nil {
		return false
	}
	for addr, s := range p.sites {
		ns := new(site)
		*ns = *s
		ns.probes = nil
		for _, pr := range s.probes {
			ns.probes = append(ns.probes, &Probe{Addr: pr.Addr, Insn: pr.Insn, Strategy: pr.Strategy, handler: pr.handler, s: ns})
		}
		c.sites[addr] = ns
	}
	// The child's own copies of the areas and their slot lists, naming its
	// own sites (shared lists would be appended to by both).
	tail := &c.xol
	for px := p.xol; px != nil; px = px.also {
		x := *px
		x.also = nil
		x.slots = make([]*site, len(px.slots))
		for i, s := range px.slots {
			x.slots[i] = s
			if ns := c.sites[s.addr]; ns != nil && ns.slot == s.slot {
				x.slots[i] = ns
			}
		}
		*tail = &x
		tail = &x.also
	}
	c.xolAt = p.xolAt
	th := c.addThread(child, held)
	t.procs[child] = c
	p.cfg.onFork(c)
	if !c.finished {
		t.resume(th, 0)
	}
	return true
}

// report is a wait4 report kept for later: see waitFor.
type report struct {
	tid int
	ws  unix.WaitStatus
}

// waitFor waits for the next report of thread tid and stores it in ws. It
// reports false when tid can no longer report: its process is gone from
// under the tracer, or tid was a thread other than the leader that called
// execve (it goes on under the leader's tid, which reports the exec).
//
// It never blocks in wait4 for tid alone. A thread-group leader that has
// exited is reported only once every other thread of its process has been
// reaped, and the tracer is who reaps them: waiting for the leader alone
// while the others are ending (exit_group, SIGKILL) never returns. So it
// takes every report that comes, keeping the others' for later (stash).
// It does not wait for a zombie: callers interrupt none (see zombie).
func (t *Tracer) waitFor(tid int, ws *unix.WaitStatus) bool {
	if t.unstash(tid, ws) {
		return true
	}
	p := t.procOf(tid)
	for {
		r, e := wait4(-1, ws, wall|wnothread)
		if e != 0 {
			return false
		}
		if done, ok := t.took(tid, p, r, ws); done {
			return ok
		}
	}
}

// procOf returns the process of known thread tid, or nil.
func (t *Tracer) procOf(tid int) *Process {
	if th := t.threads[tid]; th != nil {
		return th.p
	}
	return nil
}

// took deals with report ws of thread r that came while waiting for tid,
// of p: done says the wait is over, ok that ws is tid's.
func (t *Tracer) took(tid int, p *Process, r int, ws *unix.WaitStatus) (done, ok bool) {
	switch {
	case r == tid:
		return true, true
	case r == t.sentinel:
		if ws.Stopped() {
			cont(t.sentinel, 0)
		}
		return false, false
	}
	t.stash = append(t.stash, report{r, *ws})
	if p != nil && r == p.pid && ws.Stopped() && ptraceEvent(*ws) == unix.PTRACE_EVENT_EXEC {
		// An execve under the leader's tid: every other thread of p
		// has ended by now, reported or (the one that called it)
		// renamed.
		return true, false
	}
	return false, false
}

// waitLeader waits, like waitFor, for the report of tid, a process's
// leader interrupted after every other thread was stopped. The leader may
// have exited alone between the zombie check and the interrupt: a zombie
// leader reports nothing until its other threads have ended, and they are
// stopped, so a blocking wait would never return. It polls instead, and
// gives up (zombie) once the leader is seen to be a zombie, which it
// becomes promptly once past its last chance to report the interrupt.
func (t *Tracer) waitLeader(tid int, ws *unix.WaitStatus) (ok, zombie bool) {
	if t.unstash(tid, ws) {
		return true, false
	}
	p := t.procOf(tid)
	for i := 0; ; i++ {
		r, e := wait4(-1, ws, wall|wnothread|unix.WNOHANG)
		if e != 0 {
			return false, false
		}
		if r > 0 {
			if done, ok := t.took(tid, p, r, ws); done {
				return ok, false
			}
			continue
		}
		if t.zombie(tid) {
			// Nothing can come from it now; a report it sent before it
			// exited (its end, once a kill has ended the others) is
			// the main loop's.
			return false, true
		}
		if i < 100 {
			unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		} else {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// stashed says whether a report of tid is stashed.
func (t *Tracer) stashed(tid int) bool {
	for _, r := range t.stash {
		if r.tid == tid {
			return true
		}
	}
	return false
}

// unstash takes the first stashed report of tid, if any, into ws.
func (t *Tracer) unstash(tid int, ws *unix.WaitStatus) bool {
	for i, r := range t.stash {
		if r.tid == tid {
			*ws = r.ws
			t.stash = append(t.stash[:i], t.stash[i+1:]...)
			return true
		}
	}
	return false
}

// claim takes the stashed reports of p's threads other than keep, as
// stopWorld's own (deferred), adding the threads to stopped.
func (t *Tracer) claim(p *Process, keep *thread, stopped []*thread) []*thread {
	n := 0
	for _, r := range t.stash {
		th := t.threads[r.tid]
		if th == nil || th.p != p || th == keep {
			t.stash[n] = r
			n++
			continue
		}
		th.ws, th.deferred, th.vanished = r.ws, true, false
		if th.state != held {
			th.state = held
			stopped = append(stopped, th)
		} else if !inList(stopped, th) {
			stopped = append(stopped, th)
		}
	}
	t.stash = t.stash[:n]
	return stopped
}

func inList(l []*thread, th *thread) bool {
	for _, o := range l {
		if o == th {
			return true
		}
	}
	return false
}

// zombie says whether thread tid has exited (or is gone), by the state in
// /proc/TID/stat. A leader that called the exit system call alone stays a
// zombie, never reporting a stop, until its process's last thread ends: an
// interrupt sent to it would be waited for in vain. It allocates nothing.
func (t *Tracer) zombie(tid int) bool {
	path := append(t.statPath[:0], "/proc/"...)
	path = strconv.AppendInt(path, int64(tid), 10)
	path = append(path, "/stat\x00"...)
	fd, _, e := unix.Syscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&path[0])),
		unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return true
	}
	n, _, e := unix.Syscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&t.statBuf[0])), uintptr(len(t.statBuf)))
	unix.Syscall(unix.SYS_CLOSE, fd, 0, 0)
	if e != 0 {
		return true
	}
	// "tid (comm) S ...": comm may hold anything, parentheses included,
	// so the state follows the last ')'. (comm is at most 16 bytes.)
	b := t.statBuf[:n]
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			if i+2 < len(b) {
				return b[i+2] == 'Z' || b[i+2] == 'X'
			}
			break
		}
	}
	return false
}

// lost drops a thread that vanished without a report of its end (see
// waitFor); a leader lost so ends its process.
func (t *Tracer) lost(th *thread) {
	p := th.p
	delete(p.threads, th.tid)
	if t.threads[th.tid] == th {
		delete(t.threads, th.tid)
	}
	if th.tid == p.pid && !th.vfork {
		p.end(nil, fmt.Errorf("ptrace: process %d is gone", p.pid))
	}
}

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()
