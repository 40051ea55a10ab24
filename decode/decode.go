// Package decode turns the bytes of one x86-64 instruction into an Insn:
// its exact length, its operands normalised for execution, and how a probe
// on it may run (its Verdict: a copy can run it, only an emulator can, or
// nothing can, with a reason). Whether an emulator runs it is package emu's
// to say, since the emulated forms are the emulator's own rule.
//
// Decoding happens once, when a probe is inserted, so it may take its time
// and allocate; the Insn it returns is all a hit needs. Two decoders are
// consulted: x86asm for the operands, and this package's own length tables,
// which check x86asm's length and measure what it does not know. When they
// disagree, or neither is sure, Decode returns an *Error rather than guess:
// a wrong length would corrupt the traced process.
package decode

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// MaxLen is the architectural limit on the length of one instruction.
const MaxLen = 15

// Error reports bytes that are not an instruction Decode can measure with
// certainty: undefined or truncated encodings, unsupported encodings (XOP,
// APX), or a disagreement between the two decoders. It is distinct from an
// Insn whose Verdict is Refused, which is a well-understood instruction that
// cannot run under a probe.
type Error struct {
	Addr      uint64
	Bytes     []byte // the bytes examined, at most MaxLen
	Why       string
	Truncated bool // more bytes might have made an instruction
}

func (e *Error) Error() string {
	return fmt.Sprintf("decode %#x [% x]: %s", e.Addr, e.Bytes, e.Why)
}

// Decode decodes the instruction at the start of code, which sits at address
// pc in the target. Only the first MaxLen bytes are looked at. The error, if
// any, is an *Error.
func Decode(code []byte, pc uint64) (*Insn, error) {
	if len(code) > MaxLen {
		code = code[:MaxLen]
	}
	fail := func(why string, truncated bool) (*Insn, error) {
		return nil, &Error{Addr: pc, Bytes: append([]byte(nil), code...), Why: why, Truncated: truncated}
	}
	if len(code) == 0 {
		return fail("no bytes", true)
	}
	p, lerr := parse(code)
	if lerr != nil {
		if lerr.truncated && len(code) == MaxLen {
			return fail("longer than 15 bytes", false)
		}
		return fail(lerr.why, lerr.truncated)
	}
	in := &Insn{Addr: pc, Len: p.n, ModRMOff: p.modrmOff}
	copy(in.Bytes[:], code[:p.n])
	in.Inst.Mode = 64
	in.Inst.Len = p.n

	if isENDBR(&p, code) {
		in.Op = x86asm.NOP
		in.OpSize = 4
		in.finish(&p)
		return in, nil
	}
	if p.attr&aInv != 0 {
		in.name = invalidNames[p.op]
		in.Verdict = Refused
		in.Reason = fmt.Sprintf("%s: invalid in 64-bit mode", in.name)
		in.Uses = 0xffff
		return in, nil
	}

	inst, xerr := x86Decode(code)
	if p.enc == encLegacy && (p.stray != 0 || isWideNOP(&p, code)) {
		inst, xerr = x86Retry(&p, code)
	}
	if (xerr != nil || inst.Op == 0) && p.enc != encLegacy && p.vexOff > 0 {
		inst, xerr = afterPrefixes(&p, code)
	}
	if xerr != nil || inst.Op == 0 || inst.Len == 0 || misnamed(&p, inst.Op) {
		return in.fallback(&p, code, fail)
	}
	if inst.Len != p.n && p.enc == encVEX && p.mp == map0F && p.op == 0x77 && p.modrmOff < 0 {
		// x86asm reads a ModRM byte after VZEROUPPER and VZEROALL, which
		// have none (objdump and the CPU agree): its length is one or
		// more bytes too long. The tables' length is the right one.
		inst.Len = p.n
		inst.Args = x86asm.Args{}
	}
	if inst.Len != p.n {
		return fail(fmt.Sprintf("x86asm measures %d bytes (%v) but the opcode tables measure %d", inst.Len, inst.Op, p.n), false)
	}
	in.Inst = inst
	in.Op = inst.Op
	if err := in.operands(&p, code); err != "" {
		return fail(err, false)
	}
	in.finish(&p)
	in.strayREXRule(&p)
	return in, nil
}

// x86Decode calls x86asm, turning a panic (it has had index errors on
// truncated VEX input) into an error. The input is validated first by the
// length tables, so this is a last resort.
func x86Decode(code []byte) (inst x86asm.Inst, err error) {
	defer func() {
		if r := recover(); r != nil {
			inst, err = x86asm.Inst{}, fmt.Errorf("x86asm panicked: %v", r)
		}
	}()
	return x86asm.Decode(code, 64)
}

// x86Retry decodes with x86asm the legacy instructions it refuses as they
// are but knows in an equivalent form:
//
//   - A REX prefix followed by a legacy prefix is ignored by the CPU (Intel
//     SDM vol. 2 §2.2.1, AMD APM vol. 3 §1.2.7); x86asm refuses the bytes,
//     so it decodes them without that REX.
//   - NOP r/m64 (REX.W 0f 1f /0, in AMD's manual; Intel's ignores REX.W on
//     it) is unknown to x86asm; it decodes the 32-bit form and the operands
//     are widened: a NOP reads nothing, so only its formatting changes.
//
// The length and the rip-relative offset are those of the bytes as they are.
func x86Retry(p *parsed, code []byte) (x86asm.Inst, error) {
	var buf [MaxLen]byte
	wide := isWideNOP(p, code)
	k, rexAt := 0, -1
	for i, b := range code {
		if i < 16 && p.stray&(1<<uint(i)) != 0 {
			continue
		}
		if wide && i == p.opOff-2 {
			b &^= 8
			rexAt = k
		}
		buf[k] = b
		k++
	}
	removed := len(code) - k
	inst, err := x86Decode(buf[:k])
	if err != nil || inst.Op == 0 || inst.Len == 0 || wide && inst.Op != x86asm.NOP {
		return inst, errors.New("not decoded")
	}
	inst.Len += removed
	if inst.PCRel != 0 {
		inst.PCRelOff += removed
	}
	if wide {
		if rexAt >= 0 && rexAt < len(inst.Prefix) && inst.Prefix[rexAt].IsREX() {
			inst.Prefix[rexAt] |= x86asm.PrefixREXW
		}
		inst.DataSize = 64
		if inst.MemBytes != 0 {
			inst.MemBytes = 8
		}
		for i, a := range inst.Args {
			if r, ok := a.(x86asm.Reg); ok && r >= x86asm.AX && r <= x86asm.R15L {
				if r >= x86asm.EAX {
					inst.Args[i] = r - x86asm.EAX + x86asm.RAX
				} else {
					inst.Args[i] = r - x86asm.AX + x86asm.RAX
				}
			}
		}
	}
	return inst, nil
}

// isWideNOP recognises REX.W 0f 1f /0, whose REX (the effective one) sits
// right before the 0f escape.
func isWideNOP(p *parsed, code []byte) bool {
	return p.enc == encLegacy && p.mp == map0F && p.op == 0x1f && p.w && p.modrmOff >= 0 && p.reg() == 0 &&
		p.opOff >= 2 && code[p.opOff-1] == 0x0f && code[p.opOff-2]&0xf8 == 0x48
}

// strayREXRule refuses an out-of-line copy of a rip-relative instruction
// with an ignored REX: whoever rewrites its ModRM to a scratch register
// looks for REX.B right after the legacy prefixes, and would find the
// ignored one in front of them and pick the wrong register.
func (in *Insn) strayREXRule(p *parsed) {
	if p.stray != 0 && in.RIPRel && in.Verdict == CanRun {
		in.Verdict = EmulateOnly
		name := in.mnemonic()
		if in.Inst.Op == 0 {
			name = fmt.Sprintf("instruction [% x]", in.Code())
		}
		in.Reason = name + ": rip-relative operand with an ignored REX prefix before a legacy prefix: an out-of-line copy could not be relocated with certainty"
	}
}

// isENDBR recognises ENDBR64 (f3 0f 1e fa) and ENDBR32 (f3 0f 1e fb), which
// x86asm does not decode. Only the exact encodings count: other f3 0f 1e
// forms (RDSSP) are not NOPs, and what extra prefixes do to an end-branch
// marker is not documented, so those run on the CPU instead.
func isENDBR(p *parsed, code []byte) bool {
	return p.n == 4 && code[0] == 0xf3 && code[1] == 0x0f && code[2] == 0x1e && (code[3] == 0xfa || code[3] == 0xfb)
}

// fallback handles an instruction x86asm does not decode: when the opcode
// tables define it, it runs out of line with the tables' length; otherwise
// the bytes are an error.
func (in *Insn) fallback(p *parsed, code []byte, fail func(string, bool) (*Insn, error)) (*Insn, error) {
	if !fallbackOK(p) {
		return fail("not an instruction: neither x86asm nor the opcode tables define it", false)
	}
	in.Uses = 0xffff
	in.Lock = p.lock
	in.Verdict = CanRun
	in.Reason = "instruction not known to the disassembler: it runs out of line with the length measured by the opcode tables"
	if p.hasMem() {
		in.locateRIP(p, code)
	}
	why := systemByOpcode(p)
	switch {
	case why != "":
	case p.attr&aRel != 0:
		why = "relative branch not known to the disassembler"
	case in.RIPRel && p.addr32:
		why = "eip-relative operand (67 prefix with rip-relative addressing)"
	case p.lock:
		why = "lock prefix on an instruction that cannot be locked (the CPU raises #UD)"
	default:
		in.strayREXRule(p)
		return in, nil
	}
	in.Verdict, in.Reason = Refused, fmt.Sprintf("instruction [% x]: %s", in.Code(), why)
	return in, nil
}

// locateRIP fills the rip-relative recipe from the tables' parse.
func (in *Insn) locateRIP(p *parsed, code []byte) {
	if !p.ripRel() {
		return
	}
	in.RIPRel = true
	in.DispOff = p.dispOff
	in.Target = in.Next() + uint64(p.disp(code))
}

// systemByOpcode names the privileged or system instructions among those x86asm
// does not know (VMX, SMAP, ...), by their encoding.
func systemByOpcode(p *parsed) string {
	if p.enc != encLegacy {
		return ""
	}
	switch p.mp {
	case map0F:
		switch p.op {
		case 0x00:
			return "system instruction (0f 00 group: LLDT, LTR, SLDT, STR, VERR, VERW)"
		case 0x01:
			if p.mod() == 3 {
				switch p.modrm {
				case 0xd0, 0xd5, 0xd6, 0xee, 0xef, 0xf9, 0xfa, 0xfb, 0xfc:
					return "" // XGETBV, XEND, XTEST, RDPKRU, WRPKRU, RDTSCP, MONITORX, MWAITX, CLZERO
				case 0xe8:
					if p.rep == 0 {
						return "" // SERIALIZE
					}
				}
			}
			return "privileged or system instruction (0f 01 group)"
		case 0x06, 0x07, 0x08, 0x09, 0x20, 0x21, 0x22, 0x23, 0x30, 0x32, 0x34, 0x35, 0x37:
			return "privileged or system instruction"
		case 0x78, 0x79:
			if !p.op16 && p.rep == 0 {
				return "VMX instruction (VMREAD/VMWRITE)"
			}
		case 0xc7:
			if p.mod() != 3 && p.reg() >= 6 {
				return "VMX instruction (VMPTRLD/VMCLEAR/VMXON/VMPTRST)"
			}
		}
	case map0F38:
		if p.op >= 0x80 && p.op <= 0x82 {
			return "privileged instruction (INVEPT/INVVPID/INVPCID)"
		}
	}
	return ""
}

// operands normalises x86asm's operands; it returns a non-empty reason when
// they cannot be trusted.
func (in *Insn) operands(p *parsed, code []byte) string {
	inst := &in.Inst
	for i, a := range inst.Args {
		if a == nil {
			break
		}
		if i >= len(in.Args) {
			// Only AVX-512 forms have more operands (a mask and four
			// vectors); they are never emulated, and uses() reads the
			// rest from Inst.
			break
		}
		arg := &in.Args[i]
		switch a := a.(type) {
		case x86asm.Reg:
			arg.Kind, arg.Reg, arg.Size = ArgReg, a, regSize(a)
		case x86asm.Mem:
			arg.Kind = ArgMem
			arg.Size = uint8(inst.MemBytes)
			if inst.MemBytes > 255 {
				arg.Size = 0
			}
			in.mem(&arg.Mem, a, p, code)
			if !arg.Mem.isRIP(in) && p.hasMem() && a.Disp != arg.Mem.Disp {
				// Keep x86asm's view, used for formatting, sign-extended too.
				a.Disp = arg.Mem.Disp
				inst.Args[i] = a
			}
		case x86asm.Imm:
			arg.Kind = ArgImm
			arg.Size = in.immSize(i, p)
			arg.Imm = uint64(int64(a)) & mask(arg.Size)
		case x86asm.Rel:
			arg.Kind = ArgRel
			arg.Size = 8
			arg.Imm = in.Next() + uint64(int64(a))
		default:
			return fmt.Sprintf("unexpected operand %T", a)
		}
	}
	return ""
}

// mem normalises one memory operand.
func (in *Insn) mem(m *Mem, a x86asm.Mem, p *parsed, code []byte) {
	if a.Segment == x86asm.FS || a.Segment == x86asm.GS {
		m.Seg = a.Segment
	}
	m.AddrSize = 8
	if p.addr32 {
		m.AddrSize = 4
	}
	m.Base, m.Index, m.Scale = a.Base, a.Index, a.Scale
	if m.Index == 0 || m.Scale == 0 {
		m.Index, m.Scale = 0, 1
	}
	m.Disp = a.Disp
	switch {
	case p.attr&aMoffs != 0 && p.enc == encLegacy:
		// A 64-bit address (or a zero-extended 32-bit one with 67).
		m.Base, m.Index, m.Scale = 0, 0, 1
		if p.addr32 {
			m.Disp = int64(binary.LittleEndian.Uint32(code[p.immOff:]))
		} else {
			m.Disp = int64(binary.LittleEndian.Uint64(code[p.immOff:]))
		}
	case p.hasMem():
		if p.ripRel() {
			in.locateRIP(p, code)
			m.Base, m.Index, m.Scale = 0, 0, 1
			m.Disp = int64(in.Target)
			in.fixInstRIP(p, code)
			return
		}
		if p.dispSize == 4 || p.enc != encEVEX {
			// x86asm zero-extends disp32; the CPU sign-extends it. EVEX
			// disp8 is scaled by x86asm (disp8*N) and is kept as it is.
			m.Disp = p.disp(code)
		}
	}
}

// immSize is the byte size of immediate operand i as the CPU extends it.
func (in *Insn) immSize(i int, p *parsed) uint8 {
	switch in.Op {
	case x86asm.ADD, x86asm.OR, x86asm.ADC, x86asm.SBB, x86asm.AND, x86asm.SUB, x86asm.XOR,
		x86asm.CMP, x86asm.MOV, x86asm.TEST, x86asm.IMUL:
		if i > 0 && in.Args[0].Size != 0 && in.Args[0].Size <= 8 {
			return in.Args[0].Size
		}
	case x86asm.PUSH:
		if p.op16 {
			return 2
		}
		return 8
	case x86asm.RET, x86asm.LRET:
		return 2
	case x86asm.ENTER:
		if i == 0 {
			return 2
		}
		return 1
	}
	return 1
}

// finish fills the fields that do not depend on x86asm's operands' form and
// reaches the Verdict.
func (in *Insn) finish(p *parsed) {
	in.Flow = flowOf(in)
	in.Cond = condOf(p)
	in.OpSize = opSize(in, p)
	in.Lock = p.lock || (in.Op == x86asm.XCHG && (in.Args[0].Kind == ArgMem || in.Args[1].Kind == ArgMem))
	in.Uses = uses(in)
	if in.Inst.Op == 0 && in.Op == x86asm.NOP {
		in.Verdict = CanRun // ENDBR
		return
	}
	if in.RIPRel && p.addr32 {
		in.Verdict, in.Reason = Refused, fmt.Sprintf("%s: eip-relative operand (67 prefix with rip-relative addressing)", in.mnemonic())
		return
	}
	if why := rejectReason(in, p); why != "" {
		in.Verdict, in.Reason = Refused, fmt.Sprintf("%s: %s", in.mnemonic(), why)
		return
	}
	if p.lock && !lockable(in) {
		in.Verdict, in.Reason = Refused, fmt.Sprintf("%s: lock prefix on an instruction that cannot be locked (the CPU raises #UD)", in.mnemonic())
		return
	}
	if in.Lock {
		in.Verdict, in.Reason = CanRun, "locked: another thread may access the memory at the same time, so the CPU must do it atomically"
		return
	}
	in.Verdict = CanRun
	switch in.Flow {
	case FlowJump, FlowCondJump, FlowCall:
		in.Verdict, in.Reason = EmulateOnly, fmt.Sprintf("%s: relative branch that is not emulated: a copy would branch relative to the slot", in.mnemonic())
		return
	}
	switch in.Op {
	case x86asm.SYSCALL:
		in.Reason = "system call: runs out of line; afterwards rcx holds the slot's next address and must be set to the original next address"
	}
}

// mnemonic names the instruction for reasons: its Intel syntax.
func (in *Insn) mnemonic() string { return in.String() }

// flowOf classifies control flow.
func flowOf(in *Insn) Flow {
	rel := in.Args[0].Kind == ArgRel
	switch in.Op {
	case x86asm.JMP:
		if rel {
			return FlowJump
		}
		return FlowIndirectJump
	case x86asm.CALL:
		if rel {
			return FlowCall
		}
		return FlowIndirectCall
	case x86asm.RET:
		return FlowRet
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL,
		x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		return FlowCondJump
	}
	return FlowNone
}

// condOf takes the condition code from the opcode of Jcc, CMOVcc and SETcc.
func condOf(p *parsed) uint8 {
	if p.enc != encLegacy {
		return 0
	}
	switch {
	case p.mp == map1 && p.op >= 0x70 && p.op <= 0x7f,
		p.mp == map0F && (p.op >= 0x80 && p.op <= 0x8f || p.op >= 0x40 && p.op <= 0x4f || p.op >= 0x90 && p.op <= 0x9f):
		return p.op & 0xf
	}
	return 0
}

// opSize is the operand size of the instruction.
func opSize(in *Insn, p *parsed) uint8 {
	a := &in.Args[0]
	if a.Kind == ArgReg && regSize(a.Reg) != 0 && regSize(a.Reg) <= 8 && isGPR(a.Reg) {
		return regSize(a.Reg)
	}
	switch in.Op {
	case x86asm.PUSH, x86asm.POP, x86asm.CALL, x86asm.RET, x86asm.JMP, x86asm.LEAVE, x86asm.ENTER,
		x86asm.PUSHF, x86asm.PUSHFQ, x86asm.POPF, x86asm.POPFQ, x86asm.LRET, x86asm.IRETQ:
		if p.op16 {
			return 2
		}
		return 8
	}
	if a.Kind == ArgMem && (a.Size == 1 || a.Size == 2 || a.Size == 4 || a.Size == 8) {
		return a.Size
	}
	switch {
	case p.w:
		return 8
	case p.op16:
		return 2
	}
	return 4
}

// mask returns the low size bytes set.
func mask(size uint8) uint64 {
	if size >= 8 {
		return ^uint64(0)
	}
	return 1<<(8*uint(size)) - 1
}

// fixInstRIP makes x86asm's own view of a rip-relative operand right for
// formatting: its VEX and EVEX paths report no base and no PC-relative field.
func (in *Insn) fixInstRIP(p *parsed, code []byte) {
	for i, a := range in.Inst.Args {
		if m, ok := a.(x86asm.Mem); ok {
			m.Base = x86asm.RIP
			if p.addr32 {
				m.Base = x86asm.EIP
			}
			m.Disp = p.disp(code)
			in.Inst.Args[i] = m
			in.Inst.PCRel, in.Inst.PCRelOff = 4, p.dispOff
			return
		}
	}
}

// invalidNames names the one-byte opcodes that 64-bit mode removed.
var invalidNames = map[byte]string{
	0x06: "push es", 0x07: "pop es", 0x0e: "push cs", 0x16: "push ss", 0x17: "pop ss",
	0x1e: "push ds", 0x1f: "pop ds", 0x27: "daa", 0x2f: "das", 0x37: "aaa", 0x3f: "aas",
	0x60: "pusha", 0x61: "popa", 0x82: "82 (alias of the 80 group)", 0x9a: "call far ptr16:32",
	0xce: "into", 0xd4: "aam", 0xd6: "salc", 0xea: "jmp far ptr16:32",
}

// misnamed reports x86asm decodings whose length is right but whose
// operation is not the instruction the CPU runs: UMONITOR, UMWAIT and TPAUSE
// (f3/f2/66 0f ae /6 with a register) come out as MFENCE, CLFLUSHOPT and
// CLWB (66 0f ae /7, /6) as CLFLUSH and XSAVEOPT. Such instructions are
// treated as unknown to x86asm: they run out of line, using every register.
func misnamed(p *parsed, op x86asm.Op) bool {
	if p.enc != encLegacy || p.mp != map0F || p.op != 0xae || (!p.op16 && p.rep == 0) {
		return false
	}
	switch op {
	case x86asm.MFENCE, x86asm.LFENCE, x86asm.SFENCE, x86asm.CLFLUSH, x86asm.XSAVEOPT, x86asm.XSAVEOPT64,
		x86asm.FXSAVE, x86asm.FXSAVE64, x86asm.FXRSTOR, x86asm.FXRSTOR64, x86asm.LDMXCSR, x86asm.STMXCSR,
		x86asm.XSAVE, x86asm.XSAVE64, x86asm.XRSTOR, x86asm.XRSTOR64:
		return true
	}
	return false
}

// fallbackOK lists the instructions x86asm does not decode that the tables
// may measure: the families x86asm lacks (ADCX/ADOX, MOVDIRI, MOVDIR64B,
// ENQCMD, GFNI, the 0f 01, 0f ae and 0f c7 groups, hint NOPs, BMI and
// AVX-VNNI), and the system opcodes that are then rejected by name. Any
// other byte string x86asm refuses is an invalid form (lea with a register
// source, a missing mandatory prefix, ...) and an error.
func fallbackOK(p *parsed) bool {
	if !p.known() {
		return false
	}
	switch p.enc {
	case encVEX:
		if p.mp == map0F38 && p.op >= 0x50 && p.op <= 0x53 && p.vpp != 1 {
			return false // AVX-VNNI needs 66
		}
		return vexKnown[p.mp][p.op]
	case encEVEX:
		return false
	}
	noPrefix := !p.op16 && p.rep == 0
	only66 := p.op16 && p.rep == 0
	switch p.mp {
	case map0F:
		switch p.op {
		case 0x00, 0x01, 0x06, 0x07, 0x08, 0x09, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
			0x20, 0x21, 0x22, 0x23, 0x30, 0x32, 0x34, 0x35, 0x37:
			return true
		case 0x0d: // the PREFETCH group: memory only
			return p.hasMem()
		case 0x78, 0x79:
			// VMREAD/VMWRITE (rejected) without a prefix; SSE4a with 66
			// (EXTRQ: 78 only /0) or f2 (INSERTQ), on registers only. With
			// f3 last among f2/f3 the CPU raises #UD after fetching what
			// it takes for the immediates: undefined, so not measurable.
			switch {
			case noPrefix:
				return true
			case p.mod() != 3 || p.rep == 0xf3:
				return false
			case p.op == 0x78 && p.rep == 0 && p.reg() != 0:
				return false
			}
			return true
		case 0xae: // forms with a prefix (x86asm knows the others)
			return !noPrefix
		case 0xc7: // RDRAND, RDSEED, RDPID on registers; VMX (rejected) on memory
			return p.reg() >= 6
		}
	case map0F38:
		switch p.op {
		case 0xf6: // ADCX (66), ADOX (f3)
			return only66 || (!p.op16 && p.rep == 0xf3)
		case 0xf8: // MOVDIR64B (66), ENQCMDS (f2), ENQCMD (f3)
			return p.hasMem() && (p.op16 != (p.rep != 0))
		case 0xf9: // MOVDIRI
			return p.hasMem() && noPrefix
		case 0xcf: // GF2P8MULB
			return only66
		case 0x80, 0x81, 0x82: // INVEPT, INVVPID, INVPCID: rejected
			return only66
		}
	case map0F3A:
		switch p.op {
		case 0xce, 0xcf: // GF2P8AFFINEQB, GF2P8AFFINEINVQB
			return only66
		}
	}
	return false
}

// lockable reports whether a LOCK prefix is legal on in: one of the
// read-modify-write instructions, with a memory destination.
func lockable(in *Insn) bool {
	switch in.Op {
	case x86asm.ADD, x86asm.ADC, x86asm.AND, x86asm.BTC, x86asm.BTR, x86asm.BTS, x86asm.CMPXCHG,
		x86asm.CMPXCHG8B, x86asm.CMPXCHG16B, x86asm.DEC, x86asm.INC, x86asm.NEG, x86asm.NOT, x86asm.OR,
		x86asm.SBB, x86asm.SUB, x86asm.XOR, x86asm.XADD, x86asm.XCHG:
		return in.Args[0].Kind == ArgMem
	}
	return false
}

// isRIP reports whether m is the instruction's resolved rip-relative operand.
func (m *Mem) isRIP(in *Insn) bool {
	return in.RIPRel && m.Base == 0 && m.Index == 0 && uint64(m.Disp) == in.Target
}

// afterPrefixes decodes a VEX or EVEX instruction that has segment or 67
// prefixes, which the CPU accepts and x86asm refuses: x86asm decodes it
// without them, and the prefixes are applied to its operands here.
func afterPrefixes(p *parsed, code []byte) (x86asm.Inst, error) {
	inst, err := x86Decode(code[p.vexOff:])
	if err != nil || inst.Op == 0 {
		return inst, errors.New("not decoded")
	}
	inst.Len += p.vexOff
	if p.addr32 {
		inst.AddrSize = 32
	}
	for i, a := range inst.Args {
		m, ok := a.(x86asm.Mem)
		if !ok {
			continue
		}
		switch p.seg {
		case 0x64:
			m.Segment = x86asm.FS
		case 0x65:
			m.Segment = x86asm.GS
		}
		if p.addr32 {
			m.Base, m.Index = to32(m.Base), to32(m.Index)
		}
		inst.Args[i] = m
	}
	return inst, nil
}

// to32 names the 32-bit form of a 64-bit general register, for addresses
// with a 67 prefix.
func to32(r x86asm.Reg) x86asm.Reg {
	if r >= x86asm.RAX && r <= x86asm.R15 {
		return r - x86asm.RAX + x86asm.EAX
	}
	return r
}
