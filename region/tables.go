package region

import (
	"encoding/binary"

	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
)

// Image is what Plan may read beyond the function: the entries of its jump
// tables, and which addresses hold code. Addresses are the function's own
// (a file's, or a process's where the caller maps them).
type Image interface {
	// ReadAt reads len(b) bytes at addr, from a data segment too.
	ReadAt(b []byte, addr uint64) (int, error)
	// Executable says whether addr lies in code.
	Executable(addr uint64) bool
}

// maxEntries bounds the entries read from one jump table.
const maxEntries = 4096

// tableTargets returns every address the indirect jump insns[i] may go
// to, when it dispatches through a jump table of a form compilers emit:
//
//	lea B,[rip+T]; movsxd R,[B+I*4]; add R,B; jmp R   int32 entries relative to T (PIC: gcc, clang)
//	jmp [T+I*8]                                        absolute entries (non-PIC)
//	lea B,[rip+T]; jmp [B+I*8]                         absolute entries (Go)
//
// The table's length is not known, so its entries are read until one
// names no code: every entry of a real table names code (the function, or
// its cold part), and entries read past its end only add targets, which
// can only make Plan refuse more. ok is false for any other indirect jump
// (a tail call through a register, say), whose targets are unknown.
func tableTargets(img Image, insns []*decode.Insn, i int) (targets []uint64, ok bool) {
	in := insns[i]
	switch a := in.Inst.Args[0].(type) {
	case x86asm.Mem:
		if a.Segment != 0 || a.Scale != 8 || a.Index == 0 {
			return nil, false
		}
		switch {
		case a.Base == 0 && !in.RIPRel:
			return readTable(img, uint64(a.Disp), 8, 0)
		case a.Disp == 0 && a.Base != 0 && a.Base != x86asm.RIP:
			if t, ok := leaBefore(insns, i, a.Base); ok {
				return readTable(img, t, 8, 0)
			}
		}
	case x86asm.Reg:
		// add R,B (or add B,R into R) right before the jump.
		if i < 1 || insns[i-1].Op != x86asm.ADD {
			return nil, false
		}
		add := insns[i-1]
		r0, ok0 := add.Inst.Args[0].(x86asm.Reg)
		b, ok1 := add.Inst.Args[1].(x86asm.Reg)
		if !ok0 || !ok1 || r0 != a {
			return nil, false
		}
		// movsxd R,dword [B+I*4] (or [B'+I*4] where B' is the other add
		// operand) before it.
		for k := i - 2; k >= 0 && k >= i-4; k-- {
			mv := insns[k]
			if mv.Op != x86asm.MOVSXD {
				if writes(mv, a) || writes(mv, b) {
					return nil, false
				}
				continue
			}
			dst, ok := mv.Inst.Args[0].(x86asm.Reg)
			m, okm := mv.Inst.Args[1].(x86asm.Mem)
			if !ok || !okm || dst != a || m.Scale != 4 || m.Disp != 0 || m.Segment != 0 || m.Base != b {
				return nil, false
			}
			t, ok := leaBefore(insns, k, b)
			if !ok {
				return nil, false
			}
			return readTable(img, t, 4, t)
		}
	}
	return nil, false
}

// leaBefore finds lea reg,[rip+T] among the few instructions before
// insns[i], with nothing in between writing reg, and returns T.
func leaBefore(insns []*decode.Insn, i int, reg x86asm.Reg) (uint64, bool) {
	for k := i - 1; k >= 0 && k >= i-8; k-- {
		in := insns[k]
		if in.Op == x86asm.LEA {
			if d, ok := in.Inst.Args[0].(x86asm.Reg); ok && d == reg {
				if !in.RIPRel {
					return 0, false
				}
				return in.Target, true
			}
		}
		if writes(in, reg) || in.Flow != decode.FlowNone && in.Flow != decode.FlowCondJump {
			return 0, false
		}
	}
	return 0, false
}

// writes says whether in's destination operand is reg, or a part of it.
func writes(in *decode.Insn, reg x86asm.Reg) bool {
	d, ok := in.Inst.Args[0].(x86asm.Reg)
	return ok && full(d) == full(reg)
}

// full returns the 64-bit register that r is part of.
func full(r x86asm.Reg) x86asm.Reg {
	switch {
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return r - x86asm.EAX + x86asm.RAX
	case r >= x86asm.AX && r <= x86asm.R15W:
		return r - x86asm.AX + x86asm.RAX
	case r >= x86asm.AL && r <= x86asm.BL:
		return r - x86asm.AL + x86asm.RAX
	case r >= x86asm.AH && r <= x86asm.BH:
		return r - x86asm.AH + x86asm.RAX
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return r - x86asm.SPB + x86asm.RSP
	}
	return r
}

// readTable reads the entries at t (size 4: int32 relative to rel; size
// 8: absolute) while they name code.
func readTable(img Image, t uint64, size int, rel uint64) ([]uint64, bool) {
	var out []uint64
	buf := make([]byte, 8)
	for k := 0; k < maxEntries; k++ {
		if n, _ := img.ReadAt(buf[:size], t+uint64(k*size)); n < size {
			break
		}
		var tgt uint64
		if size == 4 {
			tgt = rel + uint64(int64(int32(binary.LittleEndian.Uint32(buf))))
		} else {
			tgt = binary.LittleEndian.Uint64(buf)
		}
		if !img.Executable(tgt) {
			break
		}
		out = append(out, tgt)
	}
	return out, len(out) > 0
}
