package region

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// The emulator referees Relocate: the original region and its copy in a
// pad, run from the same registers and memory, must end in the same state,
// the copy's end standing for the region's end. The emulator is itself
// checked against the CPU by package fuzz, and runs every instruction
// these regions hold (push, mov, sub, cmp, xor, jcc, rip-relative loads).

const (
	stackTop = 0x7ff000010000
	gAddr    = 0x7ff000100000 // Go's g, for cmp rsp, [r14+0x10]
	dataAddr = base + 0x18    // what mov rax, [rip+0x10] at base+1 reads
)

// world is the registers and memory a region runs on.
func world(t *testing.T, rng *rand.Rand, guard uint64) (regs.Regs, *memio.Pages) {
	t.Helper()
	m := memio.NewPages()
	require.NoError(t, m.Map(stackTop-0x2000, 0x2000, memio.ProtRead|memio.ProtWrite))
	require.NoError(t, m.Map(gAddr, 0x1000, memio.ProtRead|memio.ProtWrite))
	require.NoError(t, m.Map(base&^0xfff, 0x1000, memio.ProtRead))
	require.NoError(t, m.Poke(gAddr+0x10, binary.LittleEndian.AppendUint64(nil, guard)))
	require.NoError(t, m.Poke(dataAddr, binary.LittleEndian.AppendUint64(nil, rng.Uint64())))
	var r regs.Regs
	for i := range r.GPR {
		r.GPR[i] = rng.Uint64()
	}
	if rng.IntN(2) == 0 {
		r.GPR[0] &^= 0xffffffff // test eax, eax sets ZF
	}
	r.GPR[4] = stackTop - 0x800 // rsp
	r.GPR[14] = gAddr           // r14
	r.RFLAGS = 0x202 | rng.Uint64()&0x8d5
	return r, m
}

// run steps n instructions of code (at address at) from r.RIP, or fewer
// when it leaves code.
func run(t *testing.T, code []byte, at uint64, n int, r *regs.Regs, m memio.Memory) {
	t.Helper()
	for ; n > 0 && r.RIP >= at && r.RIP < at+uint64(len(code)); n-- {
		off := r.RIP - at
		in, err := decode.Decode(code[off:], r.RIP)
		require.NoError(t, err)
		require.NoError(t, emu.Step(in, r, m), "%s at %#x: %v", in, r.RIP, r)
	}
}

func TestRelocateRefereed(t *testing.T) {
	fns := map[string][]byte{
		"C frame":        cat(pushRBP, movRBPRSP, subRSP16, movEAX0, leave, ret),
		"Go entry":       goEntry,
		"endbr64 push":   cat(endbr64, pushRBP, movRBPRSP, popRBP, ret),
		"push push test": cat(pushRBP, pushRBX, testEAX, rel8(0x75, -6), ret),
		"rip-relative":   cat(pushRBP, movRAXRIP, popRBP, ret),
		"jcc rel32":      cat(pushR15, testEAX, rel32op([]byte{0x0f, 0x84}, 0x40), ret),
		"jcc mid-region": cat(testEAX, rel8(0x74, 5), subRSP16, ret, xorEAX, ret),
		"ret mid-region": cat(xorEAX, ret, subRSP16),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for name, fn := range fns {
		r, err := Plan(fn, base, base)
		require.NoError(t, err, name)
		for _, pad := range []uint64{base + 0x10000000, base + 0x1000} {
			code, _, err := r.Relocate(pad)
			require.NoError(t, err, name)
			taken := map[bool]int{}
			for trial := 0; trial < 40; trial++ {
				// The guard is above or below rsp: the jbe goes both ways.
				guard := uint64(stackTop - 0x800 + int64(rng.IntN(2)*2-1)*0x100)
				r0, m0 := world(t, rng, guard)
				r0.RIP = base
				r1, m1 := r0, m0.Clone()

				run(t, regionBytes(r), base, len(r.Insns), &r0, m0)
				r1.RIP = pad
				run(t, code, pad, len(r.Insns), &r1, m1)
				if r1.RIP == pad+uint64(len(code)) {
					r1.RIP = r.End()
				}
				taken[r0.RIP != r.End()] = trial
				assert.Equal(t, r0, r1, "%s from a pad at %#x", name, pad)
				var s0, s1 [0x2000]byte
				require.NoError(t, m0.Peek(stackTop-0x2000, s0[:]))
				require.NoError(t, m1.Peek(stackTop-0x2000, s1[:]))
				assert.Equal(t, s0, s1, "%s: the stack", name)
			}
			for _, in := range r.Insns {
				if in.Flow == decode.FlowCondJump {
					assert.Len(t, taken, 2, "%s: the branch went both ways", name)
				}
			}
		}
	}
}
