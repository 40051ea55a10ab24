package symtab

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

// Exits returns the addresses of fn's RET instructions, found by decoding
// its body linearly. A function may have none (it ends in a tail call or
// never returns); a body that does not decode is an error.
func (f *File) Exits(fn *Func) ([]uint64, error) {
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
		return fmt.Errorf("offset %#x is past the end of %s (%d bytes)", off, fn.Name, fn.Size)
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
		return fmt.Errorf("%s+%#x is not an instruction boundary: it is inside the %d-byte instruction at %s+%#x (% x)",
			fn.Name, off, prev.Len, fn.Name, prev.Addr-fn.Addr, prev.Code())
	}
	return nil
}
