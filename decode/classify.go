package decode

import (
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// gprNum returns the hardware number of a general register of any width
// (AH..BH count as RAX..RBX, whose bits they are), or -1.
func gprNum(r x86asm.Reg) int {
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return int(r - x86asm.AL)
	case r >= x86asm.AH && r <= x86asm.BH:
		return int(r - x86asm.AH)
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return int(r-x86asm.SPB) + 4
	case r >= x86asm.AX && r <= x86asm.R15W:
		return int(r - x86asm.AX)
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return int(r - x86asm.EAX)
	case r >= x86asm.RAX && r <= x86asm.R15:
		return int(r - x86asm.RAX)
	}
	return -1
}

func isGPR(r x86asm.Reg) bool { return gprNum(r) >= 0 }

// regSize is the width in bytes of a register, 0 when it has none that
// matters here (segment, control and debug registers report their width).
func regSize(r x86asm.Reg) uint8 {
	switch {
	case r >= x86asm.AL && r <= x86asm.R15B:
		return 1
	case r >= x86asm.AX && r <= x86asm.R15W:
		return 2
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return 4
	case r >= x86asm.RAX && r <= x86asm.R15:
		return 8
	case r >= x86asm.ES && r <= x86asm.GS:
		return 2
	case r >= x86asm.M0 && r <= x86asm.M7:
		return 8
	case r >= x86asm.X0 && r <= x86asm.X31:
		return 16
	case r >= x86asm.Y0 && r <= x86asm.Y31:
		return 32
	case r >= x86asm.Z0 && r <= x86asm.Z31:
		return 64
	case r >= x86asm.K0 && r <= x86asm.K7:
		return 8
	case r >= x86asm.F0 && r <= x86asm.F7:
		return 10
	case r >= x86asm.CR0 && r <= x86asm.DR15:
		return 8
	}
	return 0
}

// Register bits for Uses.
const (
	uRAX = 1 << iota
	uRCX
	uRDX
	uRBX
	uRSP
	uRBP
	uRSI
	uRDI
	uR8
	uR9
	uR10
	uR11
)

// implicitUses lists the general registers that instructions read or write
// without naming them as operands.
var implicitUses = map[x86asm.Op]uint16{
	x86asm.PUSH: uRSP, x86asm.POP: uRSP, x86asm.CALL: uRSP, x86asm.RET: uRSP,
	x86asm.LEAVE: uRSP | uRBP, x86asm.ENTER: uRSP | uRBP,
	x86asm.PUSHF: uRSP, x86asm.PUSHFQ: uRSP, x86asm.POPF: uRSP, x86asm.POPFQ: uRSP,
	x86asm.LRET: uRSP, x86asm.LCALL: uRSP, x86asm.IRETQ: uRSP, x86asm.IRET: uRSP, x86asm.IRETD: uRSP,
	x86asm.MOVSB: uRSI | uRDI | uRCX, x86asm.MOVSW: uRSI | uRDI | uRCX, x86asm.MOVSD: uRSI | uRDI | uRCX, x86asm.MOVSQ: uRSI | uRDI | uRCX,
	x86asm.CMPSB: uRSI | uRDI | uRCX, x86asm.CMPSW: uRSI | uRDI | uRCX, x86asm.CMPSD: uRSI | uRDI | uRCX, x86asm.CMPSQ: uRSI | uRDI | uRCX,
	x86asm.STOSB: uRAX | uRDI | uRCX, x86asm.STOSW: uRAX | uRDI | uRCX, x86asm.STOSD: uRAX | uRDI | uRCX, x86asm.STOSQ: uRAX | uRDI | uRCX,
	x86asm.LODSB: uRAX | uRSI | uRCX, x86asm.LODSW: uRAX | uRSI | uRCX, x86asm.LODSD: uRAX | uRSI | uRCX, x86asm.LODSQ: uRAX | uRSI | uRCX,
	x86asm.SCASB: uRAX | uRDI | uRCX, x86asm.SCASW: uRAX | uRDI | uRCX, x86asm.SCASD: uRAX | uRDI | uRCX, x86asm.SCASQ: uRAX | uRDI | uRCX,
	x86asm.INSB: uRDI | uRDX | uRCX, x86asm.INSW: uRDI | uRDX | uRCX, x86asm.INSD: uRDI | uRDX | uRCX,
	x86asm.OUTSB: uRSI | uRDX | uRCX, x86asm.OUTSW: uRSI | uRDX | uRCX, x86asm.OUTSD: uRSI | uRDX | uRCX,
	x86asm.IN: uRAX | uRDX, x86asm.OUT: uRAX | uRDX,
	x86asm.MUL: uRAX | uRDX, x86asm.DIV: uRAX | uRDX, x86asm.IDIV: uRAX | uRDX,
	x86asm.CWD: uRAX | uRDX, x86asm.CDQ: uRAX | uRDX, x86asm.CQO: uRAX | uRDX,
	x86asm.CBW: uRAX, x86asm.CWDE: uRAX, x86asm.CDQE: uRAX, x86asm.LAHF: uRAX, x86asm.SAHF: uRAX,
	x86asm.CPUID: uRAX | uRBX | uRCX | uRDX, x86asm.RDTSC: uRAX | uRDX, x86asm.RDTSCP: uRAX | uRDX | uRCX,
	x86asm.RDPMC: uRAX | uRDX | uRCX, x86asm.RDMSR: uRAX | uRDX | uRCX, x86asm.WRMSR: uRAX | uRDX | uRCX,
	x86asm.XGETBV: uRAX | uRDX | uRCX, x86asm.XSETBV: uRAX | uRDX | uRCX,
	x86asm.CMPXCHG: uRAX, x86asm.CMPXCHG8B: uRAX | uRBX | uRCX | uRDX, x86asm.CMPXCHG16B: uRAX | uRBX | uRCX | uRDX,
	x86asm.XLATB: uRAX | uRBX, x86asm.JCXZ: uRCX, x86asm.JECXZ: uRCX, x86asm.JRCXZ: uRCX,
	x86asm.LOOP: uRCX, x86asm.LOOPE: uRCX, x86asm.LOOPNE: uRCX,
	x86asm.MONITOR: uRAX | uRCX | uRDX, x86asm.MWAIT: uRAX | uRCX,
	x86asm.MASKMOVQ: uRDI, x86asm.MASKMOVDQU: uRDI,
	x86asm.PCMPESTRI: uRAX | uRDX | uRCX, x86asm.PCMPESTRM: uRAX | uRDX, x86asm.PCMPISTRI: uRCX,
	x86asm.XSAVE: uRAX | uRDX, x86asm.XSAVE64: uRAX | uRDX, x86asm.XRSTOR: uRAX | uRDX, x86asm.XRSTOR64: uRAX | uRDX,
	x86asm.XSAVEOPT: uRAX | uRDX, x86asm.XSAVEOPT64: uRAX | uRDX, x86asm.XSAVEC: uRAX | uRDX, x86asm.XSAVEC64: uRAX | uRDX,
	x86asm.XSAVES: uRAX | uRDX, x86asm.XSAVES64: uRAX | uRDX, x86asm.XRSTORS: uRAX | uRDX, x86asm.XRSTORS64: uRAX | uRDX,
	x86asm.XBEGIN: uRAX, x86asm.XABORT: uRAX, x86asm.MULX: uRDX, x86asm.VMASKMOVDQU: uRDI,
	x86asm.VPCMPESTRI: uRAX | uRDX | uRCX, x86asm.VPCMPESTRM: uRAX | uRDX, x86asm.VPCMPISTRI: uRCX,
	x86asm.VPCMPESTRI64: uRAX | uRDX | uRCX, x86asm.VPCMPESTRM64: uRAX | uRDX, x86asm.VPCMPISTRI64: uRCX,
	// The kernel reads the arguments and clobbers rcx and r11; the
	// vDSO-less world may read anything, so claim all.
	x86asm.SYSCALL: 0xffff, x86asm.SYSENTER: 0xffff,
}

// uses computes Insn.Uses: named operands plus implicit registers.
func uses(in *Insn) uint16 {
	if in.Inst.Op == 0 {
		if in.Op == x86asm.NOP {
			return 0 // ENDBR
		}
		return 0xffff
	}
	u := implicitUses[in.Op]
	if in.Op == x86asm.IMUL && in.Args[1].Kind == ArgNone {
		u |= uRAX | uRDX // one-operand form
	}
	bit := func(r x86asm.Reg) {
		if n := gprNum(r); n >= 0 {
			u |= 1 << uint(n)
		}
	}
	for i := range in.Args {
		a := &in.Args[i]
		switch a.Kind {
		case ArgReg:
			bit(a.Reg)
		case ArgMem:
			bit(a.Mem.Base)
			bit(a.Mem.Index)
		}
	}
	for _, a := range in.Inst.Args[min(len(in.Args), len(in.Inst.Args)):] {
		switch a := a.(type) {
		case x86asm.Reg:
			bit(a)
		case x86asm.Mem:
			bit(a.Base)
			bit(a.Index)
		}
	}
	return u
}

// rejectReason says why in cannot run under a probe, or "".
func rejectReason(in *Insn, p *parsed) string {
	switch in.Op {
	case x86asm.INT:
		if in.Args[0].Kind == ArgImm && in.Args[0].Imm == 3 {
			return "the breakpoint instruction itself (int3)"
		}
		return "software interrupt"
	case x86asm.ICEBP:
		return "debug trap (int1)"
	case x86asm.INTO, x86asm.AAA, x86asm.AAD, x86asm.AAM, x86asm.AAS, x86asm.DAA, x86asm.DAS,
		x86asm.ARPL, x86asm.BOUND, x86asm.PUSHA, x86asm.PUSHAD, x86asm.POPA, x86asm.POPAD, x86asm.LDS, x86asm.LES:
		return "invalid in 64-bit mode"
	case x86asm.HLT, x86asm.CLI, x86asm.STI, x86asm.LGDT, x86asm.LIDT, x86asm.LLDT, x86asm.LTR, x86asm.LMSW,
		x86asm.CLTS, x86asm.INVD, x86asm.WBINVD, x86asm.INVLPG, x86asm.INVPCID, x86asm.RDMSR, x86asm.WRMSR,
		x86asm.SWAPGS, x86asm.SYSRET, x86asm.SYSEXIT, x86asm.SYSENTER, x86asm.RSM, x86asm.XSETBV,
		x86asm.XRSTORS, x86asm.XRSTORS64, x86asm.XSAVES, x86asm.XSAVES64, x86asm.MONITOR, x86asm.MWAIT:
		return "privileged or system instruction"
	case x86asm.SGDT, x86asm.SIDT, x86asm.SLDT, x86asm.STR, x86asm.SMSW:
		return "system instruction (descriptor-table store)"
	case x86asm.IN, x86asm.OUT, x86asm.INSB, x86asm.INSW, x86asm.INSD, x86asm.OUTSB, x86asm.OUTSW, x86asm.OUTSD:
		return "port I/O"
	case x86asm.LSS, x86asm.LFS, x86asm.LGS:
		return "loads a segment register"
	case x86asm.LJMP, x86asm.LCALL, x86asm.LRET, x86asm.IRET, x86asm.IRETD, x86asm.IRETQ:
		return "far control transfer: loads a segment register"
	case x86asm.POPF, x86asm.POPFD, x86asm.POPFQ:
		return "loads RFLAGS, including the trap flag"
	case x86asm.UD0, x86asm.UD1, x86asm.UD2:
		return "undefined instruction (always faults)"
	case x86asm.XBEGIN:
		return "transaction start: its abort target is relative and a transaction cannot run from a copy"
	case x86asm.MOV:
		for i := 0; i < 2; i++ {
			if in.Args[i].Kind != ArgReg {
				continue
			}
			r := in.Args[i].Reg
			if r >= x86asm.CR0 && r <= x86asm.DR15 {
				return "moves a control or debug register (privileged)"
			}
		}
		if a := in.Args[0]; a.Kind == ArgReg && a.Reg >= x86asm.ES && a.Reg <= x86asm.GS {
			return "loads a segment register"
		}
	case x86asm.POP:
		if a := in.Args[0]; a.Kind == ArgReg && a.Reg >= x86asm.ES && a.Reg <= x86asm.GS {
			return "loads a segment register"
		}
	}
	if in.Flow != FlowNone && p.op16 && !p.w && p.enc == encLegacy {
		// With REX.W the operand size is 64 bits on every CPU (the
		// general-dynamic TLS sequence pads its call with 66 66 48).
		return "operand-size prefix (66) on a branch: Intel and AMD CPUs disagree on its effect"
	}
	if why := systemByOpcode(p); why != "" {
		return why
	}
	return ""
}

// String formats the instruction in Intel syntax.
func (in *Insn) String() string {
	if in == nil {
		return "<nil>"
	}
	if in.Inst.Op == 0 {
		if in.Op == x86asm.NOP && in.Len >= 4 {
			if in.Bytes[in.Len-1] == 0xfb {
				return "endbr32"
			}
			return "endbr64"
		}
		if in.name != "" {
			return in.name
		}
		return fmt.Sprintf("(unknown to the disassembler) % x", in.Code())
	}
	return strings.TrimSpace(x86asm.IntelSyntax(in.Inst, in.Addr, nil))
}
