package uprobe

import (
	"errors"
	"fmt"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
	"golang.org/x/arch/x86/x86asm"
)

// ABI is a calling convention: which registers carry a function's integer
// arguments and results.
type ABI uint8

const (
	// SysV is the System V AMD64 ABI of C, C++ and Rust.
	SysV ABI = iota
	// GoRegs is Go's internal register ABI (ABIInternal).
	GoRegs
)

// String names the convention.
func (a ABI) String() string {
	if a == GoRegs {
		return "Go register"
	}
	return "System V"
}

var (
	sysvArgs = []x86asm.Reg{x86asm.RDI, x86asm.RSI, x86asm.RDX, x86asm.RCX, x86asm.R8, x86asm.R9}
	sysvRets = []x86asm.Reg{x86asm.RAX, x86asm.RDX}
	// Go returns results in the registers it passes arguments in.
	goArgs = []x86asm.Reg{x86asm.RAX, x86asm.RBX, x86asm.RCX, x86asm.RDI, x86asm.RSI, x86asm.R8, x86asm.R9, x86asm.R10, x86asm.R11}
)

// ErrNotInRegister says that an argument or result is not passed in a
// register under the convention (it is on the stack, or does not exist).
var ErrNotInRegister = errors.New("not passed in a register")

// ArgReg returns the register holding integer argument n (counted from
// 1) at a function's entry.
func (a ABI) ArgReg(n int) (x86asm.Reg, error) {
	if a == GoRegs {
		return nth(goArgs, n, "argument", a)
	}
	return nth(sysvArgs, n, "argument", a)
}

// RetReg returns the register holding integer result n (counted from 1)
// at a function's return.
func (a ABI) RetReg(n int) (x86asm.Reg, error) {
	if a == GoRegs {
		return nth(goArgs, n, "result", a)
	}
	return nth(sysvRets, n, "result", a)
}

func nth(regs []x86asm.Reg, n int, what string, a ABI) (x86asm.Reg, error) {
	if n < 1 || n > len(regs) {
		return 0, fmt.Errorf("%s %d: %w: the %s ABI passes integer %ss 1 to %d in registers", what, n, ErrNotInRegister, a, what, len(regs))
	}
	return regs[n-1], nil
}

// Arg returns integer argument n (counted from 1) of a thread stopped at a
// function's entry.
func (a ABI) Arg(r *regs.Regs, n int) (uint64, error) {
	reg, err := a.ArgReg(n)
	if err != nil {
		return 0, err
	}
	return r.Get(reg), nil
}

// Ret returns integer result n (counted from 1) of a thread stopped at a
// function's return instruction.
func (a ABI) Ret(r *regs.Regs, n int) (uint64, error) {
	reg, err := a.RetReg(n)
	if err != nil {
		return 0, err
	}
	return r.Get(reg), nil
}

// ErrTooLong says that a string or slice is longer than the bound given.
var ErrTooLong = errors.New("longer than the bound")

// ReadCString reads the NUL-terminated string at addr, at most max bytes
// of it. A string with no NUL in its first max bytes is returned cut, with
// an error wrapping ErrTooLong; a fault is returned as memio reports it.
func ReadCString(m memio.Memory, addr uint64, max int) (string, error) {
	var out []byte
	var chunk [64]byte
	for len(out) < max {
		n := min(len(chunk), max-len(out))
		// Never read across a page boundary in one call: the string may
		// end just before an unmapped page.
		if room := memio.PageSize - int(addr%memio.PageSize); n > room {
			n = room
		}
		got, err := m.ReadAt(chunk[:n], int64(addr))
		for i := 0; i < got; i++ {
			if chunk[i] == 0 {
				return string(append(out, chunk[:i]...)), nil
			}
		}
		out = append(out, chunk[:got]...)
		if err != nil {
			return string(out), err
		}
		addr += uint64(got)
	}
	return string(out), fmt.Errorf("C string at %#x: %w of %d bytes", addr, ErrTooLong, max)
}

// ReadGoString reads a Go string given its data pointer and length (the
// two words a string argument takes, see ABI.Arg). At most max bytes are
// read; a longer string is returned cut, with an error wrapping ErrTooLong.
func ReadGoString(m memio.Memory, ptr, length uint64, max int) (string, error) {
	b, err := ReadGoSlice(m, ptr, length, 1, max)
	return string(b), err
}

// ReadGoSlice reads the bytes of a Go slice given its data pointer, its
// length and the size of one element (a slice argument takes three words:
// pointer, length, capacity). At most max bytes are read; a longer slice
// is returned cut to whole elements, with an error wrapping ErrTooLong.
func ReadGoSlice(m memio.Memory, ptr, length, elemSize uint64, max int) ([]byte, error) {
	if elemSize == 0 {
		return nil, fmt.Errorf("Go slice at %#x: element size 0", ptr)
	}
	var tooLong error
	n := length
	if n > uint64(max)/elemSize {
		n = uint64(max) / elemSize
		tooLong = fmt.Errorf("Go slice at %#x of %d elements: %w of %d bytes", ptr, length, ErrTooLong, max)
	}
	b := make([]byte, n*elemSize)
	if len(b) > 0 {
		if _, err := m.ReadAt(b, int64(ptr)); err != nil {
			return nil, err
		}
	}
	return b, tooLong
}
