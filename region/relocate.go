package region

import (
	"encoding/binary"
	"fmt"

	"github.com/onetrap/onetrap/decode"
)

// Relocate returns the region's instructions as they must run from a pad
// whose copy starts at address at: a jcc or jmp rel8 becomes its rel32
// form (0f 8x, e9) and every branch keeps its original target, and a
// rip-relative operand gets the displacement that names the same address
// from there. Nothing follows: the caller appends the jump back to
// r.End(). offs[i] is the offset in code of Insns[i]'s copy and
// offs[len(Insns)] is len(code), so that a thread stopped at an interior
// boundary of the region (see Boundary) is moved to the matching point of
// the pad, and back. The error wraps ErrOutOfReach when a target is beyond
// ±2 GB of the pad.
func (r *Region) Relocate(at uint64) (code []byte, offs []int, err error) {
	code = make([]byte, 0, r.Len+4*len(r.Insns))
	offs = make([]int, 0, len(r.Insns)+1)
	for _, in := range r.Insns {
		offs = append(offs, len(code))
		pc := at + uint64(len(code))
		switch in.Flow {
		case decode.FlowJump, decode.FlowCondJump:
			op, why := rel32Form(in)
			if why != "" {
				return nil, nil, fmt.Errorf("region: the branch at %#x (%s) %s", in.Addr, in, why)
			}
			tgt, _ := target(in)
			d, ok := rel32(tgt, pc+uint64(len(op))+4)
			if !ok {
				return nil, nil, fmt.Errorf("region: the branch at %#x goes to %#x, beyond a rel32 of the pad at %#x: %w", in.Addr, tgt, pc, ErrOutOfReach)
			}
			code = append(code, op...)
			code = binary.LittleEndian.AppendUint32(code, d)
		default:
			n := len(code)
			code = append(code, in.Code()...)
			if in.RIPRel {
				d, ok := rel32(in.Target, pc+uint64(in.Len))
				if !ok {
					return nil, nil, fmt.Errorf("region: the instruction at %#x addresses %#x, beyond a disp32 of the pad at %#x: %w", in.Addr, in.Target, pc, ErrOutOfReach)
				}
				binary.LittleEndian.PutUint32(code[n+in.DispOff:], d)
			}
		}
	}
	offs = append(offs, len(code))
	return code, offs, nil
}

// rel32 returns the displacement from next to tgt as the 32 bits an
// instruction holds, and whether it fits.
func rel32(tgt, next uint64) (uint32, bool) {
	d := int64(tgt - next)
	return uint32(int32(d)), d == int64(int32(d))
}
