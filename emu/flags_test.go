package emu_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/regs"
)

func TestDefinedFlags(t *testing.T) {
	all := emu.StatusFlags
	cases := []struct {
		code string
		cl   uint64
		want uint64
	}{
		{"48 83 ec 18", 0, all},                 // sub: defines all six
		{"48 85 c0", 0, all &^ AF},              // test: AF undefined
		{"31 c0", 0, all &^ AF},                 // xor
		{"48 89 e5", 0, all},                    // mov: leaves all alone
		{"ff c0", 0, all},                       // inc: five defined, CF kept
		{"d1 e0", 0, CF | PF | ZF | SF | OF},    // shl by 1: OF defined, AF not
		{"48 c1 e0 03", 0, CF | PF | ZF | SF},   // by 3: OF undefined
		{"c1 e0 00", 0, all},                    // by 0: no flag changes
		{"c1 e0 20", 0, all},                    // by 32, masked to 0
		{"48 c1 e0 20", 0, CF | PF | ZF | SF},   // by 32 with REX.W
		{"d3 e0", 0, all},                       // by cl=0
		{"d3 e0", 1, CF | PF | ZF | SF | OF},    // by cl=1
		{"d3 e0", 0x21, CF | PF | ZF | SF | OF}, // cl masked to 1
		{"c0 e0 08", 0, PF | ZF | SF},           // shl al by 8: CF undefined
		{"c0 e8 09", 0, PF | ZF | SF},           // shr al by 9
		{"c0 f8 09", 0, CF | PF | ZF | SF},      // sar al by 9: CF is the sign
		{"66 c1 e0 0f", 0, CF | PF | ZF | SF},   // shl ax by 15: CF defined
		{"0f a2", 0, 0},                         // cpuid: not emulated, nothing promised
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/cl=%d", c.code, c.cl), func(t *testing.T) {
			in := decodeHex(t, c.code, codeAt)
			var r regs.Regs
			r.Set(x86asm.RCX, c.cl)
			assert.Equal(t, c.want, emu.DefinedFlags(in, &r), "%v", in)
		})
	}
	// Without registers a count in cl is unknown.
	assert.Zero(t, emu.DefinedFlags(decodeHex(t, "d3 e0", codeAt), nil))
	assert.Zero(t, emu.DefinedFlags(nil, nil))
}
