package ptrace

import (
	"fmt"
	"time"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/regs"
)

// trap handles a SIGTRAP stop. Ours are told apart from the tracee's own
// (an int3 of its own, kill(SIGTRAP), ...) by address and by si_code: an
// INT3 leaves rip one past a probe's address and si_code SI_KERNEL. Both
// are checked on every hit: a SIGTRAP another process sends to a thread
// that happens to sit one past a probe (the next instruction, or inside a
// longer one that code jumps into) is the program's.
//
// This is the hit path: from the stop to the continue it makes no
// allocation and no hand-off, and it uses only th's own registers. Its
// system calls: GETREGS, GETSIGINFO, the emulation's memory accesses, one
// register write (POKEUSER of rip alone when nothing else changed, else
// SETREGS), CONT.
func (t *Tracer) trap(th *thread) {
	p, tid := th.p, th.tid
	if ptsys.GetRegs(tid, &th.pregs) != 0 {
		return // the thread is gone; wait4 will say so
	}
	at := th.pregs.Rip - 1
	s := p.sites[at]
	if s == nil && !p.removed[at] {
		t.signalled(th, unix.SIGTRAP, true)
		return
	}
	if ptsys.GetSiginfo(tid, &th.si) != 0 {
		return
	}
	if th.si.Code() != ptsys.SIKernel {
		t.signalled(th, unix.SIGTRAP, true)
		return
	}
	if s == nil {
		// The probe was removed after this thread hit it: run the
		// original instruction now in place.
		th.pregs.Rip = at
		ptsys.SetRegs(tid, &th.pregs)
		t.resume(th, 0)
		return
	}
	th.orig = th.pregs
	th.stopAt = time.Now()
	r := &th.r
	r.LoadPtrace(&th.pregs)
	r.RIP = at
	th.hit, th.state = at, serving
	panicked := t.handle(th, s)
	if panicked != nil {
		// The handler's panic must not take the tracer thread (and every
		// tracee's INT3s) down: the process is detached, intact, the
		// thread back at the probed instruction, and its Run reports the
		// panic.
		p.failErr = fmt.Errorf("ptrace: handler of the probe at %#x panicked: %v", at, panicked)
		t.detach(p, func(err error) {
			if err != nil {
				p.failErr = fmt.Errorf("%w; %w", p.failErr, err)
			}
		})
		return
	}
	if p.finished || th.state != serving {
		return // detached from the handler
	}
	if !t.stillStopped(th) {
		return // replaced by another thread's execve: its report comes
	}
	if th.park {
		t.park(th, s, Stop{Reason: th.parkReason})
		return
	}
	t.finishHit(th, s)
}

// finishHit runs the strategy of s for th, stopped at its hit, with the
// registers in th.r (what the handlers, or a debugger, left there).
func (t *Tracer) finishHit(th *thread, s *site) {
	p, tid, r, at := th.p, th.tid, &th.r, s.addr
	th.hit = 0
	if p.sites[at] != s || r.RIP != at {
		// A handler removed the probe or moved the thread elsewhere.
		r.StorePtrace(&th.pregs)
		ptsys.SetRegs(tid, &th.pregs)
		t.release(th)
		return
	}
	switch s.strategy {
	case Boost, Jump:
		r.RIP = s.slot
		t.setRegs(th)
		t.resume(th, 0)
	case Emulate:
		if emu.Step(s.insn, r, p.mem) == nil {
			t.setRegs(th)
			t.resume(th, 0)
			return
		}
		// Not emulated after all, or it faults: let the CPU run it, so a
		// fault raises the genuine signal at the genuine address.
		if s.slot != 0 {
			t.stepOutOfLine(th, s)
		} else {
			t.stepInPlace(th, s)
		}
	case OutOfLine:
		t.stepOutOfLine(th, s)
	default:
		t.stepInPlace(th, s)
	}
}

// execTail bounds from below how long an execve takes from killing the
// other threads to its stop (the new image is mapped meanwhile).
const execTail = 10 * time.Microsecond

// stillStopped says whether th, a thread stopped at a hit, is still the
// thread that stopped there. Another thread's execve kills a leader even
// while it is stopped, and the thread that made it takes the leader's tid
// and stops at its exec event: registers written to that tid would land
// in the new image. The kernel refuses requests on that tid until the
// exec report has been waited for, but a wait made during the hit (an
// injected call's) may have taken it. That takes the rest of an execve,
// so only a hit that lasted longer (a slow handler, the tracer
// descheduled) is checked, by its siginfo: still the INT3's, or the stop
// is no longer ours.
func (t *Tracer) stillStopped(th *thread) bool {
	if th.tid != th.tgid || len(th.p.threads) < 2 || time.Since(th.stopAt) < execTail {
		return true
	}
	var si ptsys.Siginfo
	return ptsys.GetSiginfo(th.tid, &si) == 0 && si.Code() == ptsys.SIKernel && si.Signo() == int32(unix.SIGTRAP)
}

// setRegs writes th.r to the stopped thread, whose registers at the stop
// are in th.orig, with one call: a POKEUSER of rip when nothing else
// changed, else SETREGS.
func (t *Tracer) setRegs(th *thread) {
	th.r.StorePtrace(&th.pregs)
	rip := th.pregs.Rip
	th.pregs.Rip = th.orig.Rip
	if th.pregs == th.orig {
		ptsys.SetRIP(th.tid, rip)
		return
	}
	th.pregs.Rip = rip
	ptsys.SetRegs(th.tid, &th.pregs)
}

// handle runs the handlers of s's probes and returns what one of them
// panicked with, if one did.
func (t *Tracer) handle(th *thread, s *site) (panicked any) {
	defer func() {
		if v := recover(); v != nil {
			panicked = v
		}
	}()
	for _, pr := range s.probes {
		pr.hits.Add(1)
		if pr.handler != nil {
			pr.handler(th.tid, pr, &th.r, th.p.mem)
		}
	}
	return nil
}

// stepInPlace runs the original instruction where it belongs, once every
// other thread sharing the memory is still: the original byte restored,
// the thread stepped, the INT3 put back (see endInPlace). Until then th
// waits, serving, with its registers in th.r.
func (t *Tracer) stepInPlace(th *thread, s *site) {
	th.hit = s.addr
	t.queueJob(th.p, worldJob{th: th, s: s, image: th.p.image})
}

// beginInPlace is the world job of stepInPlace.
func (t *Tracer) beginInPlace(th *thread, s *site, image int) {
	p := th.p
	if p.finished || p.image != image || p.threads[th.tid] != th || th.state != serving {
		return // ended, or detached with the world
	}
	th.hit = 0
	th.r.StorePtrace(&th.pregs)
	if p.sites[s.addr] != s {
		// Removed meanwhile: the original byte is back already.
		th.pregs.Rip = s.addr
		ptsys.SetRegs(th.tid, &th.pregs)
		th.state = held
		return
	}
	t.one[0] = s.orig
	p.mem.ForceWriteAt(t.one[:], int64(s.addr))
	if s.insn.Flow == decode.FlowNone && s.insn.Op != x86asm.SYSCALL {
		// An INT3 after the instruction while nothing else runs: a step
		// whose trap the CPU (or a hypervisor) loses still stops there
		// (see stepReport), instead of running on with the INT3 lifted.
		next := s.insn.Next()
		if _, err := p.mem.ForceReadAt(th.guardByte[:], int64(next)); err == nil {
			t.one[0] = 0xcc
			if _, err := p.mem.ForceWriteAt(t.one[:], int64(next)); err == nil {
				th.guard = next
			}
		}
	}
	if ptsys.SetRegs(th.tid, &th.pregs) != 0 {
		t.one[0] = 0xcc
		p.mem.ForceWriteAt(t.one[:], int64(s.addr))
		th.state = held
		return
	}
	p.world.step = th
	t.startStep(th, stepInPlace, s, s.addr, true)
}

// endInPlace puts the INT3 back after a step in place, and lets the
// world's next job run.
func (t *Tracer) endInPlace(th *thread, s *site) {
	p := th.p
	if th.guard != 0 {
		if !p.finished {
			p.mem.ForceWriteAt(th.guardByte[:], int64(th.guard))
		}
		th.guard = 0
	}
	if !p.finished && p.sites[s.addr] == s {
		t.one[0] = 0xcc
		p.mem.ForceWriteAt(t.one[:], int64(s.addr))
	}
	if p.world.step == th {
		p.world.step = nil
	}
}

// stepOutOfLine runs the copy of the instruction in its XOL slot; the
// registers are fixed up when the step is done (see stepDone).
func (t *Tracer) stepOutOfLine(th *thread, s *site) {
	in := s.insn
	r := &th.r
	if s.scratch >= 0 {
		th.saved = r.GPR[s.scratch]
		r.GPR[s.scratch] = in.Next()
	}
	r.RIP = s.slot
	r.StorePtrace(&th.pregs)
	if ptsys.SetRegs(th.tid, &th.pregs) != 0 {
		return
	}
	t.startStep(th, stepOutOfLine, s, s.slot, true)
}

// startStep lets th, whose registers are set, run the instruction at from
// and stop: a single step, or for a system call a run to its entry (a
// blocking call must not hold the thread in a step: past its entry, the
// instruction is done as far as the tracer cares). With mask, the thread's
// asynchronous signals are blocked for the step (see maskSignals): only
// where it is in no system call. The step's report goes to stepReport.
func (t *Tracer) startStep(th *thread, kind stepKind, s *site, from uint64, mask bool) {
	th.step, th.stepSite, th.stepFrom, th.stepFault = kind, s, from, false
	th.sysStep = s != nil && s.insn.Op == x86asm.SYSCALL && kind != stepThrough
	th.state = stepping
	if mask {
		th.maskSignals()
	}
	t.restep(th)
}

// restep issues th's step (again).
func (t *Tracer) restep(th *thread) {
	if th.sysStep {
		ptsys.SyscallStep(th.tid)
	} else {
		ptsys.SingleStep(th.tid, 0)
	}
}

// stepReport handles a report of a stepping thread: the end of its step,
// or something on the way (a signal, kept; an interrupt).
func (t *Tracer) stepReport(th *thread, ws unix.WaitStatus) {
	tid := th.tid
	sig := ws.StopSignal()
	switch ptsys.Event(ws) {
	case 0:
	case unix.PTRACE_EVENT_EXEC:
		// Another thread's execve, reported under this leader's tid: th
		// was killed and nothing was stepped.
		if th.step == stepInPlace {
			t.endInPlace(th, th.stepSite)
		}
		th.stepSite = nil
		th.state = serving
		t.execed(t.execer(th))
		return
	case unix.PTRACE_EVENT_STOP:
		th.groupStop = th.groupStop || isStopSignal(sig)
		t.restep(th)
		return
	default:
		t.restep(th)
		return
	}
	if sig == ptsys.SigSyscall {
		if ptsys.GetRegs(tid, &th.pregs) == 0 {
			t.stepDone(th)
		}
		return
	}
	if ptsys.GetSiginfo(tid, &th.si) != 0 {
		return // gone: its end is reported
	}
	code := th.si.Code()
	if sig == unix.SIGTRAP && code > 0 {
		if ptsys.GetRegs(tid, &th.pregs) != 0 {
			return
		}
		if code == ptsys.SIKernel && th.stepSite != nil && th.pregs.Rip == th.stepFrom+uint64(th.stepSite.insn.Len)+1 &&
			(th.step != stepInPlace || th.guard != 0) {
			// The INT3 after the copy in its slot: the step's own trap
			// was lost, and this stands for it.
			th.pregs.Rip--
			ptsys.SetRIP(tid, th.pregs.Rip)
		}
		if th.pregs.Rip == th.stepFrom {
			t.restep(th) // one iteration of a rep-prefixed instruction
			return
		}
		t.stepDone(th)
		return
	}
	if code > 0 && (sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL || sig == unix.SIGFPE) {
		if ptsys.GetRegs(tid, &th.pregs) != 0 {
			return
		}
		if th.pregs.Rip == th.stepFrom {
			th.stepFault = true
			t.stepDone(th)
			return
		}
	}
	th.keep(&th.si)
	t.restep(th)
}

// stepDone finishes th's step, th.pregs holding its registers after it.
func (t *Tracer) stepDone(th *thread) {
	th.unmaskSignals()
	s := th.stepSite
	th.stepSite = nil
	th.state = serving
	switch th.step {
	case stepInPlace:
		t.endInPlace(th, s)
		if th.stepFault {
			// The fault is at the original address already: deliver it.
			th.keep(&th.si)
		}
		t.release(th)
		if th.p.world.active {
			t.advance(th.p)
		}
	case stepThrough:
		if s.pad != nil {
			if t.padStepped(th, s) {
				t.release(th)
			}
			return
		}
		if th.stepFault {
			th.pregs.Rip = s.addr
			th.keep(&th.si)
		} else {
			th.pregs.Rip = s.insn.Next()
		}
		ptsys.SetRegs(th.tid, &th.pregs)
		t.release(th)
	case stepOutOfLine:
		t.fixOutOfLine(th, s)
	case stepPlain:
		if th.stepFault {
			th.keep(&th.si)
		}
		t.release(th)
	}
}

// fixOutOfLine moves th's registers after a step of s's copy back to the
// original address space.
func (t *Tracer) fixOutOfLine(th *thread, s *site) {
	in, r := s.insn, &th.r
	r.LoadPtrace(&th.pregs)
	if s.scratch >= 0 {
		r.GPR[s.scratch] = th.saved
	}
	if th.stepFault {
		// Report the fault where the program put the instruction, in
		// si_addr too where it names the instruction.
		r.RIP = s.addr
		if sig := unix.Signal(th.si.Signo()); sig == unix.SIGILL || sig == unix.SIGFPE {
			th.si.SetAddr(s.addr)
		}
		th.keep(&th.si)
	} else {
		fixup(r, s, in)
		if in.Flow == decode.FlowCall || in.Flow == decode.FlowIndirectCall {
			th.p.mem.WriteUint(r.GPR[regs.RSP], 8, in.Next())
		}
	}
	r.StorePtrace(&th.pregs)
	ptsys.SetRegs(th.tid, &th.pregs)
	t.release(th)
}

// fixup moves the registers after a step in slot back to the original
// address space.
func fixup(r *regs.Regs, s *site, in *decode.Insn) {
	switch in.Flow {
	case decode.FlowIndirectJump, decode.FlowIndirectCall, decode.FlowRet:
		// rip is an absolute target, already right.
	default:
		// Falling through or a relative branch: the same distance from the
		// original as from the slot.
		r.RIP = r.RIP - s.slot + s.addr
	}
	if in.Op == x86asm.SYSCALL {
		r.GPR[regs.RCX] = in.Next()
	}
}
