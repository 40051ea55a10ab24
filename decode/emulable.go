package decode

import "golang.org/x/arch/x86/x86asm"

// emulable reports whether emu.Step implements in (which is decoded, not
// rejected and not locked), and if not, why. It lists exactly the forms that
// package emu handles; emu's tests hold the two in step over a large corpus.
//
// Prefixes other than operand and address size are looked at on the raw
// bytes: F2 and F3 turn many opcodes into other instructions, and 66 and 67
// change near branches and stack operations in ways that differ between
// vendors, so those combinations are left to the real CPU.
func emulable(in *Insn) (ok bool, why string) {
	if in.Lock {
		return false, "locked"
	}
	if !emInSet(in.Op) {
		return false, "not in the emulated set"
	}
	p, opOff := emPrefixes(in)
	if p&emLock != 0 {
		return false, "lock prefix"
	}
	n := emNargs(in)
	mem := emHasMem(in)
	if why := emPrefixRule(in, p, mem); why != "" {
		return false, why
	}
	if in.RIPRel && p&em67 != 0 {
		return false, "eip-relative operand"
	}
	a0, a1 := &in.Args[0], &in.Args[1]
	const shape = "operand form not emulated"

	switch in.Op {
	case x86asm.NOP:
		if in.Inst.Op == 0 {
			if !emIsEndbr(in) {
				return false, "only ENDBR64 and ENDBR32 are emulated among undecoded NOPs"
			}
			return true, ""
		}
		if !emIsNopOpcode(in, opOff) {
			return false, "only 90 and 0f 1f /0 are emulated as NOPs"
		}
		return true, ""

	case x86asm.PAUSE:
		return in.Len == 2 && in.Bytes[0] == 0xf3 && in.Bytes[1] == 0x90, "pause with extra prefixes"

	case x86asm.PUSH:
		if n != 1 || in.OpSize != 8 {
			return false, "16-bit push"
		}
		switch {
		case emGPR(a0) && regSize(a0.Reg) == 8, a0.Kind == ArgImm, a0.Kind == ArgMem && a0.Size == 8:
			return true, ""
		}
		return false, "push of a segment register"

	case x86asm.POP:
		if n != 1 || in.OpSize != 8 || !emGPR(a0) || regSize(a0.Reg) != 8 {
			return false, "pop to memory, of a segment register, or 16-bit"
		}
		return true, ""

	case x86asm.MOV:
		sz := emSize(a0)
		if n != 2 || sz == 0 || !(emGPR(a0) || a0.Kind == ArgMem) {
			return false, "mov of a segment, control or debug register"
		}
		switch {
		case emGPR(a1) && regSize(a1.Reg) == sz:
		case a1.Kind == ArgMem && a0.Kind == ArgReg && a1.Size == sz:
		case a1.Kind == ArgImm:
		default:
			return false, "mov of a segment, control or debug register"
		}
		return true, ""

	case x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD:
		dsz, ssz := emSize(a0), emSize(a1)
		if n != 2 || !emGPR(a0) || dsz < 2 || ssz == 0 || ssz > dsz {
			return false, shape
		}
		return true, ""

	case x86asm.LEA:
		if n != 2 || !emGPR(a0) || emSize(a0) < 2 || a1.Kind != ArgMem {
			return false, shape
		}
		return true, ""

	case x86asm.ADD, x86asm.OR, x86asm.ADC, x86asm.SBB, x86asm.AND, x86asm.SUB, x86asm.XOR, x86asm.CMP, x86asm.TEST:
		sz := emSize(a0)
		if n != 2 || sz == 0 {
			return false, shape
		}
		switch {
		case emGPR(a1) && regSize(a1.Reg) == sz:
		case a1.Kind == ArgMem && a0.Kind == ArgReg && a1.Size == sz:
		case a1.Kind == ArgImm:
		default:
			return false, shape
		}
		return true, ""

	case x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT:
		if n != 1 || emSize(a0) == 0 {
			return false, shape
		}
		return true, ""

	case x86asm.SHL, x86asm.SHR, x86asm.SAR:
		if n != 2 || emSize(a0) == 0 {
			return false, shape
		}
		if a1.Kind == ArgImm || a1.Kind == ArgReg && a1.Reg == x86asm.CL {
			return true, ""
		}
		return false, shape

	case x86asm.XCHG:
		if n != 2 || !emGPR(a0) || !emGPR(a1) || regSize(a1.Reg) != regSize(a0.Reg) {
			return false, "xchg with memory"
		}
		return true, ""

	case x86asm.CBW, x86asm.CWDE, x86asm.CDQE, x86asm.CWD, x86asm.CDQ, x86asm.CQO:
		return n == 0, shape

	case x86asm.CMOVA, x86asm.CMOVAE, x86asm.CMOVB, x86asm.CMOVBE, x86asm.CMOVE, x86asm.CMOVG,
		x86asm.CMOVGE, x86asm.CMOVL, x86asm.CMOVLE, x86asm.CMOVNE, x86asm.CMOVNO, x86asm.CMOVNP,
		x86asm.CMOVNS, x86asm.CMOVO, x86asm.CMOVP, x86asm.CMOVS:
		sz := emSize(a0)
		if n != 2 || !emGPR(a0) || sz < 2 || emSize(a1) != sz {
			return false, shape
		}
		return true, ""

	case x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG,
		x86asm.SETGE, x86asm.SETL, x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP,
		x86asm.SETNS, x86asm.SETO, x86asm.SETP, x86asm.SETS:
		if n != 1 || emSize(a0) != 1 {
			return false, shape
		}
		return true, ""

	case x86asm.JMP, x86asm.CALL:
		if n != 1 {
			return false, shape
		}
		switch {
		case a0.Kind == ArgRel, emGPR(a0) && regSize(a0.Reg) == 8, a0.Kind == ArgMem && a0.Size == 8:
			return true, ""
		}
		return false, "far or 16-bit branch"

	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL,
		x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS,
		x86asm.JRCXZ, x86asm.JECXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		if n != 1 || a0.Kind != ArgRel {
			return false, shape
		}
		return true, ""

	case x86asm.RET:
		if n > 1 || n == 1 && a0.Kind != ArgImm {
			return false, shape
		}
		return true, ""

	case x86asm.LEAVE:
		if n != 0 || in.OpSize != 8 {
			return false, "16-bit leave"
		}
		return true, ""
	}
	return false, "not in the emulated set"
}

// emInSet reports whether op is one of the operations Step implements in
// some form.
func emInSet(op x86asm.Op) bool {
	switch op {
	case x86asm.NOP, x86asm.PAUSE, x86asm.PUSH, x86asm.POP, x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX,
		x86asm.MOVSXD, x86asm.LEA, x86asm.ADD, x86asm.OR, x86asm.ADC, x86asm.SBB, x86asm.AND, x86asm.SUB,
		x86asm.XOR, x86asm.CMP, x86asm.TEST, x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT, x86asm.SHL,
		x86asm.SHR, x86asm.SAR, x86asm.XCHG, x86asm.CBW, x86asm.CWDE, x86asm.CDQE, x86asm.CWD,
		x86asm.CDQ, x86asm.CQO, x86asm.CMOVA, x86asm.CMOVAE, x86asm.CMOVB, x86asm.CMOVBE, x86asm.CMOVE,
		x86asm.CMOVG, x86asm.CMOVGE, x86asm.CMOVL, x86asm.CMOVLE, x86asm.CMOVNE, x86asm.CMOVNO,
		x86asm.CMOVNP, x86asm.CMOVNS, x86asm.CMOVO, x86asm.CMOVP, x86asm.CMOVS, x86asm.SETA,
		x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG, x86asm.SETGE, x86asm.SETL,
		x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP, x86asm.SETNS, x86asm.SETO, x86asm.SETP,
		x86asm.SETS, x86asm.JMP, x86asm.CALL, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS,
		x86asm.JO, x86asm.JP, x86asm.JS, x86asm.JRCXZ, x86asm.JECXZ, x86asm.LOOP, x86asm.LOOPE,
		x86asm.LOOPNE, x86asm.RET, x86asm.LEAVE:
		return true
	}
	return false
}

// Legacy prefixes that emulable and emu.Step look at.
const (
	em66 = 1 << iota
	em67
	emF2
	emF3
	emLock
)

// emPrefixes returns the legacy prefixes of in and the offset of its opcode.
func emPrefixes(in *Insn) (p uint8, op int) {
	n := min(in.Len, len(in.Bytes))
	for ; op < n; op++ {
		switch b := in.Bytes[op]; {
		case b == 0x66:
			p |= em66
		case b == 0x67:
			p |= em67
		case b == 0xf2:
			p |= emF2
		case b == 0xf3:
			p |= emF3
		case b == 0xf0:
			p |= emLock
		case b == 0x26 || b == 0x2e || b == 0x36 || b == 0x3e || b == 0x64 || b == 0x65:
		case b&0xf0 == 0x40:
		default:
			return p, op
		}
	}
	return p, op
}

// emPrefixRule returns why the prefixes p keep in from being emulated, or "".
func emPrefixRule(in *Insn, p uint8, mem bool) string {
	branch, fixed := false, false
	switch in.Op {
	case x86asm.PUSH, x86asm.POP, x86asm.LEAVE, x86asm.JRCXZ, x86asm.JECXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		fixed = true
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE,
		x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO,
		x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS:
		branch = true
	}
	if rep := p & (emF2 | emF3); rep != 0 {
		switch {
		case in.Op == x86asm.NOP && in.Inst.Op == 0, in.Op == x86asm.PAUSE:
		case in.Op == x86asm.RET:
		case branch && rep == emF2:
		default:
			return "F2 or F3 prefix"
		}
	}
	if p&em66 != 0 && (branch || fixed || in.Op == x86asm.MOVSXD) && !(branch && emWideRel(in)) {
		return "operand-size prefix on a branch, stack operation or movsxd"
	}
	if p&em67 != 0 && !mem && in.Op != x86asm.NOP && in.Op != x86asm.JECXZ {
		return "address-size prefix without a memory operand"
	}
	return ""
}

// emWideRel reports a relative call, jmp or jcc whose REX.W (right before
// the opcode) overrides its 66 prefixes: its operand size is 64 bits on every
// CPU, as without them. Compilers pad the call of the general-dynamic TLS
// sequence this way (66 66 48 e8 rel32).
func emWideRel(in *Insn) bool {
	if in.Args[0].Kind != ArgRel || (in.Flow != FlowCall && in.Flow != FlowJump && in.Flow != FlowCondJump) {
		return false
	}
	_, op := emPrefixes(in)
	return op > 0 && op < in.Len && in.Bytes[op-1]&0xf8 == 0x48
}

func emNargs(in *Insn) int {
	for i := range in.Args {
		if in.Args[i].Kind == ArgNone {
			return i
		}
	}
	return len(in.Args)
}

func emHasMem(in *Insn) bool {
	for i := range in.Args {
		switch in.Args[i].Kind {
		case ArgNone:
			return false
		case ArgMem:
			return true
		}
	}
	return false
}

// emGPR reports whether a is a general register.
func emGPR(a *Arg) bool { return a.Kind == ArgReg && isGPR(a.Reg) }

// emSize is the integer width of a register or memory operand, or 0.
func emSize(a *Arg) uint8 {
	switch {
	case emGPR(a):
		return regSize(a.Reg)
	case a.Kind == ArgMem && (a.Size == 1 || a.Size == 2 || a.Size == 4 || a.Size == 8):
		return a.Size
	}
	return 0
}

func emIsEndbr(in *Insn) bool {
	b := in.Bytes
	return in.Len == 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && (b[3] == 0xfa || b[3] == 0xfb)
}

func emIsNopOpcode(in *Insn, off int) bool {
	b := in.Bytes[:in.Len]
	if off < len(b) && b[off] == 0x90 {
		return off == 0 || b[off-1]&0xf1 != 0x41
	}
	return off+2 < len(b) && b[off] == 0x0f && b[off+1] == 0x1f && b[off+2]>>3&7 == 0
}
