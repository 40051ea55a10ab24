package fuzz

import (
	"fmt"
	"sort"
	"strings"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// Shape names what an emulated instruction does in the decoder's terms: the
// operation and its operands' kinds and widths ("ADD r64, m64", "PUSH /64").
// The campaign records the shapes it checked; EmulatedShapes lists those the
// decoder emulates at all, so that none goes unchecked.
func Shape(in *decode.Insn) string {
	var parts []string
	for i := range in.Args {
		a := &in.Args[i]
		bits := int(a.Size) * 8
		switch a.Kind {
		case decode.ArgReg:
			parts = append(parts, fmt.Sprintf("r%d", bits))
		case decode.ArgMem:
			parts = append(parts, fmt.Sprintf("m%d", bits))
		case decode.ArgImm:
			parts = append(parts, fmt.Sprintf("imm%d", bits))
		case decode.ArgRel:
			parts = append(parts, "rel")
		}
		if a.Kind == decode.ArgNone {
			break
		}
	}
	s := in.Op.String()
	if len(parts) == 0 {
		return fmt.Sprintf("%s /%d", s, int(in.OpSize)*8)
	}
	return s + " " + strings.Join(parts, ", ")
}

// ShapePrefixes are the prefix sequences EmulatedShapes tries before every
// opcode: none, operand size, REX.W, both, REX.B, an empty REX, address size,
// a segment override, and F3.
var ShapePrefixes = [][]byte{nil, {0x66}, {0x48}, {0x66, 0x48}, {0x41}, {0x40}, {0x67}, {0x64}, {0xf3}}

// EmulatedShapes decodes every one- and two-byte opcode after each of
// prefixes, with every mod and reg field of a ModRM byte (and the r/m values
// that change the addressing: a register, SIB, rip-relative or disp32), and
// returns the shapes of those decoded as Emulate, each with one encoding.
func EmulatedShapes(prefixes [][]byte) map[string][]byte {
	out := map[string][]byte{}
	var buf [15]byte
	for _, p := range prefixes {
		for esc := 0; esc < 2; esc++ {
			for op := 0; op < 256; op++ {
				for modrm := 0; modrm < 256; modrm++ {
					if rm := modrm & 7; rm != 0 && rm != 4 && rm != 5 {
						continue
					}
					b := append(buf[:0], p...)
					if esc == 1 {
						b = append(b, 0x0f)
					}
					b = append(b, byte(op), byte(modrm))
					for len(b) < len(buf) {
						b = append(b, 0)
					}
					in, err := decode.Decode(b, CodePage)
					if err == nil && modrm == 0 && in.ModRMOff < 0 {
						modrm = 255 // no ModRM byte: the rest are the same instruction
					}
					if err != nil {
						continue
					}
					if ok, _ := emu.Supports(in); !ok {
						continue
					}
					s := Shape(in)
					if _, ok := out[s]; !ok {
						out[s] = append([]byte(nil), in.Code()...)
					}
				}
			}
		}
	}
	return out
}

// Ungenerated lists the shapes in emulated that the campaign never checked,
// each with an encoding, sorted.
func (c *Campaign) Ungenerated(emulated map[string][]byte) []string {
	var out []string
	for s, b := range emulated {
		if c.Shapes[s] == 0 {
			out = append(out, fmt.Sprintf("%s (e.g. % x)", s, b))
		}
	}
	sort.Strings(out)
	return out
}
