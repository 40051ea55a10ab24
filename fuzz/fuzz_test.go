package fuzz

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// place decodes code where it ends at the last byte of the code page (the
// address rip-relative operands and the CPU's fetch checks assume), or
// returns nil when decode refuses the bytes.
func place(code []byte) *decode.Insn {
	if len(code) > decode.MaxLen {
		code = code[:decode.MaxLen]
	}
	in, err := decode.Decode(code, CodePage)
	if err != nil {
		return nil
	}
	in, err = decode.Decode(code[:in.Len], codeEnd-uint64(in.Len))
	if err != nil {
		return nil
	}
	return in
}

// FuzzEmulate runs any bytes that decode emulates from a state drawn from
// seed, on the CPU and through emu.Step, and fails on any disagreement.
func FuzzEmulate(f *testing.F) {
	for _, s := range [][]byte{
		{0x48, 0x01, 0xd8}, {0x55}, {0x48, 0x89, 0xe5}, {0x48, 0x83, 0xec, 0x10},
		{0x48, 0x8d, 0x05, 0x10, 0x10, 0x00, 0x00}, {0x49, 0x3b, 0x66, 0x10}, {0xc3}, {0xc9},
		{0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00}, {0xd3, 0xe0}, {0x0f, 0x94, 0xc0},
		{0xff, 0x24, 0xc5, 0x00, 0x10, 0x00, 0x50}, {0xe8, 0x00, 0x00, 0x00, 0x00},
	} {
		f.Add(s, uint64(len(s)))
	}
	// One encoding of every shape the decoder emulates: plain go test runs
	// them all, and the fuzzer mutates from there.
	for shape, code := range EmulatedShapes(ShapePrefixes[:3]) {
		f.Add(code, uint64(len(shape)))
	}
	ch, err := NewChecker(oracle(f))
	if err != nil {
		f.Fatal(err)
	}
	var st State
	f.Fuzz(func(t *testing.T, code []byte, seed uint64) {
		in := place(code)
		if ok, _ := emu.Supports(in); !ok {
			return
		}
		g := &Gen{R: rand.New(rand.NewPCG(seed, ^seed))}
		g.Prepare(in, &st)
		m, err := ch.Check(in, &st)
		if errors.Is(err, ErrForeign) || errors.Is(err, ErrUnrunnable) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			t.Fatalf("mismatch:\n%s", m)
		}
	})
}

// FuzzLength has the CPU measure any bytes that decode does not refuse.
func FuzzLength(f *testing.F) {
	for _, s := range [][]byte{
		{0x48, 0x01, 0xd8}, {0xf3, 0x0f, 0x1e, 0xfa}, {0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00},
		{0xc5, 0xf8, 0x77}, {0x62, 0xf1, 0x7c, 0x48, 0x10, 0x05, 0, 0, 0, 0}, {0x0f, 0x05},
		{0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8}, {0x66, 0xe9, 0, 0}, {0xf0, 0x48, 0x0f, 0xb1, 0x0b},
		{0x0f, 0x0f, 0xc0, 0x0c}, {0x8f, 0xe8, 0x78, 0xc2, 0xc0, 0x00}, {0xc4, 0xe2, 0x78, 0xf2, 0xc0},
		{0x0f, 0x38, 0x00, 0xc0}, {0x66, 0x0f, 0x3a, 0x0f, 0xc0, 0x08}, {0xf3, 0x0f, 0xb8, 0xc0},
		{0x0f, 0x01, 0xf9}, {0xf3, 0x0f, 0xc7, 0xf8}, {0xc7, 0xf8, 0, 0, 0, 0}, {0xd9, 0xee},
		{0x66, 0x0f, 0x78, 0xc0, 0x08, 0x10}, {0xf2, 0x0f, 0x79, 0xc1}, {0x67, 0xe3, 0x00},
		{0xc4, 0xe3, 0x79, 0x14, 0x04, 0x25, 0, 0, 0, 0, 1}, {0x62, 0xf2, 0xfd, 0x48, 0x8d, 0x05, 0, 0, 0, 0},
	} {
		f.Add(s)
	}
	o := oracle(f)
	f.Fuzz(func(t *testing.T, code []byte) {
		in := place(code)
		if in == nil || in.Verdict == decode.Refused {
			return
		}
		n, err := o.CPULength(in.Code())
		if errors.Is(err, ErrIllegal) {
			return // the CPU does not run it: nothing to measure
		}
		if errors.Is(err, ErrTooShort) {
			t.Fatalf("% x (%s): decode measures %d bytes, the CPU reads more", in.Code(), insnText(in), in.Len)
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != in.Len {
			t.Fatalf("% x (%s): decode measures %d bytes, the CPU %d", in.Code(), insnText(in), in.Len, n)
		}
	})
}
