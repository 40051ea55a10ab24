package fuzz

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
)

// How a template lays out its operands.
type encKind uint8

const (
	encModRM encKind = iota // ModRM (+SIB +disp) after the opcode
	encOpReg                // register in the low three bits of the last opcode byte
	encNone                 // no operand bytes
	encMoffs                // a 64-bit (or, with 67, 32-bit) absolute address
)

// Operand-size behaviour of a template.
type sizeKind uint8

const (
	szByte  sizeKind = iota // 8-bit operation
	szV                     // 32 by default, 16 with 66, 64 with REX.W
	szD64                   // 64 by default, 16 with 66 (stack operations, near branches)
	szFixed                 // prefixes do not change the operand size
)

// Immediate of a template.
type immKind uint8

const (
	immNone  immKind = iota
	imm8             // one byte (also shift counts, rel8)
	imm16            // two bytes (ret imm16)
	immZ             // two bytes with 66, four otherwise
	immV             // two, four or eight bytes by operand size (mov b8+r)
	immRel32         // rel32 of a near branch
)

// Form is a template for one opcode form: it encodes instructions of that
// form with random registers, operand sizes, prefixes and addressing modes.
type Form struct {
	// Name names the form the way the manual does: "add r/m, r".
	Name string
	// Expect says that the form is in the emulated set: some of its
	// encodings must decode as Emulate, or the campaign lists it.
	Expect bool

	op     []byte
	enc    encKind
	digit  int8 // ModRM.reg as an opcode extension, or -1 for a register operand
	rm     rmKind
	size   sizeKind
	imm    immKind
	byteRM bool // r/m (or the opcode register) is an 8-bit register
	byteR  bool // ModRM.reg is an 8-bit register
	mand   []byte
	rexW   bool // always REX.W, right before the opcode
}

type rmKind uint8

const (
	rmAny rmKind = iota
	rmReg
	rmMem
)

var aluNames = [8]string{"add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"}
var condNames = [16]string{"o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"}

// Forms are the templates of the campaign: every form of the emulated set,
// and neighbours that must not be emulated (Expect false) so that the
// decoder's refusals are exercised too.
var Forms = buildForms()

func buildForms() []*Form {
	var fs []*Form
	add := func(f Form) { c := f; fs = append(fs, &c) }
	mr := func(name string, expect bool, op []byte, digit int8, rm rmKind, size sizeKind, imm immKind, byteRM, byteR bool) {
		add(Form{Name: name, Expect: expect, op: op, enc: encModRM, digit: digit, rm: rm, size: size, imm: imm, byteRM: byteRM, byteR: byteR})
	}
	b := func(bs ...byte) []byte { return bs }
	for k, n := range aluNames {
		o := byte(k * 8)
		mr(n+" r/m8, r8", true, b(o), -1, rmAny, szByte, immNone, true, true)
		mr(n+" r/m, r", true, b(o+1), -1, rmAny, szV, immNone, false, false)
		mr(n+" r8, r/m8", true, b(o+2), -1, rmAny, szByte, immNone, true, true)
		mr(n+" r, r/m", true, b(o+3), -1, rmAny, szV, immNone, false, false)
		add(Form{Name: n + " al, imm8", Expect: true, op: b(o + 4), enc: encNone, size: szByte, imm: imm8})
		add(Form{Name: n + " eax, imm", Expect: true, op: b(o + 5), enc: encNone, size: szV, imm: immZ})
		mr(n+" r/m8, imm8", true, b(0x80), int8(k), rmAny, szByte, imm8, true, false)
		mr(n+" r/m, imm", true, b(0x81), int8(k), rmAny, szV, immZ, false, false)
		mr(n+" r/m, imm8", true, b(0x83), int8(k), rmAny, szV, imm8, false, false)
	}
	mr("test r/m8, r8", true, b(0x84), -1, rmAny, szByte, immNone, true, true)
	mr("test r/m, r", true, b(0x85), -1, rmAny, szV, immNone, false, false)
	add(Form{Name: "test al, imm8", Expect: true, op: b(0xa8), enc: encNone, size: szByte, imm: imm8})
	add(Form{Name: "test eax, imm", Expect: true, op: b(0xa9), enc: encNone, size: szV, imm: immZ})
	mr("test r/m8, imm8", true, b(0xf6), 0, rmAny, szByte, imm8, true, false)
	mr("test r/m, imm", true, b(0xf7), 0, rmAny, szV, immZ, false, false)
	mr("test r/m8, imm8 (f6 /1 alias)", false, b(0xf6), 1, rmAny, szByte, imm8, true, false)
	mr("test r/m, imm (f7 /1 alias)", false, b(0xf7), 1, rmAny, szV, immZ, false, false)
	for _, u := range []struct {
		name  string
		op    byte
		digit int8
	}{{"inc", 0xfe, 0}, {"dec", 0xfe, 1}, {"not", 0xf6, 2}, {"neg", 0xf6, 3}} {
		mr(u.name+" r/m8", true, b(u.op), u.digit, rmAny, szByte, immNone, true, false)
		mr(u.name+" r/m", true, b(u.op+1), u.digit, rmAny, szV, immNone, false, false)
	}
	for _, s := range []struct {
		name   string
		digit  int8
		expect bool
	}{{"shl", 4, true}, {"shr", 5, true}, {"sar", 7, true}, {"sal (/6 alias)", 6, false}, {"rol", 0, false}} {
		mr(s.name+" r/m8, 1", s.expect, b(0xd0), s.digit, rmAny, szByte, immNone, true, false)
		mr(s.name+" r/m, 1", s.expect, b(0xd1), s.digit, rmAny, szV, immNone, false, false)
		mr(s.name+" r/m8, cl", s.expect, b(0xd2), s.digit, rmAny, szByte, immNone, true, false)
		mr(s.name+" r/m, cl", s.expect, b(0xd3), s.digit, rmAny, szV, immNone, false, false)
		mr(s.name+" r/m8, imm8", s.expect, b(0xc0), s.digit, rmAny, szByte, imm8, true, false)
		mr(s.name+" r/m, imm8", s.expect, b(0xc1), s.digit, rmAny, szV, imm8, false, false)
	}

	mr("mov r/m8, r8", true, b(0x88), -1, rmAny, szByte, immNone, true, true)
	mr("mov r/m, r", true, b(0x89), -1, rmAny, szV, immNone, false, false)
	mr("mov r8, r/m8", true, b(0x8a), -1, rmAny, szByte, immNone, true, true)
	mr("mov r, r/m", true, b(0x8b), -1, rmAny, szV, immNone, false, false)
	mr("mov r/m8, imm8", true, b(0xc6), 0, rmAny, szByte, imm8, true, false)
	mr("mov r/m, imm", true, b(0xc7), 0, rmAny, szV, immZ, false, false)
	add(Form{Name: "mov r8, imm8 (b0+r)", Expect: true, op: b(0xb0), enc: encOpReg, size: szByte, imm: imm8, byteRM: true})
	add(Form{Name: "mov r, imm (b8+r)", Expect: true, op: b(0xb8), enc: encOpReg, size: szV, imm: immV})
	add(Form{Name: "mov al, moffs8", Expect: true, op: b(0xa0), enc: encMoffs, size: szByte})
	add(Form{Name: "mov eax, moffs", Expect: true, op: b(0xa1), enc: encMoffs, size: szV})
	add(Form{Name: "mov moffs8, al", Expect: true, op: b(0xa2), enc: encMoffs, size: szByte})
	add(Form{Name: "mov moffs, eax", Expect: true, op: b(0xa3), enc: encMoffs, size: szV})
	mr("movzx r, r/m8", true, b(0x0f, 0xb6), -1, rmAny, szV, immNone, true, false)
	mr("movzx r, r/m16", true, b(0x0f, 0xb7), -1, rmAny, szV, immNone, false, false)
	mr("movsx r, r/m8", true, b(0x0f, 0xbe), -1, rmAny, szV, immNone, true, false)
	mr("movsx r, r/m16", true, b(0x0f, 0xbf), -1, rmAny, szV, immNone, false, false)
	mr("movsxd r, r/m32", true, b(0x63), -1, rmAny, szV, immNone, false, false)
	mr("lea r, m", true, b(0x8d), -1, rmMem, szV, immNone, false, false)

	add(Form{Name: "push r (50+r)", Expect: true, op: b(0x50), enc: encOpReg, size: szD64})
	add(Form{Name: "pop r (58+r)", Expect: true, op: b(0x58), enc: encOpReg, size: szD64})
	add(Form{Name: "push imm8", Expect: true, op: b(0x6a), enc: encNone, size: szD64, imm: imm8})
	add(Form{Name: "push imm32", Expect: true, op: b(0x68), enc: encNone, size: szD64, imm: immZ})
	mr("push r/m", true, b(0xff), 6, rmAny, szD64, immNone, false, false)
	mr("pop r/m (8f /0)", false, b(0x8f), 0, rmAny, szD64, immNone, false, false)

	mr("xchg r/m, r (registers)", true, b(0x87), -1, rmReg, szV, immNone, false, false)
	mr("xchg r/m8, r8 (registers)", true, b(0x86), -1, rmReg, szByte, immNone, true, true)
	mr("xchg m, r (implicit lock)", false, b(0x87), -1, rmMem, szV, immNone, false, false)
	add(Form{Name: "xchg eax, r (90+r)", Expect: true, op: b(0x90), enc: encOpReg, size: szV})
	add(Form{Name: "cbw/cwde/cdqe", Expect: true, op: b(0x98), enc: encNone, size: szV})
	add(Form{Name: "cwd/cdq/cqo", Expect: true, op: b(0x99), enc: encNone, size: szV})

	for c := 0; c < 16; c++ {
		mr("cmov"+condNames[c]+" r, r/m", true, b(0x0f, 0x40+byte(c)), -1, rmAny, szV, immNone, false, false)
		mr("set"+condNames[c]+" r/m8", true, b(0x0f, 0x90+byte(c)), 0, rmAny, szFixed, immNone, true, false)
		add(Form{Name: "j" + condNames[c] + " rel8", Expect: true, op: b(0x70 + byte(c)), enc: encNone, size: szD64, imm: imm8})
		add(Form{Name: "j" + condNames[c] + " rel32", Expect: true, op: b(0x0f, 0x80+byte(c)), enc: encNone, size: szD64, imm: immRel32})
	}
	add(Form{Name: "jmp rel8", Expect: true, op: b(0xeb), enc: encNone, size: szD64, imm: imm8})
	add(Form{Name: "jmp rel32", Expect: true, op: b(0xe9), enc: encNone, size: szD64, imm: immRel32})
	add(Form{Name: "call rel32", Expect: true, op: b(0xe8), enc: encNone, size: szD64, imm: immRel32})
	// The call of the general-dynamic TLS sequence (__tls_get_addr) is
	// padded with 66 66 48: REX.W overrides the 66 prefixes.
	add(Form{Name: "call rel32 (66 66 48: TLS padding)", Expect: true, op: b(0xe8), enc: encNone, size: szFixed, imm: immRel32, mand: b(0x66, 0x66), rexW: true})
	mr("jmp r/m64", true, b(0xff), 4, rmAny, szD64, immNone, false, false)
	mr("call r/m64", true, b(0xff), 2, rmAny, szD64, immNone, false, false)
	add(Form{Name: "jrcxz rel8", Expect: true, op: b(0xe3), enc: encNone, size: szFixed, imm: imm8})
	add(Form{Name: "loop rel8", Expect: true, op: b(0xe2), enc: encNone, size: szFixed, imm: imm8})
	add(Form{Name: "loope rel8", Expect: true, op: b(0xe1), enc: encNone, size: szFixed, imm: imm8})
	add(Form{Name: "loopne rel8", Expect: true, op: b(0xe0), enc: encNone, size: szFixed, imm: imm8})
	add(Form{Name: "ret", Expect: true, op: b(0xc3), enc: encNone, size: szD64})
	add(Form{Name: "ret imm16", Expect: true, op: b(0xc2), enc: encNone, size: szD64, imm: imm16})
	add(Form{Name: "leave", Expect: true, op: b(0xc9), enc: encNone, size: szD64})

	add(Form{Name: "nop (90)", Expect: true, op: b(0x90), enc: encNone, size: szFixed})
	mr("nop r/m (0f 1f /0)", true, b(0x0f, 0x1f), 0, rmAny, szV, immNone, false, false)
	add(Form{Name: "pause", Expect: true, op: b(0x90), enc: encNone, size: szFixed, mand: b(0xf3)})
	add(Form{Name: "endbr64", Expect: true, op: b(0x0f, 0x1e, 0xfa), enc: encNone, size: szFixed, mand: b(0xf3)})
	add(Form{Name: "endbr32", Expect: true, op: b(0x0f, 0x1e, 0xfb), enc: encNone, size: szFixed, mand: b(0xf3)})
	return fs
}

// Gen encodes instructions from Forms.
type Gen struct {
	R *rand.Rand // the only source of randomness: a seed replays a campaign
}

// pick returns true with probability num/den.
func (g *Gen) pick(num, den int) bool { return g.R.IntN(den) < num }

// Encoded is one instruction produced by a Form, with what the encoder knows
// about it.
type Encoded struct {
	Form *Form
	Code []byte // exactly one instruction, as the encoder built it
	RIP  uint64 // where it runs: in the code page, mostly ending at its last byte
}

// Encode builds one random instruction of form f and the address it will
// run at. Rip-relative and moffs operands are aimed at the sandbox's pages.
func (g *Gen) Encode(f *Form) Encoded {
	for {
		if e, ok := g.encode(f); ok {
			return e
		}
	}
}

func (g *Gen) encode(f *Form) (Encoded, bool) {
	r := g.R
	var (
		legacy []byte
		rex    byte
		body   []byte
	)
	// Operand size.
	osz := 4
	switch f.size {
	case szByte:
		osz = 1
		if g.pick(1, 10) {
			legacy = append(legacy, 0x66) // no effect on byte operations
		}
	case szV:
		switch r.IntN(4) {
		case 1:
			legacy, osz = append(legacy, 0x66), 2
		case 2:
			rex, osz = 0x48, 8
		case 3:
			if g.pick(1, 2) {
				legacy, rex, osz = append(legacy, 0x66), 0x48, 8
			}
		}
	case szD64:
		osz = 8
		switch r.IntN(8) {
		case 0:
			legacy, osz = append(legacy, 0x66), 2
		case 1:
			rex = 0x48
		case 2:
			if g.pick(1, 2) {
				legacy, rex = append(legacy, 0x66), 0x48 // REX.W wins
			}
		}
	case szFixed:
		switch r.IntN(16) {
		case 0:
			legacy = append(legacy, 0x66)
		case 1:
			rex = 0x48 // no effect, but a different encoding to decode
		}
	}
	if f.rexW {
		rex |= 0x48
	}
	_ = osz
	mem := false
	ripOff, moffOff, addr32 := -1, -1, false
	byteLegacy := (f.byteRM || f.byteR) && g.pick(1, 2) // ah..bh reachable, no REX at all
	regNum := func() int {
		if byteLegacy {
			return r.IntN(8)
		}
		return r.IntN(16)
	}
	var mand []byte
	mand = append(mand, f.mand...)
	switch f.enc {
	case encOpReg:
		n := regNum()
		rex |= byte(n>>3) & 1
		body = append(append(body, f.op[:len(f.op)-1]...), f.op[len(f.op)-1]+byte(n&7))
	case encNone:
		body = append(body, f.op...)
	case encMoffs:
		body = append(body, f.op...)
		if g.pick(1, 8) {
			addr32 = true
			legacy = append(legacy, 0x67)
		}
		moffOff = len(body)
		if addr32 {
			body = append(body, 0, 0, 0, 0)
		} else {
			body = append(body, 0, 0, 0, 0, 0, 0, 0, 0)
		}
	case encModRM:
		body = append(body, f.op...)
		reg := int(f.digit)
		if reg < 0 {
			reg = regNum()
		} else if f.op[len(f.op)-1] >= 0x90 && f.op[len(f.op)-1] <= 0x9f && len(f.op) == 2 && g.pick(1, 4) {
			reg = r.IntN(8) // setcc ignores ModRM.reg
		}
		rex |= byte(reg>>3&1) << 2
		useMem := f.rm == rmMem || f.rm == rmAny && g.pick(1, 2)
		if !useMem {
			rm := regNum()
			rex |= byte(rm >> 3 & 1)
			body = append(body, 0xc0|byte(reg&7)<<3|byte(rm&7))
			break
		}
		mem = true
		if g.pick(1, 8) {
			addr32 = true
			legacy = append(legacy, 0x67)
		}
		modrm := byte(reg&7) << 3
		disp := func(mod byte) []byte {
			switch mod {
			case 1:
				return []byte{byte(g.disp8())}
			case 2:
				var d [4]byte
				binary.LittleEndian.PutUint32(d[:], uint32(g.disp32()))
				return d[:]
			}
			return nil
		}
		switch r.IntN(10) {
		case 0: // rip-relative
			body = append(body, modrm|5)
			ripOff = len(body)
			body = append(body, 0, 0, 0, 0)
		case 1, 2, 3: // [base + disp]
			base := r.IntN(16)
			mod := byte(r.IntN(3))
			if mod == 0 && base&7 == 5 {
				mod = 1
			}
			rex |= byte(base >> 3 & 1)
			if base&7 == 4 { // rsp and r12 need a SIB byte
				body = append(body, modrm|mod<<6|4, 0x24)
			} else {
				body = append(body, modrm|mod<<6|byte(base&7))
			}
			body = append(body, disp(mod)...)
		case 9: // [disp32] or [index*scale + disp32]: SIB with no base
			index := r.IntN(16) // 4 (no REX.X) is no index: an absolute disp32
			rex |= byte(index>>3&1) << 1
			body = append(body, modrm|4, byte(r.IntN(4))<<6|byte(index&7)<<3|5)
			body = append(body, disp(2)...)
		default: // [base + index*scale + disp]
			base, index := r.IntN(16), r.IntN(16)
			mod := byte(r.IntN(3))
			if mod == 0 && base&7 == 5 {
				mod = 1
			}
			rex |= byte(base>>3&1) | byte(index>>3&1)<<1
			body = append(body, modrm|mod<<6|4, byte(r.IntN(4))<<6|byte(index&7)<<3|byte(base&7))
			body = append(body, disp(mod)...)
		}
	}
	switch f.imm {
	case imm8:
		body = append(body, byte(g.imm()))
	case imm16:
		body = binary.LittleEndian.AppendUint16(body, uint16(g.imm()))
	case immZ:
		if osz == 2 {
			body = binary.LittleEndian.AppendUint16(body, uint16(g.imm()))
		} else {
			body = binary.LittleEndian.AppendUint32(body, uint32(g.imm()))
		}
	case immV:
		switch osz {
		case 2:
			body = binary.LittleEndian.AppendUint16(body, uint16(g.imm()))
		case 8:
			body = binary.LittleEndian.AppendUint64(body, g.imm())
		default:
			body = binary.LittleEndian.AppendUint32(body, uint32(g.imm()))
		}
	case immRel32:
		v := uint32(g.imm())
		if g.pick(1, 2) {
			v = uint32(int32(r.IntN(512) - 256))
		}
		body = binary.LittleEndian.AppendUint32(body, v)
	}
	// Segment overrides: FS and GS have bases; the others are ignored in
	// 64-bit mode and must change nothing.
	if mem || f.enc == encMoffs {
		switch r.IntN(20) {
		case 0, 1:
			legacy = append(legacy, 0x64)
		case 2, 3:
			legacy = append(legacy, 0x65)
		case 4:
			legacy = append(legacy, []byte{0x26, 0x2e, 0x36, 0x3e}[r.IntN(4)])
		}
	} else if g.pick(1, 32) {
		// A segment override on an instruction without a memory operand
		// (push, pop, branches: their stack is not segment-relative).
		legacy = append(legacy, []byte{0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65}[r.IntN(6)])
	}
	// An address-size prefix without a memory operand changes only the
	// counter of jrcxz and loop (to ecx); elsewhere it must be refused or
	// ignored.
	if !mem && f.enc != encMoffs && g.pick(1, 16) {
		legacy = append(legacy, 0x67)
	}
	// Rare prefixes that change the instruction's meaning or strategy.
	switch r.IntN(64) {
	case 0:
		legacy = append(legacy, 0xf0)
	case 1:
		legacy = append(legacy, 0xf2)
	case 2:
		legacy = append(legacy, 0xf3)
	case 3:
		legacy = append(legacy, 0x3e) // notrack on indirect branches
	}
	r.Shuffle(len(legacy), func(i, j int) { legacy[i], legacy[j] = legacy[j], legacy[i] })
	if byteLegacy && rex != 0 {
		return Encoded{}, false // a register above 7 was drawn along with ah..bh
	}
	if !byteLegacy && (f.byteRM || f.byteR) && rex == 0 {
		rex = 0x40 // spl, bpl, sil, dil
	}
	if rex == 0 && g.pick(1, 16) && !byteLegacy {
		rex = 0x40
	}
	var code []byte
	if len(legacy) > 0 && g.pick(1, 32) {
		code = append(code, 0x40|byte(r.IntN(16))) // a REX before a legacy prefix is ignored
	}
	code = append(code, legacy...)
	code = append(code, mand...)
	if rex != 0 {
		code = append(code, 0x40|rex)
	}
	n := len(code)
	code = append(code, body...)
	if len(code) > 15 {
		return Encoded{}, false
	}
	e := Encoded{Form: f, Code: code}
	if g.pick(3, 4) {
		e.RIP = codeEnd - uint64(len(code))
	} else {
		e.RIP = CodePage + uint64(r.IntN(PageSize-len(code)+1))
	}
	size := max(osz, 1)
	if ripOff >= 0 {
		t := g.target(size)
		next := e.RIP + uint64(len(code))
		binary.LittleEndian.PutUint32(code[n+ripOff:], uint32(t-next))
	}
	if moffOff >= 0 {
		t := g.target(size)
		if addr32 {
			binary.LittleEndian.PutUint32(code[n+moffOff:], uint32(t))
		} else {
			binary.LittleEndian.PutUint64(code[n+moffOff:], t)
		}
	}
	return e, true
}

// disp8 returns a displacement biased to small and boundary values.
func (g *Gen) disp8() int8 {
	switch g.R.IntN(4) {
	case 0:
		return []int8{0, 1, -1, 127, -128, 8, -8}[g.R.IntN(7)]
	}
	return int8(g.R.Uint32())
}

func (g *Gen) disp32() int32 {
	switch g.R.IntN(4) {
	case 0:
		return []int32{0, 1, -1, 0x7fffffff, -0x80000000, 0x1000, -0x1000}[g.R.IntN(7)]
	case 1:
		return int32(g.R.IntN(0x4000) - 0x2000)
	}
	return int32(g.R.Uint32())
}

// interesting are values at the edges of every width.
var interesting = []uint64{
	0, 1, 2, ^uint64(0), ^uint64(1),
	0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
	0x7fffffff, 0x80000000, 0xffffffff, 0x100000000,
	0x7fffffffffffffff, 0x8000000000000000,
	0xffffffffffffff80, 0xffffffffffff8000, 0xffffffff80000000,
	0x0000800000000000, 0x00007fffffffffff, 0xffff800000000000,
}

// Value returns a register value: edges of every width, powers of two and
// their negations, small counts, values whose low part is an edge and whose
// high part is random (partial-register writes must keep it), or random.
func (g *Gen) Value() uint64 {
	r := g.R
	switch r.IntN(10) {
	case 0, 1:
		return interesting[r.IntN(len(interesting))]
	case 2:
		return 1 << r.IntN(64)
	case 3:
		return -(uint64(1) << r.IntN(64))
	case 4:
		return uint64(r.IntN(70))
	case 5:
		w := []uint64{0xff, 0xffff, 0xffffffff}[r.IntN(3)]
		return r.Uint64()&^w | interesting[r.IntN(len(interesting))]&w
	}
	return r.Uint64()
}

// imm returns an immediate value (callers truncate it).
func (g *Gen) imm() uint64 {
	if g.pick(1, 3) {
		return uint64(g.R.IntN(66))
	}
	return g.Value()
}

// target returns an address for a size-byte access: mostly in the read-write
// pages, sometimes across their boundary, in the read-only page, the code
// page, the hole, straddling into them, or wild (page zero, non-canonical).
func (g *Gen) target(size int) uint64 {
	r := g.R
	sz := uint64(size)
	straddle := func(at uint64) uint64 {
		if sz < 2 {
			return at - 1 + uint64(r.IntN(2))
		}
		return at - 1 - uint64(r.IntN(size-1))
	}
	switch n := r.IntN(100); {
	case n < 66:
		t := DataAddr + uint64(r.IntN(rwSize-size+1))
		if g.pick(1, 2) {
			t &^= sz - 1 // aligned
		}
		return t
	case n < 72:
		return straddle(DataAddr + PageSize)
	case n < 80:
		return ROAddr + uint64(r.IntN(PageSize-size+1))
	case n < 84:
		return straddle(ROAddr)
	case n < 89:
		return HoleAddr + uint64(r.IntN(PageSize-size+1))
	case n < 92:
		return straddle(HoleAddr)
	case n < 95:
		return CodePage + uint64(r.IntN(PageSize-size+1))
	case n < 96:
		return straddle(DataAddr)
	case n < 97:
		return uint64(r.IntN(PageSize))
	case n < 98:
		return 0x8000000000000000 + uint64(r.IntN(1<<20))
	case n < 99:
		return 0x0000800000000000 - uint64(r.IntN(size))
	}
	return 0xffff800000000000 + r.Uint64()%(1<<40)
}

// String names the form, the bytes and the address.
func (e Encoded) String() string {
	return fmt.Sprintf("%s: % x at %#x", e.Form.Name, e.Code, e.RIP)
}
