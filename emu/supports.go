package emu

import (
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
)

// This file is the one statement of the emulated set: Supports answers from
// it, and Step runs only what it accepts, so the two cannot disagree.

// Supports reports whether Step emulates in, and if not, why. The reason is
// the decoder's when it has one (why it refuses in, why a copy of in cannot
// run, or how a copy runs it), which says more than the form in does not
// match; otherwise it is the emulated-set rule that in breaks.
func Supports(in *decode.Insn) (ok bool, why string) {
	if in == nil || in.Len < 1 || in.Len > len(in.Bytes) {
		return false, "not a decoded instruction"
	}
	if _, why = check(in); why == "" {
		return true, ""
	}
	if in.Reason != "" {
		why = in.Reason
	}
	return false, why
}

// form is what check learns of an emulated instruction and exec needs.
type form struct {
	class  uint8
	n      int // operands before the first ArgNone
	memIdx int // index of the memory operand, or -1
}

// Prefix bits found in front of an instruction's opcode.
const (
	p66 = 1 << iota
	p67
	pF2
	pF3
	pLock
	pOther
)

// prefixBits classifies the bytes that may precede an opcode: the legacy
// prefixes that matter, and pOther for the segment prefixes and REX, which
// the operands already account for.
var prefixBits = func() (t [256]uint8) {
	t[0x66], t[0x67], t[0xf2], t[0xf3], t[0xf0] = p66, p67, pF2, pF3, pLock
	for _, b := range []byte{0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65} {
		t[b] = pOther
	}
	for b := 0x40; b < 0x50; b++ {
		t[b] = pOther
	}
	return t
}()

// prefixes returns the legacy prefixes of in and the offset of its opcode
// (after any REX prefix).
func prefixes(in *decode.Insn) (p uint8, op int) {
	n := min(in.Len, len(in.Bytes))
	for op < n {
		b := prefixBits[in.Bytes[op]]
		if b == 0 {
			break
		}
		p |= b
		op++
	}
	return p &^ pOther, op
}

// Classes of operations, the first dispatch of check and exec.
const (
	cNone uint8 = iota
	cNop
	cPause
	cPush
	cPop
	cMov
	cMovx
	cLea
	cAlu
	cUnary
	cShift
	cXchg
	cCbw
	cCwd
	cCmov
	cSet
	cJmp
	cJcc
	cJrcxz
	cLoop
	cCall
	cRet
	cLeave
)

// opClass maps an x86asm.Op to its class; ops outside the set are cNone.
var opClass = func() []uint8 {
	ops := map[uint8][]x86asm.Op{
		cNop:   {x86asm.NOP},
		cPause: {x86asm.PAUSE},
		cPush:  {x86asm.PUSH},
		cPop:   {x86asm.POP},
		cMov:   {x86asm.MOV},
		cMovx:  {x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD},
		cLea:   {x86asm.LEA},
		cAlu:   {x86asm.ADD, x86asm.OR, x86asm.ADC, x86asm.SBB, x86asm.AND, x86asm.SUB, x86asm.XOR, x86asm.CMP, x86asm.TEST},
		cUnary: {x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT},
		cShift: {x86asm.SHL, x86asm.SHR, x86asm.SAR},
		cXchg:  {x86asm.XCHG},
		cCbw:   {x86asm.CBW, x86asm.CWDE, x86asm.CDQE},
		cCwd:   {x86asm.CWD, x86asm.CDQ, x86asm.CQO},
		cCmov:  {x86asm.CMOVA, x86asm.CMOVAE, x86asm.CMOVB, x86asm.CMOVBE, x86asm.CMOVE, x86asm.CMOVG, x86asm.CMOVGE, x86asm.CMOVL, x86asm.CMOVLE, x86asm.CMOVNE, x86asm.CMOVNO, x86asm.CMOVNP, x86asm.CMOVNS, x86asm.CMOVO, x86asm.CMOVP, x86asm.CMOVS},
		cSet:   {x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG, x86asm.SETGE, x86asm.SETL, x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP, x86asm.SETNS, x86asm.SETO, x86asm.SETP, x86asm.SETS},
		cJmp:   {x86asm.JMP},
		cJcc:   {x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS},
		cJrcxz: {x86asm.JRCXZ, x86asm.JECXZ},
		cLoop:  {x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE},
		cCall:  {x86asm.CALL},
		cRet:   {x86asm.RET},
		cLeave: {x86asm.LEAVE},
	}
	maxOp := x86asm.Op(0)
	for _, l := range ops {
		for _, op := range l {
			maxOp = max(maxOp, op)
		}
	}
	t := make([]uint8, maxOp+1)
	for c, l := range ops {
		for _, op := range l {
			t[op] = c
		}
	}
	return t
}()

// check returns the form of in when Step emulates it, or why it does not.
// Every operand shape that exec relies on is settled here, before exec
// reads or changes anything.
//
// Prefixes other than operand and address size are looked at on the raw
// bytes: F2 and F3 turn many opcodes into other instructions, and 66 and 67
// change near branches and stack operations in ways that differ between
// vendors, so those combinations are left to the real CPU.
func check(in *decode.Insn) (f form, why string) {
	if in.Verdict == decode.Refused {
		return f, in.Reason
	}
	if in.Lock {
		return f, "locked"
	}
	if int(in.Op) < len(opClass) {
		f.class = opClass[in.Op]
	}
	if f.class == cNone {
		return f, "not in the emulated set"
	}
	p, opOff := prefixes(in)
	f.memIdx = -1
	for f.n < len(in.Args) && in.Args[f.n].Kind != decode.ArgNone {
		if in.Args[f.n].Kind == decode.ArgMem && f.memIdx < 0 {
			f.memIdx = f.n
		}
		f.n++
	}
	if p != 0 {
		if why := prefixRule(in, f.class, p, f.memIdx >= 0); why != "" {
			return f, why
		}
	}
	if why := shapeRule(in, f, opOff); why != "" {
		return f, why
	}
	return f, ""
}

// shapeRule returns why the operands of in, of class f.class, are not a form
// that exec implements, or "".
func shapeRule(in *decode.Insn, f form, opOff int) string {
	const shape = "operand form not emulated"
	n, a0, a1 := f.n, &in.Args[0], &in.Args[1]
	switch f.class {
	case cNop:
		if in.Inst.Op == 0 {
			if !isEndbr(in) {
				return "only ENDBR64 and ENDBR32 are emulated among undecoded NOPs"
			}
		} else if !isNopOpcode(in, opOff) {
			return "only 90 and 0f 1f /0 are emulated as NOPs"
		}

	case cPause:
		if in.Len != 2 || in.Bytes[0] != 0xf3 || in.Bytes[1] != 0x90 {
			return "pause with extra prefixes"
		}

	case cPush:
		if n != 1 || in.OpSize != 8 {
			return "16-bit push"
		}
		if !(isGPR(a0) && regs.Size(a0.Reg) == 8 || a0.Kind == decode.ArgImm || a0.Kind == decode.ArgMem && a0.Size == 8) {
			return "push of a segment register"
		}

	case cPop:
		if n != 1 || in.OpSize != 8 || !isGPR(a0) || regs.Size(a0.Reg) != 8 {
			return "pop to memory, of a segment register, or 16-bit"
		}

	case cMov:
		sz := size(a0)
		if n != 2 || sz == 0 || !(isGPR(a0) || a0.Kind == decode.ArgMem) || !sourceFits(a0, a1, sz) {
			return "mov of a segment, control or debug register"
		}

	case cMovx:
		dsz, ssz := size(a0), size(a1)
		if n != 2 || !isGPR(a0) || dsz < 2 || ssz == 0 || ssz > dsz {
			return shape
		}

	case cLea:
		if n != 2 || !isGPR(a0) || size(a0) < 2 || a1.Kind != decode.ArgMem {
			return shape
		}

	case cAlu:
		sz := size(a0)
		if n != 2 || sz == 0 || !sourceFits(a0, a1, sz) {
			return shape
		}

	case cUnary:
		if n != 1 || size(a0) == 0 {
			return shape
		}

	case cShift:
		if n != 2 || size(a0) == 0 {
			return shape
		}
		if !(a1.Kind == decode.ArgImm || a1.Kind == decode.ArgReg && a1.Reg == x86asm.CL) {
			return shape
		}

	case cXchg:
		if n != 2 || !isGPR(a0) || !isGPR(a1) || regs.Size(a1.Reg) != size(a0) {
			return "xchg with memory"
		}

	case cCbw, cCwd:
		if n != 0 {
			return shape
		}

	case cCmov:
		sz := size(a0)
		if n != 2 || !isGPR(a0) || sz < 2 || size(a1) != sz {
			return shape
		}

	case cSet:
		if n != 1 || size(a0) != 1 {
			return shape
		}

	case cJmp, cCall:
		if n != 1 {
			return shape
		}
		if !(a0.Kind == decode.ArgRel || isGPR(a0) && regs.Size(a0.Reg) == 8 || a0.Kind == decode.ArgMem && a0.Size == 8) {
			return "far or 16-bit branch"
		}

	case cJcc, cJrcxz, cLoop:
		if n != 1 || a0.Kind != decode.ArgRel {
			return shape
		}

	case cRet:
		if n > 1 || n == 1 && a0.Kind != decode.ArgImm {
			return shape
		}

	case cLeave:
		if n != 0 || in.OpSize != 8 {
			return "16-bit leave"
		}
	}
	return ""
}

// sourceFits reports whether a1 can be the source of a two-operand
// instruction of sz bytes whose destination is a0: a register of that size,
// memory when the destination is a register, or an immediate.
func sourceFits(a0, a1 *decode.Arg, sz int) bool {
	switch {
	case isGPR(a1) && regs.Size(a1.Reg) == sz:
	case a1.Kind == decode.ArgMem && a0.Kind == decode.ArgReg && int(a1.Size) == sz:
	case a1.Kind == decode.ArgImm:
	default:
		return false
	}
	return true
}

// prefixRule returns why the prefixes p change what in, of class class,
// does beyond the sizes its operands carry, or "".
func prefixRule(in *decode.Insn, class, p uint8, memArg bool) string {
	if p&pLock != 0 {
		return "lock prefix"
	}
	// branch: near branches; fixed: instructions whose operand size is 64
	// bits in 64-bit mode whatever REX.W says.
	branch, fixed := false, false
	switch class {
	case cPush, cPop, cLeave, cJrcxz, cLoop:
		fixed = true
	case cJmp, cCall, cRet, cJcc:
		branch = true
	}
	// F2 and F3 select other instructions in front of many opcodes. They
	// are part of ENDBR and PAUSE, and a branch hint (BND, or the "rep ret"
	// of old compilers) that the CPU ignores on near branches.
	if rep := p & (pF2 | pF3); rep != 0 {
		switch {
		case class == cNop && in.Inst.Op == 0, class == cPause:
		case class == cRet:
		case branch && rep == pF2:
		default:
			return "F2 or F3 prefix"
		}
	}
	// An operand-size prefix on a near branch or a stack operation makes it
	// 16-bit on some CPUs and is ignored by others; the 16-bit movsxd's
	// source width is not agreed on either.
	// REX.W right before the opcode overrides 66 on relative branches (the
	// padded call of the general-dynamic TLS sequence, 66 66 48 e8).
	if p&p66 != 0 && (branch || fixed || in.Op == x86asm.MOVSXD) && !(branch && wideRel(in)) {
		return "operand-size prefix on a branch, stack operation or movsxd"
	}
	// An address-size prefix means something only to a memory operand, to
	// jecxz, and to loop (whose effect on the upper half of RCX is not
	// documented, so it is refused).
	if p&p67 != 0 && !memArg && in.Op != x86asm.NOP && in.Op != x86asm.JECXZ {
		return "address-size prefix without a memory operand"
	}
	if in.RIPRel && p&p67 != 0 {
		// eip-relative: decode refuses it, and so does Step.
		return "eip-relative operand"
	}
	return ""
}

// wideRel reports a relative call, jmp or jcc with REX.W right before its
// opcode: its operand size is 64 bits whatever 66 prefixes precede.
func wideRel(in *decode.Insn) bool {
	if in.Args[0].Kind != decode.ArgRel {
		return false
	}
	switch in.Flow {
	case decode.FlowCall, decode.FlowJump, decode.FlowCondJump:
	default:
		return false
	}
	_, op := prefixes(in)
	return op > 0 && op < in.Len && in.Bytes[op-1]&0xf8 == 0x48
}

// isEndbr reports whether in is ENDBR64 or ENDBR32, which decode reports as NOP.
func isEndbr(in *decode.Insn) bool {
	b := in.Bytes
	return in.Len == 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && (b[3] == 0xfa || b[3] == 0xfb)
}

// isNopOpcode reports whether the opcode at off is one of the architectural
// NOPs: 90 (without REX.B, which makes it xchg r8) or 0F 1F /0.
func isNopOpcode(in *decode.Insn, off int) bool {
	b := in.Bytes[:in.Len]
	if off < len(b) && b[off] == 0x90 {
		return off == 0 || b[off-1]&0xf1 != 0x41
	}
	return off+2 < len(b) && b[off] == 0x0f && b[off+1] == 0x1f && b[off+2]>>3&7 == 0
}
