package decode

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

const pc = 0x7f0000401000

// hx turns "48 89 e5" into bytes; test tables name instructions by their bytes.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err, "bad hex %q", s)
	return b
}

func mustDecode(t *testing.T, s string) *Insn {
	t.Helper()
	in, err := Decode(hx(t, s), pc)
	require.NoError(t, err, "Decode(%s)", s)
	require.NotNil(t, in)
	return in
}

func reg(r x86asm.Reg, size uint8) Arg { return Arg{Kind: ArgReg, Reg: r, Size: size} }
func imm(v uint64, size uint8) Arg     { return Arg{Kind: ArgImm, Imm: v, Size: size} }
func rel(target uint64) Arg            { return Arg{Kind: ArgRel, Imm: target, Size: 8} }
func mem(size uint8, m Mem) Arg {
	if m.Scale == 0 {
		m.Scale = 1
	}
	if m.AddrSize == 0 {
		m.AddrSize = 8
	}
	return Arg{Kind: ArgMem, Size: size, Mem: m}
}

// bits builds a Uses set from hardware register numbers.
func bits(n ...int) uint16 {
	var u uint16
	for _, i := range n {
		u |= 1 << uint(i)
	}
	return u
}

const (
	rAX = iota
	rCX
	rDX
	rBX
	rSP
	rBP
	rSI
	rDI
	r8
	r9
	r10
	r11
	r12
	r13
	r14
	r15
)

var normTests = []struct {
	code   string
	op     x86asm.Op
	args   []Arg
	opSize uint8
	uses   uint16
	modrm  int
}{
	{"55", x86asm.PUSH, []Arg{reg(x86asm.RBP, 8)}, 8, bits(rSP, rBP), -1},
	{"41 57", x86asm.PUSH, []Arg{reg(x86asm.R15, 8)}, 8, bits(rSP, r15), -1},
	{"66 50", x86asm.PUSH, []Arg{reg(x86asm.AX, 2)}, 2, bits(rSP, rAX), -1},
	{"6a 80", x86asm.PUSH, []Arg{imm(0xffffffffffffff80, 8)}, 8, bits(rSP), -1},
	{"68 44 33 22 91", x86asm.PUSH, []Arg{imm(0xffffffff91223344, 8)}, 8, bits(rSP), -1},
	{"66 6a ff", x86asm.PUSH, []Arg{imm(0xffff, 2)}, 2, bits(rSP), -1},
	{"5d", x86asm.POP, []Arg{reg(x86asm.RBP, 8)}, 8, bits(rSP, rBP), -1},
	{"ff 30", x86asm.PUSH, []Arg{mem(8, Mem{Base: x86asm.RAX})}, 8, bits(rSP, rAX), 1},
	{"48 89 e5", x86asm.MOV, []Arg{reg(x86asm.RBP, 8), reg(x86asm.RSP, 8)}, 8, bits(rSP, rBP), 2},
	{"89 c8", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), reg(x86asm.ECX, 4)}, 4, bits(rAX, rCX), 1},
	{"88 e0", x86asm.MOV, []Arg{reg(x86asm.AL, 1), reg(x86asm.AH, 1)}, 1, bits(rAX), 1},
	{"40 88 f0", x86asm.MOV, []Arg{reg(x86asm.AL, 1), reg(x86asm.SIB, 1)}, 1, bits(rAX, rSI), 2},
	{"48 83 ec 08", x86asm.SUB, []Arg{reg(x86asm.RSP, 8), imm(8, 8)}, 8, bits(rSP), 2},
	{"48 81 ec 00 01 00 00", x86asm.SUB, []Arg{reg(x86asm.RSP, 8), imm(0x100, 8)}, 8, bits(rSP), 2},
	{"83 e8 ff", x86asm.SUB, []Arg{reg(x86asm.EAX, 4), imm(0xffffffff, 4)}, 4, bits(rAX), 1},
	{"66 83 c0 ff", x86asm.ADD, []Arg{reg(x86asm.AX, 2), imm(0xffff, 2)}, 2, bits(rAX), 2},
	{"80 c1 ff", x86asm.ADD, []Arg{reg(x86asm.CL, 1), imm(0xff, 1)}, 1, bits(rCX), 1},
	{"48 05 00 00 00 80", x86asm.ADD, []Arg{reg(x86asm.RAX, 8), imm(0xffffffff80000000, 8)}, 8, bits(rAX), -1},
	{"48 c7 c0 ff ff ff ff", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), imm(^uint64(0), 8)}, 8, bits(rAX), 2},
	{"48 b8 88 77 66 55 44 33 22 11", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), imm(0x1122334455667788, 8)}, 8, bits(rAX), -1},
	{"66 b8 34 12", x86asm.MOV, []Arg{reg(x86asm.AX, 2), imm(0x1234, 2)}, 2, bits(rAX), -1},
	{"c6 00 ff", x86asm.MOV, []Arg{mem(1, Mem{Base: x86asm.RAX}), imm(0xff, 1)}, 1, bits(rAX), 1},
	{"48 c7 44 24 08 fe ff ff ff", x86asm.MOV, []Arg{mem(8, Mem{Base: x86asm.RSP, Disp: 8}), imm(0xfffffffffffffffe, 8)}, 8, bits(rSP), 2},
	{"8b 44 24 f8", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Base: x86asm.RSP, Disp: -8})}, 4, bits(rAX, rSP), 1},
	{"8b 80 00 00 00 80", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Base: x86asm.RAX, Disp: -0x80000000})}, 4, bits(rAX), 1},
	// SIB without base or index: an absolute sign-extended disp32.
	{"8b 04 25 f0 ff ff ff", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Disp: -16})}, 4, bits(rAX), 1},
	{"48 8b 84 c8 00 01 00 00", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), mem(8, Mem{Base: x86asm.RAX, Index: x86asm.RCX, Scale: 8, Disp: 0x100})}, 8, bits(rAX, rCX), 2},
	{"4a 8b 04 2d 10 00 00 00", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), mem(8, Mem{Index: x86asm.R13, Scale: 1, Disp: 0x10})}, 8, bits(rAX, r13), 2},
	{"4c 8b 1c 24", x86asm.MOV, []Arg{reg(x86asm.R11, 8), mem(8, Mem{Base: x86asm.RSP})}, 8, bits(r11, rSP), 2},
	{"64 c5 fa 6f 00", x86asm.VMOVDQU, []Arg{reg(x86asm.X0, 16), mem(16, Mem{Seg: x86asm.FS, Base: x86asm.RAX})}, 0, bits(rAX), 4},
	{"65 67 c5 fa 6f 00", x86asm.VMOVDQU, []Arg{reg(x86asm.X0, 16), mem(16, Mem{Seg: x86asm.GS, Base: x86asm.EAX, AddrSize: 4})}, 0, bits(rAX), 5},
	{"2e c5 f8 77", x86asm.VZEROUPPER, nil, 0, 0, -1},
	{"67 8b 00", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Base: x86asm.EAX, AddrSize: 4})}, 4, bits(rAX), 2},
	{"64 48 8b 04 25 28 00 00 00", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), mem(8, Mem{Seg: x86asm.FS, Disp: 0x28})}, 8, bits(rAX), 3},
	{"65 48 8b 03", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), mem(8, Mem{Seg: x86asm.GS, Base: x86asm.RBX})}, 8, bits(rAX, rBX), 3},
	// CS, DS, ES and SS overrides have base 0 in 64-bit mode.
	{"2e 8b 03", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Base: x86asm.RBX})}, 4, bits(rAX, rBX), 2},
	{"a1 88 77 66 55 44 33 22 11", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Disp: 0x1122334455667788})}, 4, bits(rAX), -1},
	{"48 a3 f8 ff ff ff ff ff ff ff", x86asm.MOV, []Arg{mem(8, Mem{Disp: -8}), reg(x86asm.RAX, 8)}, 8, bits(rAX), -1},
	{"67 a1 f0 ff ff ff", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Disp: 0xfffffff0, AddrSize: 4})}, 4, bits(rAX), -1},
	{"64 a1 28 00 00 00 00 00 00 00", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Seg: x86asm.FS, Disp: 0x28})}, 4, bits(rAX), -1},
	{"48 8d 6c 24 10", x86asm.LEA, []Arg{reg(x86asm.RBP, 8), mem(0, Mem{Base: x86asm.RSP, Disp: 16})}, 8, bits(rBP, rSP), 2},
	{"8d 04 88", x86asm.LEA, []Arg{reg(x86asm.EAX, 4), mem(0, Mem{Base: x86asm.RAX, Index: x86asm.RCX, Scale: 4})}, 4, bits(rAX, rCX), 1},
	{"d1 e0", x86asm.SHL, []Arg{reg(x86asm.EAX, 4), imm(1, 1)}, 4, bits(rAX), 1},
	{"d3 e0", x86asm.SHL, []Arg{reg(x86asm.EAX, 4), reg(x86asm.CL, 1)}, 4, bits(rAX, rCX), 1},
	{"48 c1 f8 3f", x86asm.SAR, []Arg{reg(x86asm.RAX, 8), imm(0x3f, 1)}, 8, bits(rAX), 2},
	{"f6 c1 ff", x86asm.TEST, []Arg{reg(x86asm.CL, 1), imm(0xff, 1)}, 1, bits(rCX), 1},
	{"48 f7 c0 ff ff ff ff", x86asm.TEST, []Arg{reg(x86asm.RAX, 8), imm(^uint64(0), 8)}, 8, bits(rAX), 2},
	{"48 85 ff", x86asm.TEST, []Arg{reg(x86asm.RDI, 8), reg(x86asm.RDI, 8)}, 8, bits(rDI), 2},
	{"6b c0 fe", x86asm.IMUL, []Arg{reg(x86asm.EAX, 4), reg(x86asm.EAX, 4), imm(0xfffffffe, 4)}, 4, bits(rAX), 1},
	{"f7 e9", x86asm.IMUL, []Arg{reg(x86asm.ECX, 4)}, 4, bits(rAX, rCX, rDX), 1},
	{"0f b6 07", x86asm.MOVZX, []Arg{reg(x86asm.EAX, 4), mem(1, Mem{Base: x86asm.RDI})}, 4, bits(rAX, rDI), 2},
	{"48 63 c7", x86asm.MOVSXD, []Arg{reg(x86asm.RAX, 8), reg(x86asm.EDI, 4)}, 8, bits(rAX, rDI), 2},
	{"48 98", x86asm.CDQE, nil, 8, bits(rAX), -1},
	{"99", x86asm.CDQ, nil, 4, bits(rAX, rDX), -1},
	{"48 99", x86asm.CQO, nil, 8, bits(rAX, rDX), -1},
	{"c9", x86asm.LEAVE, nil, 8, bits(rSP, rBP), -1},
	{"c3", x86asm.RET, nil, 8, bits(rSP), -1},
	{"c2 08 00", x86asm.RET, []Arg{imm(8, 2)}, 8, bits(rSP), -1},
	{"48 87 c8", x86asm.XCHG, []Arg{reg(x86asm.RAX, 8), reg(x86asm.RCX, 8)}, 8, bits(rAX, rCX), 2},
	{"f3 a4", x86asm.MOVSB, nil, 0, bits(rSI, rDI, rCX), -1},
	{"0f a2", x86asm.CPUID, nil, 4, bits(rAX, rBX, rCX, rDX), -1},
	{"c4 e2 f3 f6 c2", x86asm.MULX, nil, 0, bits(rAX, rCX, rDX), 4}, // mulx rax, rcx, rdx: rdx is also implicit
	{"c4 e2 fb f6 c0", x86asm.MULX, nil, 0, bits(rAX, rDX), 4},      // mulx rax, rax, rax
	{"c5 f9 f7 c1", x86asm.VMASKMOVDQU, nil, 0, bits(rDI), 3},       // stores through rdi
	{"c4 e3 79 61 c1 00", x86asm.VPCMPESTRI, nil, 0, bits(rAX, rCX, rDX), 4},
}

// TestNormalisation checks operands, sizes and the recipe fields per form.
func TestNormalisation(t *testing.T) {
	tests := normTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			code := hx(t, tt.code)
			assert.Equal(t, tt.op, in.Op)
			assert.Equal(t, len(code), in.Len)
			assert.Equal(t, code, in.Code())
			assert.Equal(t, uint64(pc), in.Addr)
			if tt.args != nil {
				for i, want := range tt.args {
					assert.Equal(t, want, in.Args[i], "operand %d", i)
				}
				assert.Equal(t, ArgNone, in.Args[len(tt.args)].Kind, "operand count")
			}
			if tt.opSize != 0 {
				assert.Equal(t, tt.opSize, in.OpSize, "OpSize")
			}
			assert.Equal(t, tt.uses, in.Uses, "Uses %016b", in.Uses)
			assert.Equal(t, tt.modrm, in.ModRMOff, "ModRMOff")
			assert.False(t, in.RIPRel)
			assert.NotEqual(t, Refused, in.Verdict, in.Reason)
		})
	}
}

var ripTests = []struct {
	code    string
	dispOff int
	target  uint64
	modrm   int
}{
	{"48 8b 05 f0 ff ff ff", 3, pc + 7 - 16, 2},              // mov rax, [rip-0x10]
	{"4c 8d 1d f9 ff ff ff", 3, pc, 2},                       // lea r11, [rip-7]
	{"8b 05 00 00 00 80", 2, pc + 6 - 0x80000000, 1},         // mov eax, [rip-2^31]
	{"c7 05 10 00 00 00 01 00 00 00", 2, pc + 10 + 16, 1},    // mov dword [rip+0x10], 1: disp before imm
	{"48 83 3d 10 00 00 00 00", 3, pc + 8 + 16, 2},           // cmp qword [rip+0x10], 0
	{"ff 25 00 00 00 00", 2, pc + 6, 1},                      // jmp [rip]
	{"ff 15 02 00 00 00", 2, pc + 6 + 2, 1},                  // call [rip+2]
	{"64 48 8b 05 10 00 00 00", 4, pc + 8 + 16, 3},           // mov rax, fs:[rip+0x10]
	{"c5 fa 6f 05 f0 ff ff ff", 4, pc + 8 - 16, 3},           // vmovdqu xmm0, [rip-0x10]
	{"c4 e2 78 f2 05 00 01 00 00", 5, pc + 9 + 0x100, 4},     // andn eax, eax, [rip+0x100]
	{"62 f1 7c 48 28 05 40 00 00 00", 6, pc + 10 + 0x40, 5},  // vmovaps zmm0, [rip+0x40]
	{"c4 e3 79 0f 05 10 00 00 00 08", 5, pc + 10 + 16, 4},    // vpalignr xmm0, xmm0, [rip+0x10], 8
	{"66 0f 38 f6 05 10 00 00 00", 5, pc + 9 + 16, 4},        // adcx eax, [rip+0x10] (unknown to x86asm)
	{"66 0f 3a 0f 05 10 00 00 00 08", 5, pc + 10 + 16, 4},    // palignr xmm0, [rip+0x10], 8
	{"0f 1f 05 00 00 00 00", 3, pc + 7, 2},                   // nop [rip]
	{"f0 48 0f b1 0d 10 00 00 00", 5, pc + 9 + 16, 4},        // lock cmpxchg [rip+0x10], rcx
	{"48 8b 05 00 00 00 00 cc cc cc cc cc cc", 3, pc + 7, 2}, // trailing bytes are ignored
	{"66 0f 6f 05 fc ff ff ff", 4, pc + 8 - 4, 3},            // movdqa xmm0, [rip-4]
	{"f2 0f 10 05 00 00 00 00", 4, pc + 8, 3},                // movsd xmm0, [rip]
	{"48 8b 05 ff ff ff 7f", 3, pc + 7 + 0x7fffffff, 2},      // largest forward displacement
	{"80 3d 00 00 00 00 00", 2, pc + 7, 1},                   // cmp byte [rip], 0: imm after disp
	{"48 81 3d 00 00 00 00 00 00 00 00", 3, pc + 11, 2},      // cmp qword [rip], imm32
}

// TestRIPRelative checks resolution to absolute addresses and the recipe for
// rewriting, in legacy, VEX and EVEX encodings and for instructions x86asm
// does not know.
func TestRIPRelative(t *testing.T) {
	tests := ripTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			assert.True(t, in.RIPRel)
			assert.Equal(t, tt.dispOff, in.DispOff)
			assert.Equal(t, tt.target, in.Target, "Target %#x", in.Target)
			assert.Equal(t, tt.modrm, in.ModRMOff)
			// The displacement really is at DispOff.
			d := int32(uint32(in.Bytes[in.DispOff]) | uint32(in.Bytes[in.DispOff+1])<<8 | uint32(in.Bytes[in.DispOff+2])<<16 | uint32(in.Bytes[in.DispOff+3])<<24)
			assert.Equal(t, tt.target, in.Next()+uint64(int64(d)))
			// ModRM names rip-relative addressing.
			assert.Equal(t, byte(0x05), in.Bytes[in.ModRMOff]&0xc7)
			if in.Inst.Op != 0 {
				found := false
				for _, a := range in.Args {
					if a.Kind == ArgMem {
						found = true
						assert.Equal(t, x86asm.Reg(0), a.Mem.Base, "Base must not be RIP")
						assert.Equal(t, int64(tt.target), a.Mem.Disp)
						assert.Equal(t, uint8(8), a.Mem.AddrSize)
					}
				}
				assert.True(t, found, "no memory operand")
				assert.Contains(t, in.String(), "rip")
			}
			assert.NotEqual(t, Refused, in.Verdict, in.Reason)
		})
	}
}

var branchTests = []struct {
	code   string
	op     x86asm.Op
	flow   Flow
	cond   uint8
	target uint64 // 0: not a relative branch
}{
	{"e9 fb ff ff ff", x86asm.JMP, FlowJump, 0, pc},
	{"eb 10", x86asm.JMP, FlowJump, 0, pc + 2 + 16},
	{"eb fe", x86asm.JMP, FlowJump, 0, pc},
	{"e8 00 00 00 00", x86asm.CALL, FlowCall, 0, pc + 5},
	{"e8 00 00 00 80", x86asm.CALL, FlowCall, 0, pc + 5 - 0x80000000},
	{"f2 e8 00 01 00 00", x86asm.CALL, FlowCall, 0, pc + 6 + 0x100},       // bnd call
	{"f2 e9 00 01 00 00", x86asm.JMP, FlowJump, 0, pc + 6 + 0x100},        // bnd jmp
	{"66 66 48 e8 00 01 00 00", x86asm.CALL, FlowCall, 0, pc + 8 + 0x100}, // TLS call padding: REX.W wins over 66
	{"70 00", x86asm.JO, FlowCondJump, 0, pc + 2},
	{"74 f0", x86asm.JE, FlowCondJump, 4, pc + 2 - 16},
	{"75 02", x86asm.JNE, FlowCondJump, 5, pc + 4},
	{"7f 00", x86asm.JG, FlowCondJump, 15, pc + 2},
	{"0f 84 00 01 00 00", x86asm.JE, FlowCondJump, 4, pc + 6 + 0x100},
	{"0f 8c fa ff ff ff", x86asm.JL, FlowCondJump, 12, pc},
	{"0f 82 00 00 00 00", x86asm.JB, FlowCondJump, 2, pc + 6},
	{"e3 fe", x86asm.JRCXZ, FlowCondJump, 0, pc},
	{"e2 fe", x86asm.LOOP, FlowCondJump, 0, pc},
	{"ff e0", x86asm.JMP, FlowIndirectJump, 0, 0},
	{"3e ff e0", x86asm.JMP, FlowIndirectJump, 0, 0}, // notrack jmp rax
	{"41 ff e3", x86asm.JMP, FlowIndirectJump, 0, 0},
	{"ff 24 c5 00 10 00 00", x86asm.JMP, FlowIndirectJump, 0, 0},
	{"ff d0", x86asm.CALL, FlowIndirectCall, 0, 0},
	{"3e ff d0", x86asm.CALL, FlowIndirectCall, 0, 0}, // notrack call rax
	{"ff 50 08", x86asm.CALL, FlowIndirectCall, 0, 0},
	{"c3", x86asm.RET, FlowRet, 0, 0},
	{"f2 c3", x86asm.RET, FlowRet, 0, 0}, // bnd ret
	{"f3 c3", x86asm.RET, FlowRet, 0, 0}, // rep ret
	{"c2 10 00", x86asm.RET, FlowRet, 0, 0},
	{"0f 44 c1", x86asm.CMOVE, FlowNone, 4, 0},
	{"48 0f 4f c1", x86asm.CMOVG, FlowNone, 15, 0},
	{"0f 43 07", x86asm.CMOVAE, FlowNone, 3, 0},
	{"0f 94 c0", x86asm.SETE, FlowNone, 4, 0},
	{"0f 9a c0", x86asm.SETP, FlowNone, 10, 0},
	{"41 0f 9e 00", x86asm.SETLE, FlowNone, 14, 0},
	{"90", x86asm.NOP, FlowNone, 0, 0},
}

// TestBranches checks absolute targets, Flow and Cond.
func TestBranches(t *testing.T) {
	tests := branchTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			assert.Equal(t, tt.op, in.Op)
			assert.Equal(t, tt.flow, in.Flow)
			assert.Equal(t, tt.cond, in.Cond)
			if tt.target != 0 {
				assert.Equal(t, rel(tt.target), in.Args[0], "target %#x", in.Args[0].Imm)
				assert.Contains(t, in.String(), strings.TrimPrefix(hexAddr(tt.target), "0x"))
			}
			assert.False(t, in.Lock)
		})
	}
}

func hexAddr(a uint64) string { return "0x" + strings.TrimLeft(hex.EncodeToString(be64(a)), "0") }

func be64(a uint64) []byte {
	b := make([]byte, 8)
	for i := 0; i < 8; i++ {
		b[7-i] = byte(a >> (8 * i))
	}
	return b
}

// TestEndbr checks that ENDBR64 and ENDBR32, which x86asm does not decode,
// are NOPs, and that neighbouring f3 0f 1e forms (RDSSP) are not.
func TestEndbr(t *testing.T) {
	for _, tt := range []struct{ code, str string }{
		{"f3 0f 1e fa", "endbr64"},
		{"f3 0f 1e fb", "endbr32"},
		{"f3 0f 1e fa 55", "endbr64"},
		{"f3 0f 1e fa cc cc cc cc cc cc cc cc cc cc cc", "endbr64"},
	} {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			assert.Equal(t, x86asm.NOP, in.Op)
			assert.Equal(t, 4, in.Len)
			assert.Equal(t, tt.str, in.String())
			assert.Equal(t, uint16(0), in.Uses)
			assert.Equal(t, FlowNone, in.Flow)
			assert.False(t, in.Lock)
			assert.False(t, in.RIPRel)
			assert.Equal(t, CanRun, in.Verdict)
			assert.Empty(t, in.Reason)
		})
	}
	for _, code := range []string{"f3 48 0f 1e c8", "f3 48 0f 1e fa", "66 f3 0f 1e fa", "f3 f3 0f 1e fa"} {
		// rdsspq rax, and end-branch markers with extra prefixes
		in := mustDecode(t, code)
		assert.NotEqual(t, x86asm.NOP, in.Op, code)
		assert.NotEqual(t, Refused, in.Verdict, code)
		assert.Equal(t, len(hx(t, code)), in.Len, code)
	}
}

var unknownTests = []struct {
	code  string
	modrm int
}{
	{"66 0f 38 f6 c1", 4},       // adcx eax, ecx
	{"66 48 0f 38 f6 c1", 5},    // adcx rax, rcx
	{"f3 0f 38 f6 c1", 4},       // adox eax, ecx
	{"66 0f 38 f6 44 24 08", 4}, // adcx eax, [rsp+8]
	{"0f 01 ee", 2},             // rdpkru
	{"0f 01 ef", 2},             // wrpkru
	{"f3 0f c7 f8", 3},          // rdpid rax
	{"0f c7 f8", 2},             // rdseed eax
	{"f3 0f ae f0", 3},          // umonitor rax (x86asm says mfence)
	{"66 0f ae f1", 3},          // tpause ecx (x86asm says mfence)
	{"66 0f ae 38", 3},          // clflushopt [rax] (x86asm says clflush)
	{"f3 48 0f 1e c8", 4},       // rdsspq rax
	{"0f 01 e8", 2},             // serialize
	{"c4 e2 f8 f2 c1", -1},      // andn: x86asm v0.32 knows it; either way it decodes
	{"c4 e3 fb f0 c1 05", -1},   // rorx rax, rcx, 5
	{"c4 e2 f3 f5 c2", -1},      // pdep rax, rcx, rdx
	{"c4 e2 73 f7 c2", -1},      // shrx eax, edx, ecx
	{"c4 e2 79 50 c1", -1},      // vpdpbusd (AVX-VNNI)
}

// TestUnknownToX86asm checks instructions measured by the own tables only.
func TestUnknownToX86asm(t *testing.T) {
	tests := unknownTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			code := hx(t, tt.code)
			assert.Equal(t, len(code), in.Len)
			assert.Equal(t, CanRun, in.Verdict, in.Reason)
			if in.Inst.Op == 0 {
				assert.Contains(t, in.Reason, "not known to the disassembler")
				assert.Equal(t, uint16(0xffff), in.Uses, "unknown instructions use every register")
				assert.Equal(t, x86asm.Op(0), in.Op)
				assert.Contains(t, in.String(), "unknown")
			}
			if tt.modrm >= 0 {
				assert.Equal(t, tt.modrm, in.ModRMOff)
			}
		})
	}
}

var lengthTests = []struct {
	code string
	n    int
}{
	{"90", 1},
	{"66 68 34 12", 4},                                // push imm16
	{"68 78 56 34 12", 5},                             // push imm32
	{"b8 78 56 34 12", 5},                             // mov eax, imm32
	{"66 b8 34 12", 4},                                // mov ax, imm16
	{"48 b8 00 00 00 00 00 00 00 00", 10},             // movabs rax, imm64
	{"66 48 b8 00 00 00 00 00 00 00 00", 11},          // REX.W beats 66
	{"66 48 05 00 00 00 00", 7},                       // add rax, imm32 with a 66 prefix
	{"66 05 00 00", 4},                                // add ax, imm16
	{"66 81 c1 00 00", 5},                             // add cx, imm16
	{"a0 00 00 00 00 00 00 00 00", 9},                 // mov al, moffs64
	{"67 a0 00 00 00 00", 6},                          // mov al, moffs32
	{"66 a1 00 00 00 00 00 00 00 00", 10},             // mov ax, moffs64
	{"f6 c1 01", 3},                                   // test cl, imm8
	{"f6 d1", 2},                                      // not cl
	{"f7 c1 00 00 00 00", 6},                          // test ecx, imm32
	{"66 f7 c1 00 00", 5},                             // test cx, imm16
	{"48 f7 c1 00 00 00 00", 7},                       // test rcx, imm32
	{"f7 d9", 2},                                      // neg ecx
	{"f7 f1", 2},                                      // div ecx
	{"c8 10 00 01", 4},                                // enter 16, 1
	{"c2 08 00", 3},                                   // ret 8
	{"8b 04 24", 3},                                   // SIB
	{"8b 44 24 08", 4},                                // SIB + disp8
	{"8b 84 24 00 01 00 00", 7},                       // SIB + disp32
	{"8b 04 25 00 00 00 00", 7},                       // SIB without base: disp32
	{"8b 45 00", 3},                                   // [rbp+0] needs disp8
	{"41 8b 45 00", 4},                                // [r13+0] too
	{"41 8b 04 24", 4},                                // [r12] needs SIB
	{"8b 05 00 00 00 00", 6},                          // rip-relative
	{"0f 1f 84 00 00 00 00 00", 8},                    // nopw-style nop
	{"66 2e 0f 1f 84 00 00 00 00 00", 10},             // cs nopw
	{"66 66 2e 0f 1f 84 00 00 00 00 00", 11},          // data16 cs nopw
	{"0f 3a 0f c1 08", 5},                             // palignr mm, imm8
	{"66 0f 3a 0f c1 08", 6},                          // palignr xmm, imm8
	{"66 0f 70 c1 1b", 5},                             // pshufd
	{"66 0f 73 d8 04", 5},                             // psrldq
	{"0f ba e1 05", 4},                                // bt ecx, 5
	{"0f a4 c1 05", 4},                                // shld ecx, eax, 5
	{"0f c2 c1 00", 4},                                // cmpps
	{"0f c6 c1 00", 4},                                // shufps
	{"66 0f 38 00 c1", 5},                             // pshufb
	{"f2 0f 38 f1 c1", 5},                             // crc32
	{"0f 38 f0 07", 4},                                // movbe eax, [rdi]
	{"c5 f8 77", 3},                                   // vzeroupper: no ModRM
	{"c5 fc 77", 3},                                   // vzeroall
	{"c5 f9 70 c1 1b", 5},                             // vpshufd: VEX map 1 with imm8
	{"c5 fd 74 0f", 4},                                // vpcmpeqb ymm1, ymm0, [rdi]
	{"c4 e3 7d 39 c1 01", 6},                          // vextracti128: map 3 imm8
	{"c4 e2 7d 58 c1", 5},                             // vpbroadcastd: map 2
	{"62 f1 7d 48 70 c1 1b", 7},                       // vpshufd zmm: EVEX map 1 imm8
	{"62 f1 fe 48 6f 44 24 01", 8},                    // vmovdqu64 zmm0, [rsp+0x40]: disp8*N
	{"62 f1 fe 48 6f 84 24 00 01 00 00", 11},          // disp32
	{"62 f3 7d 48 3b c1 01", 7},                       // vextracti32x8: map 3
	{"0f 20 d8", 3},                                   // mov rax, cr3: mod ignored (rejected anyway)
	{"0f 22 00", 3},                                   // mov cr0, rax with mod=00: still no displacement
	{"c7 f8 00 00 00 00", 6},                          // xbegin rel32
	{"66 c7 f8 00 00", 5},                             // xbegin rel16
	{"c6 f8 01", 3},                                   // xabort
	{"0f 0b", 2},                                      // ud2
	{"9a 00 00 00 00 00 00", 7},                       // call far ptr16:32 (invalid)
	{"d4 0a", 2},                                      // aam (invalid)
	{"f0 f0 f0 f0 f0 f0 f0 f0 f0 f0 f0 f0 f0 90", 14}, // many prefixes
	{"66 66 66 66 66 66 66 66 66 66 66 66 66 66 90", 15},
	{"40 90", 2},                // REX nop
	{"48 66 90", 3},             // REX before a legacy prefix is ignored: 66 90
	{"48 66 b8 01 00", 5},       // ... so is its W: mov ax, imm16
	{"66 0f 78 c0 01 02", 6},    // extrq xmm0, 1, 2
	{"f2 0f 78 c1 01 02", 6},    // insertq xmm0, xmm1, 1, 2
	{"f3 f2 0f 78 c1 01 02", 7}, // the last of f2/f3 counts: insertq
	{"66 f2 0f 79 c1", 5},       // insertq xmm0, xmm1 (f2 wins over 66)
	{"66 0f 79 c1", 4},          // extrq xmm0, xmm1
}

// TestLengths checks the length of every immediate, displacement and prefix
// rule; Decode cross-checks its tables against x86asm on each of them.
func TestLengths(t *testing.T) {
	tests := lengthTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			code := hx(t, tt.code)
			p, lerr := parse(code)
			require.Nil(t, lerr, "tables: %v", lerr)
			assert.Equal(t, tt.n, p.n, "tables")
			in, err := Decode(append(code, 0xcc, 0xcc, 0xcc), pc)
			require.NoError(t, err)
			assert.Equal(t, tt.n, in.Len, "Decode")
		})
	}
}

var errorTests = []struct {
	code      string
	why       string
	truncated bool
}{
	{"", "no bytes", true},
	{"48", "truncated", true},
	{"66", "truncated", true},
	{"0f", "truncated", true},
	{"0f 38", "truncated", true},
	{"c5", "truncated", true},
	{"c5 f8", "truncated", true},
	{"c4 e2", "truncated", true},
	{"c4 e2 78", "truncated", true},
	{"62 f1 7d 48", "truncated", true},
	{"c4 e2 78 f2", "truncated", true}, // x86asm returns a 4-byte ANDN without its ModRM here
	{"e8 00 00", "truncated", true},
	{"48 b8 00 00 00 00", "truncated", true},
	{"8b 84 24 00 01", "truncated", true},
	{"0f 0f c1 b4", "3DNow", false},
	{"8f e8 78 c2 c1 00", "XOP", false},
	{"8f e9 78 81 c1", "XOP", false},
	{"d5 00 00", "REX2", false},
	{"66 e8 00 00 00 00", "Intel and AMD", false},
	{"66 e9 00 00", "Intel and AMD", false},
	{"66 0f 84 00 00 00 00", "Intel and AMD", false},
	{"0f 04", "undefined", false},
	{"0f 0a", "undefined", false},
	{"0f 3b", "undefined", false},
	{"47 47 c9", "two REX", false},
	{"8d c0", "not an instruction", false},    // lea with a register source
	{"c6 c8 00", "not an instruction", false}, // c6 /1
	{"c4 e0 78 00 c1", "opcode map", false},
	{"c4 e4 78 00 c1", "opcode map", false},
	{"62 f4 7d 48 00 c1", "opcode map", false},
	{"62 f9 7d 48 00 c1", "reserved", false}, // APX EVEX
	{"62 f1 79 48 00 c1", "reserved", false}, // P1 bit 2 clear
	{"66 c5 f8 77", "VEX after", false},
	{"f3 c5 f8 77", "VEX after", false},
	{"48 c5 f8 77", "VEX after", false},
	{"66 62 f1 7d 48 70 c1 1b", "EVEX after", false},
	{"0f 38 29 c1", "not an instruction", false},    // pcmpeqq without its 66
	{"f2 0f 38 f6 c1", "not an instruction", false}, // f6 with f2 is nothing
	{"0f 38 f9 c1", "not an instruction", false},    // movdiri needs memory
	{"0f c7 10", "not an instruction", false},       // 0f c7 /2 is undefined
	{"0f ae c0", "not an instruction", false},       // 0f ae /0 on a register needs f3 (rdfsbase)
	{"f2 0f 79 00", "not an instruction", false},    // insertq needs registers
	// SSE4a space, refereed by the CPU: f3 (the last of f2/f3 counts) and
	// extrq imm with ModRM.reg other than 0 raise #UD.
	{"f3 0f 78 c1 01 02", "not an instruction", false},
	{"f3 0f 79 c1", "not an instruction", false},
	{"f3 48 0f 79 c1", "not an instruction", false},
	{"66 f3 0f 78 c0 01 02", "not an instruction", false},
	{"f2 f3 0f 79 c0", "not an instruction", false},
	{"66 0f 78 c8 01 02", "not an instruction", false}, // extrq /1
	{"66 0f 78 f9 01 02", "not an instruction", false}, // extrq /7
	{"48 66 0f 78 d1 01 02", "not an instruction", false},
	{"66 0f 79 00", "not an instruction", false}, // extrq needs registers
	{"0f 3a 0f c1", "truncated", true},           // palignr missing imm8
	{"62 f1 7d 48 70 c1", "truncated", true},
	{"66 66 66 66 66 66 66 66 66 66 66 66 66 66 66 90", "longer than 15", false},
	{"66 66 66 66 66 66 66 66 66 66 66 66 66 48 b8 00 00 00 00", "longer than 15", false},
	{"26 26 26 26 26 26 26 26 26 26 26 26 26 26 26", "longer than 15", false},
}

// TestErrors checks bytes that are not a measurable instruction: they give
// an *Error, never an Insn and never a panic.
func TestErrors(t *testing.T) {
	tests := errorTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in, err := Decode(hx(t, tt.code), pc)
			require.Error(t, err)
			assert.Nil(t, in)
			var de *Error
			require.True(t, errors.As(err, &de), "%T is not *Error", err)
			assert.Equal(t, uint64(pc), de.Addr)
			assert.Contains(t, de.Why, tt.why)
			assert.Equal(t, tt.truncated, de.Truncated)
			assert.Contains(t, err.Error(), "0x7f0000401000")
		})
	}
}

var rejectTests = []struct {
	code string
	why  string
}{
	{"cc", "int3"},
	{"cd 80", "software interrupt"},
	{"cd 03", "int3"},
	{"f1", "int1"},
	{"ce", "invalid in 64-bit"},
	{"06", "push es"},
	{"07", "pop es"},
	{"0e", "invalid in 64-bit"},
	{"16", "invalid in 64-bit"},
	{"17", "pop ss"},
	{"1e", "invalid in 64-bit"},
	{"1f", "invalid in 64-bit"},
	{"27", "daa"},
	{"2f", "invalid in 64-bit"},
	{"37", "invalid in 64-bit"},
	{"3f", "invalid in 64-bit"},
	{"60", "pusha"},
	{"61", "popa"},
	{"82 c0 01", "invalid in 64-bit"},
	{"9a 00 00 00 00 00 00", "call far"},
	{"ea 00 00 00 00 00 00", "jmp far"},
	{"d4 0a", "aam"},
	{"d6", "salc"},
	{"f4", "privileged"},
	{"fa", "privileged"},
	{"fb", "privileged"},
	{"0f 01 10", "privileged"},       // lgdt [rax]
	{"0f 01 18", "privileged"},       // lidt [rax]
	{"0f 01 00", "system"},           // sgdt [rax]
	{"0f 00 d0", "privileged"},       // lldt ax
	{"0f 00 d8", "privileged"},       // ltr ax
	{"0f 01 f0", "privileged"},       // lmsw ax
	{"0f 01 38", "privileged"},       // invlpg [rax]
	{"0f 22 d8", "control or debug"}, // mov cr3, rax
	{"0f 20 d8", "control or debug"}, // mov rax, cr3
	{"0f 23 c0", "control or debug"}, // mov dr0, rax
	{"0f 21 c0", "control or debug"}, // mov rax, dr0
	{"0f 32", "privileged"},          // rdmsr
	{"0f 30", "privileged"},          // wrmsr
	{"0f 08", "privileged"},          // invd
	{"0f 09", "privileged"},          // wbinvd
	{"0f 01 f8", "privileged"},       // swapgs
	{"0f 07", "privileged"},          // sysret
	{"48 0f 07", "privileged"},       // sysretq
	{"0f 35", "privileged"},          // sysexit
	{"0f 34", "privileged"},          // sysenter
	{"0f 06", "privileged"},          // clts
	{"0f aa", "privileged"},          // rsm
	{"0f 01 d1", "privileged"},       // xsetbv
	{"0f 01 ca", "privileged"},       // clac (unknown to x86asm)
	{"0f 01 cb", "privileged"},       // stac
	{"0f 01 c1", "privileged"},       // vmcall
	{"0f 78 c0", "VMX"},              // vmread
	{"0f c7 30", "VMX"},              // vmptrld [rax]
	{"66 0f 38 82 00", "privileged"}, // invpcid
	{"e4 80", "port I/O"},
	{"e5 80", "port I/O"},
	{"e6 80", "port I/O"},
	{"e7 80", "port I/O"},
	{"ec", "port I/O"},
	{"ed", "port I/O"},
	{"ee", "port I/O"},
	{"ef", "port I/O"},
	{"6c", "port I/O"},
	{"6d", "port I/O"},
	{"6e", "port I/O"},
	{"6f", "port I/O"},
	{"f3 6e", "port I/O"},
	{"8e d8", "segment register"},    // mov ds, ax
	{"8e d0", "segment register"},    // mov ss, ax
	{"8e 20", "segment register"},    // mov fs, [rax]
	{"0f a1", "segment register"},    // pop fs
	{"0f a9", "segment register"},    // pop gs
	{"0f b2 00", "segment register"}, // lss
	{"0f b4 00", "segment register"}, // lfs
	{"0f b5 00", "segment register"}, // lgs
	{"ff 28", "far"},                 // jmp far [rax]
	{"ff 18", "far"},                 // call far [rax]
	{"cb", "far"},                    // retf
	{"ca 08 00", "far"},              // retf 8
	{"48 cb", "far"},                 // retfq
	{"cf", "far"},                    // iret
	{"48 cf", "far"},                 // iretq
	{"9d", "trap flag"},              // popfq
	{"66 9d", "trap flag"},           // popfw
	{"0f 0b", "undefined instruction"},
	{"0f b9 c0", "undefined instruction"},
	{"0f ff c0", "undefined instruction"},
	{"c7 f8 00 00 00 00", "transaction"},
	{"67 8b 05 00 00 00 00", "eip-relative"},
	{"67 48 8d 05 00 00 00 00", "eip-relative"},
	{"67 c4 e2 78 f2 05 00 00 00 00", "eip-relative"}, // andn, by the tables when x86asm refuses 67 before VEX
	{"67 66 0f 38 f6 05 00 00 00 00", "eip-relative"}, // unknown to x86asm
	{"f0 90", "cannot be locked"},
	{"f0 66 0f 38 f6 c1", "cannot be locked"}, // lock adcx (unknown to x86asm)
	{"f0 01 c0", "cannot be locked"},          // lock add eax, eax: register destination
	{"f0 8b 00", "cannot be locked"},          // lock mov
	{"f0 66 0f e2 00", "cannot be locked"},
	{"66 c3", "66"},
	{"66 74 00", "66"},
	{"66 ff e0", "66"},
	{"66 ff d0", "66"},
}

// TestReject checks every class of refused instruction.
func TestReject(t *testing.T) {
	tests := rejectTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			assert.Equal(t, Refused, in.Verdict, "%v: %s", in.Verdict, in.Reason)
			assert.Contains(t, in.Reason, tt.why)
			assert.Equal(t, len(hx(t, tt.code)), in.Len)
			assert.NotContains(t, in.Reason, "unknown to the disassembler", "the reason names the instruction")
		})
	}
}

// TestRel8EmulateOnly checks that jrcxz, jecxz and loop*, whose rel8 cannot
// reach from the out-of-line area, are left to an emulator.
func TestRel8EmulateOnly(t *testing.T) {
	for _, code := range []string{"e3 10", "67 e3 10", "e2 10", "e1 10", "e0 10", "74 10", "eb 10"} {
		t.Run(code, func(t *testing.T) {
			in := mustDecode(t, code)
			require.Equal(t, EmulateOnly, in.Verdict, "a rel8 branch cannot run from a copy")
			assert.NotEmpty(t, in.Reason)
		})
	}
}

var lockTests = []struct {
	code string
	lock bool
}{
	{"f0 83 00 01", true},    // lock add dword [rax], 1
	{"f0 48 0f c1 0b", true}, // lock xadd [rbx], rcx
	{"f0 48 0f b1 0d 10 00 00 00", true},
	{"f0 ff 00", true},  // lock inc dword [rax]
	{"87 03", true},     // xchg [rbx], eax: implicitly locked
	{"48 87 18", true},  // xchg [rax], rbx
	{"86 03", true},     // xchg [rbx], al
	{"48 87 c8", false}, // xchg rax, rcx
	{"90", false},
	{"01 00", false},       // add [rax], eax
	{"48 0f c1 0b", false}, // xadd without lock
}

// TestLock checks that locked instructions run from a copy, which the CPU
// runs atomically.
func TestLock(t *testing.T) {
	tests := lockTests

	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			in := mustDecode(t, tt.code)
			assert.Equal(t, tt.lock, in.Lock)
			if tt.lock {
				assert.Equal(t, CanRun, in.Verdict)
				assert.Contains(t, in.Reason, "lock")
			}
		})
	}
}

// TestSyscall checks that syscall runs out of line with the rcx note.
func TestSyscall(t *testing.T) {
	in := mustDecode(t, "0f 05")
	assert.Equal(t, x86asm.SYSCALL, in.Op)
	assert.Equal(t, CanRun, in.Verdict)
	assert.Contains(t, in.Reason, "rcx")
	assert.Equal(t, uint16(0xffff), in.Uses)
}

// TestVerdictRule checks, over every instruction of the tables above, that
// every refusal says why, and that only relative branches and rip-relative
// operands (whose copy cannot be relocated with certainty) are left to an
// emulator alone.
func TestVerdictRule(t *testing.T) {
	for _, code := range allCases() {
		in, err := Decode(hx(t, code), pc)
		if err != nil {
			continue
		}
		assert.NotEmpty(t, in.String(), code)
		switch in.Verdict {
		case Refused:
			assert.NotEmpty(t, in.Reason, code)
		case EmulateOnly:
			assert.NotEmpty(t, in.Reason, code)
			rel := in.Flow == FlowJump || in.Flow == FlowCondJump || in.Flow == FlowCall
			assert.True(t, rel || in.RIPRel, "%s: %s", code, in)
		case CanRun:
			if in.Lock {
				assert.Contains(t, in.Reason, "lock", code)
			}
		default:
			t.Errorf("%s: verdict %v", code, in.Verdict)
		}
	}
}

// TestTruncationEverywhere cuts every table case at every length: each
// strict prefix of an instruction is a truncation error, never an Insn and
// never a panic. Trailing bytes never change an instruction's length.
func TestTruncationEverywhere(t *testing.T) {
	n := 0
	for _, code := range allCases() {
		b := hx(t, code)
		full, err := Decode(b, pc)
		if err != nil {
			continue
		}
		for k := 0; k < full.Len; k++ {
			in, err := Decode(b[:k], pc)
			require.Error(t, err, "%s cut at %d decoded as %v", code, k, in)
			var de *Error
			require.True(t, errors.As(err, &de))
			assert.True(t, de.Truncated, "%s cut at %d: %v", code, k, err)
			n++
		}
		long := append(append([]byte(nil), b[:full.Len]...), 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f)
		in, err := Decode(long, pc)
		require.NoError(t, err, code)
		assert.Equal(t, full.Len, in.Len, code)
	}
	assert.Greater(t, n, 500)
}

// allCases gathers the instruction bytes of every table in this file.
func allCases() []string {
	var out []string
	for _, tt := range normTests {
		out = append(out, tt.code)
	}
	for _, tt := range ripTests {
		out = append(out, tt.code)
	}
	for _, tt := range branchTests {
		out = append(out, tt.code)
	}
	for _, tt := range unknownTests {
		out = append(out, tt.code)
	}
	for _, tt := range lengthTests {
		out = append(out, tt.code)
	}
	for _, tt := range strayREXTests {
		out = append(out, tt.code)
	}
	for _, tt := range wideTests {
		out = append(out, tt.code)
	}
	for _, tt := range rejectTests {
		out = append(out, tt.code)
	}
	for _, tt := range lockTests {
		out = append(out, tt.code)
	}
	for _, tt := range errorTests {
		out = append(out, tt.code)
	}
	return out
}

// TestString checks the Intel-syntax rendering, including the forms x86asm
// does not format itself.
func TestString(t *testing.T) {
	for _, tt := range []struct{ code, want string }{
		{"55", "push rbp"},
		{"48 83 ec 08", "sub rsp, 0x8"},
		{"48 8b 05 f0 ff ff ff", "mov rax, qword ptr [rip-0x10]"},
		{"c5 fa 6f 05 f0 ff ff ff", "vmovdqu xmm0, xmmword ptr [rip-0x10]"},
		{"64 48 8b 04 25 28 00 00 00", "mov rax, qword ptr fs:[0x28]"},
		{"e9 fb ff ff ff", "jmp 0x7f0000401000"},
		{"f3 0f 1e fa", "endbr64"},
		{"f3 0f 1e fb", "endbr32"},
		{"17", "pop ss"},
		{"66 0f 38 f6 c1", "(unknown to the disassembler) 66 0f 38 f6 c1"},
	} {
		t.Run(tt.code, func(t *testing.T) {
			assert.Equal(t, tt.want, mustDecode(t, tt.code).String())
		})
	}
	var nilInsn *Insn
	assert.Equal(t, "<nil>", nilInsn.String())
}
