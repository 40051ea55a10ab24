package decode

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

// strayREXTests are instructions with a REX prefix that a legacy prefix
// follows. The CPU ignores such a REX (the lengths here were measured on the
// CPU with fuzz.Oracle), so the operands must not see its bits.
var strayREXTests = []struct {
	code    string
	op      x86asm.Op
	args    []Arg
	verdict Verdict
}{
	{"48 66 90", x86asm.NOP, nil, CanRun},
	{"41 66 90", x86asm.NOP, nil, CanRun}, // not xchg r8w, ax
	{"48 66 b8 01 00", x86asm.MOV, []Arg{reg(x86asm.AX, 2), imm(1, 2)}, CanRun},
	{"4c 2e 8b 00", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Base: x86asm.RAX})}, CanRun},
	{"41 64 8b 03", x86asm.MOV, []Arg{reg(x86asm.EAX, 4), mem(4, Mem{Seg: x86asm.FS, Base: x86asm.RBX})}, CanRun},
	{"48 66 48 8b 00", x86asm.MOV, []Arg{reg(x86asm.RAX, 8), mem(8, Mem{Base: x86asm.RAX})}, CanRun}, // the second REX counts
	{"41 66 50", x86asm.PUSH, []Arg{reg(x86asm.AX, 2)}, CanRun},                                      // push ax, not r8w
	{"48 f3 90", x86asm.PAUSE, nil, CanRun},
	{"4c 66 89 05 10 00 00 00", x86asm.MOV, []Arg{mem(2, Mem{Disp: pc + 8 + 0x10}), reg(x86asm.AX, 2)}, EmulateOnly},
	// Rip-relative: a relocated copy would take the ignored REX.B for the
	// scratch register's, so only an emulator may run them.
	{"41 66 0f 10 05 00 00 00 00", x86asm.MOVUPD, nil, EmulateOnly},
	{"41 66 0f 38 f6 05 00 00 00 00", 0, nil, EmulateOnly}, // adcx, unknown to x86asm
	{"41 f3 0f 1e fa", 0, nil, CanRun},                     // endbr64 behind a REX: left to the CPU
}

// TestStrayREX checks lengths, operands and verdicts of instructions whose REX
// is followed by a legacy prefix.
func TestStrayREX(t *testing.T) {
	for _, tt := range strayREXTests {
		t.Run(tt.code, func(t *testing.T) {
			code := hx(t, tt.code)
			in := mustDecode(t, tt.code)
			assert.Equal(t, len(code), in.Len)
			assert.Equal(t, tt.op, in.Op)
			assert.Equal(t, tt.verdict, in.Verdict, in.Reason)
			for i, a := range tt.args {
				assert.Equal(t, a, in.Args[i], "operand %d", i)
			}
			if tt.args != nil {
				assert.Equal(t, ArgNone, in.Args[len(tt.args)].Kind)
			}
			if in.RIPRel {
				assert.Equal(t, in.Next()+uint64(int32(code[in.DispOff])|int32(code[in.DispOff+1])<<8|int32(code[in.DispOff+2])<<16|int32(code[in.DispOff+3])<<24), in.Target)
				if in.Inst.PCRel != 0 {
					assert.Equal(t, in.DispOff, in.Inst.PCRelOff, "x86asm's offset, moved back to the bytes as they are")
				}
			}
			if tt.verdict == EmulateOnly && in.RIPRel {
				assert.Contains(t, in.Reason, "ignored REX")
				assert.NotContains(t, in.Reason, "unknown to the disassembler")
			}
		})
	}
}

// wideTests are the forms whose REX.W, right before the opcode, sets their
// operand size whatever precedes it: NOP r/m64 (which x86asm does not decode) and relative branches
// whose REX.W overrides 66 (the general-dynamic TLS call is 66 66 48 e8).
var wideTests = []struct {
	code    string
	op      x86asm.Op
	verdict Verdict
	flow    Flow
	disp    int64 // branch target minus the next instruction's address
}{
	{"48 0f 1f 00", x86asm.NOP, CanRun, FlowNone, 0},
	{"48 0f 1f c0", x86asm.NOP, CanRun, FlowNone, 0},
	{"66 48 0f 1f 84 00 00 00 00 00", x86asm.NOP, CanRun, FlowNone, 0},
	{"4d 0f 1f 84 24 00 00 00 00", x86asm.NOP, CanRun, FlowNone, 0},
	{"66 48 0f 1f 05 00 00 00 00", x86asm.NOP, CanRun, FlowNone, 0},
	{"41 66 4c 0f 1f 00", x86asm.NOP, CanRun, FlowNone, 0}, // ignored REX.B, REX.WR right before
	{"f3 48 0f 1f 00", x86asm.NOP, CanRun, FlowNone, 0},    // f3 0f 1f is not documented as a NOP
	{"f0 48 0f 1f 00", x86asm.NOP, Refused, FlowNone, 0},
	{"48 0f 1f 08", 0, CanRun, FlowNone, 0}, // 0f 1f /1: hint space
	{"66 66 48 e8 00 00 00 00", x86asm.CALL, EmulateOnly, FlowCall, 0},
	{"66 66 48 e8 f0 ff ff ff", x86asm.CALL, EmulateOnly, FlowCall, -0x10},
	{"66 48 e9 00 01 00 00", x86asm.JMP, EmulateOnly, FlowJump, 0x100},
	{"66 48 0f 84 00 01 00 00", x86asm.JE, EmulateOnly, FlowCondJump, 0x100},
	{"66 48 74 10", x86asm.JE, EmulateOnly, FlowCondJump, 0x10},
	{"f2 66 66 48 e8 00 00 00 00", x86asm.CALL, EmulateOnly, FlowCall, 0}, // bnd
	{"66 48 e3 10", x86asm.JRCXZ, EmulateOnly, FlowCondJump, 0x10},        // 66 on jrcxz is left alone
	{"66 48 e2 10", x86asm.LOOP, EmulateOnly, FlowCondJump, 0x10},
	{"66 48 ff d0", x86asm.CALL, CanRun, FlowIndirectCall, 0}, // only relative branches
}

// TestWide checks the REX.W forms, each of the CPU's length.
func TestWide(t *testing.T) {
	for _, tt := range wideTests {
		t.Run(tt.code, func(t *testing.T) {
			code := hx(t, tt.code)
			in := mustDecode(t, tt.code)
			require.Equal(t, len(code), in.Len)
			assert.Equal(t, tt.op, in.Op)
			assert.Equal(t, tt.verdict, in.Verdict, in.Reason)
			assert.Equal(t, tt.flow, in.Flow)
			if in.Flow == FlowCall || in.Flow == FlowJump || in.Flow == FlowCondJump {
				assert.Equal(t, rel(in.Next()+uint64(tt.disp)), in.Args[0], "64-bit target")
			}
			if tt.op == x86asm.NOP && in.Inst.Op == x86asm.NOP && code[0] != 0xf3 && code[0] != 0xf0 {
				assert.Equal(t, ArgNone, in.Args[1].Kind, "one operand")
				assert.Equal(t, 64, in.Inst.DataSize)
				if in.Args[0].Kind == ArgReg {
					assert.Equal(t, x86asm.RAX, in.Args[0].Reg)
				} else {
					assert.Equal(t, uint8(8), in.Args[0].Size)
				}
			}
		})
	}
}
