package fuzz

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

// TestAimSolvesTheAddress checks that aimAt sets the registers of a memory
// operand so that the operand names the target (give or take the few bytes a
// scale or a register used twice forces), for every way an address is built.
func TestAimSolvesTheAddress(t *testing.T) {
	g := &Gen{R: rand.New(rand.NewPCG(3, 4))}
	mems := []decode.Mem{
		{Base: x86asm.RAX, Scale: 1, AddrSize: 8},
		{Base: x86asm.R13, Disp: -0x80, Scale: 1, AddrSize: 8},
		{Index: x86asm.R12, Scale: 8, Disp: 0x12345678, AddrSize: 8},
		{Base: x86asm.RBX, Index: x86asm.RSI, Scale: 4, Disp: 7, AddrSize: 8},
		{Base: x86asm.RCX, Index: x86asm.RCX, Scale: 1, AddrSize: 8},
		{Base: x86asm.RCX, Index: x86asm.RCX, Scale: 2, AddrSize: 8},
		{Base: x86asm.R9, Index: x86asm.R9, Scale: 8, Disp: -3, AddrSize: 8},
		{Base: x86asm.EDX, Index: x86asm.EDI, Scale: 2, Disp: -0x1000, AddrSize: 4},
		{Base: x86asm.EDX, Index: x86asm.EDX, Scale: 4, AddrSize: 4},
		{Seg: x86asm.FS, Base: x86asm.RAX, Scale: 1, AddrSize: 8},
		{Seg: x86asm.GS, Base: x86asm.EAX, Index: x86asm.EBP, Scale: 8, AddrSize: 4},
		{Seg: x86asm.GS, Disp: 0x40, Scale: 1, AddrSize: 8},
	}
	for _, m := range mems {
		t.Run(fmt.Sprintf("%+v", m), func(t *testing.T) {
			solved := 0
			for i := 0; i < 500; i++ {
				var r regs.Regs
				for j := range r.GPR {
					r.GPR[j] = g.Value()
				}
				r.FSBase, r.GSBase = g.userAddr(), g.userAddr()
				target := g.target(8)
				got, ok := g.aimAt(&m, target, &r, 0)
				if !ok {
					continue
				}
				solved++
				require.Less(t, got-target+8, uint64(16), "target %#x moved to %#x", target, got)
				require.Equal(t, got, effAddr(&m, &r), "target %#x, registers %s", target, r.String())
			}
			assert.Greater(t, solved, 400, "most targets are reachable")
		})
	}
}

// TestAimKeepsFixedRegisters checks that a stack pointer chosen for a push
// is not moved to aim a memory operand based on it.
func TestAimKeepsFixedRegisters(t *testing.T) {
	g := &Gen{R: rand.New(rand.NewPCG(5, 6))}
	m := decode.Mem{Base: x86asm.RSP, Index: x86asm.RAX, Scale: 4, Disp: 8, AddrSize: 8}
	var r regs.Regs
	r.GPR[regs.RSP] = DataAddr + 0x800
	got, ok := g.aimAt(&m, DataAddr+0x100, &r, 1<<regs.RSP)
	require.True(t, ok)
	assert.Equal(t, DataAddr+0x800, r.GPR[regs.RSP])
	assert.Equal(t, uint64(DataAddr+0x100), got)
	assert.Equal(t, got, effAddr(&m, &r), "the index takes up the difference")
}
