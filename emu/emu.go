// Package emu applies one decoded x86-64 instruction to a stopped thread's
// registers and memory, so that a probed thread resumes after a single trap.
//
// The emulated set is what real probe sites need (see decode.Insn.Kind):
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

// Prefix bits found in front of an instruction's opcode.
const (
	p66 = 1 << iota
	p67
	pF2
	pF3
	pLock
	pOther
)

// prefixBits classifies the bytes that may precede an opcode: the legacy
// prefixes that matter, and pOther for the segment prefixes and REX, which
// the operands already account for.
var prefixBits = func() (t [256]uint8) {
	t[0x66], t[0x67], t[0xf2], t[0xf3], t[0xf0] = p66, p67, pF2, pF3, pLock
	for _, b := range []byte{0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65} {
		t[b] = pOther
	}
	for b := 0x40; b < 0x50; b++ {
		t[b] = pOther
	}
	return t
}()

// prefixes returns the legacy prefixes of in and the offset of its opcode
// (after any REX prefix).
func prefixes(in *decode.Insn) (p uint8, op int) {
	n := min(in.Len, len(in.Bytes))
	for op < n {
		b := prefixBits[in.Bytes[op]]
		if b == 0 {
			break
		}
		p |= b
		op++
	}
	return p &^ pOther, op
}

// sourceFits reports whether a1 can be the source of a two-operand
// instruction of sz bytes whose destination is a0: a register of that size,
// memory when the destination is a register, or an immediate.
func sourceFits(a0, a1 *decode.Arg, sz int) bool {
	switch {
	case isGPR(a1) && regs.Size(a1.Reg) == sz:
	case a1.Kind == decode.ArgMem && a0.Kind == decode.ArgReg && int(a1.Size) == sz:
	case a1.Kind == decode.ArgImm:
	default:
		return false
	}
	return true
}

// canonical reports whether a is a canonical address with 48 implemented
// bits. On a machine with 57-bit addresses this refuses a few valid ones,
// which only sends them to the real CPU.
func canonical(a uint64) bool { return uint64(int64(a<<16)>>16) == a }

// Classes of operations, the first dispatch of exec.
const (
	cNone uint8 = iota
	cNop
	cPause
	cPush
	cPop
	cMov
	cMovx
	cLea
	cAlu
	cUnary
	cShift
	cXchg
	cCbw
	cCwd
	cCmov
	cSet
	cJmp
	cJcc
	cJrcxz
	cLoop
	cCall
	cRet
	cLeave
)

// opClass maps an x86asm.Op to its class; ops outside the set are cNone.
var opClass = func() []uint8 {
	ops := map[uint8][]x86asm.Op{
		cNop:   {x86asm.NOP},
		cPause: {x86asm.PAUSE},
		cPush:  {x86asm.PUSH},
		cPop:   {x86asm.POP},
		cMov:   {x86asm.MOV},
		cMovx:  {x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD},
		cLea:   {x86asm.LEA},
		cAlu:   {x86asm.ADD, x86asm.OR, x86asm.ADC, x86asm.SBB, x86asm.AND, x86asm.SUB, x86asm.XOR, x86asm.CMP, x86asm.TEST},
		cUnary: {x86asm.INC, x86asm.DEC, x86asm.NEG, x86asm.NOT},
		cShift: {x86asm.SHL, x86asm.SHR, x86asm.SAR},
		cXchg:  {x86asm.XCHG},
		cCbw:   {x86asm.CBW, x86asm.CWDE, x86asm.CDQE},
		cCwd:   {x86asm.CWD, x86asm.CDQ, x86asm.CQO},
		cCmov:  {x86asm.CMOVA, x86asm.CMOVAE, x86asm.CMOVB, x86asm.CMOVBE, x86asm.CMOVE, x86asm.CMOVG, x86asm.CMOVGE, x86asm.CMOVL, x86asm.CMOVLE, x86asm.CMOVNE, x86asm.CMOVNO, x86asm.CMOVNP, x86asm.CMOVNS, x86asm.CMOVO, x86asm.CMOVP, x86asm.CMOVS},
		cSet:   {x86asm.SETA, x86asm.SETAE, x86asm.SETB, x86asm.SETBE, x86asm.SETE, x86asm.SETG, x86asm.SETGE, x86asm.SETL, x86asm.SETLE, x86asm.SETNE, x86asm.SETNO, x86asm.SETNP, x86asm.SETNS, x86asm.SETO, x86asm.SETP, x86asm.SETS},
		cJmp:   {x86asm.JMP},
		cJcc:   {x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS},
		cJrcxz: {x86asm.JRCXZ, x86asm.JECXZ},
		cLoop:  {x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE},
		cCall:  {x86asm.CALL},
		cRet:   {x86asm.RET},
		cLeave: {x86asm.LEAVE},
	}
	maxOp := x86asm.Op(0)
	for _, l := range ops {
		for _, op := range l {
			maxOp = max(maxOp, op)
		}
	}
	t := make([]uint8, maxOp+1)
	for c, l := range ops {
		for _, op := range l {
			t[op] = c
		}
	}
	return t
}()

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
	if in.Lock {
		return ErrNotEmulated
	}
	defer func() {
		if v := recover(); v != nil {
			err = &InternalError{Addr: in.Addr, Bytes: append([]byte(nil), in.Bytes[:in.Len]...), Value: v}
		}
	}()
	s := state{in: in, m: m, r: r}
	return s.exec()
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

// exec applies s.in to s.r and s.m. It returns ErrNotEmulated, before
// changing anything, for a form outside the set.
func (s *state) exec() error {
	in := s.in
	var class uint8
	if int(in.Op) < len(opClass) {
		class = opClass[in.Op]
	}
	if class == cNone {
		return ErrNotEmulated
	}
	p, opOff := prefixes(in)
	n, memIdx := 0, -1
	for n < len(in.Args) && in.Args[n].Kind != decode.ArgNone {
		if in.Args[n].Kind == decode.ArgMem && memIdx < 0 {
			memIdx = n
		}
		n++
	}
	memArg := memIdx >= 0
	if p != 0 && !prefixesOK(in, class, p, memArg) {
		return ErrNotEmulated
	}
	a0, a1 := &in.Args[0], &in.Args[1]
	next := in.Next()
	// The memory operand's address is computed before anything moves, which
	// is the CPU's order too (push [rsp], call [rsp+8]).
	var mem uint64
	if memArg {
		mem = s.ea(&in.Args[memIdx].Mem)
	}

	switch class {
	case cNop:
		if in.Inst.Op == 0 {
			if !isEndbr(in) {
				return ErrNotEmulated
			}
			break
		}
		if !isNopOpcode(in, opOff) {
			return ErrNotEmulated
		}

	case cPause:
		if in.Len != 2 || in.Bytes[0] != 0xf3 || in.Bytes[1] != 0x90 {
			return ErrNotEmulated
		}

	case cPush:
		if n != 1 || in.OpSize != 8 {
			return ErrNotEmulated
		}
		var v uint64
		switch {
		case isGPR(a0) && regs.Size(a0.Reg) == 8:
			v = s.r.Get(a0.Reg)
		case a0.Kind == decode.ArgImm:
			v = imm(a0)
		case a0.Kind == decode.ArgMem && a0.Size == 8:
			var err error
			if v, err = s.load(mem, 8); err != nil {
				return err
			}
		default:
			return ErrNotEmulated
		}
		if err := s.push(v); err != nil {
			return err
		}

	case cPop:
		if n != 1 || in.OpSize != 8 || !isGPR(a0) || regs.Size(a0.Reg) != 8 {
			return ErrNotEmulated
		}
		v, err := s.pop()
		if err != nil {
			return err
		}
		s.r.Set(a0.Reg, v)

	case cMov:
		sz := size(a0)
		if n != 2 || sz == 0 || !(isGPR(a0) || a0.Kind == decode.ArgMem) {
			return ErrNotEmulated
		}
		if !sourceFits(a0, a1, sz) {
			return ErrNotEmulated
		}
		v, err := s.read(a1, sz, mem)
		if err != nil {
			return err
		}
		if err := s.write(a0, sz, mem, v); err != nil {
			return err
		}

	case cMovx:
		dsz, ssz := size(a0), size(a1)
		if n != 2 || !isGPR(a0) || dsz < 2 || ssz == 0 || ssz > dsz {
			return ErrNotEmulated
		}
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
		if n != 2 || !isGPR(a0) || dsz < 2 || a1.Kind != decode.ArgMem {
			return ErrNotEmulated
		}
		// lea computes the offset only: no segment base.
		m := a1.Mem
		m.Seg = 0
		s.r.Set(a0.Reg, s.ea(&m)&mask(dsz))

	case cAlu:
		sz := size(a0)
		if n != 2 || sz == 0 {
			return ErrNotEmulated
		}
		if !sourceFits(a0, a1, sz) {
			return ErrNotEmulated
		}
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
		if n != 1 || sz == 0 {
			return ErrNotEmulated
		}
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
		if n != 2 || sz == 0 {
			return ErrNotEmulated
		}
		var count uint64
		switch {
		case a1.Kind == decode.ArgImm:
			count = a1.Imm & 0xff
		case a1.Kind == decode.ArgReg && a1.Reg == x86asm.CL:
			count = s.r.Get(x86asm.CL)
		default:
			return ErrNotEmulated
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
		sz := size(a0)
		if n != 2 || !isGPR(a0) || !isGPR(a1) || regs.Size(a1.Reg) != sz {
			return ErrNotEmulated
		}
		v0, v1 := s.r.Get(a0.Reg), s.r.Get(a1.Reg)
		s.r.Set(a0.Reg, v1)
		s.r.Set(a1.Reg, v0)

	case cCbw:
		if n != 0 {
			return ErrNotEmulated
		}
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
		if n != 0 {
			return ErrNotEmulated
		}
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
		if n != 2 || !isGPR(a0) || sz < 2 || size(a1) != sz {
			return ErrNotEmulated
		}
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
		if n != 1 || size(a0) != 1 {
			return ErrNotEmulated
		}
		var v uint64
		if cond(in.Cond, s.r.RFLAGS) {
			v = 1
		}
		if err := s.write(a0, 1, mem, v); err != nil {
			return err
		}

	case cJmp:
		if n != 1 {
			return ErrNotEmulated
		}
		t, err := s.target(a0, mem)
		if err != nil {
			return err
		}
		return s.branch(t)

	case cJcc:
		if n != 1 || a0.Kind != decode.ArgRel {
			return ErrNotEmulated
		}
		t := next
		if cond(in.Cond, s.r.RFLAGS) {
			t = a0.Imm
		}
		return s.branch(t)

	case cJrcxz:
		if n != 1 || a0.Kind != decode.ArgRel {
			return ErrNotEmulated
		}
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
		if n != 1 || a0.Kind != decode.ArgRel {
			return ErrNotEmulated
		}
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
		if n != 1 {
			return ErrNotEmulated
		}
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
		if n > 1 || (n == 1 && a0.Kind != decode.ArgImm) {
			return ErrNotEmulated
		}
		sp := s.r.GPR[regs.RSP]
		t, err := s.load(sp, 8)
		if err != nil {
			return err
		}
		if err := s.branch(t); err != nil {
			return err
		}
		sp += 8
		if n == 1 {
			sp += a0.Imm & 0xffff
		}
		s.r.GPR[regs.RSP] = sp
		return nil

	case cLeave:
		if n != 0 || in.OpSize != 8 {
			return ErrNotEmulated
		}
		bp := s.r.GPR[regs.RBP]
		v, err := s.load(bp, 8)
		if err != nil {
			return err
		}
		s.r.GPR[regs.RSP] = bp + 8
		s.r.GPR[regs.RBP] = v

	default:
		return ErrNotEmulated
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

// prefixesOK applies the rules for prefixes that change what an
// instruction does beyond the sizes its operands carry.
func prefixesOK(in *decode.Insn, class, p uint8, memArg bool) bool {
	if p&pLock != 0 {
		return false
	}
	if in.RIPRel && p&p67 != 0 {
		// eip-relative: decode refuses it, and so does Step.
		return false
	}
	// branch: near branches; fixed: instructions whose operand size is 64
	// bits in 64-bit mode whatever REX.W says.
	branch, fixed := false, false
	switch class {
	case cPush, cPop, cLeave, cJrcxz, cLoop:
		fixed = true
	case cJmp, cCall, cRet, cJcc:
		branch = true
	}
	// F2 and F3 select other instructions in front of many opcodes. They
	// are part of ENDBR and PAUSE, and a branch hint (BND, or the "rep ret"
	// of old compilers) that the CPU ignores on near branches.
	if rep := p & (pF2 | pF3); rep != 0 {
		switch {
		case class == cNop && in.Inst.Op == 0, class == cPause:
		case class == cRet:
		case branch && rep == pF2:
		default:
			return false
		}
	}
	// An operand-size prefix on a near branch or a stack operation makes it
	// 16-bit on some CPUs and is ignored by others; the 16-bit movsxd's
	// source width is not agreed on either.
	// REX.W right before the opcode overrides 66 on relative branches (the
	// padded call of the general-dynamic TLS sequence, 66 66 48 e8).
	if p&p66 != 0 && (branch || fixed || in.Op == x86asm.MOVSXD) && !(branch && wideRel(in)) {
		return false
	}
	// An address-size prefix means something only to a memory operand, to
	// jecxz, and to loop (whose effect on the upper half of RCX is not
	// documented, so it is refused).
	if p&p67 != 0 && !memArg && in.Op != x86asm.NOP && in.Op != x86asm.JECXZ {
		return false
	}
	return true
}

// wideRel reports a relative call, jmp or jcc with REX.W right before its
// opcode: its operand size is 64 bits whatever 66 prefixes precede.
func wideRel(in *decode.Insn) bool {
	if in.Args[0].Kind != decode.ArgRel {
		return false
	}
	switch in.Flow {
	case decode.FlowCall, decode.FlowJump, decode.FlowCondJump:
	default:
		return false
	}
	_, op := prefixes(in)
	return op > 0 && op < in.Len && in.Bytes[op-1]&0xf8 == 0x48
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

// isEndbr reports whether in is ENDBR64 or ENDBR32, which decode reports as NOP.
func isEndbr(in *decode.Insn) bool {
	b := in.Bytes
	return in.Len == 4 && b[0] == 0xf3 && b[1] == 0x0f && b[2] == 0x1e && (b[3] == 0xfa || b[3] == 0xfb)
}

// isNopOpcode reports whether the opcode at off is one of the architectural
// NOPs: 90 (without REX.B, which makes it xchg r8) or 0F 1F /0.
func isNopOpcode(in *decode.Insn, off int) bool {
	b := in.Bytes[:in.Len]
	if off < len(b) && b[off] == 0x90 {
		return off == 0 || b[off-1]&0xf1 != 0x41
	}
	return off+2 < len(b) && b[off] == 0x0f && b[off+1] == 0x1f && b[off+2]>>3&7 == 0
}
