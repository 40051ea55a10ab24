package regs

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// distinctPtrace fills every field of a PtraceRegs with a different value,
// so that a field dropped or swapped by a conversion shows.
func distinctPtrace() unix.PtraceRegs {
	var p unix.PtraceRegs
	v := reflect.ValueOf(&p).Elem()
	for i := 0; i < v.NumField(); i++ {
		v.Field(i).SetUint(0x1111111111111111 * uint64(i+1))
	}
	return p
}

func TestPtraceRoundTripIsLossless(t *testing.T) {
	p := distinctPtrace()
	r := FromPtrace(&p)
	back := r.Ptrace()
	require.Equal(t, p, back)

	assert.Equal(t, p.Rax, r.GPR[RAX])
	assert.Equal(t, p.Rsp, r.GPR[RSP])
	assert.Equal(t, p.R15, r.GPR[R15])
	assert.Equal(t, p.Rip, r.RIP)
	assert.Equal(t, p.Eflags, r.RFLAGS)
	assert.Equal(t, p.Fs_base, r.FSBase)
	assert.Equal(t, p.Gs_base, r.GSBase)
}

func TestGetEveryWidth(t *testing.T) {
	var r Regs
	for i := range r.GPR {
		r.GPR[i] = 0x8877665544332211 + uint64(i)<<56
	}
	for i := 0; i < 16; i++ {
		full := r.GPR[i]
		assert.Equal(t, full, r.Get(x86asm.RAX+x86asm.Reg(i)))
		assert.Equal(t, full&0xffffffff, r.Get(x86asm.EAX+x86asm.Reg(i)))
		assert.Equal(t, full&0xffff, r.Get(x86asm.AX+x86asm.Reg(i)))
	}
	// Low bytes in x86asm's order: AL CL DL BL, then SPB..R15B for 4..15.
	assert.Equal(t, r.GPR[RAX]&0xff, r.Get(x86asm.AL))
	assert.Equal(t, r.GPR[RBX]&0xff, r.Get(x86asm.BL))
	assert.Equal(t, r.GPR[RSP]&0xff, r.Get(x86asm.SPB))
	assert.Equal(t, r.GPR[RDI]&0xff, r.Get(x86asm.DIB))
	assert.Equal(t, r.GPR[R15]&0xff, r.Get(x86asm.R15B))
	// High bytes.
	assert.Equal(t, r.GPR[RAX]>>8&0xff, r.Get(x86asm.AH))
	assert.Equal(t, r.GPR[RCX]>>8&0xff, r.Get(x86asm.CH))
	assert.Equal(t, r.GPR[RDX]>>8&0xff, r.Get(x86asm.DH))
	assert.Equal(t, r.GPR[RBX]>>8&0xff, r.Get(x86asm.BH))

	r.RIP = 0x401000
	assert.Equal(t, uint64(0x401000), r.Get(x86asm.RIP))
	assert.Zero(t, r.Get(x86asm.X0), "a vector register is not in the file")
}

func TestSetFollowsX86Rules(t *testing.T) {
	const all = ^uint64(0)
	cases := []struct {
		reg  x86asm.Reg
		v    uint64
		want uint64 // resulting full register, starting from all ones
	}{
		{x86asm.RAX, 0x0123456789abcdef, 0x0123456789abcdef},
		{x86asm.EAX, 0x12345678, 0x0000000012345678}, // 32-bit write zero-extends
		{x86asm.R9L, 0xdeadbeefcafe, 0x00000000beefcafe},
		{x86asm.AX, 0x1234, 0xffffffffffff1234}, // 16-bit write merges
		{x86asm.R12W, 0xabcd, 0xffffffffffffabcd},
		{x86asm.AL, 0x12, 0xffffffffffffff12}, // 8-bit write merges
		{x86asm.AH, 0x12, 0xffffffffffff12ff},
		{x86asm.BH, 0x00, 0xffffffffffff00ff},
		{x86asm.SIB, 0x34, 0xffffffffffffff34},
		{x86asm.R15B, 0x00, 0xffffffffffffff00},
	}
	for _, c := range cases {
		var r Regs
		for i := range r.GPR {
			r.GPR[i] = all
		}
		r.Set(c.reg, c.v)
		idx, ok := Index(c.reg)
		require.True(t, ok, "%v", c.reg)
		assert.Equal(t, c.want, r.GPR[idx], "Set(%v, %#x)", c.reg, c.v)
		for i := range r.GPR {
			if i != idx {
				assert.Equal(t, all, r.GPR[i], "Set(%v) touched GPR %d", c.reg, i)
			}
		}
	}
}

func TestSetRIPAndRejectsOthers(t *testing.T) {
	var r Regs
	r.Set(x86asm.RIP, 0x7000)
	assert.Equal(t, uint64(0x7000), r.RIP)
	assert.Panics(t, func() { r.Set(x86asm.X3, 1) })
	assert.Panics(t, func() { r.Set(x86asm.FS, 1) })
}

func TestSizeIndexHigh8(t *testing.T) {
	assert.Equal(t, 8, Size(x86asm.R13))
	assert.Equal(t, 4, Size(x86asm.R13L))
	assert.Equal(t, 2, Size(x86asm.R13W))
	assert.Equal(t, 1, Size(x86asm.R13B))
	assert.Equal(t, 1, Size(x86asm.AH))
	assert.Equal(t, 0, Size(x86asm.RIP))
	assert.Equal(t, 0, Size(x86asm.X0))

	i, ok := Index(x86asm.BPB)
	assert.True(t, ok)
	assert.Equal(t, RBP, i)
	i, ok = Index(x86asm.CH)
	assert.True(t, ok)
	assert.Equal(t, RCX, i)
	_, ok = Index(x86asm.CS)
	assert.False(t, ok)

	for _, g := range []x86asm.Reg{x86asm.AH, x86asm.CH, x86asm.DH, x86asm.BH} {
		assert.True(t, IsHigh8(g), "%v", g)
	}
	for _, g := range []x86asm.Reg{x86asm.AL, x86asm.SPB, x86asm.R8B, x86asm.AX, x86asm.RAX} {
		assert.False(t, IsHigh8(g), "%v", g)
	}
}

func TestFlags(t *testing.T) {
	var r Regs
	r.SetFlag(ZF, true)
	r.SetFlag(CF, true)
	assert.True(t, r.Flag(ZF))
	assert.True(t, r.Flag(CF))
	assert.False(t, r.Flag(OF))
	assert.Equal(t, ZF|CF, r.RFLAGS)
	r.SetFlag(ZF, false)
	assert.Equal(t, CF, r.RFLAGS)
}

func BenchmarkGetSet(b *testing.B) {
	var r Regs
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Set(x86asm.R10L, r.Get(x86asm.AH)+uint64(i))
	}
}
