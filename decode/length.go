package decode

import "encoding/binary"

// This file is the package's own x86-64 length decoder. It knows the
// structure of every encoding (legacy prefixes, REX, the one-byte, 0F, 0F38
// and 0F3A maps, VEX, EVEX, ModRM, SIB, displacements and immediates) so
// that x86asm's answer can be checked, and so that instructions x86asm does
// not know can still be measured. It never guesses: an encoding whose length
// depends on the CPU vendor, or that it does not understand, is an error.

// Opcode attributes.
const (
	aM          uint16 = 1 << iota // has a ModRM byte
	aI8                            // imm8
	aI16                           // imm16
	aIz                            // imm16 with 66 (no REX.W), else imm32
	aIv                            // imm16 with 66, imm64 with REX.W, else imm32
	aMoffs                         // moffs: 8 bytes, 4 with 67
	aRel                           // the immediate is a branch displacement
	aGrp3                          // F6/F7: immediate only for /0 and /1
	aFar                           // ptr16:32 (invalid in 64-bit mode anyway)
	aInv                           // invalid in 64-bit mode
	aKnown                         // a defined opcode (for instructions x86asm does not know)
	aI8I8                          // two imm8 (SSE4a EXTRQ/INSERTQ with 66 or F2)
	aModIgnored                    // MOV CR/DR: the mod field is ignored, always a register
)

// Encodings.
const (
	encLegacy uint8 = iota
	encVEX
	encEVEX
)

// Opcode maps.
const (
	map1     uint8 = 0 // one-byte map
	map0F    uint8 = 1
	map0F38  uint8 = 2
	map0F3A  uint8 = 3
	mapEVEX5 uint8 = 5
	mapEVEX6 uint8 = 6
)

// parsed is the structure of one instruction as the length decoder sees it.
type parsed struct {
	n     int   // total length
	opOff int   // offset of the opcode byte (after escapes)
	op    byte  // opcode byte in its map
	mp    uint8 // opcode map
	enc   uint8
	rex   byte // effective REX prefix, 0 when none
	// stray has bit i set when code[i] is a REX prefix that a legacy
	// prefix follows: both manuals say the CPU ignores such a REX.
	stray    uint16
	w        bool // REX.W, VEX.W or EVEX.W
	op16     bool // 66 prefix
	addr32   bool // 67 prefix
	lock     bool // F0 prefix
	rep      byte // last F2 or F3, 0 when none
	seg      byte // last segment prefix, 0 when none
	modrmOff int  // -1 when there is no ModRM byte
	modrm    byte
	sibOff   int // -1 when there is no SIB byte
	dispOff  int
	dispSize int
	immOff   int
	immSize  int
	attr     uint16
	vpp      byte // VEX/EVEX pp field: 0 none, 1 66, 2 f3, 3 f2
	vexOff   int  // offset of the c4, c5 or 62 byte
}

// mod, reg and rm fields of the ModRM byte.
func (p *parsed) mod() byte { return p.modrm >> 6 }
func (p *parsed) reg() byte { return p.modrm >> 3 & 7 }
func (p *parsed) rm() byte  { return p.modrm & 7 }

// hasMem reports whether the ModRM byte names a memory operand.
func (p *parsed) hasMem() bool {
	return p.modrmOff >= 0 && p.mod() != 3 && p.attr&aModIgnored == 0
}

// ripRel reports whether the ModRM memory operand is rip-relative (or
// eip-relative with a 67 prefix).
func (p *parsed) ripRel() bool { return p.hasMem() && p.mod() == 0 && p.rm() == 5 }

// disp returns the displacement as encoded, sign-extended (disp8 is not
// scaled: EVEX compressed displacements are left to x86asm).
func (p *parsed) disp(code []byte) int64 {
	switch p.dispSize {
	case 1:
		return int64(int8(code[p.dispOff]))
	case 4:
		return int64(int32(binary.LittleEndian.Uint32(code[p.dispOff:])))
	}
	return 0
}

// known reports whether the opcode is one the tables define, so that an
// instruction x86asm does not decode may still be measured by them.
func (p *parsed) known() bool { return p.attr&aKnown != 0 && p.attr&aInv == 0 }

var (
	oneByte [256]uint16
	twoByte [256]uint16 // 0F map
	map38   [256]uint16
	map3A   [256]uint16
	// VEX and EVEX opcodes that x86asm may not know, measured by the tables.
	vexKnown [4][256]bool
)

func init() {
	t := &oneByte
	for row := 0; row < 8; row++ {
		b := row * 8
		for i := 0; i < 4; i++ {
			t[b+i] = aM
		}
		t[b+4] = aI8
		t[b+5] = aIz
	}
	for _, o := range []int{0x06, 0x07, 0x0e, 0x16, 0x17, 0x1e, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x60, 0x61, 0xce, 0xd6} {
		t[o] = aInv
	}
	t[0x63] = aM
	t[0x68] = aIz
	t[0x69] = aM | aIz
	t[0x6a] = aI8
	t[0x6b] = aM | aI8
	for o := 0x70; o <= 0x7f; o++ {
		t[o] = aI8 | aRel
	}
	t[0x80] = aM | aI8
	t[0x81] = aM | aIz
	t[0x82] = aM | aI8 | aInv
	t[0x83] = aM | aI8
	for o := 0x84; o <= 0x8f; o++ {
		t[o] = aM
	}
	t[0x9a] = aFar | aInv
	for o := 0xa0; o <= 0xa3; o++ {
		t[o] = aMoffs
	}
	t[0xa8] = aI8
	t[0xa9] = aIz
	for o := 0xb0; o <= 0xb7; o++ {
		t[o] = aI8
	}
	for o := 0xb8; o <= 0xbf; o++ {
		t[o] = aIv
	}
	t[0xc0] = aM | aI8
	t[0xc1] = aM | aI8
	t[0xc2] = aI16
	t[0xc6] = aM | aI8
	t[0xc7] = aM | aIz
	t[0xc8] = aI16 | aI8
	t[0xca] = aI16
	t[0xcd] = aI8
	for o := 0xd0; o <= 0xd3; o++ {
		t[o] = aM
	}
	t[0xd4] = aI8 | aInv
	t[0xd5] = aI8 | aInv
	for o := 0xd8; o <= 0xdf; o++ {
		t[o] = aM
	}
	for o := 0xe0; o <= 0xe3; o++ {
		t[o] = aI8 | aRel
	}
	for o := 0xe4; o <= 0xe7; o++ {
		t[o] = aI8
	}
	t[0xe8] = aIz | aRel
	t[0xe9] = aIz | aRel
	t[0xea] = aFar | aInv
	t[0xeb] = aI8 | aRel
	t[0xf6] = aM | aGrp3
	t[0xf7] = aM | aGrp3
	t[0xfe] = aM
	t[0xff] = aM
	for o := range t {
		t[o] |= aKnown
	}

	t = &twoByte
	for _, o := range []int{0x00, 0x01, 0x02, 0x03, 0x0d} {
		t[o] = aM | aKnown
	}
	for _, o := range []int{0x05, 0x06, 0x07, 0x08, 0x09, 0x0b, 0x0e, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x37,
		0x77, 0xa0, 0xa1, 0xa2, 0xa8, 0xa9, 0xaa} {
		t[o] = aKnown
	}
	for o := 0x10; o <= 0x1f; o++ {
		t[o] = aM | aKnown
	}
	for o := 0x20; o <= 0x23; o++ {
		t[o] = aM | aModIgnored | aKnown
	}
	for o := 0x28; o <= 0x2f; o++ {
		t[o] = aM | aKnown
	}
	for o := 0x40; o <= 0x6f; o++ {
		t[o] = aM | aKnown
	}
	for o := 0x70; o <= 0x73; o++ {
		t[o] = aM | aI8 | aKnown
	}
	for _, o := range []int{0x74, 0x75, 0x76, 0x78, 0x79, 0x7c, 0x7d, 0x7e, 0x7f} {
		t[o] = aM | aKnown
	}
	for o := 0x80; o <= 0x8f; o++ {
		t[o] = aIz | aRel | aKnown
	}
	for o := 0x90; o <= 0x9f; o++ {
		t[o] = aM | aKnown
	}
	for _, o := range []int{0xa3, 0xa5, 0xab, 0xad, 0xae, 0xaf} {
		t[o] = aM | aKnown
	}
	t[0xa4] = aM | aI8 | aKnown
	t[0xac] = aM | aI8 | aKnown
	for o := 0xb0; o <= 0xbf; o++ {
		t[o] = aM | aKnown
	}
	t[0xba] = aM | aI8 | aKnown
	for _, o := range []int{0xc0, 0xc1, 0xc3, 0xc7} {
		t[o] = aM | aKnown
	}
	for _, o := range []int{0xc2, 0xc4, 0xc5, 0xc6} {
		t[o] = aM | aI8 | aKnown
	}
	for o := 0xc8; o <= 0xcf; o++ {
		t[o] = aKnown
	}
	for o := 0xd0; o <= 0xff; o++ {
		t[o] = aM | aKnown
	}

	// 0F38: every opcode has ModRM and no immediate.
	for o := range map38 {
		map38[o] = aM
	}
	for _, r := range [][2]int{{0x00, 0x0b}, {0x10, 0x10}, {0x14, 0x15}, {0x17, 0x17}, {0x1c, 0x1e},
		{0x20, 0x25}, {0x28, 0x2b}, {0x30, 0x35}, {0x37, 0x41}, {0x80, 0x82}, {0xc8, 0xcd}, {0xcf, 0xcf},
		{0xdb, 0xdf}, {0xf0, 0xf1}, {0xf5, 0xf6}, {0xf8, 0xf9}} {
		for o := r[0]; o <= r[1]; o++ {
			map38[o] |= aKnown
		}
	}
	// 0F3A: every opcode has ModRM and an imm8.
	for o := range map3A {
		map3A[o] = aM | aI8
	}
	for _, r := range [][2]int{{0x08, 0x0f}, {0x14, 0x17}, {0x20, 0x22}, {0x40, 0x42}, {0x44, 0x44},
		{0x60, 0x63}, {0xcc, 0xcc}, {0xce, 0xcf}, {0xdf, 0xdf}} {
		for o := r[0]; o <= r[1]; o++ {
			map3A[o] |= aKnown
		}
	}

	// VEX instructions measured by the tables when x86asm does not know
	// them: BMI1, BMI2 and AVX-VNNI, which compilers emit for ordinary code.
	for _, o := range []int{0x50, 0x51, 0x52, 0x53, 0xf2, 0xf3, 0xf5, 0xf6, 0xf7} {
		vexKnown[map0F38][o] = true
	}
	vexKnown[map0F3A][0xf0] = true // RORX
}

// lengthError is why the length decoder failed; truncated means more bytes
// could have made an instruction.
type lengthError struct {
	why       string
	truncated bool
}

func (e *lengthError) Error() string { return e.why }

var errTruncated = &lengthError{why: "truncated: the bytes end inside the instruction", truncated: true}

// parse measures the instruction at the start of code (at most 15 bytes are
// looked at).
func parse(code []byte) (p parsed, err *lengthError) {
	p.modrmOff, p.sibOff = -1, -1
	if len(code) > 15 {
		code = code[:15]
	}
	i := 0
	at := func(k int) (byte, bool) {
		if k >= len(code) {
			return 0, false
		}
		return code[k], true
	}
	// Legacy prefixes and REX. A REX followed by a legacy prefix is ignored.
prefixes:
	for {
		b, ok := at(i)
		if !ok {
			return p, errTruncated
		}
		switch {
		case b == 0x66:
			p.op16 = true
		case b == 0x67:
			p.addr32 = true
		case b == 0xf0:
			p.lock = true
		case b == 0xf2 || b == 0xf3:
			p.rep = b
		case b == 0x2e || b == 0x36 || b == 0x3e || b == 0x26 || b == 0x64 || b == 0x65:
			p.seg = b
		case b >= 0x40 && b <= 0x4f:
			p.rex = b
			i++
			nb, ok := at(i)
			if !ok {
				return p, errTruncated
			}
			if isLegacyPrefix(nb) {
				p.rex = 0
				p.stray |= 1 << uint(i-1)
				continue
			}
			if nb >= 0x40 && nb <= 0x4f {
				// The manuals allow one REX; what CPUs do with two is
				// not documented.
				return p, &lengthError{why: "two REX prefixes in a row"}
			}
			break prefixes
		default:
			break prefixes
		}
		i++
	}
	p.w = p.rex&8 != 0
	b := code[i]
	switch b {
	case 0xc4, 0xc5:
		return parseVEX(code, i, p)
	case 0x62:
		return parseEVEX(code, i, p)
	case 0x8f:
		nb, ok := at(i + 1)
		if !ok {
			return p, errTruncated
		}
		if nb&0x1f >= 8 {
			return p, &lengthError{why: "XOP (AMD) encoding is not supported"}
		}
	case 0xd5:
		return p, &lengthError{why: "APX REX2 prefix (d5) is not supported; d5 is invalid in 64-bit mode without APX"}
	}
	if b != 0x0f {
		p.mp, p.op, p.opOff, p.attr = map1, b, i, oneByte[b]
		return finish(code, i+1, p)
	}
	i++
	b, ok := at(i)
	if !ok {
		return p, errTruncated
	}
	switch b {
	case 0x38:
		i++
		b, ok = at(i)
		if !ok {
			return p, errTruncated
		}
		p.mp, p.op, p.opOff, p.attr = map0F38, b, i, map38[b]
	case 0x3a:
		i++
		b, ok = at(i)
		if !ok {
			return p, errTruncated
		}
		p.mp, p.op, p.opOff, p.attr = map0F3A, b, i, map3A[b]
	case 0x0f:
		return p, &lengthError{why: "3DNow! (0f 0f) instructions are not supported"}
	default:
		p.mp, p.op, p.opOff, p.attr = map0F, b, i, twoByte[b]
		if b == 0x78 && (p.rep == 0xf2 || (p.op16 && p.rep == 0)) {
			p.attr |= aI8I8 // EXTRQ/INSERTQ xmm, imm8, imm8
		}
		if p.attr&aKnown == 0 {
			return p, &lengthError{why: "undefined opcode"}
		}
	}
	return finish(code, i+1, p)
}

func isLegacyPrefix(b byte) bool {
	switch b {
	case 0x66, 0x67, 0xf0, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65:
		return true
	}
	return false
}

// parseVEX handles C4 (three-byte) and C5 (two-byte) VEX.
func parseVEX(code []byte, i int, p parsed) (parsed, *lengthError) {
	if p.op16 || p.rep != 0 || p.lock || p.rex != 0 {
		return p, &lengthError{why: "VEX after a 66, f2, f3, f0 or REX prefix is invalid"}
	}
	p.enc = encVEX
	p.vexOff = i
	var mp uint8
	var next int
	if code[i] == 0xc5 {
		if i+1 >= len(code) {
			return p, errTruncated
		}
		mp, next = map0F, i+2
		p.vpp = code[i+1] & 3
	} else {
		if i+2 >= len(code) {
			return p, errTruncated
		}
		mp = code[i+1] & 0x1f
		p.w = code[i+2]&0x80 != 0
		p.vpp = code[i+2] & 3
		next = i + 3
		if mp < 1 || mp > 3 {
			return p, &lengthError{why: "VEX with an undefined opcode map"}
		}
	}
	if next >= len(code) {
		return p, errTruncated
	}
	p.mp, p.op, p.opOff = mp, code[next], next
	p.attr = aM
	switch {
	case mp == map0F && p.op == 0x77:
		p.attr = 0 // VZEROUPPER, VZEROALL
	case mp == map0F3A:
		p.attr |= aI8
	case mp == map0F && (p.op >= 0x70 && p.op <= 0x73 || p.op == 0xc2 || p.op >= 0xc4 && p.op <= 0xc6):
		p.attr |= aI8
	}
	if vexKnown[mp][p.op] {
		p.attr |= aKnown
	}
	return finish(code, next+1, p)
}

// parseEVEX handles the four-byte 62 prefix of AVX-512.
func parseEVEX(code []byte, i int, p parsed) (parsed, *lengthError) {
	if p.op16 || p.rep != 0 || p.lock || p.rex != 0 {
		return p, &lengthError{why: "EVEX after a 66, f2, f3, f0 or REX prefix is invalid"}
	}
	if i+4 >= len(code) {
		return p, errTruncated
	}
	p0, p1 := code[i+1], code[i+2]
	if p0&0x08 != 0 || p1&0x04 == 0 {
		return p, &lengthError{why: "EVEX with reserved bits set (APX extended EVEX is not supported)"}
	}
	mp := p0 & 7
	switch mp {
	case 1, 2, 3, 5, 6:
	default:
		return p, &lengthError{why: "EVEX with an undefined opcode map"}
	}
	p.enc = encEVEX
	p.vexOff = i
	p.w = p1&0x80 != 0
	p.vpp = p1 & 3
	p.mp, p.op, p.opOff = mp, code[i+4], i+4
	p.attr = aM
	switch {
	case mp == map0F3A:
		p.attr |= aI8
	case mp == map0F && (p.op >= 0x70 && p.op <= 0x73 || p.op == 0xc2 || p.op >= 0xc4 && p.op <= 0xc6):
		p.attr |= aI8
	}
	return finish(code, i+5, p)
}

// finish reads ModRM, SIB, displacement and immediate from offset i on.
func finish(code []byte, i int, p parsed) (parsed, *lengthError) {
	a := p.attr
	if p.enc == encLegacy && p.op16 && p.rex&8 == 0 && a&aRel != 0 && a&aIz != 0 {
		return p, &lengthError{why: "66 prefix on a near branch: its length differs between Intel and AMD CPUs"}
	}
	if a&aM != 0 {
		if i >= len(code) {
			return p, errTruncated
		}
		p.modrmOff, p.modrm = i, code[i]
		i++
		if p.mod() != 3 && a&aModIgnored == 0 {
			switch {
			case p.rm() == 4:
				if i >= len(code) {
					return p, errTruncated
				}
				p.sibOff = i
				sib := code[i]
				i++
				if p.mod() == 0 && sib&7 == 5 {
					p.dispSize = 4
				}
			case p.mod() == 0 && p.rm() == 5:
				p.dispSize = 4
			}
			switch p.mod() {
			case 1:
				p.dispSize = 1
			case 2:
				p.dispSize = 4
			}
			p.dispOff = i
			i += p.dispSize
		}
	}
	imm := 0
	switch {
	case a&aIv != 0:
		switch {
		case p.rex&8 != 0:
			imm = 8
		case p.op16:
			imm = 2
		default:
			imm = 4
		}
	case a&aIz != 0:
		if p.op16 && p.rex&8 == 0 {
			imm = 2
		} else {
			imm = 4
		}
	case a&aMoffs != 0:
		if p.addr32 {
			imm = 4
		} else {
			imm = 8
		}
	case a&aFar != 0:
		imm = 6
	case a&aGrp3 != 0:
		if p.reg() < 2 {
			if p.op == 0xf6 {
				imm = 1
			} else if p.op16 && p.rex&8 == 0 {
				imm = 2
			} else {
				imm = 4
			}
		}
	case a&aI8I8 != 0:
		imm = 2
	}
	if a&aI16 != 0 {
		imm += 2
	}
	if a&aI8 != 0 {
		imm++
	}
	p.immOff, p.immSize = i, imm
	i += imm
	if i > 15 {
		return p, &lengthError{why: "longer than 15 bytes"}
	}
	if i > len(code) {
		return p, errTruncated
	}
	p.n = i
	return p, nil
}
