package main

import (
	"errors"
	"fmt"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// Agent expressions are gdb's bytecode for conditions evaluated on the
// target (see "Agent Expressions" in gdb's manual): a stack machine over
// 64-bit integers with operands big-endian in the byte stream. eval runs
// one in the probe's handler, with the stopped thread's registers and the
// process's memory, so that a false condition costs no stop at all.

// Bytecodes gdb emits for breakpoint conditions.
const (
	axAdd        = 0x02
	axSub        = 0x03
	axMul        = 0x04
	axDivSigned  = 0x05
	axDivUnsign  = 0x06
	axRemSigned  = 0x07
	axRemUnsign  = 0x08
	axLsh        = 0x09
	axRshSigned  = 0x0a
	axRshUnsign  = 0x0b
	axLogNot     = 0x0e
	axBitAnd     = 0x0f
	axBitOr      = 0x10
	axBitXor     = 0x11
	axBitNot     = 0x12
	axEqual      = 0x13
	axLessSigned = 0x14
	axLessUnsign = 0x15
	axExt        = 0x16
	axRef8       = 0x17
	axRef16      = 0x18
	axRef32      = 0x19
	axRef64      = 0x1a
	axIfGoto     = 0x20
	axGoto       = 0x21
	axConst8     = 0x22
	axConst16    = 0x23
	axConst32    = 0x24
	axConst64    = 0x25
	axReg        = 0x26
	axEnd        = 0x27
	axDup        = 0x28
	axPop        = 0x29
	axZeroExt    = 0x2a
	axSwap       = 0x2b
	axPick       = 0x32
	axRot        = 0x33
)

// errAgent is an expression this evaluator cannot run; the breakpoint then
// stops, as gdbserver does, so that gdb decides.
var errAgent = errors.New("agent expression")

// axStackMax bounds the stack and axStepsMax the work, since a goto can
// loop and the expression runs on the tracer thread.
const (
	axStackMax = 64
	axStepsMax = 100000
)

// eval runs expression code and returns the value left on top.
func eval(code []byte, r *regs.Regs, m memio.Memory) (uint64, error) {
	var st [axStackMax]uint64
	sp := 0
	pc := 0
	need := func(n int) error {
		if sp < n {
			return fmt.Errorf("%w: stack underflow at %d", errAgent, pc)
		}
		return nil
	}
	operand := func(n int) (uint64, error) {
		if pc+n > len(code) {
			return 0, fmt.Errorf("%w: truncated at %d", errAgent, pc)
		}
		var v uint64
		for _, b := range code[pc : pc+n] {
			v = v<<8 | uint64(b)
		}
		pc += n
		return v, nil
	}
	for steps := 0; steps < axStepsMax; steps++ {
		if pc >= len(code) {
			return 0, fmt.Errorf("%w: ran off the end", errAgent)
		}
		op := code[pc]
		pc++
		switch op {
		case axAdd, axSub, axMul, axDivSigned, axDivUnsign, axRemSigned, axRemUnsign,
			axLsh, axRshSigned, axRshUnsign, axBitAnd, axBitOr, axBitXor,
			axEqual, axLessSigned, axLessUnsign:
			if err := need(2); err != nil {
				return 0, err
			}
			a, b := st[sp-2], st[sp-1]
			v, err := binop(op, a, b)
			if err != nil {
				return 0, err
			}
			sp--
			st[sp-1] = v
		case axLogNot, axBitNot, axExt, axZeroExt, axRef8, axRef16, axRef32, axRef64:
			if err := need(1); err != nil {
				return 0, err
			}
			v, err := unop(op, st[sp-1], code, &pc, m)
			if err != nil {
				return 0, err
			}
			st[sp-1] = v
		case axIfGoto, axGoto:
			to, err := operand(2)
			if err != nil {
				return 0, err
			}
			jump := op == axGoto
			if op == axIfGoto {
				if err := need(1); err != nil {
					return 0, err
				}
				sp--
				jump = st[sp] != 0
			}
			if jump {
				pc = int(to)
			}
		case axConst8, axConst16, axConst32, axConst64, axReg:
			v, err := operand(operandSize(op))
			if err != nil {
				return 0, err
			}
			if op == axReg {
				if v, err = register(r, int(v)); err != nil {
					return 0, err
				}
			}
			if sp == axStackMax {
				return 0, fmt.Errorf("%w: stack overflow", errAgent)
			}
			st[sp] = v
			sp++
		case axEnd:
			if err := need(1); err != nil {
				return 0, err
			}
			return st[sp-1], nil
		case axDup, axPick:
			k := uint64(0)
			if op == axPick {
				var err error
				if k, err = operand(1); err != nil {
					return 0, err
				}
			}
			if err := need(int(k) + 1); err != nil {
				return 0, err
			}
			if sp == axStackMax {
				return 0, fmt.Errorf("%w: stack overflow", errAgent)
			}
			st[sp] = st[sp-1-int(k)]
			sp++
		case axPop:
			if err := need(1); err != nil {
				return 0, err
			}
			sp--
		case axSwap:
			if err := need(2); err != nil {
				return 0, err
			}
			st[sp-1], st[sp-2] = st[sp-2], st[sp-1]
		case axRot:
			// a b c => c a b
			if err := need(3); err != nil {
				return 0, err
			}
			a, b, c := st[sp-3], st[sp-2], st[sp-1]
			st[sp-3], st[sp-2], st[sp-1] = c, a, b
		default:
			return 0, fmt.Errorf("%w: bytecode %#x not supported", errAgent, op)
		}
	}
	return 0, fmt.Errorf("%w: more than %d steps", errAgent, axStepsMax)
}

// operandSize is the size of a constant's or reg's operand.
func operandSize(op byte) int {
	switch op {
	case axConst8:
		return 1
	case axConst16, axReg:
		return 2
	case axConst32:
		return 4
	}
	return 8
}

func binop(op byte, a, b uint64) (uint64, error) {
	bool64 := func(c bool) uint64 {
		if c {
			return 1
		}
		return 0
	}
	switch op {
	case axAdd:
		return a + b, nil
	case axSub:
		return a - b, nil
	case axMul:
		return a * b, nil
	case axLsh:
		return a << (b & 63), nil
	case axRshSigned:
		return uint64(int64(a) >> (b & 63)), nil
	case axRshUnsign:
		return a >> (b & 63), nil
	case axBitAnd:
		return a & b, nil
	case axBitOr:
		return a | b, nil
	case axBitXor:
		return a ^ b, nil
	case axEqual:
		return bool64(a == b), nil
	case axLessSigned:
		return bool64(int64(a) < int64(b)), nil
	case axLessUnsign:
		return bool64(a < b), nil
	}
	if b == 0 {
		return 0, fmt.Errorf("%w: division by zero", errAgent)
	}
	switch op {
	case axDivSigned:
		return uint64(int64(a) / int64(b)), nil
	case axDivUnsign:
		return a / b, nil
	case axRemSigned:
		return uint64(int64(a) % int64(b)), nil
	}
	return a % b, nil // axRemUnsign
}

func unop(op byte, v uint64, code []byte, pc *int, m memio.Memory) (uint64, error) {
	switch op {
	case axLogNot:
		if v == 0 {
			return 1, nil
		}
		return 0, nil
	case axBitNot:
		return ^v, nil
	case axExt, axZeroExt:
		if *pc >= len(code) {
			return 0, fmt.Errorf("%w: truncated", errAgent)
		}
		bits := uint(code[*pc])
		*pc++
		if bits == 0 || bits >= 64 {
			return v, nil
		}
		if op == axZeroExt {
			return v & (1<<bits - 1), nil
		}
		shift := 64 - bits
		return uint64(int64(v<<shift) >> shift), nil
	}
	// ref8 ref16 ref32 ref64 are consecutive. ReadUint, unlike ReadAt
	// through the interface, reads with no allocation: this runs at every
	// hit.
	v, err := memio.ReadUint(m, v, 1<<(op-axRef8))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", errAgent, err)
	}
	return v, nil
}

// register returns gdb's amd64 register number n (the target
// description's order) from r.
func register(r *regs.Regs, n int) (uint64, error) {
	if n < len(gdbGPR) {
		return r.GPR[gdbGPR[n]], nil
	}
	switch n {
	case regRIP:
		return r.RIP, nil
	case regEFLAGS:
		return r.RFLAGS, nil
	case regFSBase:
		return r.FSBase, nil
	case regGSBase:
		return r.GSBase, nil
	}
	return 0, fmt.Errorf("%w: register %d not supported", errAgent, n)
}
