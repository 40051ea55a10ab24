package ptrace

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/regs"
)

// scratchFor reads only the REX right before the opcode: one that a legacy
// prefix follows is ignored by the CPU, and must not pick r8-r15; a VEX
// behind any prefixes is refused.
func TestScratchForPrefixes(t *testing.T) {
	cases := []struct {
		name string
		code []byte
		want int    // the scratch register, when err is empty
		err  string // part of the error
	}{
		{"8b 05: mov eax,[rip]", []byte{0x8b, 0x05, 0, 0x10, 0, 0}, regs.RBX, ""},
		{"41 8b 05: REX.B mov eax,[rip]", []byte{0x41, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.R11, ""},
		{"66 41 8b 05: 66 then REX.B", []byte{0x66, 0x41, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.R11, ""},
		{"41 66 8b 05: REX.B ignored behind 66", []byte{0x41, 0x66, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.RBX, ""},
		{"49 64 8b 05: REX.WB ignored behind fs", []byte{0x49, 0x64, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.RBX, ""},
		{"41 66 41 8b 05: the last REX counts", []byte{0x41, 0x66, 0x41, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.R11, ""},
		{"40 41 8b 05: two REX, the last counts", []byte{0x40, 0x41, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.R11, ""},
		{"41 40 8b 05: two REX, the last has no B", []byte{0x41, 0x40, 0x8b, 0x05, 0, 0x10, 0, 0}, regs.RBX, ""},
		{"c5 fa 6f 05: vmovdqu", []byte{0xc5, 0xfa, 0x6f, 0x05, 0, 0x10, 0, 0}, 0, "VEX"},
		{"41 c5 fa 6f 05: vmovdqu behind a REX", []byte{0x41, 0xc5, 0xfa, 0x6f, 0x05, 0, 0x10, 0, 0}, 0, "VEX"},
		{"66 41 c4 e1 7a 6f 05: VEX3 behind 66 REX", []byte{0x66, 0x41, 0xc4, 0xe1, 0x7a, 0x6f, 0x05, 0, 0x10, 0, 0}, 0, "VEX"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Built by hand: the decoder refuses some of these forms.
			in := &decode.Insn{Addr: 0x401000, Len: len(c.code), RIPRel: true, Uses: 1 << regs.RAX}
			copy(in.Bytes[:], c.code)
			got, err := scratchFor(in)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}
