package ptrace

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
)

// Mapping is one line of /proc/PID/maps.
type Mapping = memio.Mapping

// Maps returns the memory mappings of process pid.
func Maps(pid int) ([]Mapping, error) { return memio.ReadMaps(pid) }

// A RefusedError says why Insert will not probe an address of a live
// process: the address (not mapped, not executable, an INT3 of the
// program's own, overlapping another probe) or its instruction (not
// decoded, refused by the decoder, or not runnable as the strategy asked
// for). Use errors.As to tell it from a process that is gone.
type RefusedError struct {
	Addr   uint64
	Insn   *decode.Insn // nil when the refusal is about the address
	Reason string
	Err    error // the decoder's error, if that is the reason
}

func (e *RefusedError) Error() string {
	if e.Insn != nil {
		return fmt.Sprintf("ptrace: cannot probe %#x (%v): %s", e.Addr, e.Insn, e.Reason)
	}
	return fmt.Sprintf("ptrace: cannot probe %#x: %s", e.Addr, e.Reason)
}

func (e *RefusedError) Unwrap() error { return e.Err }

func refuse(addr uint64, in *decode.Insn, format string, args ...any) error {
	return &RefusedError{Addr: addr, Insn: in, Reason: fmt.Sprintf(format, args...)}
}

// errNeedWorld says that a probe needs an XOL area mapped and no thread of
// the process is stopped to map it from.
var errNeedWorld = errors.New("ptrace: no stopped thread")

// insert places a probe and calls done with it: at once, or, when it needs
// an XOL area mapped and no thread is stopped to inject the mmap into,
// once a world stop has stopped one. On the tracer thread (a handler,
// OnExec, FollowForks) a thread is always stopped: the handler's own.
func (p *Process) insert(addr uint64, strategy Strategy, h Handler, onTracer bool, done func(*Probe, error)) {
	p.insertTry(addr, strategy, h, nil, onTracer, done, 0)
}

// insertRec is insert for a probe that may record (rec, with h its
// handler where its hits trap).
func (p *Process) insertRec(addr uint64, strategy Strategy, h Handler, rec *recorder, onTracer bool, done func(*Probe, error)) {
	p.insertTry(addr, strategy, h, rec, onTracer, done, 0)
}

// insertTries bounds the world stops an insert waits through while every
// thread is inside a clone, fork or exec (none can run an injected call).
const insertTries = 50

func (p *Process) insertTry(addr uint64, strategy Strategy, h Handler, rec *recorder, onTracer bool, done func(*Probe, error), try int) {
	pr, err := p.place(addr, strategy, h, rec, onTracer)
	if err != errNeedWorld {
		done(pr, err)
		return
	}
	image := p.image
	p.t.needWorld(p, false, func() {
		if p.finished || p.image != image {
			done(nil, fmt.Errorf("ptrace: process %d exited or called execve before the probe at %#x was placed", p.pid, addr))
			return
		}
		pr, err := p.place(addr, strategy, h, rec, try+1 >= insertTries)
		if err != errNeedWorld {
			done(pr, err)
			return
		}
		// Every thread is inside a system call's event stop (a clone
		// being made, say): try again once the loop has dispatched those
		// reports, which this world stop keeps.
		p.t.later = append(p.t.later, func() { p.insertTry(addr, strategy, h, rec, false, done, try+1) })
	})
}

// place is insert's work. final says not to ask for a world stop.
func (p *Process) place(addr uint64, strategy Strategy, h Handler, rec *recorder, final bool) (*Probe, error) {
	if p.finished {
		return nil, fmt.Errorf("ptrace: process %d is no longer traced", p.pid)
	}
	if strategy > Jump {
		return nil, refuse(addr, nil, "unknown strategy %v", strategy)
	}
	if s := p.sites[addr]; s != nil {
		if rec != nil || s.rec != nil {
			return nil, refuse(addr, s.insn, "a recording probe has its address to itself, and there is a probe there")
		}
		if strategy != Auto && strategy != s.strategy {
			return nil, refuse(addr, s.insn, "the probe there runs as %v; a second one cannot run as %v", s.strategy, strategy)
		}
		if s.pad != nil && h != nil {
			return nil, refuse(addr, s.insn, "the probe there runs as jump, which runs no handler")
		}
		pr := &Probe{Addr: addr, Insn: s.insn, Strategy: s.strategy, handler: h, s: s}
		if h == nil && strategy == Auto {
			pr.NoJump = s.noJump
		}
		if s.pad != nil {
			pr.jump, pr.jumpBase = s.pad.count, s.pad.count.load()
		}
		// A new slice: a hit being served may be ranging over the old one.
		s.probes = append(s.probes[:len(s.probes):len(s.probes)], pr)
		return pr, nil
	}
	ms, err := Maps(p.pid)
	if err != nil {
		return nil, err
	}
	var m *Mapping
	for i := range ms {
		if addr >= ms[i].Start && addr < ms[i].End {
			m = &ms[i]
		}
	}
	if m == nil {
		return nil, refuse(addr, nil, "not mapped in process %d", p.pid)
	}
	if !strings.Contains(m.Perms, "x") {
		return nil, refuse(addr, nil, "in a %s mapping of process %d (%s), not executable", m.Perms, p.pid, m.Path)
	}
	if p.xol.contains(addr) {
		return nil, refuse(addr, nil, "in the XOL area")
	}
	n := uint64(decode.MaxLen)
	if m.End-addr < n {
		n = m.End - addr
	}
	buf := make([]byte, n)
	if _, err := p.mem.ForceReadAt(buf, int64(addr)); err != nil {
		return nil, fmt.Errorf("ptrace: reading the instruction at %#x: %w", addr, err)
	}
	if buf[0] == 0xcc {
		return nil, refuse(addr, nil, "it already holds an INT3 that is not a probe's")
	}
	in, err := decode.Decode(buf, addr)
	if err != nil {
		return nil, &RefusedError{Addr: addr, Reason: err.Error(), Err: err}
	}
	if emulated, _ := emu.Supports(in); in.Verdict == decode.Refused || in.Verdict == decode.EmulateOnly && !emulated {
		return nil, refuse(addr, in, "%s", in.Reason)
	}
	for _, o := range p.sites {
		if (addr > o.addr && addr < o.addr+o.span()) || (o.addr > addr && o.addr < in.Next()) {
			if o.span() > uint64(o.insn.Len) {
				return nil, refuse(addr, in, "it lies in the %d bytes the jump of the probe at %#x replaces", o.span(), o.addr)
			}
			return nil, refuse(addr, in, "the instruction overlaps the probe at %#x", o.addr)
		}
	}
	if rec != nil && !rec.registered {
		p.register(rec) // its id goes into its pad
	}
	s := &site{addr: addr, orig: buf[0], insn: in, scratch: -1, rec: rec}
	jump, err := p.wantsJump(s, m, strategy, h)
	if err != nil {
		return nil, err
	}
	if jump {
		if err := p.placeJump(s, m.Path, buf, final); err != nil {
			if err == errNeedWorld || strategy == Jump {
				return nil, err
			}
			jump = false // Auto: a trap strategy after all
			s.noJump, s.region = jumpReason(err), nil
		}
	}
	if !jump {
		if err := p.choose(s, strategy, final); err != nil {
			return nil, err
		}
	}
	strategy = s.strategy
	if _, err := p.mem.ForceWriteAt([]byte{0xcc}, int64(addr)); err != nil {
		return nil, fmt.Errorf("ptrace: writing the INT3 at %#x: %w", addr, err)
	}
	pr := &Probe{Addr: addr, Insn: in, Strategy: strategy, handler: h, s: s, NoJump: s.noJump}
	s.probes = []*Probe{pr}
	if rec != nil {
		rec.pr, pr.rec = pr, rec
	}
	p.sites[addr] = s
	delete(p.removed, addr)
	if s.pad != nil {
		pr.jump = s.pad.count
		p.t.queuePatch(p, s)
	}
	return pr, nil
}

func (p *Process) remove(pr *Probe) error {
	if pr == nil {
		return errors.New("ptrace: Remove of a nil probe")
	}
	s := pr.s
	if p.finished || s == nil || p.sites[s.addr] != s {
		return fmt.Errorf("ptrace: the probe at %#x is not in place", pr.Addr)
	}
	kept := make([]*Probe, 0, len(s.probes))
	for _, o := range s.probes {
		if o != pr {
			kept = append(kept, o)
		}
	}
	s.probes = kept
	pr.s = nil
	if len(kept) > 0 {
		return nil
	}
	delete(p.sites, s.addr)
	p.removed[s.addr] = true
	if s.pad != nil {
		return errJumpRemove
	}
	if s.slot != 0 {
		p.retire(s)
	}
	if _, err := p.mem.ForceWriteAt([]byte{s.orig}, int64(s.addr)); err != nil {
		return fmt.Errorf("ptrace: restoring the byte at %#x: %w", s.addr, err)
	}
	return nil
}

// choose settles s's strategy from the one asked for, and prepares its slot
// when it needs one. See Auto for the cost model.
// AutoStrategy returns the strategy Auto picks for in (see Auto), with an
// XOL area allowed or not (NoXOL). Insert may still settle on another once
// the slot is placed: a boosted copy whose rip-relative target is out of
// the slot's reach is emulated or stepped instead. A refused instruction
// gets SingleStep, which Insert refuses with the decoder's reason.
func AutoStrategy(in *decode.Insn, xol bool) Strategy {
	emulated, _ := emu.Supports(in)
	boost, _ := canBoost(in)
	switch {
	case emulated && (!touchesMemory(in) || !boost || !xol):
		return Emulate
	case !xol || in.Verdict != decode.CanRun:
		return SingleStep
	case boost:
		return Boost
	}
	return OutOfLine
}

func (p *Process) choose(s *site, strategy Strategy, final bool) error {
	in, addr := s.insn, s.addr
	emulated, whyNot := emu.Supports(in)
	auto := strategy == Auto
	switch strategy {
	case Auto:
		strategy = AutoStrategy(in, !p.cfg.noXOL)
	case Emulate:
		if !emulated {
			return refuse(addr, in, "cannot be emulated: %s", whyNot)
		}
	case Boost:
		if ok, why := canBoost(in); !ok {
			return refuse(addr, in, "cannot be boosted: %s", why)
		}
	}
	if p.cfg.noXOL && (strategy == OutOfLine || strategy == Boost) {
		return refuse(addr, in, "%v needs an XOL area, and the process is traced with NoXOL", strategy)
	}
	s.strategy = strategy
	if strategy != OutOfLine && strategy != Boost {
		return nil
	}
	boosting := strategy == Boost
	var th *thread
	if p.needsArea(in, addr, boosting) {
		if th = injector(p); th == nil && !final {
			return errNeedWorld
		}
		if p.hasRetired() {
			// Retired slots are freed by a world stop (see reclaimSlots):
			// have one soon, so that churn reuses them, not new areas.
			defer p.t.needWorld(p, false, func() {})
		}
	}
	x, err := p.t.ensureXOL(p, th, addr, in, boosting)
	if err != nil {
		return err
	}
	if err := p.t.prepareSlot(p, x, s, strategy == Boost); err != nil {
		return err
	}
	if auto && strategy == Boost && !s.boosted && emulated {
		// Emulation, with the slot for its fallback, beats stepping.
		s.strategy = Emulate
	} else if strategy == Boost && !s.boosted {
		// Its rip-relative target is out of reach of the slot: the copy
		// has a scratch register to load and restore, so it is stepped.
		s.strategy = OutOfLine
	}
	return nil
}

// touchesMemory says whether emulating in reads or writes the tracee's
// memory, each access a system call on a hit.
func touchesMemory(in *decode.Insn) bool {
	switch in.Op {
	case x86asm.LEA, x86asm.NOP, x86asm.PREFETCHNTA, x86asm.PREFETCHT0, x86asm.PREFETCHT1, x86asm.PREFETCHT2, x86asm.PREFETCHW:
		return false
	case x86asm.PUSH, x86asm.POP, x86asm.PUSHF, x86asm.PUSHFQ, x86asm.POPF, x86asm.POPFQ, x86asm.LEAVE, x86asm.ENTER,
		x86asm.CALL, x86asm.RET:
		return true
	}
	for _, a := range in.Args {
		if a.Kind == decode.ArgNone {
			break
		}
		if a.Kind == decode.ArgMem {
			return true
		}
	}
	// String instructions address memory through rsi and rdi implicitly.
	switch in.Op {
	case x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ, x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ,
		x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ, x86asm.CMPSB, x86asm.CMPSW, x86asm.CMPSD, x86asm.CMPSQ,
		x86asm.SCASB, x86asm.SCASW, x86asm.SCASD, x86asm.SCASQ, x86asm.XLATB:
		return true
	}
	return false
}
