// Package region proves where a 5-byte jmp rel32 can replace the
// instructions at a probe site, and relocates those instructions into a
// pad, for trapless (Jump) probes.
//
// A jump is 5 bytes (e9 rel32). When the probed instruction is shorter,
// the jump covers several instructions, and the bytes it overwrites hold
// instruction boundaries other than its first: a branch, a jump table or
// a thread that reached one of them would run the jump's tail as code.
// Plan proves that nothing in the function does: it decodes the function
// linearly from its first byte and checks every direct branch target and
// the absence of indirect jumps, then checks that each instruction of the
// region can run from a copy (see Plan for the rules). Relocate writes the
// copy for a pad at a given address. The package is pure: bytes in, plan
// out; it never touches a process.
//
// What the proof does not cover, and why that is acceptable:
//
//   - Code outside the function that jumps into its middle: gcc's
//     foo.cold parts jump back into foo, and C++ exception landing pads
//     are entered by the unwinder. Both return to places after the
//     function's prologue, well past the first instructions where probes
//     sit; a region at a function's entry is not such a place. A probe in
//     the middle of a function is more exposed, which is why a region is
//     refused at the first doubt in the function itself.
//   - Return addresses into the region: none can exist, since a region
//     holds no call. A call just before the region returns to its byte 0,
//     which is where the jump is.
//   - A thread that is stopped, or interrupted by a signal, at an interior
//     boundary of the region while the jump is written: the caller moves
//     such threads with Boundary and the offsets Relocate returns.
//   - The linear decoding itself: it assumes the function holds code only,
//     as compilers for x86-64 emit it (jump tables go to .rodata). Data
//     inside a function usually fails to decode, and Plan then refuses.
//   - A fault in the copy (a nil check in Go, a bad pointer in C) reports
//     the pad's address, not the function's; the same holds for the single
//     instructions trapless probes relocate today.
package region

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
)

// JumpLen is the length of the jump that replaces a region: jmp rel32.
const JumpLen = 5

// ErrRefused is wrapped by every error of Plan and Alone: no jump may
// replace the instructions at the address. The error is a *Refusal,
// which says by which rule.
var ErrRefused = errors.New("refused")

// ErrOutOfReach is wrapped by Relocate's error when a branch target or a
// rip-relative operand is beyond a rel32/disp32 of the pad: the caller may
// try a pad nearer the code.
var ErrOutOfReach = errors.New("out of reach of the pad")

// Rule names the rule by which a region was refused: short, fixed words,
// so that tools can count refusals by kind.
type Rule string

// The rules, in the order Plan applies them.
const (
	// RuleOutside: the address is not within the function's bytes.
	RuleOutside Rule = "outside"
	// RuleUndecodable: some bytes of the function do not decode, so its
	// instruction boundaries are unknown.
	RuleUndecodable Rule = "undecodable"
	// RuleNotBoundary: the address is inside an instruction.
	RuleNotBoundary Rule = "not-boundary"
	// RulePastEnd: the function ends before 5 bytes of instructions.
	RulePastEnd Rule = "past-end"
	// RuleCall: the region holds a call, whose return address would be
	// in the pad (Go's stack copying and unwinders cannot follow that).
	RuleCall Rule = "call"
	// RuleLeave: the region holds a ret or an indirect jump.
	RuleLeave Rule = "ret-or-indirect"
	// RuleLoop: the region holds loop, jrcxz or jecxz, which have no rel32
	// form to relocate them to.
	RuleLoop Rule = "loop"
	// RuleSystem: a system call, interrupt, far or transactional transfer,
	// hlt or ud: never run from a copy.
	RuleSystem Rule = "system"
	// RuleUnrunnable: the decoder refuses a copy of the instruction, or
	// does not know it.
	RuleUnrunnable Rule = "unrunnable"
	// RuleShort: Alone only: the instruction is shorter than the jump.
	RuleShort Rule = "short"
	// RuleBranchInto: a direct branch of the function targets a byte of
	// the region other than its first.
	RuleBranchInto Rule = "branch-into"
	// RuleIndirectJump: the function has an indirect jump (a jump table
	// may land anywhere in it) and the region has interior boundaries.
	RuleIndirectJump Rule = "indirect-jump"
)

// Refusal is the error of a refused region: the rule, the address of the
// instruction that broke it, and a sentence saying what and where.
type Refusal struct {
	Rule   Rule
	Addr   uint64
	Reason string
}

// Error is the reason, prefixed with the package's name.
func (e *Refusal) Error() string { return "region: " + e.Reason }

// Unwrap makes every Refusal an ErrRefused for errors.Is.
func (e *Refusal) Unwrap() error { return ErrRefused }

func refuse(rule Rule, addr uint64, format string, args ...any) *Refusal {
	return &Refusal{Rule: rule, Addr: addr, Reason: fmt.Sprintf(format, args...)}
}

// Region is a run of whole instructions that a jmp rel32 at Addr can
// replace.
type Region struct {
	Addr uint64
	// Len is the number of bytes replaced, the sum of the Insns' lengths,
	// at least JumpLen. The caller writes the jump over bytes 0..4 only;
	// bytes 5..Len-1 are left as they are or filled (no one reaches them).
	Len   int
	Insns []*decode.Insn
}

// End is the address right after the region, where the pad jumps back.
func (r *Region) End() uint64 { return r.Addr + uint64(r.Len) }

// Boundary says whether off (0..Len) is an instruction boundary of the
// region and which instruction begins there (len(Insns) for Len): a thread
// stopped there is moved to the matching point of the pad.
func (r *Region) Boundary(off int) (i int, ok bool) {
	pos := 0
	for i, in := range r.Insns {
		if pos == off {
			return i, true
		}
		pos += in.Len
	}
	if off == pos {
		return len(r.Insns), true
	}
	return 0, false
}

// Plan returns the region at addr: the instructions from addr, in order,
// whose bytes cover at least 5, having proved from fn, the whole body of
// the function holding addr (its first byte at fnAddr), that a jmp rel32
// can replace them. The rules, each a Rule of the Refusal otherwise:
//
//   - fn decodes completely, and addr is one of its instruction boundaries;
//   - the region lies within fn;
//   - each instruction of the region runs from a copy: no call, indirect
//     jump, system call, interrupt, far or transactional transfer, hlt,
//     ud, or instruction the decoder refuses or does not know;
//   - a direct jmp or jcc has a rel32 form (not loop/jrcxz/jecxz):
//     Relocate gives it one to its old target, so that taken from the pad
//     it goes where it would have gone, skipping the rest of the region
//     as it would have; a ret leaves the pad as it would the function;
//   - no direct branch of fn (jmp, jcc, call, loop, jrcxz, xbegin), from
//     inside the region too, targets a byte after the region's first;
//   - fn has no indirect jump, unless the region is a single instruction
//     (a jump table cannot land inside an instruction); see PlanIn for
//     jump tables.
//
// A single instruction of 5 bytes or more needs no more than Alone says,
// but Plan still decodes fn: that is what proves addr an instruction's
// first byte.
func Plan(fn []byte, fnAddr, addr uint64) (*Region, error) {
	return PlanIn(nil, fn, fnAddr, addr)
}

// PlanIn is Plan with the image that holds the function: an indirect jump
// through a jump table of a form compilers emit (see tableTargets) does
// not refuse the region when no entry of its table lands inside it. With
// img nil it is Plan.
func PlanIn(img Image, fn []byte, fnAddr, addr uint64) (*Region, error) {
	if addr < fnAddr || addr-fnAddr >= uint64(len(fn)) {
		return nil, refuse(RuleOutside, addr, "%#x is outside the function's %d bytes at %#x", addr, len(fn), fnAddr)
	}
	insns, err := decodeAll(fn, fnAddr)
	if err != nil {
		return nil, err
	}
	first := sort.Search(len(insns), func(i int) bool { return insns[i].Addr >= addr })
	if first == len(insns) || insns[first].Addr != addr {
		in := insns[first-1]
		return nil, refuse(RuleNotBoundary, addr, "%#x is inside the %d-byte instruction at %#x (%s)", addr, in.Len, in.Addr, in)
	}
	r := &Region{Addr: addr}
	for i := first; r.Len < JumpLen; i++ {
		if i == len(insns) {
			return nil, refuse(RulePastEnd, addr, "the function ends at %#x, %d bytes after %#x: a jump needs %d",
				fnAddr+uint64(len(fn)), r.Len, addr, JumpLen)
		}
		r.Insns = append(r.Insns, insns[i])
		r.Len += insns[i].Len
	}
	for i, in := range r.Insns {
		if err := runnable(in, i == len(r.Insns)-1); err != nil {
			return nil, err
		}
	}
	if err := r.unreached(img, insns); err != nil {
		return nil, err
	}
	return r, nil
}

// Alone says whether in, by itself, can be replaced by a jump with no
// proof about the rest of its function (GDB's rule for fast tracepoints):
// it is 5 bytes or more, so no instruction boundary lies under the jump,
// and it runs from a copy by Plan's rules. A nil error means yes.
// (ptrace's Jump strategy today also refuses a branch, which Relocate
// moves.)
func Alone(in *decode.Insn) error {
	if in.Len < JumpLen {
		return refuse(RuleShort, in.Addr, "the instruction at %#x (%s) has %d bytes, a jump needs %d", in.Addr, in, in.Len, JumpLen)
	}
	return runnable(in, true)
}

// decodeAll decodes fn linearly from fnAddr.
func decodeAll(fn []byte, fnAddr uint64) ([]*decode.Insn, error) {
	var insns []*decode.Insn
	for off := 0; off < len(fn); {
		pc := fnAddr + uint64(off)
		in, err := decode.Decode(fn[off:], pc)
		if err != nil {
			return nil, refuse(RuleUndecodable, pc, "the function's bytes at %#x do not decode (%v), so its instruction boundaries are unknown", pc, err)
		}
		insns = append(insns, in)
		off += in.Len
	}
	return insns, nil
}

// runnable says whether in can run in a pad as an instruction of a region,
// last when it ends the region.
func runnable(in *decode.Insn, last bool) error {
	switch in.Flow {
	case decode.FlowCall, decode.FlowIndirectCall:
		return refuse(RuleCall, in.Addr, "the instruction at %#x (%s) is a call: its return address would be in the pad", in.Addr, in)
	case decode.FlowRet:
		if in.Op == x86asm.RET {
			// It leaves the pad for the caller, as it would have left the
			// function: what follows it in the region is reached by no
			// branch (the proof says so), and is dead in the pad too.
			return nil
		}
		return refuse(RuleLeave, in.Addr, "the instruction at %#x (%s) is a far return", in.Addr, in)
	case decode.FlowIndirectJump:
		return refuse(RuleLeave, in.Addr, "the instruction at %#x (%s) leaves by an indirect jump", in.Addr, in)
	case decode.FlowJump, decode.FlowCondJump:
		switch in.Op {
		case x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
			return refuse(RuleLoop, in.Addr, "the instruction at %#x (%s) has no rel32 form to relocate it to", in.Addr, in)
		}
		if in.Verdict == decode.Refused {
			return refuse(RuleUnrunnable, in.Addr, "the decoder refuses the instruction at %#x: %s", in.Addr, in.Reason)
		}
		if _, why := rel32Form(in); why != "" {
			return refuse(RuleUnrunnable, in.Addr, "the branch at %#x (%s) %s", in.Addr, in, why)
		}
		return nil
	}
	switch in.Op {
	case 0:
		return refuse(RuleUnrunnable, in.Addr, "the instruction at %#x (%s) is unknown to the disassembler", in.Addr, in)
	case x86asm.SYSCALL, x86asm.SYSENTER, x86asm.SYSEXIT, x86asm.SYSRET, x86asm.INT, x86asm.INTO,
		x86asm.IRET, x86asm.IRETD, x86asm.IRETQ, x86asm.LCALL, x86asm.LJMP, x86asm.LRET,
		x86asm.XBEGIN, x86asm.XABORT, x86asm.HLT, x86asm.UD1, x86asm.UD2:
		return refuse(RuleSystem, in.Addr, "the instruction at %#x (%s) is a system call, interrupt, far or transactional transfer, hlt or ud: never run from a copy", in.Addr, in)
	}
	if in.Verdict != decode.CanRun {
		return refuse(RuleUnrunnable, in.Addr, "the decoder refuses a copy of the instruction at %#x: %s", in.Addr, in.Reason)
	}
	return nil
}

// unreached checks that no instruction of the function, insns, can reach
// a byte of r other than its first.
func (r *Region) unreached(img Image, insns []*decode.Insn) error {
	single := len(r.Insns) == 1
	for i, in := range insns {
		if in.Flow == decode.FlowIndirectJump && !single {
			var targets []uint64
			ok := false
			if img != nil {
				targets, ok = tableTargets(img, insns, i)
			}
			if !ok {
				return refuse(RuleIndirectJump, in.Addr, "the function has an indirect jump at %#x (%s), which may land inside the %d bytes at %#x",
					in.Addr, in, r.Len, r.Addr)
			}
			for _, t := range targets {
				if t > r.Addr && t < r.End() {
					return refuse(RuleBranchInto, in.Addr, "the jump table of the indirect jump at %#x goes to %#x, inside the %d bytes at %#x",
						in.Addr, t, r.Len, r.Addr)
				}
			}
			continue
		}
		tgt, ok := target(in)
		if !ok {
			continue
		}
		switch in.Flow {
		case decode.FlowJump, decode.FlowCondJump, decode.FlowCall:
			if in.Verdict == decode.Refused {
				// A 66 prefix: Intel and AMD CPUs go to different places.
				return refuse(RuleBranchInto, in.Addr, "the branch at %#x (%s) has no certain target: %s", in.Addr, in, in.Reason)
			}
		}
		if tgt > r.Addr && tgt < r.End() {
			return refuse(RuleBranchInto, in.Addr, "the instruction at %#x jumps to %#x, inside the %d bytes at %#x", in.Addr, tgt, r.Len, r.Addr)
		}
	}
	return nil
}

// target returns the absolute target of an instruction with a relative
// operand: jmp, jcc, call, loop, jrcxz, xbegin.
func target(in *decode.Insn) (uint64, bool) {
	for _, a := range in.Inst.Args {
		if a == nil {
			break
		}
		if rel, ok := a.(x86asm.Rel); ok {
			return in.Next() + uint64(int64(rel)), true
		}
	}
	return 0, false
}

// rel32Form returns the opcode of the rel32 form of in, a direct jmp or
// jcc, or why it has none. Its prefixes are dropped: branch hints (2e,
// 3e), bnd (f2), and the others the CPU ignores on a near branch in 64-bit
// mode; 66 and 67 change it, and make it refused.
func rel32Form(in *decode.Insn) (op []byte, why string) {
	b := in.Code()
	o, n := in.Inst.PCRelOff, in.Inst.PCRel
	if o+n != in.Len || o < 1 {
		return nil, "has its displacement in an unexpected place"
	}
	start := o - 1
	switch {
	case n == 1 && b[o-1] == 0xeb, n == 4 && b[o-1] == 0xe9:
		op = []byte{0xe9}
	case n == 1 && b[o-1]&0xf0 == 0x70:
		op = []byte{0x0f, 0x80 | b[o-1]&0xf}
	case n == 4 && o >= 2 && b[o-2] == 0x0f && b[o-1]&0xf0 == 0x80:
		op, start = []byte{0x0f, b[o-1]}, o-2
	default:
		return nil, "has an opcode that is not a jmp or jcc"
	}
	for _, p := range b[:start] {
		switch {
		case p == 0x2e, p == 0x3e, p == 0x26, p == 0x36, p == 0x64, p == 0x65, p == 0xf2, p == 0xf3, p&0xf0 == 0x40:
		default:
			return nil, fmt.Sprintf("has a %02x prefix, which a rel32 form would not keep", p)
		}
	}
	return op, ""
}
