package decode

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// Verdict is the decoder's judgement of an instruction under a probe: can a
// copy of it run out of line, can only an emulator run it, or can nothing.
// Whether an emulator does run it is for that emulator to say
// (emu.Supports): the rule of what is emulated lives with the code that
// emulates.
type Verdict uint8

// Verdicts, from most refused to most permissive.
const (
	// Refused: no probe can run the instruction; Insn.Reason says why.
	Refused Verdict = iota
	// EmulateOnly: a copy cannot stand in for the instruction (a relative
	// branch would branch relative to the copy), so it can be probed only
	// where an emulator runs it; Insn.Reason says why it is refused
	// otherwise.
	EmulateOnly
	// CanRun: a copy of the instruction can run out of line, when an
	// emulator does not run it instead.
	CanRun
)

// String names the verdict in lower case, for logs and reports.
func (v Verdict) String() string {
	switch v {
	case Refused:
		return "refused"
	case EmulateOnly:
		return "emulateonly"
	case CanRun:
		return "canrun"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// ArgKind says what an Arg is.
type ArgKind uint8

// Operand kinds.
const (
	ArgNone ArgKind = iota
	ArgReg          // Arg.Reg
	ArgMem          // Arg.Mem
	ArgImm          // Arg.Imm
	ArgRel          // Arg.Imm is the absolute branch target
)

// Mem is a memory operand normalised for execution: the effective address is
// segbase(Seg) + Base + Index*Scale + Disp, truncated to AddrSize bytes.
type Mem struct {
	// Seg is FS or GS when the instruction overrides the segment, 0 otherwise:
	// the other segments have base 0 in 64-bit mode.
	Seg x86asm.Reg
	// Base is a general register, or 0. It is never RIP: a rip-relative operand
	// is resolved at decode time into Disp (the absolute address) with Base 0.
	Base  x86asm.Reg
	Index x86asm.Reg // 0 when there is no index
	Scale uint8      // 1, 2, 4 or 8; 1 when there is no index
	// Disp is sign-extended to 64 bits; for rip-relative operands and the
	// moffs forms (A0-A3) it is the absolute address.
	Disp     int64
	AddrSize uint8 // 8, or 4 with an address-size prefix
}

// Arg is one operand normalised for execution.
type Arg struct {
	Kind ArgKind
	Size uint8 // bytes read or written: 1, 2, 4 or 8 (or more for vector memory operands)
	Reg  x86asm.Reg
	Mem  Mem
	// Imm is, for ArgImm, the immediate as the CPU extends it to Size bytes,
	// masked to Size bytes; for ArgRel, the absolute target address.
	Imm uint64
}

// Flow is the control-flow class of an instruction.
type Flow uint8

// Control-flow classes.
const (
	FlowNone         Flow = iota // falls through to the next instruction
	FlowJump                     // jmp rel
	FlowCondJump                 // jcc rel, jrcxz, loop*
	FlowCall                     // call rel32
	FlowIndirectJump             // jmp r/m64
	FlowIndirectCall             // call r/m64
	FlowRet                      // ret, ret imm16
)

// Insn is one decoded instruction with everything a hit needs, computed once
// when the probe is inserted.
type Insn struct {
	Addr  uint64
	Len   int
	Bytes [15]byte // Bytes[:Len] is the instruction

	// Inst is x86asm's decoding. Its Op is 0 for instructions x86asm does not
	// know (or names wrongly, like UMONITOR) and that were measured by this
	// package's own length decoder, and for ENDBR. Where x86asm is wrong it
	// is corrected: displacements are sign-extended, rip-relative operands
	// in VEX and EVEX have Base RIP, and VZEROUPPER/VZEROALL have no ModRM.
	// Where x86asm refuses an instruction it knows in an equivalent form, it
	// is decoded in that form: without a REX that a legacy prefix follows
	// (the CPU ignores it), and NOP r/m64 as NOP r/m32 with its operand
	// widened; Len and PCRelOff are those of the bytes as they are.
	Inst x86asm.Inst
	// Op is the operation: Inst.Op, or NOP for ENDBR64 and ENDBR32.
	Op x86asm.Op
	// Args holds the operands in Intel order (destination first), ended by
	// the first ArgNone.
	Args [4]Arg
	// OpSize is the operand size in bytes (1, 2, 4, 8), for instructions
	// whose operand size is not carried by an Arg (push, pop, cdq, ...).
	OpSize uint8
	// Cond is the condition code (0-15) of Jcc, CMOVcc and SETcc, taken from
	// the low nibble of the opcode: 0 O, 1 NO, 2 B, 3 AE, 4 E, 5 NE, 6 BE, 7 A,
	// 8 S, 9 NS, 10 P, 11 NP, 12 L, 13 GE, 14 LE, 15 G.
	Cond uint8
	// Flow is the instruction's control-flow class.
	Flow Flow
	// Lock is set for a LOCK prefix and for instructions that lock
	// implicitly (xchg with memory): only the CPU makes them atomic, so
	// they run from a copy.
	Lock bool

	Verdict Verdict
	// Reason says why the Verdict is Refused or EmulateOnly; for CanRun it
	// is empty unless the copy needs a word of explanation (locked, a
	// system call, an instruction the disassembler does not know).
	Reason string

	// The out-of-line recipe.

	// RIPRel is set when a memory operand is rip-relative; DispOff is then the
	// offset in Bytes of its disp32 and Target the absolute address it names.
	RIPRel  bool
	DispOff int
	Target  uint64
	// ModRMOff is the offset in Bytes of the ModRM byte, or -1.
	ModRMOff int
	// Uses is the set of general registers (bit i for hardware number i, see
	// package regs) that the instruction reads or writes, implicitly too. A
	// scratch register for rewriting a rip-relative operand must be outside it.
	Uses uint16

	name string // for instructions x86asm does not decode, when known
}

// Next returns the address of the instruction that follows in.
func (in *Insn) Next() uint64 { return in.Addr + uint64(in.Len) }

// Code returns the instruction's bytes.
func (in *Insn) Code() []byte { return in.Bytes[:in.Len] }
