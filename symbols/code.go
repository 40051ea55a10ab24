package symbols

import (
	"fmt"

	"github.com/onetrap/onetrap/decode"
	"golang.org/x/arch/x86/x86asm"
)

// DecodeError says where a function body stopped decoding: a body that
// cannot be walked is reported, never guessed through.
type DecodeError struct {
	Func   string
	Addr   uint64 // address of the undecodable instruction
	Offset uint64 // its offset in the function
	Bytes  []byte // up to 15 bytes from Addr, within the body
	Err    error
}

// Error names the function, the offset, the address and the bytes.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("cannot decode %s+%#x (%#x: % x): %v", e.Func, e.Offset, e.Addr, e.Bytes, e.Err)
}

// Unwrap returns the decoder's error (a *decode.Error).
func (e *DecodeError) Unwrap() error { return e.Err }

// Walk decodes fn's body linearly from its first byte, calling visit for
// each instruction until visit returns false or the body ends. An
// instruction that cannot be decoded, or that would run past the body's
// end, stops the walk with a *DecodeError.
func (f *File) Walk(fn *Func, visit func(in *decode.Insn) bool) error {
	body, err := f.Body(fn)
	if err != nil {
		return err
	}
	return walkBody(fn, body, visit)
}

func walkBody(fn *Func, body []byte, visit func(in *decode.Insn) bool) error {
	for off := 0; off < len(body); {
		pc := fn.Addr + uint64(off)
		in, err := decode.Decode(body[off:], pc)
		if err == nil && (in == nil || in.Len <= 0 || in.Len > len(body)-off) {
			err = fmt.Errorf("decoder returned an instruction length outside the body")
		}
		if err != nil {
			end := min(off+15, len(body))
			return &DecodeError{Func: fn.Name, Addr: pc, Offset: uint64(off), Bytes: append([]byte(nil), body[off:end]...), Err: err}
		}
		if !visit(in) {
			return nil
		}
		off += in.Len
	}
	return nil
}

// IsRet reports whether in is a near return (c3, c2 iw, with any prefixes
// such as f2 bnd or f3 rep).
func IsRet(in *decode.Insn) bool {
	return in.Flow == decode.FlowRet || in.Op == x86asm.RET || in.Inst.Op == x86asm.RET
}

// Returns returns the addresses of fn's RET instructions, found by
// decoding its body linearly. A function may have none (it ends in a tail
// call or never returns); a body that does not decode is an error, and so
// is one whose end is a guess (ErrUnknownSize).
func (f *File) Returns(fn *Func) ([]uint64, error) {
	if fn.SizeGuessed {
		return nil, fmt.Errorf("%s at %#x: %w: its symbol has size 0 and no unwind entry gives its end", fn.Name, fn.Addr, ErrUnknownSize)
	}
	var out []uint64
	err := f.Walk(fn, func(in *decode.Insn) bool {
		if IsRet(in) {
			out = append(out, in.Addr)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CheckBoundary reports an error unless fn+off is the start of an
// instruction when fn is decoded linearly from its start.
func (f *File) CheckBoundary(fn *Func, off uint64) error {
	if off >= fn.Size {
		return fmt.Errorf("%w: offset %#x is past the end of %s (%d bytes)", ErrNotBoundary, off, fn.Name, fn.Size)
	}
	target := fn.Addr + off
	var prev *decode.Insn
	err := f.Walk(fn, func(in *decode.Insn) bool {
		if in.Addr >= target {
			return false
		}
		prev = in
		return true
	})
	if err != nil {
		return fmt.Errorf("checking that %s+%#x is an instruction boundary: %w", fn.Name, off, err)
	}
	if prev != nil && prev.Next() > target {
		return fmt.Errorf("%s+%#x is %w: it is inside the %d-byte instruction at %s+%#x (% x)",
			fn.Name, off, ErrNotBoundary, prev.Len, fn.Name, prev.Addr-fn.Addr, prev.Code())
	}
	return nil
}

// A Go function starts with a stack-bound check (cmp rsp, [r14+0x10]; jbe
// grow, or a variant through r12 for big frames); when the stack must grow,
// the goroutine calls morestack and starts the function again from its first
// byte. A probe on that first byte would count such a call twice, so a
// function probe on a Go function goes just past the check, where Delve puts
// its breakpoints too: the arguments are still in their registers there.
const goEntryScan = 6 // instructions looked at for the check

// StackCheckSkip returns how many bytes past fn's first byte its Go
// stack-bound check ends (where a probe counts each call once), or 0 when
// fn is not a Go function or does not start with the check.
func (f *File) StackCheckSkip(fn *Func) uint64 {
	if !fn.Go {
		return 0
	}
	code := make([]byte, min(uint64(goEntryScan*decode.MaxLen), fn.Size))
	n, _ := f.ReadAt(code, fn.Addr)
	return pastStackCheck(code[:n], fn.Addr)
}

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

// preferABIInternal makes a Go name find the function itself rather than
// its ABI0 wrapper (the adapter assembly calls through, named NAME.abi0 in
// the symbol table and NAME in the pclntab). The wrapper is told apart, in
// stripped binaries too, by what it does: it calls or jumps to the other
// function of the same name.
func (f *File) preferABIInternal() {
	for name, idx := range f.byNm {
		if len(idx) < 2 {
			continue
		}
		starts := map[uint64]bool{}
		for _, i := range idx {
			starts[f.Funcs[i].Addr] = true
		}
		var keep []int
		for _, i := range idx {
			fn := &f.Funcs[i]
			if fn.Go && f.reaches(fn, starts) {
				wrapper := name + ".abi0"
				if fn.Name == name {
					fn.Name = wrapper
					fn.Aliases = append(fn.Aliases, name)
				}
				if !fn.HasName(wrapper) {
					fn.Aliases = append(fn.Aliases, wrapper)
				}
				if !contains(f.byNm[wrapper], i) {
					f.byNm[wrapper] = append(f.byNm[wrapper], i)
				}
				continue
			}
			keep = append(keep, i)
		}
		if len(keep) > 0 {
			f.byNm[name] = keep
		}
	}
}

// reaches reports whether fn's body calls or jumps directly to one of the
// addresses in starts other than its own.
func (f *File) reaches(fn *Func, starts map[uint64]bool) bool {
	found := false
	f.Walk(fn, func(in *decode.Insn) bool {
		for _, a := range in.Args {
			if a.Kind == decode.ArgRel && a.Imm != fn.Addr && starts[a.Imm] {
				found = true
			}
		}
		return !found
	})
	return found
}

func contains(a []int, v int) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}
