package ptrace

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/regs"
)

// The XOL area: a private anonymous mapping, readable and executable but not
// writable by the tracee, mapped on demand by an mmap injected into the
// tracee and filled by the tracer through /proc/PID/mem. One slot per probe
// site; nothing is ever read back from the area. The slot of a removed
// site is retired, and reused once a world stop has seen no thread in it
// (see reclaimSlots).
const (
	xolSize  = 64 << 10
	slotSize = 32
)

type xolArea struct {
	// also is the next area: one is mapped near each module whose probes
	// need a slot within ±2GB, and another when one is full.
	also  *xolArea
	base  uint64
	next  uint64  // offset of the first slot never used
	slots []*site // by slot index: whose copy each slot holds (or held)
	// free slots (offsets) to reuse; retired ones wait for a world stop.
	free, retired []uint64
	// nboosted counts boosted slots: until there is one, no thread can be
	// in the area but while the tracer steps it.
	nboosted int
}

// siteOfSlot returns the site whose slot, in any of the areas from x on,
// holds rip, and rip's offset in the copy, when rip is at an instruction
// boundary of a boosted slot: the start of the copy or the jump back after
// it.
func (x *xolArea) siteOfSlot(rip uint64) (*site, uint64, bool) {
	for ; x != nil; x = x.also {
		if rip < x.base || rip >= x.base+x.next {
			continue
		}
		i := (rip - x.base) / slotSize
		if i >= uint64(len(x.slots)) || x.slots[i] == nil {
			return nil, 0, false
		}
		s := x.slots[i]
		off := rip - s.slot
		if !s.boosted || (off != 0 && off != uint64(s.insn.Len)) {
			return nil, 0, false
		}
		return s, off, true
	}
	return nil, 0, false
}

// boosting says whether any area from x on has a boosted slot: until one
// has, no thread can be in an area but while the tracer steps it.
func (x *xolArea) boosting() bool {
	for ; x != nil; x = x.also {
		if x.nboosted > 0 {
			return true
		}
	}
	return false
}

// contains says whether addr is in an area from x on.
func (x *xolArea) contains(addr uint64) bool {
	for ; x != nil; x = x.also {
		if addr >= x.base && addr < x.base+xolSize {
			return true
		}
	}
	return false
}

// suits says whether a slot of x can serve in: one is free, and when the
// copy is to be boosted, its rip-relative target and the jump back are
// within reach of it.
func (x *xolArea) suits(in *decode.Insn, boost bool) bool {
	off, ok := x.freeSlot()
	if !ok {
		return false
	}
	if !boost {
		return true
	}
	slot := x.base + off
	reach := func(a uint64) bool {
		d := int64(a) - int64(slot)
		return d > -(1<<31)+slotSize && d < 1<<31-slotSize
	}
	return reach(in.Next()) && (!in.RIPRel || reach(in.Target))
}

// xolHint returns where to ask mmap to put the XOL area so that it lies
// within ±2GB of the whole module holding addr (the mappings of the same
// file, or addr's own mapping for anonymous code): copies of its
// rip-relative instructions then keep a disp32 and can be boosted, and a
// rel32 jump leads back. A free gap below the module is preferred, since
// the heap grows up from above it. 0 means no such gap.
func xolHint(ms []Mapping, addr uint64) uint64 {
	lo, hi := uint64(0), uint64(0)
	var path string
	for _, m := range ms {
		if addr >= m.Start && addr < m.End {
			lo, hi, path = m.Start, m.End, m.Path
		}
	}
	if hi == 0 {
		return 0
	}
	if path != "" {
		for _, m := range ms {
			if m.Path == path {
				lo, hi = min(lo, m.Start), max(hi, m.End)
			}
		}
	}
	const reach = 1<<31 - 1<<20 // with room for the module's own extent
	if hi-lo >= reach-xolSize {
		return 0
	}
	fits := func(a uint64) bool { return a+xolSize-lo < reach && hi-a < reach }
	const minAddr = 1 << 16 // vm.mmap_min_addr
	best, bestDist := uint64(0), ^uint64(0)
	prevEnd := uint64(minAddr)
	for i := 0; i <= len(ms); i++ {
		gapEnd := uint64(1 << 47)
		if i < len(ms) {
			gapEnd = ms[i].Start
		}
		if gapEnd > prevEnd && gapEnd-prevEnd >= xolSize {
			var a, dist uint64
			if gapEnd <= lo {
				a = gapEnd - xolSize // just below
				dist = lo - a
			} else {
				a = max(prevEnd, hi)  // just above
				dist = a - hi + 1<<40 // above only when nothing below fits
			}
			if a >= prevEnd && a+xolSize <= gapEnd && fits(a) && dist < bestDist {
				best, bestDist = a, dist
			}
		}
		if i < len(ms) {
			prevEnd = max(prevEnd, ms[i].End)
		}
	}
	return best
}

// maxAreas bounds the XOL areas mapped to bring slots near their
// instructions.
const maxAreas = 16

// near says whether x lies within ±2GB of addr.
func near(x *xolArea, addr uint64) bool {
	d := int64(addr) - int64(x.base)
	return d > -(1<<31) && d < 1<<31
}

// canBoost says whether in may run as Boost, and why not: the copy must
// leave the slot by falling through to the jump back, and must not be a
// system call (a thread could block in the slot for long, and restarts and
// rcx would need fixing). Instructions the decoder measured without knowing
// them are not boosted either.
func canBoost(in *decode.Insn) (bool, string) {
	if in.Flow != decode.FlowNone {
		return false, "a branch, call or return is emulated or stepped, never boosted"
	}
	switch in.Op {
	case 0:
		return false, "an instruction the disassembler does not know is not boosted"
	case x86asm.SYSCALL, x86asm.SYSENTER, x86asm.SYSEXIT, x86asm.SYSRET, x86asm.INT, x86asm.INTO,
		x86asm.IRET, x86asm.IRETD, x86asm.IRETQ, x86asm.LCALL, x86asm.LJMP, x86asm.LRET,
		x86asm.XBEGIN, x86asm.XABORT, x86asm.HLT, x86asm.UD1, x86asm.UD2:
		return false, "a system call, interrupt, far or transactional transfer is never boosted"
	}
	return true, ""
}

// boostable says whether the copy of in in a slot at slot can be boosted:
// a rip-relative operand must keep a disp32 from there.
func boostable(in *decode.Insn, slot uint64) bool {
	if ok, _ := canBoost(in); !ok {
		return false
	}
	if in.RIPRel {
		d := int64(in.Target) - int64(slot+uint64(in.Len))
		return d == int64(int32(d))
	}
	return true
}

// jumpBack encodes, at b, a jump from address from to target: jmp rel32
// when within reach, else jmp [rip+0] followed by the absolute address.
func jumpBack(b []byte, from, target uint64) int {
	d := int64(target) - int64(from+5)
	if d == int64(int32(d)) {
		b[0] = 0xe9
		binary.LittleEndian.PutUint32(b[1:], uint32(int32(d)))
		return 5
	}
	copy(b, []byte{0xff, 0x25, 0, 0, 0, 0})
	binary.LittleEndian.PutUint64(b[6:], target)
	return 14
}

// prepareSlot copies s's instruction into a new slot, relocated: a
// rip-relative operand gets a new displacement when its target is within
// reach of the slot, else it is rewritten to address through a scratch
// register that the instruction does not use, loaded on each hit. For a
// boosted site (boost set and the copy boostable there) a jump back to the
// next original instruction follows the copy; s.boosted says whether it
// was.
func (t *Tracer) prepareSlot(p *Process, x *xolArea, s *site, boost bool) error {
	in := s.insn
	off, ok := x.freeSlot()
	if !ok {
		return fmt.Errorf("ptrace: the XOL area at %#x of process %d is full", x.base, p.pid)
	}
	slot := x.base + off
	var code [slotSize]byte
	// INT3s after the copy: a step whose trap the CPU (or a hypervisor
	// emulating the instruction, as some do with cpuid) fails to raise
	// still stops right after it (see stepReport).
	for i := range code {
		code[i] = 0xcc
	}
	copy(code[:], in.Code())
	s.scratch = -1
	s.boosted = boost && boostable(in, slot)
	if s.boosted {
		// The jump is never executed when the copy is stepped (the step
		// ends before it), so the same slot serves an emulation's
		// fallback.
		jumpBack(code[in.Len:], slot+uint64(in.Len), in.Next())
	}
	if in.RIPRel {
		d := int64(in.Target) - int64(slot+uint64(in.Len))
		switch {
		case d == int64(int32(d)):
			binary.LittleEndian.PutUint32(code[in.DispOff:], uint32(int32(d)))
		case in.Uses == 0xffff:
			return refuse(in.Addr, in, "it addresses %#x, beyond ±2GB of the XOL area at %#x, and which registers it uses is unknown",
				in.Target, slot)
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
			return refuse(in.Addr, in, "its branch cannot run from the XOL area at %#x", slot)
		}
	}
	if _, err := p.mem.ForceWriteAt(code[:], int64(slot)); err != nil {
		return fmt.Errorf("ptrace: writing XOL slot %#x: %w", slot, err)
	}
	s.slot = slot
	if n := len(x.free); n > 0 && x.free[n-1] == off {
		x.free = x.free[:n-1]
	} else {
		x.next += slotSize
		x.slots = append(x.slots, nil)
	}
	if old := x.slots[off/slotSize]; old != nil && old.boosted {
		x.nboosted--
	}
	x.slots[off/slotSize] = s
	if s.boosted {
		x.nboosted++
	}
	return nil
}

// hasRetired says whether any area of p has retired slots.
func (p *Process) hasRetired() bool {
	for x := p.xol; x != nil; x = x.also {
		if len(x.retired) > 0 {
			return true
		}
	}
	return false
}

// freeSlot returns the offset of the slot prepareSlot would use next.
func (x *xolArea) freeSlot() (uint64, bool) {
	if n := len(x.free); n > 0 {
		return x.free[n-1], true
	}
	return x.next, x.next+slotSize <= xolSize
}

// retire marks the slot of a removed site for reuse once no thread can be
// in it.
func (p *Process) retire(s *site) {
	for x := p.xol; x != nil; x = x.also {
		if s.slot >= x.base && s.slot < x.base+xolSize {
			x.retired = append(x.retired, s.slot-x.base)
			return
		}
	}
}

// reclaimSlots frees the retired slots no thread of p is in, while the
// world is stopped: a thread reaches a slot only from a hit on its site,
// and no hit on a removed site goes there, so one that is not in it now
// never will be. (No signal handler frame holds a slot address either:
// signals are never delivered inside a slot.)
func (t *Tracer) reclaimSlots(p *Process) {
	for x := p.xol; x != nil; x = x.also {
		if len(x.retired) == 0 {
			continue
		}
		kept := x.retired[:0]
		for _, off := range x.retired {
			if t.slotInUse(p, x.base+off) {
				kept = append(kept, off)
				continue
			}
			x.free = append(x.free, off)
		}
		x.retired = kept
	}
}

// slotInUse says whether a thread of p is, or may be, in the slot at
// slot: its rip there, or stepping from it.
func (t *Tracer) slotInUse(p *Process, slot uint64) bool {
	var r unix.PtraceRegs
	for _, th := range p.threads {
		if th.stepSite != nil && th.stepSite.slot == slot {
			return true
		}
		if th.zombie || th.state == vforking || th.state == leaving {
			continue
		}
		if th.state == listening || ptsys.GetRegs(th.tid, &r) != 0 {
			return true // cannot tell: keep it
		}
		if r.Rip >= slot && r.Rip < slot+slotSize {
			return true
		}
	}
	return false
}

// scratchFor picks a register for a rip-relative rewrite: never rax, rcx,
// rdx or rsp (used implicitly by many instructions), nor r12 (needs a SIB
// byte), nor one the instruction uses. A REX.B bit in the instruction, which
// rip-relative addressing ignores, selects r8-r15 once the operand names a
// register. Only a REX right before the opcode counts: the CPU ignores one
// that a legacy prefix follows (41 66 8b 05 is mov ax,[rip+disp32], REX.B
// and all), and one before a VEX or EVEX prefix is still found.
func scratchFor(in *decode.Insn) (int, error) {
	b := in.Code()
	i := 0
	var rex byte
prefixes:
	for i < len(b) {
		switch c := b[i]; {
		case c == 0x66 || c == 0x67 || c == 0xf0 || c == 0xf2 || c == 0xf3 ||
			c == 0x2e || c == 0x36 || c == 0x3e || c == 0x26 || c == 0x64 || c == 0x65:
			rex = 0
			i++
		case c&0xf0 == 0x40:
			rex = c
			i++
		default:
			break prefixes
		}
	}
	if i < len(b) && (b[i] == 0xc4 || b[i] == 0xc5 || b[i] == 0x62 || b[i] == 0x8f) {
		return 0, refuse(in.Addr, in, "rip-relative VEX/EVEX operand beyond ±2GB of the XOL area")
	}
	high := 0
	if rex&1 != 0 {
		high = 8
	}
	for _, low := range []int{regs.RBX, regs.RSI, regs.RDI, regs.RBP} {
		reg := low + high
		if in.Uses&(1<<reg) == 0 {
			return reg, nil
		}
	}
	return 0, refuse(in.Addr, in, "no free scratch register for its rip-relative operand")
}
