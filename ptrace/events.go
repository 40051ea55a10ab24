package ptrace

import (
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/memio"
)

// event handles one wait4 report.
func (t *Tracer) event(tid int, ws unix.WaitStatus) {
	th := t.threads[tid]

	if th == nil {
		t.unknown(tid, ws)
		return
	}
	th.pending, th.queued = false, false
	switch {
	case ws.Exited() || ws.Signaled():
		t.gone(th, ws)
		return
	case !ws.Stopped():
		return
	}
	// Any stop clears a pending interrupt (the kernel drops its trap
	// then), so one sent before is not waited for; an interrupt sent while
	// the thread was already stopped comes later, and is taken as a stale
	// one.
	th.interrupted = false
	th.stopEv = ptsys.Event(ws)
	if th.p.exitStops && ptsys.Event(ws) == unix.PTRACE_EVENT_EXIT {
		// The memory is still there: read the counters (see traceExits).
		th.p.exitStop(th)
	}
	switch {
	case th.state == leaving:
		t.leave(th, ws)
		return
	case th.state == stepping:
		t.stepReport(th, ws)
		return
	}
	ev := ptsys.Event(ws)
	p := th.p
	if p.world.active && ev != unix.PTRACE_EVENT_EXEC {
		// Kept for after the world stop; an interrupt needs nothing more.
		// An exec is not kept: it ended every other thread already.
		th.state = held
		if ev != unix.PTRACE_EVENT_STOP || ws.StopSignal() != unix.SIGTRAP {
			th.pending, th.ws = true, ws
		}
		t.advance(p)
		return
	}
	t.dispatch(th, ws)
}

// unknown handles a report from a tid the tracer has no record of: a fork
// child's first stop (see forked), a new thread whose first stop came
// before its creator's clone event, or a thread that ended with an exec.
func (t *Tracer) unknown(tid int, ws unix.WaitStatus) {
	if nb := t.newborns[tid]; nb != nil {
		delete(t.newborns, tid)
		t.born(tid, nb, ws)
		return
	}
	if !ws.Stopped() {
		return
	}
	if p := t.procs[tgid(tid)]; p != nil && !p.finished {
		th := p.addThread(tid, running)
		t.event(th.tid, ws)
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

// dispatch handles a stop of a known thread while no world stop holds its
// memory, and lets the thread go on.
func (t *Tracer) dispatch(th *thread, ws unix.WaitStatus) {
	sig := ws.StopSignal()
	switch ptsys.Event(ws) {
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
			ptsys.Raw(unix.PTRACE_LISTEN, th.tid, 0, 0)
			return
		}
		// An interrupt, or a new thread's first stop.
		th.p.seeThread(th)
		t.release(th)
	case unix.PTRACE_EVENT_CLONE:
		if m, e := ptsys.EventMsg(th.tid); e == 0 {
			t.cloned(th, int(m))
		}
		t.resume(th, 0)
	case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
		vfork := ptsys.Event(ws) == unix.PTRACE_EVENT_VFORK
		if m, e := ptsys.EventMsg(th.tid); e == 0 {
			t.forked(th, int(m))
		}
		if vfork {
			// It waits for its child in the kernel, where no interrupt
			// reaches it, until PTRACE_EVENT_VFORK_DONE.
			th.state = vforking
			ptsys.Cont(th.tid, 0)
			return
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
	if t.threads[th.tid] == th {
		delete(t.threads, th.tid)
	}
	if th.state == leaving || p.threads[th.tid] != th {
		return
	}
	delete(p.threads, th.tid)
	if th.state == stepping && th.step == stepInPlace {
		t.endInPlace(th, th.stepSite)
	}
	if th.guest || th.tid != p.pid {
		if p.world.active {
			t.advance(p)
		}
		return
	}
	// A leader's end is reported only once every other thread has been
	// reaped: it is the process's.
	p.end(exitOf(ws), nil)
}

// leave deals with a report of a thread its process's detach could not let
// go (a vfork parent): it goes now.
func (t *Tracer) leave(th *thread, ws unix.WaitStatus) {
	delete(t.threads, th.tid)
	sig := 0
	if ptsys.Event(ws) == 0 && ws.StopSignal() != unix.SIGTRAP {
		sig = int(ws.StopSignal())
	}
	ptsys.Raw(unix.PTRACE_DETACH, th.tid, 0, uintptr(sig))
}

// leaveStopped detaches the leaving threads found stopped without a
// report seen. The report can be taken by someone else: once its process
// is detached, the caller waits for its child (cmd.Wait), and the kernel
// lets a wait of the real parent take a ptrace stop when the tracer is a
// thread of the same process. The thread would then stay stopped for
// good. PTRACE_DETACH fails on one not stopped yet (a vfork parent still
// waiting), so they are tried until none is left. The signal of a
// signal-delivery-stop goes with the detach.
func (t *Tracer) leaveStopped() bool {
	left := false
	for tid, th := range t.threads {
		if th.state != leaving {
			continue
		}
		sig := 0
		var si ptsys.Siginfo
		if ptsys.GetSiginfo(tid, &si) == 0 && si.Code()>>8 == 0 {
			sig = int(si.Signo())
		}
		switch ptsys.Raw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)) {
		case 0:
			delete(t.threads, tid)
		case unix.ESRCH:
			if t.zombie(tid) {
				delete(t.threads, tid)
				continue
			}
			left = true
		default:
			delete(t.threads, tid)
		}
	}
	return left
}

// cloned registers the new thread of parent's process. Its first stop may
// already have been seen.
func (t *Tracer) cloned(parent *thread, tid int) {
	if t.threads[tid] != nil {
		return
	}
	th := parent.p.addThread(tid, running)
	th.guest, th.tgid = parent.guest, parent.tgid
	if ws, ok := t.orphans[tid]; ok {
		delete(t.orphans, tid)
		t.event(tid, ws)
	}
}

// A newborn is a fork child not yet seen stopped: what its parent's
// memory held at the fork, to take out of its copy.
type newborn struct {
	parent *Process
	sites  []restore
	areas  []uint64 // XOL area bases
	sysAt  uint64   // where a system call can be injected
}

type restore struct {
	addr uint64
	orig byte
}

// forked deals with child, created by parent (stopped at the event). A
// child that shares the memory (vfork, or clone with CLONE_VM but not
// CLONE_THREAD) joins the process as a guest: its hits are served, and
// its end or exec leaves the memory alone. Any other child has a copy of
// the text, INT3s included: on its first stop they are replaced by the
// original bytes, its copy of the XOL area goes, and it runs free (or
// traced, with FollowForks).
func (t *Tracer) forked(parent *thread, child int) {
	p := parent.p
	if sharesMemory(parent.tgid, child) {
		th := p.addThread(child, running)
		th.guest, th.tgid = true, child
		if ws, ok := t.orphans[child]; ok {
			delete(t.orphans, child)
			t.event(child, ws)
		}
		return
	}
	nb := &newborn{parent: p, sysAt: p.sysAt}
	for _, s := range p.sites {
		for i, b := range s.origBytes() {
			nb.sites = append(nb.sites, restore{s.addr + uint64(i), b})
		}
	}
	for x := p.xol; x != nil; x = x.also {
		nb.areas = append(nb.areas, x.base)
	}
	for c := p.counters; c != nil; c = c.also {
		nb.areas = append(nb.areas, c.base) // of the same size
	}
	if ws, ok := t.orphans[child]; ok {
		delete(t.orphans, child)
		t.born(child, nb, ws)
		return
	}
	t.newborns[child] = nb
}

// sharesMemory says whether processes a and b share their memory, by
// kcmp(KCMP_VM).
func sharesMemory(a, b int) bool {
	const kcmpVM = 1
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	return e == 0 && r == 0
}

// born handles the first report of a fork child.
func (t *Tracer) born(child int, nb *newborn, ws unix.WaitStatus) {
	if !ws.Stopped() {
		return
	}
	p := nb.parent
	if p != nil && !p.finished && p.cfg.onFork != nil && ptsys.Event(ws) == unix.PTRACE_EVENT_STOP {
		if t.follow(p, child) {
			return
		}
	}
	if m, err := memio.OpenProcess(child); err == nil {
		for _, s := range nb.sites {
			t.one[0] = s.orig
			m.ForceWriteAt(t.one[:], int64(s.addr))
		}
		if len(nb.areas) > 0 && ptsys.Event(ws) == unix.PTRACE_EVENT_STOP {
			// Its first stop is on the way to user mode, where a system
			// call can be injected.
			c := &Process{t: t, pid: child, mem: m, threads: map[int]*thread{}, sysAt: nb.sysAt}
			th := c.addThread(child, held)
			delete(t.threads, child)
			for _, base := range nb.areas {
				t.inject(th, unix.SYS_MUNMAP, base, xolSize)
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
	m, e := ptsys.EventMsg(th.tid)
	if e != 0 || int(m) == th.tid || th.guest {
		return th
	}
	if o := t.threads[int(m)]; o != nil && o.p == p && o != th && !o.guest {
		o.state = held
		return o
	}
	th.nkept, th.hit, th.step = 0, 0, 0
	return th
}

// execed handles an execve: a guest leaves p's memory and is let go; p
// itself gets a new image, without the old probes or XOL area.
func (t *Tracer) execed(th *thread) {
	p := th.p
	if th.guest {
		for tid, o := range p.threads {
			if o.guest && o.tgid == th.tgid {
				delete(p.threads, tid)
				delete(t.threads, tid)
			}
		}
		unix.PtraceDetach(th.tid)
		if p.world.active {
			t.advance(p)
		}
		return
	}
	th.state = serving
	t.newImage(th)
	if p.finished {
		return
	}
	p.emit(Stop{Tid: th.tid, Reason: StopExec})
	if p.cfg.onExec != nil {
		// The exec stop is inside execve, whose return would overwrite rax
		// after a register change (a system call injected to map an XOL
		// area, say): stop again on the way to user mode first.
		if !t.userStop(th) {
			return
		}
		p.cfg.onExec(p)
		if p.finished {
			return
		}
	}
	t.release(th)
}

// newImage resets p after th's execve succeeded: every other thread of p
// has ended, and the probes, XOL areas and world jobs of the old image
// are gone. Guests keep the old memory: it gets its original bytes back
// and they are let go.
func (t *Tracer) newImage(th *thread) {
	p := th.p
	t.releaseGuests(p)
	for tid, o := range p.threads {
		if o != th {
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
	th.tgid = p.pid
	p.image++
	for _, s := range p.sites {
		for _, pr := range s.probes {
			pr.s = nil
		}
	}
	p.sites = map[uint64]*site{}
	p.removed = map[uint64]bool{}
	p.xol, p.sysAt = nil, 0
	// The old image's counters are gone: the last readings stand.
	p.finishPads(false)
	p.finishRing()
	p.exitStops = false
	if p.world.step != nil && p.world.step != th {
		p.world.step = nil
	}
	if m, err := memio.OpenProcess(p.pid); err == nil {
		p.mem.Close()
		p.mem = m
	}
}

// releaseGuests gives the memory p's guests run in its original bytes
// back and lets them go at their next stop: p is leaving that memory (an
// exec, its end, a detach).
func (t *Tracer) releaseGuests(p *Process) {
	done := map[int]bool{}
	for _, g := range p.threads {
		if !g.guest {
			continue
		}
		if !done[g.tgid] {
			done[g.tgid] = true
			if m, err := memio.OpenProcess(g.tgid); err == nil {
				for _, s := range p.sites {
					m.ForceWriteAt(s.origBytes(), int64(s.addr))
				}
				m.Close()
			}
		}
		delete(p.threads, g.tid)
		switch g.state {
		case running, stepping, vforking, listening:
			g.state = leaving
			ptsys.Raw(unix.PTRACE_INTERRUPT, g.tid, 0, 0)
			t.armRecheck()
		default:
			delete(t.threads, g.tid)
			ptsys.Raw(unix.PTRACE_DETACH, g.tid, 0, uintptr(g.sig))
		}
	}
}

// userStop moves th, stopped inside execve, to a stop on its way back to
// user mode. A signal arriving meanwhile is kept. It reports false when
// the thread ended.
func (t *Tracer) userStop(th *thread) bool {
	if ptsys.Raw(unix.PTRACE_INTERRUPT, th.tid, 0, 0) != 0 || ptsys.Cont(th.tid, 0) != 0 {
		return true // gone, or already where it should be; nothing to undo
	}
	for {
		if !t.waitOne(th.tid, &t.ws) {
			return false
		}
		ws := t.ws
		switch {
		case ws.Exited() || ws.Signaled():
			t.gone(th, ws)
			return false
		case !ws.Stopped():
			continue
		case ptsys.Event(ws) == unix.PTRACE_EVENT_STOP:
			th.stopEv = unix.PTRACE_EVENT_STOP
			th.groupStop = th.groupStop || isStopSignal(ws.StopSignal())
			return true
		case ptsys.Event(ws) == 0 && ptsys.GetSiginfo(th.tid, &th.si) == 0:
			th.keep(&th.si)
		}
		if ptsys.Cont(th.tid, 0) != 0 {
			return false
		}
	}
}

// signalled delivers sig, which th stopped with and which is not a hit,
// never with rip inside a boosted slot, so that no handler sees an address
// in the XOL area (kprobes lets them; nothing needs to): a thread past the
// copy is moved to the next original instruction; a fault the copy raised
// is moved back to the original instruction (rip, and si_addr where it
// names the instruction); a thread that has not run the copy yet (the
// signal was pending when it was sent there) steps it first, with the
// signal kept, and gets it at the next original instruction. haveRegs says
// th.pregs already holds th's registers.
func (t *Tracer) signalled(th *thread, sig unix.Signal, haveRegs bool) {
	x := th.p.xol
	if th.p.pads != nil {
		if !haveRegs && ptsys.GetRegs(th.tid, &th.pregs) != 0 {
			t.deliver(th, sig)
			return
		}
		haveRegs = true
		if t.padSignal(th, sig) {
			return
		}
	}
	if !x.boosting() {
		t.deliver(th, sig)
		return
	}
	tid := th.tid
	if !haveRegs && ptsys.GetRegs(tid, &th.pregs) != 0 {
		t.deliver(th, sig)
		return
	}
	s, off, ok := x.siteOfSlot(th.pregs.Rip)
	if !ok {
		t.deliver(th, sig)
		return
	}
	if off != 0 {
		th.pregs.Rip = s.insn.Next()
		ptsys.SetRegs(tid, &th.pregs)
		t.deliver(th, sig)
		return
	}
	if ptsys.GetSiginfo(tid, &th.si) != 0 {
		return // gone
	}
	if sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL || sig == unix.SIGFPE {
		if th.si.Code() > 0 { // raised by the copy itself
			th.pregs.Rip = s.addr
			ptsys.SetRegs(tid, &th.pregs)
			if sig == unix.SIGILL || sig == unix.SIGFPE {
				th.si.SetAddr(s.addr)
				ptsys.SetSiginfo(tid, &th.si)
			}
			t.deliver(th, sig)
			return
		}
	}
	th.keep(&th.si)
	// At the copy's start the thread is in no system call: its mask can
	// be set (see maskSignals), so that other signals wait for the fixup
	// and are delivered with this one, in the kernel's order.
	t.startStep(th, stepThrough, s, s.slot, true)
}

// deliver lets th go with sig, the program's own signal, or with
// ParkOnSignal parks it with the signal to deliver when it goes on.
func (t *Tracer) deliver(th *thread, sig unix.Signal) {
	if th.p.cfg.parkSignals && !th.p.finished {
		th.sig = int(sig)
		t.park(th, nil, Stop{Reason: StopSignal, Signal: sig})
		return
	}
	t.resume(th, int(sig))
}

// follow makes a traced Process of p's fork child, stopped at its first
// stop, with copies of p's probes and XOL area, and hands it over.
func (t *Tracer) follow(p *Process, child int) bool {
	c, err := t.newProcess(child, p.cfg)
	if err != nil {
		return false
	}
	for addr, s := range p.sites {
		if s.rec != nil {
			// The child has no ring (MADV_DONTFORK): its copy of a
			// recording probe goes, its records are none.
			c.mem.ForceWriteAt(s.origBytes(), int64(addr))
			continue
		}
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
		x.free = append([]uint64(nil), px.free...)
		x.retired = append([]uint64(nil), px.retired...)
		for i, s := range px.slots {
			x.slots[i] = s
			if s == nil {
				continue
			}
			if ns := c.sites[s.addr]; ns != nil && ns.slot == s.slot {
				x.slots[i] = ns
			}
		}
		*tail = &x
		tail = &x.also
	}
	c.sysAt = p.sysAt
	th := c.addThread(child, held)
	t.procs[child] = c
	p.cfg.onFork(c)
	if !c.finished {
		t.release(th)
	}
	return true
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

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()
