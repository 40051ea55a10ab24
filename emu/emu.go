// Package emu applies one decoded x86-64 instruction to a stopped thread's
// registers and memory, so that a probed thread resumes after a single trap.
//
// The emulated set is what real probe sites need (Supports tells whether an
// instruction is in it):
// NOPs and ENDBR, push, pop, mov and its extending forms, lea, the integer
// arithmetic and logic instructions with the CPU's flags, shifts, register
// exchanges, sign extensions of rax, cmovcc and setcc, and the near branches,
// calls and returns. Everything else returns ErrNotEmulated and runs out of
// line instead.
//
// Step is atomic: it computes every result first, performs the instruction's
// single memory write (if any) last, and only then commits the registers. On
// any error neither registers nor memory have changed. The package is pure:
// it reaches memory only through the memio.Memory it is given.
//
// Flags the manual leaves undefined: and, or, xor and test clear AF (as the
// CPUs measured do); shifts keep the previous value of AF, of OF when the
// count is more than one, and of CF after shl and shr by at least the
// operand's width. DefinedFlags tells which flags are architecturally fixed
// after an instruction; only those are guaranteed to match a real CPU.
package emu

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// ErrNotEmulated is returned by Step for an instruction outside the emulated
// set: the caller runs it out of line instead.
var ErrNotEmulated = errors.New("emu: instruction not emulated")

// ErrNonCanonical is the cause (memio.Fault.Err) of a fault that Step reports
// for a memory access or branch target outside the canonical 48-bit address
// space, where the real CPU raises a general-protection fault. For a branch
// the Fault's Addr is the target and its Access is memio.Read. As with any
// Fault the caller lets the real CPU run the instruction, so the tracee gets
// the genuine signal.
var ErrNonCanonical = errors.New("non-canonical address")

// errNoMemory is returned when an instruction needs memory and Step was given none.
var errNoMemory = errors.New("emu: instruction accesses memory but no memory was given")

// InternalError reports a defect in Step: a panic, recovered so that it never
// escapes into the tracer. Step changes registers only after everything that
// can fail or panic, so they and memory are left as they were. It carries the
// instruction and the panic value.
type InternalError struct {
	Addr  uint64
	Bytes []byte
	Value any
}

func (e *InternalError) Error() string {
	return fmt.Sprintf("emu: internal error on % x at %#x: %v", e.Bytes, e.Addr, e.Value)
}

// canonical reports whether a is a canonical address with 48 implemented
// bits. On a machine with 57-bit addresses this refuses a few valid ones,
// which only sends them to the real CPU.
func canonical(a uint64) bool { return uint64(int64(a<<16)>>16) == a }

// state is one Step in progress. Handlers read and compute everything first,
// perform the instruction's single memory write (the last thing that can
// fail), and only then change registers, so an error leaves all unchanged.
type state struct {
	in *decode.Insn
	m  memio.Memory
	r  *regs.Regs
}

// Step applies in to the registers r and the memory m and sets r.RIP to the
// next instruction or the branch target. It returns ErrNotEmulated for an
// instruction outside the emulated set, a *memio.Fault when the instruction
// would fault, and another error for bad arguments; in every case of error
// neither r nor m has changed. Step does not allocate when it succeeds and
// m implements memio.Uints.
func Step(in *decode.Insn, r *regs.Regs, m memio.Memory) (err error) {
	if in == nil || r == nil {
		return errors.New("emu: Step needs an instruction and registers")
	}
	if in.Len < 1 || in.Len > len(in.Bytes) {
		return fmt.Errorf("emu: instruction at %#x has length %d", in.Addr, in.Len)
	}
	defer func() {
		if v := recover(); v != nil {
			err = &InternalError{Addr: in.Addr, Bytes: append([]byte(nil), in.Bytes[:in.Len]...), Value: v}
		}
	}()
	f, why := check(in)
	if why != "" {
		return ErrNotEmulated
	}
	s := state{in: in, m: m, r: r}
	return s.exec(f)
}

// isGPR reports whether a is a general register.
func isGPR(a *decode.Arg) bool { return a.Kind == decode.ArgReg && regs.Size(a.Reg) != 0 }

// validSize reports whether n is an integer operand size.
func validSize(n int) bool { return n == 1 || n == 2 || n == 4 || n == 8 }

// size returns the width in bytes of the register or memory operand a, or 0
// when a is neither or has no integer width.
func size(a *decode.Arg) int {
	switch a.Kind {
	case decode.ArgReg:
		return regs.Size(a.Reg)
	case decode.ArgMem:
		if validSize(int(a.Size)) {
			return int(a.Size)
		}
	}
	return 0
}

// ea returns the address that the memory operand mem names, segment base
// included, with the address-size truncation applied before the base is added.
func (s *state) ea(mem *decode.Mem) uint64 {
	a := uint64(mem.Disp)
	if mem.Base != 0 {
		a += s.r.Get(mem.Base)
	}
	if mem.Index != 0 {
		a += s.r.Get(mem.Index) * uint64(mem.Scale)
	}
	if mem.AddrSize == 4 {
		a &= 0xffffffff
	}
	switch mem.Seg {
	case x86asm.FS:
		a += s.r.FSBase
	case x86asm.GS:
		a += s.r.GSBase
	}
	return a
}

// checkRange returns the fault of a size-byte access at addr that leaves the
// canonical address space, or nil.
func checkRange(addr uint64, size int, acc memio.Access) error {
	if !canonical(addr) {
		return &memio.Fault{Addr: addr, Access: acc, Err: ErrNonCanonical}
	}
	if end := addr + uint64(size) - 1; !canonical(end) {
		// The first non-canonical byte is just past the lower half.
		return &memio.Fault{Addr: 1 << 47, Access: acc, Err: ErrNonCanonical}
	}
	return nil
}

// load reads a size-byte value at addr.
func (s *state) load(addr uint64, size int) (uint64, error) {
	if err := checkRange(addr, size, memio.Read); err != nil {
		return 0, err
	}
	if s.m == nil {
		return 0, errNoMemory
	}
	return memio.ReadUint(s.m, addr, size)
}

// store writes the size-byte value v at addr. It is the last step of an
// instruction that can fail.
func (s *state) store(addr uint64, size int, v uint64) error {
	if err := checkRange(addr, size, memio.Write); err != nil {
		return err
	}
	if s.m == nil {
		return errNoMemory
	}
	return memio.WriteUint(s.m, addr, size, v&mask(size))
}

// read returns the value of operand a of size bytes; mem is the address of a
// when a is a memory operand.
func (s *state) read(a *decode.Arg, size int, mem uint64) (uint64, error) {
	switch a.Kind {
	case decode.ArgReg:
		return s.r.Get(a.Reg), nil
	case decode.ArgMem:
		return s.load(mem, size)
	}
	return imm(a) & mask(size), nil
}

// imm returns the immediate a sign-extended to 64 bits: every immediate of
// the emulated set but ret's is sign-extended by the CPU, and decode may have
// done so already.
func imm(a *decode.Arg) uint64 {
	if !validSize(int(a.Size)) {
		return a.Imm
	}
	return signExtend(a.Imm&mask(int(a.Size)), int(a.Size))
}

// write sets operand a of size bytes to v; mem is the address of a when a is
// a memory operand. Only a memory write can fail, and it then changes nothing.
func (s *state) write(a *decode.Arg, size int, mem uint64, v uint64) error {
	if a.Kind == decode.ArgReg {
		s.r.Set(a.Reg, v&mask(size))
		return nil
	}
	return s.store(mem, size, v)
}

// push writes v below the stack pointer and then moves it.
func (s *state) push(v uint64) error {
	sp := s.r.GPR[regs.RSP] - 8
	if err := s.store(sp, 8, v); err != nil {
		return err
	}
	s.r.GPR[regs.RSP] = sp
	return nil
}

// pop reads the quadword on top of the stack and moves the stack pointer past it.
func (s *state) pop() (uint64, error) {
	sp := s.r.GPR[regs.RSP]
	v, err := s.load(sp, 8)
	if err != nil {
		return 0, err
	}
	s.r.GPR[regs.RSP] = sp + 8
	return v, nil
}

// checkTarget returns the fault of a branch to target, where the CPU would
// fault on the branch itself, or nil.
func checkTarget(target uint64) error {
	if !canonical(target) {
		return &memio.Fault{Addr: target, Access: memio.Read, Err: ErrNonCanonical}
	}
	return nil
}

// branch sets rip to target after checking that the CPU would not fault on it.
func (s *state) branch(target uint64) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	s.r.RIP = target
	return nil
}

// exec applies s.in, of the form f that check accepted, to s.r and s.m.
func (s *state) exec(f form) error {
	in := s.in
	a0, a1 := &in.Args[0], &in.Args[1]
	next := in.Next()
	// The memory operand's address is computed before anything moves, which
	// is the CPU's order too (push [rsp], call [rsp+8]).
	var mem uint64
	if f.memIdx >= 0 {
		mem = s.ea(&in.Args[f.memIdx].Mem)
	}

	switch f.class {
	case cNop, cPause:

	case cPush:
		var v uint64
		switch a0.Kind {
		case decode.ArgReg:
			v = s.r.Get(a0.Reg)
		case decode.ArgImm:
			v = imm(a0)
		default:
			var err error
			if v, err = s.load(mem, 8); err != nil {
				return err
			}
		}
		if err := s.push(v); err != nil {
			return err
		}

	case cPop:
		v, err := s.pop()
		if err != nil {
			return err
		}
		s.r.Set(a0.Reg, v)

	case cMov:
		sz := size(a0)
		v, err := s.read(a1, sz, mem)
		if err != nil {
			return err
		}
		if err := s.write(a0, sz, mem, v); err != nil {
			return err
		}

	case cMovx:
		dsz, ssz := size(a0), size(a1)
		v, err := s.read(a1, ssz, mem)
		if err != nil {
			return err
		}
		if in.Op != x86asm.MOVZX {
			v = signExtend(v&mask(ssz), ssz)
		}
		s.r.Set(a0.Reg, v&mask(dsz))

	case cLea:
		dsz := size(a0)
		// lea computes the offset only: no segment base.
		m := a1.Mem
		m.Seg = 0
		s.r.Set(a0.Reg, s.ea(&m)&mask(dsz))

	case cAlu:
		sz := size(a0)
		a, err := s.read(a0, sz, mem)
		if err != nil {
			return err
		}
		b, err := s.read(a1, sz, mem)
		if err != nil {
			return err
		}
		a &= mask(sz)
		b &= mask(sz)
		var res, f uint64
		set := statusFlags
		c := s.r.RFLAGS & regs.CF
		switch in.Op {
		case x86asm.ADD:
			res, f = add(a, b, 0, sz)
		case x86asm.ADC:
			res, f = add(a, b, c, sz)
		case x86asm.SUB, x86asm.CMP:
			res, f = sub(a, b, 0, sz)
		case x86asm.SBB:
			res, f = sub(a, b, c, sz)
		default:
			switch in.Op {
			case x86asm.OR:
				res = a | b
			case x86asm.XOR:
				res = a ^ b
			default: // AND, TEST
				res = a & b
			}
			// AF is undefined; it is cleared, as the CPUs measured do.
			f = szp(res, sz)
		}
		if in.Op != x86asm.CMP && in.Op != x86asm.TEST {
			if err := s.write(a0, sz, mem, res); err != nil {
				return err
			}
		}
		s.r.RFLAGS = s.r.RFLAGS&^set | f

	case cUnary:
		sz := size(a0)
		a, err := s.read(a0, sz, mem)
		if err != nil {
			return err
		}
		a &= mask(sz)
		var res, f uint64
		set := statusFlags &^ regs.CF
		switch in.Op {
		case x86asm.INC:
			res, f = add(a, 1, 0, sz)
		case x86asm.DEC:
			res, f = sub(a, 1, 0, sz)
		case x86asm.NEG:
			res, f = sub(0, a, 0, sz)
			set = statusFlags
		default:
			res, set = ^a, 0
		}
		if err := s.write(a0, sz, mem, res); err != nil {
			return err
		}
		s.r.RFLAGS = s.r.RFLAGS&^set | f&set

	case cShift:
		sz := size(a0)
		var count uint64
		if a1.Kind == decode.ArgImm {
			count = a1.Imm & 0xff
		} else { // CL
			count = s.r.Get(x86asm.CL)
		}
		count &= countMask(sz)
		a, err := s.read(a0, sz, mem)
		if err != nil {
			return err
		}
		res, f, set := shift(in.Op, a&mask(sz), count, sz)
		// A zero count still writes memory back: the CPU checks write
		// access to the destination whatever the count (measured: a shift
		// by zero of a read-only page faults).
		if err := s.write(a0, sz, mem, res); err != nil {
			return err
		}
		s.r.RFLAGS = s.r.RFLAGS&^set | f&set

	case cXchg:
		v0, v1 := s.r.Get(a0.Reg), s.r.Get(a1.Reg)
		s.r.Set(a0.Reg, v1)
		s.r.Set(a1.Reg, v0)

	case cCbw:
		sz := map3(in.Op, x86asm.CBW, x86asm.CWDE)
		a := s.r.GPR[regs.RAX] & mask(sz)
		v := signExtend(a, sz) & mask(2*sz)
		switch sz {
		case 1:
			s.r.Set(x86asm.AX, v)
		case 2:
			s.r.Set(x86asm.EAX, v)
		default:
			s.r.Set(x86asm.RAX, v)
		}

	case cCwd:
		sz := map3(in.Op, x86asm.CWD, x86asm.CDQ) * 2
		hi := uint64(0)
		if msb(s.r.GPR[regs.RAX], sz) != 0 {
			hi = ^uint64(0)
		}
		switch sz {
		case 2:
			s.r.Set(x86asm.DX, hi)
		case 4:
			s.r.Set(x86asm.EDX, hi)
		default:
			s.r.Set(x86asm.RDX, hi)
		}

	case cCmov:
		sz := size(a0)
		// The source is read, and may fault, whatever the condition.
		v, err := s.read(a1, sz, mem)
		if err != nil {
			return err
		}
		if !cond(in.Cond, s.r.RFLAGS) {
			// A 32-bit destination is written (its upper half zeroed) anyway.
			v = s.r.Get(a0.Reg)
		}
		s.r.Set(a0.Reg, v)

	case cSet:
		var v uint64
		if cond(in.Cond, s.r.RFLAGS) {
			v = 1
		}
		if err := s.write(a0, 1, mem, v); err != nil {
			return err
		}

	case cJmp:
		t, err := s.target(a0, mem)
		if err != nil {
			return err
		}
		return s.branch(t)

	case cJcc:
		t := next
		if cond(in.Cond, s.r.RFLAGS) {
			t = a0.Imm
		}
		return s.branch(t)

	case cJrcxz:
		c := s.r.GPR[regs.RCX]
		if in.Op == x86asm.JECXZ {
			c &= 0xffffffff
		}
		t := next
		if c == 0 {
			t = a0.Imm
		}
		return s.branch(t)

	case cLoop:
		c := s.r.GPR[regs.RCX] - 1
		taken := c != 0
		switch in.Op {
		case x86asm.LOOPE:
			taken = taken && s.r.RFLAGS&regs.ZF != 0
		case x86asm.LOOPNE:
			taken = taken && s.r.RFLAGS&regs.ZF == 0
		}
		t := next
		if taken {
			t = a0.Imm
		}
		if err := s.branch(t); err != nil {
			return err
		}
		s.r.GPR[regs.RCX] = c
		return nil

	case cCall:
		t, err := s.target(a0, mem)
		if err != nil {
			return err
		}
		if err := checkTarget(t); err != nil {
			return err
		}
		if err := s.push(next); err != nil {
			return err
		}
		s.r.RIP = t
		return nil

	case cRet:
		sp := s.r.GPR[regs.RSP]
		t, err := s.load(sp, 8)
		if err != nil {
			return err
		}
		if err := s.branch(t); err != nil {
			return err
		}
		sp += 8
		if f.n == 1 {
			sp += a0.Imm & 0xffff
		}
		s.r.GPR[regs.RSP] = sp
		return nil

	case cLeave:
		bp := s.r.GPR[regs.RBP]
		v, err := s.load(bp, 8)
		if err != nil {
			return err
		}
		s.r.GPR[regs.RSP] = bp + 8
		s.r.GPR[regs.RBP] = v
	}

	s.r.RIP = next
	return nil
}

// target returns the destination of a jmp or call: a relative target, or a
// quadword register or memory operand.
func (s *state) target(a *decode.Arg, mem uint64) (uint64, error) {
	switch {
	case a.Kind == decode.ArgRel:
		return a.Imm, nil
	case isGPR(a) && regs.Size(a.Reg) == 8:
		return s.r.Get(a.Reg), nil
	case a.Kind == decode.ArgMem && a.Size == 8:
		return s.load(mem, 8)
	}
	return 0, ErrNotEmulated
}

// map3 returns 1, 2 or 4 for the first, second and third of three related ops.
func map3(op, first, second x86asm.Op) int {
	switch op {
	case first:
		return 1
	case second:
		return 2
	}
	return 4
}

// countMask is the mask the CPU applies to a shift count.
func countMask(size int) uint64 {
	if size == 8 {
		return 0x3f
	}
	return 0x1f
}

// shift returns the result of shl, shr or sar of the size-byte value v by
// count (already masked), the flags it computes, and which of them it defines.
func shift(op x86asm.Op, v, count uint64, size int) (res, f, set uint64) {
	if count == 0 {
		return v, 0, 0
	}
	width := 8 * uint64(size)
	var cf, of uint64
	switch op {
	case x86asm.SHL:
		res = v << count & mask(size)
		if count <= width {
			cf = v >> (width - count) & 1
		}
		of = msb(res, size) ^ cf
	case x86asm.SHR:
		res = v >> count
		cf = v >> (count - 1) & 1
		of = msb(v, size)
	default: // SAR
		sv := int64(signExtend(v, size))
		res = uint64(sv>>count) & mask(size)
		cf = uint64(sv>>(count-1)) & 1
	}
	f = szp(res, size)
	if cf != 0 {
		f |= regs.CF
	}
	if of != 0 {
		f |= regs.OF
	}
	set = regs.PF | regs.ZF | regs.SF | regs.CF
	if op != x86asm.SAR && count >= width {
		set &^= regs.CF
	}
	if count == 1 {
		set |= regs.OF
	}
	return res, f, set
}
