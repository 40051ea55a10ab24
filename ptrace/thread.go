package ptrace

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/regs"
)

// threadState is where a traced thread stands with the tracer. See the
// package documentation for the transitions.
type threadState uint8

const (
	// running: let go; its next report is dispatched.
	running threadState = iota
	// listening: in group-stop, restarted with PTRACE_LISTEN; SIGCONT lets
	// it run without a word to the tracer.
	listening
	// held: stopped by a world stop, let go when the world resumes.
	held
	// serving: stopped at a hit whose handlers or strategy are running,
	// or that waits for a world stop to step in place.
	serving
	// parked: stopped until the API lets it go (a process started
	// stopped, before Run).
	parked
	// stepping: single-stepped, or run to its system call, for th.step;
	// its next report goes to the step.
	stepping
	// vforking: a vfork parent waiting for its child. It cannot be
	// stopped (the wait is killable only) and cannot run user code.
	vforking
	// leaving: its process was detached while it could not be (a vfork
	// parent): it is let go at its next stop.
	leaving
)

// stepKind is what a step is for.
type stepKind uint8

const (
	stepOutOfLine stepKind = iota + 1 // the copy in a slot, fixed up after
	stepInPlace                       // the original instruction, the world stopped
	stepThrough                       // a boosted copy run before a signal is delivered
	stepPlain                         // an instruction with no probe, for a debugger
)

type thread struct {
	tid   int
	tgid  int // the thread group; differs from p.pid for a guest
	p     *Process
	state threadState
	// guest: a thread of another process sharing p's memory (a vfork
	// child, or a clone without CLONE_THREAD but with CLONE_VM). Its hits
	// are served as p's; its end or exec is not p's.
	guest bool
	// zombie: a leader that exited alone; it reports nothing until its
	// process's other threads have ended, and counts as stopped.
	zombie bool

	// interrupted: a PTRACE_INTERRUPT was sent and no stop seen since.
	interrupted bool
	// groupStop: a group-stop was reported while the tracer had to run
	// the thread on (a step, an injected call), which takes it out of
	// the group-stop; it goes back when let go (see release).
	groupStop bool
	// pending: a report (ws) came while a world stop was being assembled
	// or held, and waits to be dispatched; queued: it is in t.queue.
	pending, queued bool
	ws              unix.WaitStatus
	// stopEv is the ptrace event of the stop the thread is in (0 for a
	// signal-delivery-stop): a thread stopped at a clone, fork or exec
	// event is inside that system call, whose return would overwrite
	// registers an injected call set.
	stopEv int
	// sig is the signal to deliver when the thread is let go (it was at a
	// signal-delivery-stop when a world stop held it).
	sig int
	// passSig is the signal PTRACE_DETACH delivers (see detach).
	passSig int

	// The registers of the thread's current hit or step: each thread has
	// its own, so that a hit served while another waits (for a world stop,
	// for its step) never sees the other's.
	pregs unix.PtraceRegs
	orig  unix.PtraceRegs // as the stop left them
	r     regs.Regs
	si    ptsys.Siginfo
	hit   uint64 // the probe address while its handlers run or it waits to step
	// stopAt is when the hit's stop was seen (see stillStopped).
	stopAt time.Time

	// For a debugger (see debug.go): park asks that the thread be parked
	// at its next chance, for parkReason; parked says Park, a step or an
	// interrupt parked it (not a start); parkSite is the probe it is
	// parked at the hit of, its registers in r.
	park       bool
	parkReason StopReason
	parked     bool
	parkSite   *site
	// dirty: a debugger changed r (SetRegs, an emulated Step) since the
	// thread stopped; it is written when the thread goes on.
	dirty bool

	// The step in progress, while state is stepping.
	step      stepKind
	stepSite  *site
	stepFrom  uint64 // where the stepped instruction is
	saved     uint64 // the scratch register's value, for stepOutOfLine
	mask      uint64 // the signal mask before the step
	masked    bool
	sysStep   bool    // run to its system call's entry rather than stepped
	guard     uint64  // stepInPlace: where an INT3 stands after the instruction
	guardByte [1]byte // what it replaced
	stepFault bool    // the step ended in a fault the instruction raised

	// Signals that arrived while the thread was being stepped and could
	// not be kept pending (see maskSignals), delivered after the fixup.
	kept  [4]ptsys.Siginfo
	nkept int
}

// still says whether th runs no user code until the tracer lets it: what
// a world stop waits for. A listening thread counts only when all is not
// asked: SIGCONT lets it go by itself.
func (th *thread) still(all bool) bool {
	if th.zombie {
		return true
	}
	switch th.state {
	case held, serving, parked, vforking, leaving:
		return true
	case listening:
		return !all
	}
	return false
}

// keep saves a signal that arrived while the thread was being stepped.
func (th *thread) keep(si *ptsys.Siginfo) {
	if th.nkept < len(th.kept) {
		th.kept[th.nkept] = *si
		th.nkept++
	}
}

// resume lets th go with signal sig (0 for none); see release.
func (t *Tracer) resume(th *thread, sig int) {
	th.sig = sig
	t.release(th)
}

// release lets a stopped thread go with what it has to deliver: th.sig,
// or else the signals kept while it was stepped, the first with its own
// siginfo; a further kept signal is queued again with its siginfo where
// the kernel lets a process give one (si_code below zero, other than
// tkill's), else sent with tgkill. While a world stop is being assembled
// or held for its memory, th is held instead, and goes when the world
// resumes.
func (t *Tracer) release(th *thread) {
	if th.park && !th.p.finished {
		t.park(th, nil, Stop{Reason: th.parkReason})
		return
	}
	if th.dirty {
		th.dirty = false
		th.r.StorePtrace(&th.pregs)
		ptsys.SetRegs(th.tid, &th.pregs)
	}
	if th.sig == 0 && th.nkept > 0 {
		th.sig = int(th.kept[0].Signo())
		ptsys.SetSiginfo(th.tid, &th.kept[0])
		copy(th.kept[:], th.kept[1:th.nkept])
		th.nkept--
	}
	if th.p.world.active && !th.p.finished {
		th.state = held
		t.advance(th.p)
		return
	}
	sig := th.sig
	th.state, th.sig = running, 0
	if th.groupStop {
		// An interrupt makes it stop again before any instruction: with
		// the stop signal if its process is still stopped (it listens
		// then), with SIGTRAP if a SIGCONT came meanwhile (it runs on).
		th.groupStop = false
		if ptsys.Raw(unix.PTRACE_INTERRUPT, th.tid, 0, 0) == 0 {
			th.interrupted = true
		}
	}
	ptsys.Cont(th.tid, sig)
	for i := 0; i < th.nkept; i++ {
		requeue(th.tgid, th.tid, &th.kept[i])
	}
	th.nkept = 0
}

// requeue sends si's signal to thread tid again, with si where the kernel
// lets a process give one.
func requeue(tgid, tid int, si *ptsys.Siginfo) {
	if c := si.Code(); c < 0 && c != ptsys.SITkill {
		if ptsys.RtTgsigqueueinfo(tgid, tid, si) == 0 {
			return
		}
	}
	unix.Tgkill(tgid, tid, unix.Signal(si.Signo()))
}

// syncSignals are raised by an instruction itself: blocked while it runs,
// the kernel would reset their handler to the default and unblock them, so
// they are never blocked for a step.
const syncSignals = 1<<(unix.SIGSEGV-1) | 1<<(unix.SIGBUS-1) | 1<<(unix.SIGILL-1) |
	1<<(unix.SIGFPE-1) | 1<<(unix.SIGTRAP-1) | 1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1)

// maskSignals blocks th's asynchronous signals for a step: one sent
// meanwhile stays pending with its siginfo and is delivered by the kernel
// once the mask is back, after the fixup, with no signal-delivery-stop
// inside the step. Only at a hit: PTRACE_SETSIGMASK drops a mask a system
// call (ppoll, sigsuspend) has saved to restore, and a thread at an INT3
// is in none.
func (th *thread) maskSignals() {
	if ptsys.GetSigmask(th.tid, &th.mask) != 0 {
		return
	}
	m := th.mask | ^uint64(syncSignals)
	if ptsys.SetSigmask(th.tid, &m) == 0 {
		th.masked = true
	}
}

// unmaskSignals puts back the mask maskSignals replaced.
func (th *thread) unmaskSignals() {
	if th.masked {
		ptsys.SetSigmask(th.tid, &th.mask)
		th.masked = false
	}
}
