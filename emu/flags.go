package emu

import (
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
)

// StatusFlags are the six arithmetic status flags (CF PF AF ZF SF OF), the
// only RFLAGS bits an emulated instruction may change.
const StatusFlags = statusFlags

// DefinedFlags returns the status flags whose value after in is fixed by the
// architecture, given the registers r before it: flags in writes with a
// defined value, and flags in leaves alone. A differential test compares
// exactly these (plus every RFLAGS bit outside StatusFlags, which no emulated
// instruction changes). The flags missing from the result are undefined:
//
//   - and, or, xor, test: AF.
//   - shl, shr, sar by a non-zero count: AF, OF unless the count is 1, and,
//     for shl and shr, CF when the count is at least the operand's width
//     (possible for 8- and 16-bit operands only). The count is the masked
//     immediate or CL, hence r.
//
// Step clears AF after the logic instructions and leaves the undefined flags
// of shifts unchanged. DefinedFlags returns 0 for an
// instruction that Step does not emulate.
func DefinedFlags(in *decode.Insn, r *regs.Regs) uint64 {
	if ok, _ := Supports(in); !ok {
		return 0
	}
	switch in.Op {
	case x86asm.AND, x86asm.OR, x86asm.XOR, x86asm.TEST:
		return statusFlags &^ regs.AF
	case x86asm.SHL, x86asm.SHR, x86asm.SAR:
		sz := size(&in.Args[0])
		if sz == 0 {
			return 0
		}
		var count uint64
		a := &in.Args[1]
		if a.Kind == decode.ArgImm {
			count = a.Imm & 0xff
		} else if r != nil {
			count = r.Get(x86asm.CL)
		} else {
			return 0 // the count is unknown
		}
		count &= countMask(sz)
		if count == 0 {
			return statusFlags
		}
		_, _, set := shift(in.Op, 0, count, sz)
		// Flags the shift does not set are undefined, except those it never
		// touches at all, and it touches all six.
		return set
	}
	return statusFlags
}
