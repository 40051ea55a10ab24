package ptrace

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
)

// The XOL area: a private anonymous mapping, readable and executable but not
// writable by the tracee, mapped on demand by an mmap injected into the
// tracee and filled by the tracer through /proc/PID/mem. One slot per probe
// site; slots are not reused, and nothing is ever read back from the area.
const (
	xolSize  = 64 << 10
	slotSize = 32
)

type xolArea struct {
	base uint64
	next uint64 // offset of the next free slot
}

// inject makes th, which is stopped with the rest of p, execute one system
// call: a syscall instruction is written over the two bytes at at (which is
// executable; nothing else runs while the world is stopped), stepped, and
// the bytes and registers are put back. It returns the raw result.
func (t *Tracer) inject(th *thread, at uint64, nr uint64, args ...uint64) (uint64, error) {
	p, tid := th.p, th.tid
	var saved, rr unix.PtraceRegs
	if e := getRegs(tid, &saved); e != 0 {
		return 0, errno("get registers of", tid, e)
	}
	var orig [2]byte
	if _, err := p.mem.ForceReadAt(orig[:], int64(at)); err != nil {
		return 0, fmt.Errorf("ptrace: injecting a system call at %#x: %w", at, err)
	}
	if _, err := p.mem.ForceWriteAt([]byte{0x0f, 0x05}, int64(at)); err != nil {
		return 0, fmt.Errorf("ptrace: injecting a system call at %#x: %w", at, err)
	}
	defer p.mem.ForceWriteAt(orig[:], int64(at))
	rr = saved
	rr.Rip = at
	// orig_rax -1 keeps the kernel from restarting a system call the thread
	// was interrupted in while it runs ours; restoring saved restores that.
	rr.Orig_rax = ^uint64(0)
	rr.Rax = nr
	a := [6]uint64{}
	copy(a[:], args)
	rr.Rdi, rr.Rsi, rr.Rdx, rr.R10, rr.R8, rr.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if e := setRegs(tid, &rr); e != 0 {
		return 0, errno("set registers of", tid, e)
	}
	res := t.step(th, at)
	if res != stepped {
		if res == stepGone {
			return 0, fmt.Errorf("ptrace: thread %d ended during an injected system call", tid)
		}
		setRegs(tid, &saved)
		return 0, fmt.Errorf("ptrace: injected system call %d faulted in thread %d", nr, tid)
	}
	ret := t.pregs.Rax
	if e := setRegs(tid, &saved); e != 0 {
		return 0, errno("restore registers of", tid, e)
	}
	return ret, nil
}

// injector picks a thread of p, stopped by stopWorld (or started stopped),
// that can run an injected call.
func injector(p *Process) *thread {
	for _, th := range p.threads {
		if th.state == held && !th.deferred && !th.vfork {
			return th
		}
	}
	return nil
}

// ensureXOL maps p's XOL area if it has none, running the mmap at at.
func (t *Tracer) ensureXOL(p *Process, at uint64) error {
	if p.xol != nil {
		return nil
	}
	stopped := t.stopWorld(p, nil, false)
	defer t.resumeWorld(stopped)
	th := injector(p)
	if th == nil {
		return fmt.Errorf("ptrace: no thread of process %d is free to map the XOL area", p.pid)
	}
	ret, err := t.inject(th, at, unix.SYS_MMAP, 0, xolSize, unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return err
	}
	if int64(ret) < 0 && int64(ret) > -4096 {
		return fmt.Errorf("ptrace: mapping the XOL area in process %d: %w", p.pid, unix.Errno(-int64(ret)))
	}
	p.xol = &xolArea{base: ret}
	p.xolAt = at
	return nil
}

// unmapXOL removes the area at detach. The world is stopped; threads with
// a signal to deliver are avoided, since stepping one would consume it.
func (t *Tracer) unmapXOL(p *Process, sigs map[int]int) error {
	var th *thread
	for _, o := range p.threads {
		if o.state == held && !o.vfork && sigs[o.tid] == 0 {
			th = o
			break
		}
	}
	if th == nil {
		return fmt.Errorf("ptrace: no thread of process %d is free to unmap the XOL area at %#x", p.pid, p.xol.base)
	}
	ret, err := t.inject(th, p.xolAt, unix.SYS_MUNMAP, p.xol.base, xolSize)
	if err != nil {
		return err
	}
	if ret != 0 {
		return fmt.Errorf("ptrace: unmapping the XOL area of process %d: %w", p.pid, unix.Errno(-int64(ret)))
	}
	p.xol = nil
	return nil
}

// prepareSlot copies s's instruction into a new slot, relocated: a
// rip-relative operand gets a new displacement when its target is within
// reach of the slot, else it is rewritten to address through a scratch
// register that the instruction does not use, loaded on each hit.
func (t *Tracer) prepareSlot(p *Process, s *site) error {
	in := s.insn
	if p.xol.next+slotSize > xolSize {
		return fmt.Errorf("ptrace: the XOL area of process %d is full", p.pid)
	}
	slot := p.xol.base + p.xol.next
	var code [slotSize]byte
	copy(code[:], in.Code())
	s.scratch = -1
	if in.RIPRel {
		d := int64(in.Target) - int64(slot+uint64(in.Len))
		switch {
		case d == int64(int32(d)):
			binary.LittleEndian.PutUint32(code[in.DispOff:], uint32(int32(d)))
		case in.Uses == 0xffff:
			return fmt.Errorf("ptrace: %v at %#x addresses %#x, beyond ±2GB of the XOL area at %#x, and which registers it uses is unknown",
				in, in.Addr, in.Target, slot)
		default:
			reg, err := scratchFor(in)
			if err != nil {
				return err
			}
			// mod=10 (disp32) rm=reg: [scratch+disp32], with the scratch
			// register holding the address of the next instruction.
			code[in.ModRMOff] = 2<<6 | code[in.ModRMOff]&0x38 | byte(reg&7)
			s.scratch = reg
		}
	}
	switch in.Flow {
	case decode.FlowJump, decode.FlowCondJump, decode.FlowCall:
		// The relative target is reached from the slot; it must be a
		// canonical address or the branch itself faults.
		if tgt := slot + (in.Args[0].Imm - in.Addr); tgt >= 1<<47 {
			return fmt.Errorf("ptrace: %v at %#x cannot run from the XOL area at %#x", in, in.Addr, slot)
		}
	}
	if _, err := p.mem.ForceWriteAt(code[:], int64(slot)); err != nil {
		return fmt.Errorf("ptrace: writing XOL slot %#x: %w", slot, err)
	}
	s.slot = slot
	p.xol.next += slotSize
	return nil
}

// scratchFor picks a register for a rip-relative rewrite: never rax, rcx,
// rdx or rsp (used implicitly by many instructions), nor r12 (needs a SIB
// byte), nor one the instruction uses. A REX.B bit in the instruction, which
// rip-relative addressing ignores, selects r8-r15 once the operand names a
// register.
func scratchFor(in *decode.Insn) (int, error) {
	b := in.Code()
	i := 0
prefixes:
	for i < len(b) {
		switch b[i] {
		case 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65:
			i++
		default:
			break prefixes
		}
	}
	high := 0
	if i < len(b) {
		switch {
		case b[i] == 0xc4 || b[i] == 0xc5 || b[i] == 0x62 || b[i] == 0x8f:
			return 0, fmt.Errorf("ptrace: %v at %#x: rip-relative VEX/EVEX operand beyond ±2GB of the XOL area", in, in.Addr)
		case b[i]&0xf0 == 0x40 && b[i]&1 != 0:
			high = 8
		}
	}
	for _, low := range []int{regs.RBX, regs.RSI, regs.RDI, regs.RBP} {
		reg := low + high
		if in.Uses&(1<<reg) == 0 {
			return reg, nil
		}
	}
	return 0, fmt.Errorf("ptrace: %v at %#x: no free scratch register for its rip-relative operand", in, in.Addr)
}
