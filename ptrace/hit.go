package ptrace

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/regs"
)

// trap handles a SIGTRAP stop. Ours are told apart from the tracee's own
// (an int3 of its own, kill(SIGTRAP), ...) by address and by si_code: an
// INT3 leaves rip one past a probe's address and si_code SI_KERNEL.
//
// si_code is only read when the address alone could mislead: when the
// probed instruction is one byte long, one past it is the next
// instruction, where a thread often is (every emulated or boosted hit
// leaves it there) when a SIGTRAP is sent to it. When it is longer, one
// past the probe is inside the instruction, where no thread can be but by
// our INT3 (code that jumps into the middle of an instruction is not
// probed correctly anyway), and the call is saved.
//
// This is the hit path: from the stop to the continue it makes no
// allocation and no hand-off. Its system calls: GETREGS, GETSIGINFO for a
// one-byte instruction, the emulation's memory accesses, one register
// write (POKEUSER of rip alone when nothing else changed, else SETREGS),
// CONT.
func (t *Tracer) trap(th *thread) {
	p, tid := th.p, th.tid
	if getRegs(tid, &t.pregs) != 0 {
		return // the thread is gone; wait4 will say so
	}
	at := t.pregs.Rip - 1
	s := p.sites[at]
	if s == nil && !p.removed[at] {
		t.signalled(th, unix.SIGTRAP, true)
		return
	}
	if s == nil || s.insn.Len == 1 {
		if getSiginfo(tid, &t.si) != 0 || t.si.code() != siKernel {
			t.signalled(th, unix.SIGTRAP, true)
			return
		}
	}
	if s == nil {
		// The probe was removed after this thread hit it: run the
		// original instruction now in place.
		t.pregs.Rip = at
		setRegs(tid, &t.pregs)
		t.resume(th, 0)
		return
	}
	t.orig = t.pregs
	r := &t.r
	r.LoadPtrace(&t.pregs)
	r.RIP = at
	th.hit = at
	panicked := t.handle(th, s)
	th.hit = 0
	if panicked != nil {
		// The handler's panic must not take the tracer thread (and every
		// tracee's INT3s) down: the process is detached, intact, and its
		// Run reports the panic.
		t.r.RIP = at
		t.r.StorePtrace(&t.pregs)
		setRegs(tid, &t.pregs)
		p.failErr = fmt.Errorf("ptrace: handler of the probe at %#x panicked: %v", at, panicked)
		if err := p.detach(); err != nil {
			p.failErr = errors.Join(p.failErr, err)
		}
		return
	}
	if p.finished {
		return
	}
	if p.sites[at] != s || r.RIP != at {
		// A handler removed the probe or moved the thread elsewhere.
		r.StorePtrace(&t.pregs)
		setRegs(tid, &t.pregs)
		t.release(th)
		return
	}
	switch s.strategy {
	case Boost:
		r.RIP = s.slot
		t.setRegs(tid)
		t.resume(th, 0)
	case Emulate:
		if emu.Step(s.insn, r, p.mem) == nil {
			t.setRegs(tid)
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

// setRegs writes t.r to the stopped thread tid, whose registers at the
// stop are in t.orig, with one call: a POKEUSER of rip when nothing else
// changed, else SETREGS.
func (t *Tracer) setRegs(tid int) {
	t.r.StorePtrace(&t.pregs)
	rip := t.pregs.Rip
	t.pregs.Rip = t.orig.Rip
	if t.pregs == t.orig {
		setRIP(tid, rip)
		return
	}
	t.pregs.Rip = rip
	setRegs(tid, &t.pregs)
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
			pr.handler(th.tid, pr, &t.r, th.p.mem)
		}
	}
	return nil
}

// Results of step.
const (
	stepped = iota
	stepGone
	stepFault // t.si holds the fault's siginfo
	stepExec  // the instruction was an execve that succeeded: a new image, nothing to fix
)

// step single-steps th, whose registers are set, until it has executed the
// instruction at from. Signals arriving meanwhile are held; a fault raised
// by the instruction itself ends the step. Events of a stepped syscall
// instruction (clone, fork) are handled on the way. On return (stepped) t.pregs
// holds the registers after the instruction.
func (t *Tracer) step(th *thread, from uint64) int {
	tid := th.tid
	for {
		if singleStep(tid, 0) != 0 {
			return stepGone
		}
		if !t.waitFor(tid, &t.ws) {
			return stepGone
		}
		ws := t.ws
		if ws.Exited() || ws.Signaled() {
			t.gone(th, ws)
			return stepGone
		}
		sig := ws.StopSignal()
		switch ptraceEvent(ws) {
		case 0:
		case unix.PTRACE_EVENT_CLONE:
			if m, e := eventMsg(tid); e == 0 {
				t.cloned(th.p, int(m))
			}
			continue
		case unix.PTRACE_EVENT_FORK, unix.PTRACE_EVENT_VFORK:
			if m, e := eventMsg(tid); e == 0 {
				t.forked(th.p, int(m), ptraceEvent(ws) == unix.PTRACE_EVENT_VFORK)
			}
			continue
		case unix.PTRACE_EVENT_EXEC:
			if m, e := eventMsg(tid); e == 0 && int(m) != tid {
				// Another thread's execve, reported under this (leader's)
				// tid: th was killed, nothing was stepped. The report is
				// the main loop's (see execer).
				t.stash = append(t.stash, report{})
				copy(t.stash[1:], t.stash)
				t.stash[0] = report{tid, ws}
				return stepGone
			}
			t.newImage(th)
			return stepExec
		default:
			continue
		}
		if getSiginfo(tid, &t.si) != 0 {
			return stepGone
		}
		code := t.si.code()
		if sig == unix.SIGTRAP && code > 0 {
			if getRegs(tid, &t.pregs) != 0 {
				return stepGone
			}
			if t.pregs.Rip == from {
				continue // one iteration of a rep-prefixed instruction
			}
			return stepped
		}
		if code > 0 && (sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL || sig == unix.SIGFPE) {
			if getRegs(tid, &t.pregs) != 0 {
				return stepGone
			}
			if t.pregs.Rip == from {
				return stepFault
			}
		}
		th.hold(&t.si)
	}
}

// stepInPlace runs the original instruction where it belongs: the other
// threads are stopped, the original byte restored, the thread stepped, the
// INT3 put back.
func (t *Tracer) stepInPlace(th *thread, s *site) {
	p := th.p
	stopped := t.stopWorld(p, th, false)
	if t.stashed(th.tid) {
		// th ended while the world was being stopped: killed (by an
		// execve of another thread, say), or, the leader, replaced
		// under its tid by the thread whose execve killed it. A stopped
		// thread reports nothing else. Nothing is stepped (registers
		// written now would be another thread's, in a new image); the
		// report is the main loop's.
		t.resumeWorld(stopped)
		return
	}
	t.one[0] = s.orig
	p.mem.ForceWriteAt(t.one[:], int64(s.addr))
	t.r.StorePtrace(&t.pregs)
	res := stepGone
	if setRegs(th.tid, &t.pregs) == 0 {
		res = t.step(th, s.addr)
	}
	if !p.finished && p.sites[s.addr] == s {
		t.one[0] = 0xcc
		p.mem.ForceWriteAt(t.one[:], int64(s.addr))
	}
	if res == stepFault {
		// The fault is already at the original address: deliver it.
		th.hold(&t.si)
	}
	t.resumeWorld(stopped)
	if res != stepGone && !p.finished {
		t.release(th)
	}
}

// stepOutOfLine runs the copy of the instruction in its XOL slot and fixes
// the registers up as if it had run in place.
func (t *Tracer) stepOutOfLine(th *thread, s *site) {
	p, tid, in := th.p, th.tid, s.insn
	r := &t.r
	var saved uint64
	if s.scratch >= 0 {
		saved = r.GPR[s.scratch]
		r.GPR[s.scratch] = in.Next()
	}
	r.RIP = s.slot
	r.StorePtrace(&t.pregs)
	if setRegs(tid, &t.pregs) != 0 {
		return
	}
	res := t.step(th, s.slot)
	if res == stepGone {
		return
	}
	if res == stepExec {
		t.release(th)
		return
	}
	r.LoadPtrace(&t.pregs)
	if s.scratch >= 0 {
		r.GPR[s.scratch] = saved
	}
	if res == stepFault {
		// Report the fault where the program put the instruction, in
		// si_addr too where it names the instruction.
		r.RIP = s.addr
		if sig := unix.Signal(t.si.signo()); sig == unix.SIGILL || sig == unix.SIGFPE {
			t.si.setAddr(s.addr)
		}
		th.hold(&t.si)
	} else {
		fixup(r, s, in)
		if in.Flow == decode.FlowCall || in.Flow == decode.FlowIndirectCall {
			p.mem.WriteUint(r.GPR[regs.RSP], 8, in.Next())
		}
	}
	r.StorePtrace(&t.pregs)
	setRegs(tid, &t.pregs)
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
