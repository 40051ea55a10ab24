package ptrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// What a debugger needs beyond handlers: a thread parked at a stop while the
// others run on (non-stop), its registers read and changed from any
// goroutine, steps by emulation where the instruction is emulated (no trap
// at all) and by the CPU elsewhere, and a stream of stops to wait on.

// StopReason says why a thread stopped for a debugger.
type StopReason uint8

// Stop reasons.
const (
	// StopBreakpoint: a handler parked the thread at its probe (Park).
	StopBreakpoint StopReason = iota + 1
	// StopStep: a Step, StepCPU, StepOver or StepOut is done.
	StopStep
	// StopInterrupt: Interrupt stopped the thread.
	StopInterrupt
	// StopSignal: a signal arrived for the thread (with ParkOnSignal);
	// Resume delivers it, SetSignal changes or drops it.
	StopSignal
	// StopExited: the process ended (Exit says how); no thread is parked.
	StopExited
	// StopExec: the process called execve; probes are gone, no thread is
	// parked.
	StopExec
)

func (r StopReason) String() string {
	switch r {
	case StopBreakpoint:
		return "breakpoint"
	case StopStep:
		return "step"
	case StopInterrupt:
		return "interrupt"
	case StopSignal:
		return "signal"
	case StopExited:
		return "exited"
	case StopExec:
		return "exec"
	}
	return fmt.Sprintf("StopReason(%d)", uint8(r))
}

// A Stop is a thread's stop, or the process's end, as NextStop reports it.
type Stop struct {
	Tid    int
	Reason StopReason
	Addr   uint64      // the thread's rip when it stopped
	Signal unix.Signal // StopSignal: the signal it stopped with
	Exit   *Exit       // StopExited
}

// stops is a process's queue of stops: unbounded, so that the tracer
// thread never waits for a front end.
type stops struct {
	sync.Mutex
	q     []Stop
	ready chan struct{} // a token when q is not empty
}

func (p *Process) emit(s Stop) {
	p.stopq.Lock()
	p.stopq.q = append(p.stopq.q, s)
	p.stopq.Unlock()
	select {
	case p.stopq.ready <- struct{}{}:
	default:
	}
}

// NextStop waits for the next stop of a thread of p (or its end, or ctx's)
// and returns it. Stops queue up: none is lost when nobody waits. After
// the process ended or was detached and its stops are read, it returns
// os.ErrProcessDone.
func (p *Process) NextStop(ctx context.Context) (Stop, error) {
	for {
		p.stopq.Lock()
		if len(p.stopq.q) > 0 {
			s := p.stopq.q[0]
			p.stopq.q = p.stopq.q[1:]
			more := len(p.stopq.q) > 0
			p.stopq.Unlock()
			if more {
				select {
				case p.stopq.ready <- struct{}{}:
				default:
				}
			}
			return s, nil
		}
		p.stopq.Unlock()
		select {
		case <-p.stopq.ready:
		case <-p.done:
			p.stopq.Lock()
			n := len(p.stopq.q)
			p.stopq.Unlock()
			if n == 0 {
				return Stop{}, os.ErrProcessDone
			}
		case <-ctx.Done():
			return Stop{}, ctx.Err()
		}
	}
}

// ParkOnSignal makes a signal that arrives for a thread (other than the
// tracer's own traps) park it with a StopSignal stop, as a debugger wants;
// Resume delivers the signal, SetSignal changes or drops it first.
func ParkOnSignal() Option { return func(c *config) { c.parkSignals = true } }

// AllStop makes every thread of the process stop when one parks, as
// debuggers without non-stop mode expect; Resume of a parked thread lets it
// go together with all others once no thread is parked (ResumeAll does it
// at once).
func AllStop() Option { return func(c *config) { c.allStop = true } }

// ErrNotParked is returned for a thread that is not parked.
var ErrNotParked = errors.New("ptrace: thread not parked")

// Park, called from a handler of one of p's probes for the thread that hit
// it, keeps that thread stopped at the probe after the handlers return,
// with the registers they leave, while every other thread runs on (with
// AllStop, they stop too). A StopBreakpoint stop is queued. Its registers
// are then read and changed with Regs and SetRegs from any goroutine, and
// it goes on with Resume or a step. A condition evaluated in the handler
// makes a conditional breakpoint that costs one trap when false.
func (p *Process) Park(tid int) error {
	if !p.t.hand.On() {
		return errors.New("ptrace: Park is called from a handler")
	}
	th := p.threads[tid]
	if th == nil || th.state != serving || th.hit == 0 {
		return fmt.Errorf("ptrace: thread %d is not at a hit of process %d", tid, p.pid)
	}
	th.park, th.parkReason = true, StopBreakpoint
	return nil
}

// park keeps th stopped for the API. s is the site whose hit th is at
// (th.r holds its registers), or nil: th.r is loaded from the thread.
func (t *Tracer) park(th *thread, s *site, stop Stop) {
	p := th.p
	th.park, th.state, th.parkSite = false, parked, s
	if s != nil {
		th.hit = s.addr
	} else {
		th.hit = 0
		if ptsys.GetRegs(th.tid, &th.pregs) != 0 {
			return // gone: its end is reported
		}
		th.orig = th.pregs
		th.r.LoadPtrace(&th.pregs)
	}
	th.parked = true
	stop.Tid, stop.Addr = th.tid, th.r.RIP
	if p.cfg.allStop && !p.world.hold {
		// The stop is told once every other thread is still too, as a
		// debugger in all-stop mode expects of it.
		p.world.hold = true
		t.needWorld(p, false, func() { p.emit(stop) })
		return
	}
	p.emit(stop)
}

// parkedThread returns p's parked thread tid, on the tracer thread.
func (p *Process) parkedThread(tid int) (*thread, error) {
	if p.finished {
		return nil, fmt.Errorf("ptrace: process %d: %w", p.pid, os.ErrProcessDone)
	}
	th := p.threads[tid]
	if th == nil || th.state != parked {
		return nil, fmt.Errorf("ptrace: thread %d of process %d: %w", tid, p.pid, ErrNotParked)
	}
	if !th.parked && !th.dirty && th.parkSite == nil {
		// Started stopped (before Run): its registers are the kernel's.
		if e := ptsys.GetRegs(tid, &th.pregs); e != 0 {
			return nil, errno("get registers of", tid, e)
		}
		th.orig = th.pregs
		th.r.LoadPtrace(&th.pregs)
		th.dirty = true
	}
	return th, nil
}

// Threads returns the ids of the process's threads (its guests' too: a
// vfork child before its exec).
func (p *Process) Threads() []int {
	var tids []int
	p.t.do(func() error {
		for tid := range p.threads {
			tids = append(tids, tid)
		}
		return nil
	})
	return tids
}

// Regs returns the registers of thread tid, parked, or stopped with the
// rest of the process (AllStop). At a probe, RIP is the probe's address.
func (p *Process) Regs(tid int) (regs.Regs, error) {
	var r regs.Regs
	err := p.t.do(func() error {
		th := p.threads[tid]
		switch {
		case p.finished:
			return fmt.Errorf("ptrace: process %d: %w", p.pid, os.ErrProcessDone)
		case th == nil:
			return fmt.Errorf("ptrace: no thread %d in process %d", tid, p.pid)
		case th.state == parked:
			th, err := p.parkedThread(tid)
			if err != nil {
				return err
			}
			r = th.r
			return nil
		case th.state == held:
			var pr unix.PtraceRegs
			if e := ptsys.GetRegs(tid, &pr); e != 0 {
				return errno("get registers of", tid, e)
			}
			r.LoadPtrace(&pr)
			return nil
		}
		return fmt.Errorf("ptrace: thread %d of process %d: %w", tid, p.pid, ErrNotParked)
	})
	return r, err
}

// SetRegs changes the registers of thread tid, parked or stopped with the
// rest of the process. They take effect when it goes on.
func (p *Process) SetRegs(tid int, r *regs.Regs) error {
	return p.t.do(func() error {
		th := p.threads[tid]
		if th != nil && th.state == held && !p.finished {
			var pr unix.PtraceRegs
			r.StorePtrace(&pr)
			if e := ptsys.SetRegs(tid, &pr); e != 0 {
				return errno("set registers of", tid, e)
			}
			return nil
		}
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		th.r, th.dirty = *r, true
		return nil
	})
}

// SetSignal sets the signal a parked thread gets when it goes on (0 for
// none): the one it stopped with (StopSignal), or another.
func (p *Process) SetSignal(tid int, sig unix.Signal) error {
	return p.t.do(func() error {
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		th.sig = int(sig)
		return nil
	})
}

// Memory returns the process's memory. Reads show the program's own bytes
// where probes' INT3s are (see ReadAt); writes into probed instructions
// are not supported.
func (p *Process) Memory() memio.Memory { return textView{p} }

// textView reads through the INT3s.
type textView struct{ p *Process }

func (v textView) ReadAt(b []byte, off int64) (int, error) { return v.p.ReadAt(b, uint64(off)) }
func (v textView) WriteAt(b []byte, off int64) (int, error) {
	return v.p.mem.WriteAt(b, off)
}

// ReadAt reads the process's memory at addr, with the original bytes in
// place of the probes' INT3s and jumps, as a debugger shows them.
func (p *Process) ReadAt(b []byte, addr uint64) (int, error) {
	var n int
	err := p.t.do(func() error {
		if p.finished {
			return fmt.Errorf("ptrace: process %d: %w", p.pid, os.ErrProcessDone)
		}
		var err error
		n, err = p.mem.ForceReadAt(b, int64(addr))
		for a, s := range p.sites {
			for i, o := range s.origBytes() {
				if at := a + uint64(i); at >= addr && at < addr+uint64(n) {
					b[at-addr] = o
				}
			}
		}
		return err
	})
	return n, err
}

// Resume lets parked thread tid go on: at a probe, the probed instruction
// runs by the probe's strategy with the registers as they are now.
func (p *Process) Resume(tid int) error {
	return p.t.do(func() error {
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		p.t.unpark(th)
		if p.cfg.allStop && p.world.hold && !p.anyParked() {
			p.world.hold = false
			p.t.advance(p)
		}
		return nil
	})
}

// ResumeAll lets every parked thread go on, and with AllStop the others.
func (p *Process) ResumeAll() error {
	return p.t.do(func() error {
		if p.finished {
			return fmt.Errorf("ptrace: process %d: %w", p.pid, os.ErrProcessDone)
		}
		for _, th := range p.threads {
			if th.state == parked && th.parked {
				p.t.unpark(th)
			}
		}
		if p.world.hold {
			p.world.hold = false
			p.t.advance(p)
		}
		return nil
	})
}

func (p *Process) anyParked() bool {
	for _, th := range p.threads {
		if th.state == parked && th.parked {
			return true
		}
	}
	return false
}

// unpark lets a parked thread go on with th.r.
func (t *Tracer) unpark(th *thread) {
	th.parked = false
	if s := th.parkSite; s != nil {
		th.parkSite = nil
		th.state, th.dirty = serving, false
		t.finishHit(th, s)
		return
	}
	t.release(th) // writes r if a debugger changed it
}

// Interrupt parks thread tid where it is, with a StopInterrupt stop.
func (p *Process) Interrupt(tid int) error {
	return p.t.do(func() error {
		th := p.threads[tid]
		if p.finished || th == nil {
			return fmt.Errorf("ptrace: no thread %d in process %d", tid, p.pid)
		}
		switch th.state {
		case parked:
			return nil
		case held:
			// Stopped already (a world stop): parked where it is.
			if !th.pending {
				p.t.park(th, nil, Stop{Reason: StopInterrupt})
				return nil
			}
		}
		th.park, th.parkReason = true, StopInterrupt
		if th.state == running || th.state == listening {
			ptsys.Raw(unix.PTRACE_INTERRUPT, tid, 0, 0)
		}
		return nil
	})
}

// Step runs one instruction of parked thread tid, which stays parked after
// it (a StopStep stop). An instruction the emulator implements is emulated
// against the thread's registers and memory: the thread does not run at
// all. Any other is stepped by the CPU (out of line where a probe's INT3
// is, in place with the process stopped where it has no XOL slot).
func (p *Process) Step(tid int) error { return p.step(tid, false) }

// StepCPU is Step with the instruction always run by the CPU.
func (p *Process) StepCPU(tid int) error { return p.step(tid, true) }

func (p *Process) step(tid int, cpu bool) error {
	return p.t.do(func() error {
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		in, s, err := p.insnAt(th.r.RIP)
		if err != nil {
			return err
		}
		if ok, _ := emu.Supports(in); ok && !cpu {
			if err := emu.Step(in, &th.r, p.mem); err == nil {
				th.parkSite, th.hit, th.dirty = nil, 0, true
				p.emit(Stop{Tid: tid, Reason: StopStep, Addr: th.r.RIP})
				return nil
			}
			// A fault: let the CPU raise it.
		}
		p.t.stepForDebugger(th, s)
		return nil
	})
}

// insnAt decodes the instruction at addr: a probe's, or read from memory.
func (p *Process) insnAt(addr uint64) (*decode.Insn, *site, error) {
	if s := p.sites[addr]; s != nil {
		return s.insn, s, nil
	}
	buf := make([]byte, decode.MaxLen)
	n, err := p.mem.ForceReadAt(buf, int64(addr))
	if n == 0 {
		return nil, nil, fmt.Errorf("ptrace: reading the instruction at %#x: %w", addr, err)
	}
	in, err := decode.Decode(buf[:n], addr)
	if err != nil {
		return nil, nil, err
	}
	return in, nil, nil
}

// stepForDebugger steps parked th by the CPU and parks it after.
func (t *Tracer) stepForDebugger(th *thread, s *site) {
	th.parked = false
	th.park, th.parkReason = true, StopStep
	th.parkSite = nil
	if s != nil && th.r.RIP == s.addr {
		th.state = serving
		if s.slot != 0 {
			t.stepOutOfLine(th, s)
		} else {
			t.stepInPlace(th, s)
		}
		return
	}
	th.hit, th.dirty = 0, false
	th.r.StorePtrace(&th.pregs)
	if ptsys.SetRegs(th.tid, &th.pregs) != 0 {
		return
	}
	th.step, th.stepSite, th.stepFrom, th.stepFault, th.sysStep = stepPlain, nil, th.r.RIP, false, false
	th.state = stepping
	t.restep(th)
}

// StepOver is Step, but over a call: the thread runs until the call
// returns to the next instruction with its stack where it is now (a
// recursive call hitting the same return address deeper does not count,
// nor does another thread), and is parked there.
func (p *Process) StepOver(tid int) error {
	return p.t.do(func() error {
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		in, _, err := p.insnAt(th.r.RIP)
		if err != nil {
			return err
		}
		if in.Flow != decode.FlowCall && in.Flow != decode.FlowIndirectCall {
			return p.stepLocked(th)
		}
		return p.runUntil(th, in.Next(), th.r.GPR[regs.RSP])
	})
}

// StepOut runs parked thread tid until it returns to ret with its stack
// pointer at sp (the caller's, after the return: the frame's CFA), and
// parks it there. At a function's entry, ret is the word at rsp and sp is
// rsp+8; further in, a frame pointer gives them ([rbp+8], rbp+16).
func (p *Process) StepOut(tid int, ret, sp uint64) error {
	return p.t.do(func() error {
		th, err := p.parkedThread(tid)
		if err != nil {
			return err
		}
		return p.runUntil(th, ret, sp)
	})
}

func (p *Process) stepLocked(th *thread) error {
	in, s, err := p.insnAt(th.r.RIP)
	if err != nil {
		return err
	}
	if ok, _ := emu.Supports(in); ok && emu.Step(in, &th.r, p.mem) == nil {
		th.parkSite, th.hit, th.dirty = nil, 0, true
		p.emit(Stop{Tid: th.tid, Reason: StopStep, Addr: th.r.RIP})
		return nil
	}
	p.t.stepForDebugger(th, s)
	return nil
}

// runUntil lets th go until it reaches addr with rsp equal to sp, through
// a probe of its own that parks it there and goes.
func (p *Process) runUntil(th *thread, addr, sp uint64) error {
	tid := th.tid
	var self *Probe
	h := func(hit int, _ *Probe, r *regs.Regs, _ memio.Memory) {
		if hit != tid || r.GPR[regs.RSP] != sp || self == nil {
			return
		}
		if o := p.threads[tid]; o != nil {
			o.park, o.parkReason = true, StopStep
		}
		p.remove(self)
		self = nil
	}
	pr, err := p.place(addr, Auto, h, nil, true)
	if err != nil {
		return err
	}
	self = pr
	p.t.unpark(th)
	return nil
}
