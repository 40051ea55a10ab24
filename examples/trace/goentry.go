package main

import (
	"strings"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/examples/internal/symtab"
	"golang.org/x/arch/x86/x86asm"
)

// A Go function starts with a stack-bound check (cmp rsp, [r14+0x10]; jbe
// grow, or a variant through r12 for big frames); when the stack must grow,
// the goroutine calls morestack and starts the function again from its first
// byte. A probe on that first byte would count such a call twice, so a FUNC
// probe on a Go function goes just past the check, where Delve puts its
// breakpoints too: the arguments are still in their registers there.
// FUNC+0 keeps the first byte.
const goEntryScan = 6 // instructions looked at for the check

// pastStackCheck returns how far past fn's first byte its stack check ends,
// or 0 when it does not start with one. code is the function's start as the
// process has it.
func pastStackCheck(code []byte, pc uint64) uint64 {
	off := 0
	sawCheck := false
	for i := 0; i < goEntryScan && off < len(code); i++ {
		in, err := decode.Decode(code[off:], pc+uint64(off))
		if err != nil {
			return 0
		}
		off += in.Len
		if sawCheck {
			if in.Flow == decode.FlowCondJump {
				return uint64(off)
			}
			return 0
		}
		if in.Flow != decode.FlowNone && in.Flow != decode.FlowCondJump {
			return 0
		}
		sawCheck = isStackBoundCmp(in)
	}
	return 0
}

// isStackBoundCmp reports whether in is cmp reg, [r14+0x10]: a comparison
// with the goroutine's stackguard0.
func isStackBoundCmp(in *decode.Insn) bool {
	if in.Op != x86asm.CMP || in.Args[0].Kind != decode.ArgReg || in.Args[1].Kind != decode.ArgMem {
		return false
	}
	m := in.Args[1].Mem
	return m.Base == x86asm.R14 && m.Index == 0 && m.Disp == 0x10 && m.Seg == 0
}

// skipGoStackChecks moves the sites of a FUNC spec on Go functions past their
// stack checks, reading the code from the file (the process's copy may hold
// other probes' INT3s).
func skipGoStackChecks(sp *symtab.Spec, sites []symtab.ProcSite) {
	if sp.Func == "" || sp.Return || explicitOffset(sp.Raw) {
		return
	}
	var f *symtab.File
	for i := range sites {
		ps := &sites[i]
		if !ps.Go || ps.Offset != 0 {
			continue
		}
		if f == nil {
			var err error
			if f, err = symtab.Open(ps.Path); err != nil {
				return
			}
			defer f.Close()
		}
		code := make([]byte, goEntryScan*decode.MaxLen)
		n, _ := f.ReadAt(code, ps.Addr)
		if d := pastStackCheck(code[:n], ps.Addr); d != 0 {
			ps.Addr += d
			ps.PC += d
			ps.Offset += d
		}
	}
}

// explicitOffset reports whether raw spells an offset (FUNC+0 included).
func explicitOffset(raw string) bool {
	name, _, _ := strings.Cut(raw, " ")
	return strings.Contains(name, "+")
}
