package emu_test

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// TestSupportsPrefixForms checks what becomes of the forms whose meaning
// hangs on a prefix the operands do not show: a REX that a legacy prefix
// makes the CPU ignore, and a REX.W right before the opcode that overrides
// 66. Each is emulated, run from a copy, or refused.
func TestSupportsPrefixForms(t *testing.T) {
	for _, tt := range []struct{ code, want string }{
		{"48 66 90", "emulate"},
		{"41 66 90", "emulate"}, // not xchg r8w, ax
		{"48 66 b8 01 00", "emulate"},
		{"4c 2e 8b 00", "emulate"},
		{"41 64 8b 03", "emulate"},
		{"48 66 48 8b 00", "emulate"},
		{"41 66 50", "outofline"}, // push ax, not r8w
		{"48 f3 90", "outofline"},
		{"4c 66 89 05 10 00 00 00", "emulate"},
		{"41 66 0f 10 05 00 00 00 00", "reject"},    // rip-relative behind an ignored REX, not emulated
		{"41 66 0f 38 f6 05 00 00 00 00", "reject"}, // the same, unknown to x86asm
		{"41 f3 0f 1e fa", "outofline"},             // endbr64 behind a REX
		{"48 0f 1f 00", "emulate"},
		{"48 0f 1f c0", "emulate"},
		{"66 48 0f 1f 84 00 00 00 00 00", "emulate"},
		{"4d 0f 1f 84 24 00 00 00 00", "emulate"},
		{"66 48 0f 1f 05 00 00 00 00", "emulate"},
		{"41 66 4c 0f 1f 00", "emulate"},
		{"f3 48 0f 1f 00", "outofline"}, // f3 0f 1f is not documented as a NOP
		{"f0 48 0f 1f 00", "reject"},
		{"48 0f 1f 08", "outofline"}, // 0f 1f /1: hint space
		{"66 66 48 e8 00 00 00 00", "emulate"},
		{"66 48 e9 00 01 00 00", "emulate"},
		{"66 48 0f 84 00 01 00 00", "emulate"},
		{"66 48 74 10", "emulate"},
		{"f2 66 66 48 e8 00 00 00 00", "emulate"}, // bnd
		{"66 48 e3 10", "reject"},                 // 66 on jrcxz is left alone, and a copy cannot branch
		{"66 48 e2 10", "reject"},
		{"66 48 ff d0", "outofline"}, // only relative branches
	} {
		t.Run(tt.code, func(t *testing.T) {
			b, err := hex.DecodeString(strings.ReplaceAll(tt.code, " ", ""))
			require.NoError(t, err)
			in, err := decode.Decode(b, codeAt)
			require.NoError(t, err)
			ok, why := emu.Supports(in)
			got := "reject"
			switch {
			case ok:
				got = "emulate"
				assert.Empty(t, why)
			case in.Verdict == decode.CanRun:
				got = "outofline"
			}
			assert.Equal(t, tt.want, got, "%v: %v: %s", in, in.Verdict, why)
			if !ok {
				assert.NotEmpty(t, why)
			}
		})
	}
}
