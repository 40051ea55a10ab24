package ptrace

import (
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

// How a rip-relative instruction is relocated into a slot: a new disp32 when
// its target is within reach of the slot, else ModRM rewritten to a scratch
// register (the copy is read back from the tracee's XOL area).
func TestSlotRelocation(t *testing.T) {
	cmd := child("calls", "N=1")
	cmd.Stdout = io.Discard
	p := start(t, cmd)
	_, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCpuid), OutOfLine, nil)
	require.NoError(t, err)
	base, _ := p.XOL()
	require.NotZero(t, base)
	near := base - 0x100000
	far := base + 3<<30 // the area is placed near the module: this is out of its reach

	cases := []struct {
		name    string
		code    []byte
		addr    uint64
		err     string
		scratch int    // -1: displacement rewritten
		modrm   byte   // expected ModRM in the slot
		uses    uint16 // to override decode's Uses when nonzero
	}{
		{"48 8b 05: mov rax,[rip+0x1000], near", []byte{0x48, 0x8b, 0x05, 0, 0x10, 0, 0}, near, "", -1, 0x05, 0},
		{"48 8b 05: mov rax,[rip+0x1000], far", []byte{0x48, 0x8b, 0x05, 0, 0x10, 0, 0}, far, "", regs.RBX, 0x83, 0},
		{"48 8b 1d: mov rbx,[rip+0x1000], far", []byte{0x48, 0x8b, 0x1d, 0, 0x10, 0, 0}, far, "", regs.RSI, 0x9e, 0},
		{"49 8b 05: REX.B mov rax,[rip+0x1000], far", []byte{0x49, 0x8b, 0x05, 0, 0x10, 0, 0}, far, "", regs.R11, 0x83, 0},
		{"48 8b 05: registers used unknown, far", []byte{0x48, 0x8b, 0x05, 0, 0x10, 0, 0}, far, "unknown", 0, 0, 0xffff},
		{"48 8b 05: every candidate used, far", []byte{0x48, 0x8b, 0x05, 0, 0x10, 0, 0}, far, "no free scratch", 0, 0, 1<<regs.RBX | 1<<regs.RSI | 1<<regs.RDI | 1<<regs.RBP | 1},
		{"c5 fa 6f 05: vmovdqu xmm0,[rip+0x1000], far", []byte{0xc5, 0xfa, 0x6f, 0x05, 0, 0x10, 0, 0}, far, "VEX", 0, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, err := decode.Decode(c.code, c.addr)
			require.NoError(t, err)
			require.True(t, in.RIPRel)
			if c.uses != 0 {
				in.Uses = c.uses
			}
			s := &site{addr: c.addr, insn: in, strategy: OutOfLine, scratch: -1}
			got := make([]byte, len(c.code))
			err = p.t.do(func() error {
				if err := p.t.prepareSlot(p, p.xol, s, false); err != nil {
					return err
				}
				_, err := p.mem.ForceReadAt(got, int64(s.slot))
				return err
			})
			if c.err != "" {
				assert.ErrorContains(t, err, c.err)
				assert.Zero(t, s.slot)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.scratch, s.scratch)
			assert.Equal(t, c.modrm, got[in.ModRMOff])
			disp := int64(int32(binary.LittleEndian.Uint32(got[in.DispOff:])))
			if c.scratch < 0 {
				assert.Equal(t, in.Target, s.slot+uint64(in.Len)+uint64(disp), "the slot's operand names the same target")
			} else {
				assert.Equal(t, in.Target, in.Next()+uint64(disp), "scratch (the next address) + disp is the target")
			}
			assert.Equal(t, c.code[:in.ModRMOff], got[:in.ModRMOff], "prefixes and opcode unchanged")
		})
	}
}

// The jump back from a boosted copy: jmp rel32 (e9) within ±2GB, else
// jmp [rip+0] (ff 25 00 00 00 00) followed by the absolute target.
func TestJumpBack(t *testing.T) {
	cases := []struct {
		name         string
		from, target uint64
		want         []byte
	}{
		{"e9: forward", 0x1000, 0x2000, []byte{0xe9, 0xfb, 0x0f, 0, 0}},
		{"e9: backward", 0x400000, 0x3f0000, []byte{0xe9, 0xfb, 0xff, 0xfe, 0xff}},
		{"ff 25: beyond 2GB", 0x7f0000000000, 0x400000,
			[]byte{0xff, 0x25, 0, 0, 0, 0, 0x00, 0x00, 0x40, 0, 0, 0, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b [slotSize]byte
			n := jumpBack(b[:], c.from, c.target)
			assert.Equal(t, c.want, b[:n])
		})
	}
}

// A boosted slot far from its instruction ends with the absolute jump, and
// a rip-relative instruction out of reach of the slot is not boosted.
func TestBoostSlotFar(t *testing.T) {
	cmd := child("calls", "N=1")
	cmd.Stdout = io.Discard
	p := start(t, cmd)
	_, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCpuid), Boost, nil)
	require.NoError(t, err)
	base, _ := p.XOL()
	far := base + 3<<30
	push, err := decode.Decode([]byte{0x55}, far)
	require.NoError(t, err)
	rip, err := decode.Decode([]byte{0x48, 0x8b, 0x05, 0, 0x10, 0, 0}, far)
	require.NoError(t, err)
	ps := &site{addr: far, insn: push, scratch: -1}
	rs := &site{addr: far, insn: rip, scratch: -1}
	got := make([]byte, 15)
	require.NoError(t, p.t.do(func() error {
		if err := p.t.prepareSlot(p, p.xol, ps, true); err != nil {
			return err
		}
		if err := p.t.prepareSlot(p, p.xol, rs, true); err != nil {
			return err
		}
		_, err := p.mem.ForceReadAt(got, int64(ps.slot))
		return err
	}))
	assert.True(t, ps.boosted, "push rbp (55)")
	want := []byte{0x55, 0xff, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint64(want[7:], far+1)
	assert.Equal(t, want, got)
	assert.False(t, rs.boosted, "mov rax,[rip+0x1000] (48 8b 05) out of reach")
	assert.Equal(t, regs.RBX, rs.scratch, "stepped with a scratch register instead")
}
