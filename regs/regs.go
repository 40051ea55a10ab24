// Package regs holds the x86-64 user register file of a stopped thread and
// gives access to every general register at every width with the CPU's rules.
//
// It is pure: it never touches the OS. Conversion to and from
// unix.PtraceRegs is lossless, so a tracer reads one PtraceRegs, works on a
// Regs, and writes one PtraceRegs back.
package regs

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Hardware numbers of the general registers, as encoded in ModRM, SIB and
// REX: they index Regs.GPR.
const (
	RAX = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

var names = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// Name returns the name of general register i (a hardware number, RAX to
// R15), or "" for another number.
func Name(i int) string {
	if i < 0 || i >= len(names) {
		return ""
	}
	return names[i]
}

// RFLAGS bits.
const (
	CF uint64 = 1 << 0
	PF uint64 = 1 << 2
	AF uint64 = 1 << 4
	ZF uint64 = 1 << 6
	SF uint64 = 1 << 7
	TF uint64 = 1 << 8
	IF uint64 = 1 << 9
	DF uint64 = 1 << 10
	OF uint64 = 1 << 11

	// ArithFlags are the status flags that add, sub, cmp, adc, sbb and neg define.
	ArithFlags = CF | PF | AF | ZF | SF | OF
)

// Regs is the user register file of one x86-64 thread.
//
// The general registers live in an array indexed by their hardware number
// (RAX, RCX, ... R15) because the emulator addresses them by encoding; Get and
// Set address them by x86asm name at any width.
type Regs struct {
	GPR     [16]uint64
	RIP     uint64
	RFLAGS  uint64
	OrigRAX uint64 // the syscall number while in a syscall stop; -1 otherwise
	FSBase  uint64
	GSBase  uint64
	CS, SS  uint64
	DS, ES  uint64
	FS, GS  uint64
}

// FromPtrace returns the register file held in p.
func FromPtrace(p *unix.PtraceRegs) Regs {
	var r Regs
	r.LoadPtrace(p)
	return r
}

// LoadPtrace replaces r with the register file held in p.
func (r *Regs) LoadPtrace(p *unix.PtraceRegs) {
	r.GPR = [16]uint64{
		RAX: p.Rax, RCX: p.Rcx, RDX: p.Rdx, RBX: p.Rbx,
		RSP: p.Rsp, RBP: p.Rbp, RSI: p.Rsi, RDI: p.Rdi,
		R8: p.R8, R9: p.R9, R10: p.R10, R11: p.R11,
		R12: p.R12, R13: p.R13, R14: p.R14, R15: p.R15,
	}
	r.RIP, r.RFLAGS, r.OrigRAX = p.Rip, p.Eflags, p.Orig_rax
	r.FSBase, r.GSBase = p.Fs_base, p.Gs_base
	r.CS, r.SS, r.DS, r.ES, r.FS, r.GS = p.Cs, p.Ss, p.Ds, p.Es, p.Fs, p.Gs
}

// StorePtrace writes r into p, every field of it.
func (r *Regs) StorePtrace(p *unix.PtraceRegs) {
	g := &r.GPR
	p.Rax, p.Rcx, p.Rdx, p.Rbx = g[RAX], g[RCX], g[RDX], g[RBX]
	p.Rsp, p.Rbp, p.Rsi, p.Rdi = g[RSP], g[RBP], g[RSI], g[RDI]
	p.R8, p.R9, p.R10, p.R11 = g[R8], g[R9], g[R10], g[R11]
	p.R12, p.R13, p.R14, p.R15 = g[R12], g[R13], g[R14], g[R15]
	p.Rip, p.Eflags, p.Orig_rax = r.RIP, r.RFLAGS, r.OrigRAX
	p.Fs_base, p.Gs_base = r.FSBase, r.GSBase
	p.Cs, p.Ss, p.Ds, p.Es, p.Fs, p.Gs = r.CS, r.SS, r.DS, r.ES, r.FS, r.GS
}

// Ptrace returns r as a unix.PtraceRegs.
func (r *Regs) Ptrace() unix.PtraceRegs {
	var p unix.PtraceRegs
	r.StorePtrace(&p)
	return p
}

// SP returns the stack pointer.
func (r *Regs) SP() uint64 { return r.GPR[RSP] }

// Flag reports whether the RFLAGS bit f is set.
func (r *Regs) Flag(f uint64) bool { return r.RFLAGS&f != 0 }

// SetFlag sets the RFLAGS bit f to v.
func (r *Regs) SetFlag(f uint64, v bool) {
	if v {
		r.RFLAGS |= f
	} else {
		r.RFLAGS &^= f
	}
}

// Location of an x86asm general register inside the register file.
type slot struct {
	index uint8 // into GPR
	shift uint8 // 8 for AH, CH, DH, BH; 0 otherwise
	size  uint8 // bytes: 1, 2, 4 or 8; 0 for "not a general register"
}

var slots = func() (t [256]slot) {
	for i := 0; i < 16; i++ {
		t[x86asm.RAX+x86asm.Reg(i)] = slot{uint8(i), 0, 8}
		t[x86asm.EAX+x86asm.Reg(i)] = slot{uint8(i), 0, 4}
		t[x86asm.AX+x86asm.Reg(i)] = slot{uint8(i), 0, 2}
	}
	// x86asm lists AL CL DL BL AH CH DH BH SPB BPB SIB DIB R8B..R15B.
	for i := 0; i < 4; i++ {
		t[x86asm.AL+x86asm.Reg(i)] = slot{uint8(i), 0, 1}
		t[x86asm.AH+x86asm.Reg(i)] = slot{uint8(i), 8, 1}
	}
	for i := 4; i < 16; i++ {
		t[x86asm.SPB+x86asm.Reg(i-4)] = slot{uint8(i), 0, 1}
	}
	return t
}()

// Size returns the width in bytes of the general register g, or 0 when g is
// not a general register.
func Size(g x86asm.Reg) int { return int(slots[g].size) }

// Index returns the hardware number of the general register g (the index into
// Regs.GPR) and whether g is one.
func Index(g x86asm.Reg) (int, bool) {
	s := slots[g]
	return int(s.index), s.size != 0
}

// IsHigh8 reports whether g is AH, CH, DH or BH, which no REX-prefixed
// instruction can name.
func IsHigh8(g x86asm.Reg) bool { return slots[g].shift != 0 }

// Get returns the value of g zero-extended to 64 bits. g may be any general
// register of any width, or RIP. Any other register reads as 0.
func (r *Regs) Get(g x86asm.Reg) uint64 {
	s := slots[g]
	switch s.size {
	case 8:
		return r.GPR[s.index]
	case 4:
		return r.GPR[s.index] & 0xffffffff
	case 2:
		return r.GPR[s.index] & 0xffff
	case 1:
		return r.GPR[s.index] >> s.shift & 0xff
	}
	if g == x86asm.RIP {
		return r.RIP
	}
	return 0
}

// Set writes v to g with the x86-64 rules: a 32-bit write zeroes bits 32-63,
// an 8- or 16-bit write leaves the other bits alone. Writing RIP sets RIP.
// Set panics when g is not a general register or RIP, which is a programming
// error in the caller.
func (r *Regs) Set(g x86asm.Reg, v uint64) {
	s := slots[g]
	p := &r.GPR[s.index]
	switch s.size {
	case 8:
		*p = v
	case 4:
		*p = v & 0xffffffff
	case 2:
		*p = *p&^0xffff | v&0xffff
	case 1:
		m := uint64(0xff) << s.shift
		*p = *p&^m | (v<<s.shift)&m
	default:
		if g != x86asm.RIP {
			panic(fmt.Sprintf("regs: Set of %v, not a general register", g))
		}
		r.RIP = v
	}
}

// String formats r the way a debugger prints registers.
func (r *Regs) String() string {
	s := fmt.Sprintf("rip=%#x rflags=%#x", r.RIP, r.RFLAGS)
	for i, n := range names {
		s += fmt.Sprintf(" %s=%#x", n, r.GPR[i])
	}
	return s + fmt.Sprintf(" fs_base=%#x gs_base=%#x", r.FSBase, r.GSBase)
}
