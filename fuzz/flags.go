package fuzz

import (
	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
	"golang.org/x/arch/x86/x86asm"
)

// UndefinedFlags returns the flags that the manual leaves undefined after in
// runs from registers r: the CPU may leave anything there, so they are not
// compared; every other RFLAGS bit is. It is the referee's own table, independent of package emu.
//
//   - and, or, xor, test: AF.
//   - shl, shr, sar by a masked count of 0: none (no flag changes).
//   - by 1: AF. By more: AF and OF; shl and shr by at least the operand's
//     width (8- and 16-bit operands) also CF.
//
// Everything else in the emulated set defines every flag it changes.
func UndefinedFlags(in *decode.Insn, r *regs.Regs) uint64 {
	switch in.Op {
	case x86asm.AND, x86asm.OR, x86asm.XOR, x86asm.TEST:
		return regs.AF
	case x86asm.SHL, x86asm.SHR, x86asm.SAR:
		size := uint64(in.Args[0].Size)
		var count uint64 = 1
		switch a := &in.Args[1]; a.Kind {
		case decode.ArgImm:
			count = a.Imm
		case decode.ArgReg:
			count = r.Get(a.Reg)
		}
		if size == 8 {
			count &= 63
		} else {
			count &= 31
		}
		switch {
		case count == 0:
			return 0
		case count == 1:
			return regs.AF
		}
		u := regs.AF | regs.OF
		if in.Op != x86asm.SAR && count >= 8*size {
			u |= regs.CF
		}
		return u
	}
	return 0
}
