package region

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
)

const base = 0x401000

// cat joins instruction bytes into a function body.
func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var (
	pushRBP    = []byte{0x55}
	pushRBX    = []byte{0x53}
	pushR15    = []byte{0x41, 0x57}
	popRBP     = []byte{0x5d}
	movRBPRSP  = []byte{0x48, 0x89, 0xe5}
	subRSP16   = []byte{0x48, 0x83, 0xec, 0x10}
	subRSP8    = []byte{0x48, 0x83, 0xec, 0x08}
	endbr64    = []byte{0xf3, 0x0f, 0x1e, 0xfa}
	xorEAX     = []byte{0x31, 0xc0}
	testEAX    = []byte{0x85, 0xc0}
	incEAX     = []byte{0xff, 0xc0}
	cmpEAX10   = []byte{0x83, 0xf8, 0x0a}
	movEAX0    = []byte{0xb8, 0, 0, 0, 0}
	leave      = []byte{0xc9}
	ret        = []byte{0xc3}
	nop4       = []byte{0x0f, 0x1f, 0x40, 0x00}
	jmpRAX     = []byte{0xff, 0xe0}
	syscall    = []byte{0x0f, 0x05}
	goStackChk = []byte{0x49, 0x3b, 0x66, 0x10} // cmp rsp, [r14+0x10]
	subRSP256  = []byte{0x48, 0x81, 0xec, 0x00, 0x01, 0x00, 0x00}
	movRAXRIP  = []byte{0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00} // mov rax, [rip+0x10]
)

func rel8(b byte, r int8) []byte { return []byte{b, byte(r)} }
func rel32op(op []byte, r int32) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte{}, op...), uint32(r))
}

// goEntry is a Go function: the stack check, a body, and the morestack
// tail that calls runtime.morestack and jumps back to the entry.
//
//	0x401000 cmp rsp,[r14+0x10]   0x401004 jbe 0x401010
//	0x401006 push rbp ... ret      0x40100c nops
//	0x401010 call morestack        0x401015 jmp 0x401000
var goEntry = cat(goStackChk, rel8(0x76, 0x0a), pushRBP, movRBPRSP, popRBP, ret, nop4,
	rel32op([]byte{0xe8}, 0x1000), rel8(0xeb, -0x17))

func TestPlan(t *testing.T) {
	cases := []struct {
		name   string
		fn     []byte
		off    uint64 // of addr from base
		len    int    // of the region when accepted
		insns  int
		rule   Rule   // when refused
		reason string // a part of the refusal's text
	}{
		{name: "C frame", fn: cat(pushRBP, movRBPRSP, subRSP16, movEAX0, leave, ret), len: 8, insns: 3},
		{name: "endbr64 push", fn: cat(endbr64, pushRBP, movRBPRSP, popRBP, ret), len: 5, insns: 2},
		{name: "push r15 push rbp push rbx sub", fn: cat(pushR15, pushRBP, pushRBX, subRSP8, popRBP, ret), len: 8, insns: 4},
		{name: "Go stack check", fn: goEntry, len: 6, insns: 2},
		{name: "mid-function", fn: cat(pushRBP, movRBPRSP, subRSP16, movEAX0, leave, ret), off: 4, len: 9, insns: 2},
		{name: "one long instruction", fn: cat(subRSP256, ret), len: 7, insns: 1},
		{name: "ret last (a getter)", fn: cat(subRSP16, ret, ret), len: 5, insns: 2},
		{name: "ret mid-region, the rest reached by no branch", fn: cat(xorEAX, ret, subRSP16), len: 7, insns: 3},
		{name: "jcc mid-region, out of it", fn: cat(testEAX, rel8(0x74, 5), subRSP16, ret, xorEAX, ret), len: 8, insns: 3},
		{name: "a tail jump alone", fn: rel32op([]byte{0xe9}, 0x100), len: 5, insns: 1},
		{name: "jump table, one long instruction", fn: cat(subRSP256, jmpRAX), len: 7, insns: 1},
		{name: "rip-relative in the region", fn: cat(pushRBP, movRAXRIP, popRBP, ret), len: 8, insns: 2},
		{name: "jcc last, back to byte 0", fn: cat(pushRBP, pushRBX, xorEAX, rel8(0x75, -6), ret), len: 6, insns: 4},

		// The loop at 0x40100d goes back to the sub at 0x401002.
		{name: "loop into byte 2", fn: cat(pushRBP, pushRBX, subRSP8, xorEAX, incEAX, cmpEAX10, rel8(0x75, -13), ret),
			rule: RuleBranchInto, reason: "the instruction at 0x40100d jumps to 0x401002, inside the 6 bytes at 0x401000"},
		{name: "branch from inside the region into it", fn: cat(pushRBP, pushRBX, xorEAX, rel8(0x75, -4), ret),
			rule: RuleBranchInto, reason: "the instruction at 0x401004 jumps to 0x401002, inside the 6 bytes at 0x401000"},
		{name: "xbegin's abort target", fn: cat(pushRBP, pushRBX, subRSP8, rel32op([]byte{0xc7, 0xf8}, -10), ret),
			rule: RuleBranchInto, reason: "jumps to 0x401002"},
		{name: "jmp rax anywhere", fn: cat(pushRBP, movRBPRSP, subRSP16, movEAX0, jmpRAX),
			rule: RuleIndirectJump, reason: "indirect jump at 0x40100d"},
		{name: "call in the first 5 bytes", fn: cat(pushRBP, rel32op([]byte{0xe8}, 0x100), popRBP, ret),
			rule: RuleCall, reason: "0x401001"},
		{name: "indirect call in the region", fn: cat(pushRBP, []byte{0xff, 0xd0}, popRBP, pushRBX, ret),
			rule: RuleCall},
		{name: "jmp mid-region into it", fn: cat(pushRBP, rel8(0xeb, 2), subRSP16, ret), rule: RuleBranchInto, reason: "0x401005"},
		{name: "jcc mid-region into it", fn: cat(xorEAX, rel8(0x74, 0), subRSP16, ret), rule: RuleBranchInto},
		{name: "loop in the region", fn: cat(pushRBP, pushRBX, []byte{0xe2, 0x10}, subRSP16), rule: RuleLoop},
		{name: "jrcxz last", fn: cat(pushRBP, pushRBX, xorEAX, []byte{0xe3, 0x10}, subRSP16), rule: RuleLoop},
		{name: "syscall in the region", fn: cat(xorEAX, syscall, ret, ret), rule: RuleSystem},
		{name: "ud2 in the region", fn: cat(xorEAX, []byte{0x0f, 0x0b}, ret, ret), rule: RuleSystem},
		{name: "int3 in the region", fn: cat(xorEAX, []byte{0xcc}, ret, ret), rule: RuleSystem},
		{name: "66-prefixed branch elsewhere", fn: cat(subRSP256, []byte{0x66, 0xeb, 0x10}), rule: RuleBranchInto, reason: "no certain target"},
		{name: "67-prefixed jcc last", fn: cat(pushRBP, pushRBX, xorEAX, []byte{0x67, 0x74, 0x10}, ret), rule: RuleUnrunnable, reason: "67 prefix"},
		{name: "past the end", fn: cat(pushRBP, movRBPRSP), rule: RulePastEnd, reason: "the function ends at 0x401004, 4 bytes after 0x401000"},
		{name: "not on a boundary", fn: cat(pushRBP, movRBPRSP, subRSP16, movEAX0, leave, ret), off: 2,
			rule: RuleNotBoundary, reason: "0x401002 is inside the 3-byte instruction at 0x401001"},
		{name: "undecodable bytes later", fn: cat(subRSP256, []byte{0x48, 0x8b}), rule: RuleUndecodable, reason: "0x401007"},
		{name: "outside", fn: cat(subRSP256, ret), off: 8, rule: RuleOutside},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Plan(c.fn, base, base+c.off)
			if c.rule != "" {
				require.Error(t, err)
				assert.Nil(t, r)
				assert.True(t, errors.Is(err, ErrRefused), "%v wraps ErrRefused", err)
				var ref *Refusal
				require.True(t, errors.As(err, &ref))
				assert.Equal(t, c.rule, ref.Rule, "%v", err)
				assert.Contains(t, err.Error(), c.reason)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, uint64(base+c.off), r.Addr)
			assert.Equal(t, c.len, r.Len)
			assert.Len(t, r.Insns, c.insns)
			sum := 0
			for _, in := range r.Insns {
				sum += in.Len
			}
			assert.Equal(t, r.Len, sum)
			assert.Equal(t, c.fn[c.off:c.off+uint64(r.Len)], regionBytes(r))
		})
	}
}

func regionBytes(r *Region) []byte {
	var b []byte
	for _, in := range r.Insns {
		b = append(b, in.Code()...)
	}
	return b
}

func TestBoundary(t *testing.T) {
	r, err := Plan(goEntry, base, base)
	require.NoError(t, err)
	for off, want := range map[int]int{0: 0, 4: 1, 6: 2} {
		i, ok := r.Boundary(off)
		assert.True(t, ok, "offset %d", off)
		assert.Equal(t, want, i, "offset %d", off)
	}
	for _, off := range []int{-1, 1, 2, 3, 5, 7} {
		_, ok := r.Boundary(off)
		assert.False(t, ok, "offset %d", off)
	}
}

// TestRelocateGoEntry: the jbe rel8 becomes jbe rel32 to the morestack tail.
func TestRelocateGoEntry(t *testing.T) {
	r, err := Plan(goEntry, base, base)
	require.NoError(t, err)
	const pad = base + 0x10000000
	code, offs, err := r.Relocate(pad)
	require.NoError(t, err)
	var from uint64 = pad + 10
	d := uint32(int32(int64(base+0x10) - int64(from)))
	assert.Equal(t, cat(goStackChk, binary.LittleEndian.AppendUint32([]byte{0x0f, 0x86}, d)), code)
	assert.Equal(t, []int{0, 4, 10}, offs)
	// Out of reach from a pad far from the code: an error, not a wrong jump.
	_, _, err = r.Relocate(base + 1<<32)
	assert.ErrorIs(t, err, ErrOutOfReach)
}

// TestRelocateRIPRelative: the mov keeps the address it reads from a pad
// 1.75 GB away, and cannot be placed 2.25 GB away.
func TestRelocateRIPRelative(t *testing.T) {
	const hi = 0x500401000
	fn := cat(pushRBP, movRAXRIP, popRBP, ret)
	r, err := Plan(fn, hi, hi)
	require.NoError(t, err)
	want := r.Insns[1].Target
	require.Equal(t, uint64(hi+8+0x10), want)
	for _, pad := range []uint64{hi + 0x70000000, hi - 0x70000000} {
		code, offs, err := r.Relocate(pad)
		require.NoError(t, err)
		in, err := decode.Decode(code[offs[1]:], pad+uint64(offs[1]))
		require.NoError(t, err)
		assert.Equal(t, x86asm.MOV, in.Op)
		assert.True(t, in.RIPRel)
		assert.Equal(t, want, in.Target, "pad %#x", pad)
	}
	_, _, err = r.Relocate(hi + 0x90000000)
	assert.ErrorIs(t, err, ErrOutOfReach)
	_, _, err = r.Relocate(hi - 0x90000000)
	assert.ErrorIs(t, err, ErrOutOfReach)
}

// TestRelocateForms: every branch form becomes its rel32 form with the
// same target, and hint and bnd prefixes are dropped.
func TestRelocateForms(t *testing.T) {
	cases := []struct {
		last []byte
		op   []byte
	}{
		{rel8(0x74, 0x10), []byte{0x0f, 0x84}},
		{rel8(0x7f, -8), []byte{0x0f, 0x8f}},
		{rel8(0xeb, 0x20), []byte{0xe9}},
		{[]byte{0x3e, 0x75, 0x10}, []byte{0x0f, 0x85}},
		{[]byte{0x2e, 0x0f, 0x82, 0x10, 0, 0, 0}, []byte{0x0f, 0x82}},
		{[]byte{0xf2, 0xe9, 0x00, 0x01, 0, 0}, []byte{0xe9}},
		{rel32op([]byte{0x0f, 0x8c}, -0x300), []byte{0x0f, 0x8c}},
	}
	for _, c := range cases {
		fn := cat(pushRBP, pushRBX, xorEAX, c.last, ret)
		r, err := Plan(fn, base, base)
		require.NoError(t, err, "% x", c.last)
		last := r.Insns[len(r.Insns)-1]
		tgt, _ := target(last)
		for _, pad := range []uint64{base + 0x100000, base - 0x100000 + 0x200} {
			code, offs, err := r.Relocate(pad)
			require.NoError(t, err)
			at := offs[len(offs)-2]
			assert.Equal(t, c.op, code[at:at+len(c.op)], "% x", c.last)
			in, err := decode.Decode(code[at:], pad+uint64(at))
			require.NoError(t, err)
			assert.Equal(t, last.Op, in.Op)
			assert.Equal(t, len(code), at+in.Len, "the branch ends the code")
			got, _ := target(in)
			assert.Equal(t, tgt, got, "% x from %#x", c.last, pad)
		}
	}
}

func TestAlone(t *testing.T) {
	cases := []struct {
		code []byte
		rule Rule
	}{
		{subRSP256, ""},
		{movRAXRIP, ""},
		{movEAX0, ""},
		{rel32op([]byte{0xe9}, 0x10), ""},
		{rel32op([]byte{0x0f, 0x84}, 0x10), ""},
		{pushRBP, RuleShort},
		{endbr64, RuleShort},
		{goStackChk, RuleShort},
		{rel32op([]byte{0xe8}, 0x10), RuleCall},
		{[]byte{0xff, 0x25, 0, 0, 0, 0}, RuleLeave},  // jmp [rip]
		{[]byte{0xc7, 0xf8, 0, 0, 0, 0}, RuleSystem}, // xbegin
	}
	for _, c := range cases {
		in, err := decode.Decode(c.code, base)
		require.NoError(t, err)
		err = Alone(in)
		if c.rule == "" {
			assert.NoError(t, err, "% x", c.code)
			continue
		}
		var ref *Refusal
		require.True(t, errors.As(err, &ref), "% x: %v", c.code, err)
		assert.Equal(t, c.rule, ref.Rule, "% x: %v", c.code, err)
	}
}

// checkRelocated decodes the code Relocate gave and compares it with the
// region: the same operations, the same branch and rip-relative targets.
func checkRelocated(t testing.TB, r *Region, pad uint64, code []byte, offs []int) {
	t.Helper()
	require.Len(t, offs, len(r.Insns)+1)
	require.Equal(t, len(code), offs[len(r.Insns)])
	for i, orig := range r.Insns {
		in, err := decode.Decode(code[offs[i]:offs[i+1]], pad+uint64(offs[i]))
		require.NoError(t, err, "copy of %s at %#x", orig, orig.Addr)
		require.Equal(t, offs[i+1]-offs[i], in.Len, "copy of %s", orig)
		require.Equal(t, orig.Op, in.Op, "copy of %s", orig)
		require.Equal(t, orig.RIPRel, in.RIPRel, "copy of %s", orig)
		if orig.RIPRel {
			require.Equal(t, orig.Target, in.Target, "copy of %s", orig)
		}
		t1, ok1 := target(orig)
		t2, ok2 := target(in)
		require.Equal(t, ok1, ok2, "copy of %s", orig)
		require.Equal(t, t1, t2, "copy of %s: branch target", orig)
	}
}

// describe is a refusal's rule, or "ok".
func describe(err error) string {
	var ref *Refusal
	if errors.As(err, &ref) {
		return string(ref.Rule)
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return "ok"
}

func FuzzPlan(f *testing.F) {
	for _, fn := range [][]byte{
		goEntry,
		cat(pushRBP, movRBPRSP, subRSP16, movEAX0, leave, ret),
		cat(endbr64, pushRBP, movRAXRIP, popRBP, ret),
		cat(pushRBP, pushRBX, xorEAX, []byte{0x3e, 0x75, 0x10}, ret),
		cat(pushRBP, pushRBX, subRSP8, xorEAX, incEAX, cmpEAX10, rel8(0x75, -13), ret),
	} {
		f.Add(fn, uint16(0), int64(0x10000000))
	}
	f.Fuzz(func(t *testing.T, fn []byte, off uint16, padDelta int64) {
		if len(fn) == 0 {
			return
		}
		addr := uint64(base) + uint64(off)%uint64(len(fn))
		// The bytes double as the image's data: whatever its jump tables
		// read, PlanIn refuses or accepts, never panics.
		if _, err := PlanIn(&tableImage{code: fn, table: base, data: fn}, fn, base, addr); err != nil {
			require.ErrorIs(t, err, ErrRefused)
		}
		r, err := Plan(fn, base, addr)
		if err != nil {
			var ref *Refusal
			require.True(t, errors.As(err, &ref), "%v", err)
			require.ErrorIs(t, err, ErrRefused)
			require.NotEmpty(t, ref.Reason)
			return
		}
		require.GreaterOrEqual(t, r.Len, JumpLen)
		require.Equal(t, fn[addr-base:addr-base+uint64(r.Len)], regionBytes(r))
		// From the region's own place every target is within reach but for
		// a branch whose rel32 form is longer, at the edge of ±2 GB.
		for _, pad := range []uint64{r.Addr, r.Addr + uint64(padDelta%(1<<33))} {
			code, offs, err := r.Relocate(pad)
			if err != nil {
				require.ErrorIs(t, err, ErrOutOfReach)
				continue
			}
			checkRelocated(t, r, pad, code, offs)
		}
	})
}

// TestErrorText shows what a refusal says.
func TestErrorText(t *testing.T) {
	_, err := Plan(cat(pushRBP, pushRBX, subRSP8, xorEAX, incEAX, cmpEAX10, rel8(0x75, -13), ret), base, base)
	assert.Equal(t, "region: the instruction at 0x40100d jumps to 0x401002, inside the 6 bytes at 0x401000", err.Error())
	assert.True(t, strings.HasPrefix(fmt.Sprint(err), "region: "))
}
