package fuzz

import (
	"encoding/binary"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
	"golang.org/x/arch/x86/x86asm"
)

// background is what the data window holds where a case has not put random
// bytes: a fixed pattern of the offset, so that a reproducer only has to list
// the bytes that differ from it.
var background = func() (b [WindowSize]byte) {
	for i := range b {
		x := uint32(i) * 2654435761
		b[i] = byte(x>>24 ^ x>>11)
	}
	return b
}()

// Background returns the window's pattern.
func Background() *[WindowSize]byte { return &background }

// maxUserAddr bounds FS and GS bases: the kernel refuses larger ones.
const maxUserAddr = 0x7ffffffff000

// statusFlags are the arithmetic flags, randomised in every case.
const statusFlags = regs.CF | regs.PF | regs.AF | regs.ZF | regs.SF | regs.OF

// Prepare fills st with a random starting state for in: random register
// values and flags, the stack pointer of stack operations and the registers
// and segment base of memory operands aimed at the sandbox's pages (mostly
// mapped, sometimes read-only, unmapped or wild), and random bytes around
// every address the instruction may touch on a patterned window.
func (g *Gen) Prepare(in *decode.Insn, st *State) {
	r := &st.Regs
	*r = regs.Regs{}
	for i := range r.GPR {
		r.GPR[i] = g.Value()
	}
	// Some CPUs cannot resume a thread whose rsp is non-canonical (see
	// Oracle.enterable): such a case is skipped there, so a random rsp is
	// mostly made canonical, keeping its low 48 bits, to leave few cases
	// unrun; the rest still test non-canonical values where the CPU can.
	if sp := r.GPR[regs.RSP]; !canonical(sp) && !g.pick(1, 16) {
		r.GPR[regs.RSP] = signExtend47(sp)
	}
	r.RIP = in.Addr
	r.RFLAGS = 0x202 | g.R.Uint64()&statusFlags
	if g.pick(1, 8) {
		r.RFLAGS |= regs.DF
	}
	r.FSBase = g.userAddr()
	r.GSBase = g.userAddr()
	st.Mem = background

	var fixed uint16
	var hot [4]uint64
	nhot := 0
	stack := func(reg int, t uint64) {
		r.GPR[reg] = t
		fixed |= 1 << reg
		hot[nhot] = t
		nhot++
	}
	switch in.Op {
	case x86asm.PUSH, x86asm.CALL:
		stack(regs.RSP, g.target(8)+8)
	case x86asm.POP, x86asm.RET:
		stack(regs.RSP, g.target(8))
	case x86asm.LEAVE:
		stack(regs.RBP, g.target(8))
	}
	// Where a branch target comes from, when it is read from memory.
	targetAt := ^uint64(0)
	if in.Op == x86asm.RET {
		targetAt = r.GPR[regs.RSP]
	}
	indirect := in.Op == x86asm.JMP || in.Op == x86asm.CALL
	for i := range in.Args {
		a := &in.Args[i]
		if a.Kind == decode.ArgNone {
			break
		}
		if a.Kind == decode.ArgMem && nhot < len(hot) {
			hot[nhot] = g.aim(&a.Mem, max(int(a.Size), 1), r, fixed)
			if indirect {
				targetAt = hot[nhot]
			}
			nhot++
		}
		if a.Kind == decode.ArgReg && indirect {
			if n, ok := regs.Index(a.Reg); ok && fixed&(1<<n) == 0 {
				r.GPR[n] = g.branchTarget()
			}
		}
	}
	for _, t := range hot[:nhot] {
		g.scribble(st, t-24, 56)
	}
	if targetAt != ^uint64(0) {
		// Random bytes are almost never a canonical address: give
		// returns and indirect branches targets that the CPU can reach.
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], g.branchTarget())
		for i := range b {
			if a := targetAt + uint64(i) - WindowAddr; a < WindowSize {
				st.Mem[a] = b[i]
			}
		}
	}
}

// branchTarget returns a target for an indirect branch or a return: mostly
// canonical (the code page, anywhere in user space, the kernel half), and
// the edges of the canonical ranges.
func (g *Gen) branchTarget() uint64 {
	r := g.R
	switch n := r.IntN(10); {
	case n < 4:
		return CodePage + uint64(r.IntN(PageSize))
	case n < 6:
		return r.Uint64() % (1 << 47)
	case n < 7:
		return 0xffff800000000000 | r.Uint64()
	case n < 8:
		return []uint64{0, 0x00007fffffffffff, 0x0000800000000000, 0xffff7fffffffffff, 0xffff800000000000,
			0x8000000000000000, ^uint64(0)}[r.IntN(7)]
	}
	return g.Value()
}

// userAddr returns a non-zero canonical user address for a segment base.
func (g *Gen) userAddr() uint64 {
	switch g.R.IntN(3) {
	case 0:
		return uint64(g.R.IntN(1<<31)) + 1
	case 1:
		return 0x7f0000000000 + g.R.Uint64()%(1<<36)
	}
	return g.R.Uint64()%(maxUserAddr-1) + 1
}

// scribble puts random bytes on the n bytes at addr that lie in the window.
func (g *Gen) scribble(st *State, addr uint64, n int) {
	lo, hi := addr, addr+uint64(n)
	if hi < lo || hi <= WindowAddr || lo >= WindowAddr+WindowSize {
		return
	}
	lo, hi = max(lo, WindowAddr), min(hi, WindowAddr+WindowSize)
	b := st.Mem[lo-WindowAddr : hi-WindowAddr]
	for i := 0; i < len(b); i += 8 {
		v := g.R.Uint64()
		for j := i; j < i+8 && j < len(b); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
}

// aim sets the registers (and segment base) that memory operand m is
// computed from so that it names a target chosen by Gen.target, and returns
// the address the operand names then.
func (g *Gen) aim(m *decode.Mem, size int, r *regs.Regs, fixed uint16) uint64 {
	g.aimAt(m, g.target(size), r, fixed)
	return effAddr(m, r)
}

// aimAt sets the registers (and segment base) that memory operand m is
// computed from so that it names t, or an address a few bytes below or above
// when the scale or a register used twice leaves no exact solution, and
// returns that address and true. Registers in fixed keep their values. When
// the operand has nothing free to solve with, or t is out of its reach, it
// returns false and the operand names whatever it names.
func (g *Gen) aimAt(m *decode.Mem, t uint64, r *regs.Regs, fixed uint16) (uint64, bool) {
	bi, bok := regs.Index(m.Base)
	ii, iok := regs.Index(m.Index)
	bfree := bok && fixed&(1<<bi) == 0
	ifree := iok && fixed&(1<<ii) == 0
	amask := ^uint64(0)
	if m.AddrSize == 4 {
		amask = 0xffffffff
	}
	var seg *uint64
	switch m.Seg {
	case x86asm.FS:
		seg = &r.FSBase
	case x86asm.GS:
		seg = &r.GSBase
	}
	ea := func() uint64 {
		a := uint64(m.Disp)
		if bok {
			a += r.Get(m.Base)
		}
		if iok {
			a += r.Get(m.Index) * uint64(m.Scale)
		}
		return a & amask
	}
	if seg != nil {
		switch {
		case !bfree && !ifree:
			if s := t - ea(); s < maxUserAddr {
				*seg = s
				return t, true
			}
			return 0, false
		case m.AddrSize == 4:
			if t < 1<<32 {
				*seg = t - uint64(g.R.Int64N(int64(t)+1))
			}
		}
	}
	var s uint64
	if seg != nil {
		s = *seg
	}
	o := t - s // what the operand must compute, before the segment base
	set := func(reg int, v uint64) {
		if m.AddrSize == 4 {
			v = g.Value()&^0xffffffff | v&0xffffffff
			if reg == regs.RSP {
				// The high half is free: keep rsp one the CPU
				// can be resumed with (see Prepare).
				v = signExtend47(v)
			}
		}
		r.GPR[reg] = v
	}
	disp := uint64(m.Disp)
	scale := uint64(m.Scale)
	switch {
	case bfree && ifree && bi == ii:
		f := 1 + scale
		rhs := (o - disp) & amask
		if f == 2 {
			if rhs&1 != 0 {
				t++
				rhs = (rhs + 1) & amask
			}
			v := rhs / 2
			if g.pick(1, 2) {
				v += (amask >> 1) + 1 // the other solution modulo the address width
			}
			set(bi, v)
		} else {
			set(bi, rhs*inverse(f))
		}
	case bfree:
		idx := uint64(0)
		if iok {
			idx = r.GPR[ii] * scale
		}
		set(bi, o-disp-idx)
	case ifree:
		base := uint64(0)
		if bok {
			base = r.GPR[bi]
		}
		rhs := (o - disp - base) & amask
		if d := rhs % scale; d != 0 {
			t -= d
			rhs -= d
		}
		set(ii, rhs/scale)
	default:
		return 0, false
	}
	if m.AddrSize == 4 && t-s >= 1<<32 {
		return 0, false // beyond what a 32-bit address reaches
	}
	return t, true
}

// inverse returns the multiplicative inverse of the odd number f modulo 2^64.
func inverse(f uint64) uint64 {
	x := f
	for i := 0; i < 6; i++ {
		x *= 2 - f*x
	}
	return x
}

// signExtend47 returns v with bits 63..48 copied from bit 47: the canonical
// address with v's low 48 bits.
func signExtend47(v uint64) uint64 { return uint64(int64(v<<16) >> 16) }
