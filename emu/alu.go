package emu

import (
	"math/bits"

	"github.com/onetrap/onetrap/regs"
)

// statusFlags are the six arithmetic status flags. Step never changes any
// other RFLAGS bit.
const statusFlags = regs.CF | regs.PF | regs.AF | regs.ZF | regs.SF | regs.OF

// mask returns the bits of a size-byte value.
func mask(size int) uint64 { return ^uint64(0) >> (64 - 8*uint(size)) }

// signExtend returns the size-byte value v sign-extended to 64 bits.
func signExtend(v uint64, size int) uint64 {
	s := 64 - 8*uint(size)
	return uint64(int64(v<<s) >> s)
}

// msb returns the sign bit of the size-byte value v.
func msb(v uint64, size int) uint64 { return v >> (8*uint(size) - 1) & 1 }

// szp returns ZF, SF and PF for the size-byte result res. PF looks at the low
// byte only, whatever the size.
func szp(res uint64, size int) uint64 {
	var f uint64
	if res == 0 {
		f |= regs.ZF
	}
	if msb(res, size) != 0 {
		f |= regs.SF
	}
	if bits.OnesCount8(uint8(res))&1 == 0 {
		f |= regs.PF
	}
	return f
}

// add returns a+b+c (c is 0 or 1) on size bytes with the flags add and adc define.
func add(a, b, c uint64, size int) (uint64, uint64) {
	var res, carry uint64
	if size == 8 {
		res, carry = bits.Add64(a, b, c)
	} else {
		res = a + b + c
		carry = res >> (8 * uint(size)) & 1
		res &= mask(size)
	}
	f := szp(res, size)
	if carry != 0 {
		f |= regs.CF
	}
	if (a^b^res)&0x10 != 0 {
		f |= regs.AF
	}
	if msb((a^res)&(b^res), size) != 0 {
		f |= regs.OF
	}
	return res, f
}

// sub returns a-b-c (c is 0 or 1) on size bytes with the flags sub, sbb, cmp
// and neg define. a and b are size-byte values.
func sub(a, b, c uint64, size int) (uint64, uint64) {
	var res, borrow uint64
	if size == 8 {
		res, borrow = bits.Sub64(a, b, c)
	} else {
		// a < b+c wraps below zero and sets every bit above the operand.
		res = a - b - c
		borrow = res >> (8 * uint(size)) & 1
		res &= mask(size)
	}
	f := szp(res, size)
	if borrow != 0 {
		f |= regs.CF
	}
	if (a^b^res)&0x10 != 0 {
		f |= regs.AF
	}
	if msb((a^b)&(a^res), size) != 0 {
		f |= regs.OF
	}
	return res, f
}

// cond evaluates the condition code c (the low nibble of a Jcc, SETcc or
// CMOVcc opcode) against rflags f. Odd codes negate the even code below them.
func cond(c uint8, f uint64) bool {
	var t bool
	switch c >> 1 & 7 {
	case 0: // O
		t = f&regs.OF != 0
	case 1: // B
		t = f&regs.CF != 0
	case 2: // E
		t = f&regs.ZF != 0
	case 3: // BE
		t = f&(regs.CF|regs.ZF) != 0
	case 4: // S
		t = f&regs.SF != 0
	case 5: // P
		t = f&regs.PF != 0
	case 6: // L
		t = (f&regs.SF != 0) != (f&regs.OF != 0)
	case 7: // LE
		t = f&regs.ZF != 0 || (f&regs.SF != 0) != (f&regs.OF != 0)
	}
	return t != (c&1 != 0)
}
