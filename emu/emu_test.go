package emu_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// The tests' address space: code, two read-write data pages (the stack is at
// the end of the second), a read-only page and a hole. It is the layout of
// package fuzz's sandbox, so the same cases can run on the CPU.
const (
	codeAt   uint64 = 0x50000800
	data     uint64 = 0x50001000
	stackTop uint64 = 0x50002800
	roPage   uint64 = 0x50003000
	hole     uint64 = 0x50004000
)

const (
	CF = regs.CF
	PF = regs.PF
	AF = regs.AF
	ZF = regs.ZF
	SF = regs.SF
	OF = regs.OF
)

// f returns RFLAGS with the always-set bits (IF and bit 1) and the given flags.
func f(bits uint64) uint64 { return 0x202 | bits }

type kv = map[x86asm.Reg]uint64

type memw struct {
	addr uint64
	size int
	val  uint64
}

// tcase is one instruction from one state. Registers not in regs start at 0
// (rsp at stackTop, rbp at data+0x10); registers not in want must not change.
type tcase struct {
	code  string // hex bytes, spaces allowed
	note  string
	regs  kv
	fs    uint64 // FSBase
	gs    uint64 // GSBase
	flags uint64 // initial RFLAGS; 0 means f(0)
	mem   []memw // initial memory
	want  kv     // registers that change
	wantF uint64 // RFLAGS afterwards; 0 means unchanged
	wantM []memw // memory writes
	rip   uint64 // rip afterwards; 0 means the next instruction
}

func (c *tcase) name() string {
	s := strings.ReplaceAll(c.code, " ", "")
	if c.note != "" {
		s += "/" + c.note
	}
	return s
}

func decodeHex(t testing.TB, code string, pc uint64) *decode.Insn {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(code, " ", ""))
	require.NoError(t, err)
	in, err := decode.Decode(b, pc)
	require.NoError(t, err, "decode %s", code)
	require.Equal(t, len(b), in.Len, "length of %s", code)
	return in
}

func newPages(t testing.TB) *memio.Pages {
	t.Helper()
	p := memio.NewPages()
	require.NoError(t, p.Map(data, 2*memio.PageSize, memio.ProtRW))
	require.NoError(t, p.Map(roPage, memio.PageSize, memio.ProtRead))
	return p
}

func poke(t testing.TB, p *memio.Pages, w memw) {
	t.Helper()
	var b [8]byte
	for i := 0; i < w.size; i++ {
		b[i] = byte(w.val >> (8 * i))
	}
	require.NoError(t, p.Poke(w.addr, b[:w.size]))
}

// setup returns the case's starting registers and memory.
func (c *tcase) setup(t testing.TB) (regs.Regs, *memio.Pages) {
	var r regs.Regs
	r.RIP = codeAt
	r.RFLAGS = f(0)
	if c.flags != 0 {
		r.RFLAGS = c.flags
	}
	r.GPR[regs.RSP] = stackTop
	r.GPR[regs.RBP] = data + 0x10
	r.FSBase, r.GSBase = c.fs, c.gs
	for g, v := range c.regs {
		r.Set(g, v)
	}
	p := newPages(t)
	for _, w := range c.mem {
		poke(t, p, w)
	}
	return r, p
}

// samePages asserts that two address spaces hold the same pages and bytes.
func samePages(t testing.TB, want, got *memio.Pages, msg string) {
	t.Helper()
	type pg struct {
		prot memio.Prot
		data string
	}
	dump := func(p *memio.Pages) map[uint64]pg {
		m := map[uint64]pg{}
		p.Each(func(addr uint64, prot memio.Prot, data []byte) bool {
			m[addr] = pg{prot, string(data)}
			return true
		})
		return m
	}
	w, g := dump(want), dump(got)
	require.Equal(t, len(w), len(g), msg)
	for a, pw := range w {
		pgot := g[a]
		require.Equal(t, pw.prot, pgot.prot, "%s: protection of %#x", msg, a)
		if pw.data != pgot.data {
			for i := range pw.data {
				if pw.data[i] != pgot.data[i] {
					require.Failf(t, "memory differs", "%s: first difference at %#x: want %#02x, got %#02x", msg, a+uint64(i), pw.data[i], pgot.data[i])
				}
			}
		}
	}
}

func runCase(t *testing.T, c *tcase) {
	in := decodeHex(t, c.code, codeAt)
	ok, why := emu.Supports(in)
	require.True(t, ok, "%v: %s", in, why)
	r, p := c.setup(t)
	before := r
	wantMem := p.Clone()
	require.NoError(t, emu.Step(in, &r, p), "%v", in)

	want := before
	for g, v := range c.want {
		want.Set(g, v)
	}
	want.RIP = in.Next()
	if c.rip != 0 {
		want.RIP = c.rip
	}
	if c.wantF != 0 {
		want.RFLAGS = c.wantF
	}
	for _, w := range c.wantM {
		poke(t, wantMem, w)
	}
	assert.Equal(t, want.RIP, r.RIP, "rip")
	assert.Equal(t, want.RFLAGS, r.RFLAGS, "rflags: want %#x got %#x", want.RFLAGS, r.RFLAGS)
	assert.Equal(t, want, r, "registers of %v", in)
	samePages(t, wantMem, p, in.String())
}

// d is the data word most memory cases read: at data+0x10, rbp's default.
const d = data + 0x10

var tables = map[string][]tcase{
	"nop": {
		{code: "90"}, {code: "66 90"}, {code: "48 90"}, {code: "0f 1f 00"}, {code: "0f 1f 40 00"},
		{code: "0f 1f 44 00 00"}, {code: "66 0f 1f 44 00 00"}, {code: "0f 1f 80 00 00 00 00"},
		{code: "0f 1f 84 00 00 00 00 00"}, {code: "66 0f 1f 84 00 00 00 00 00"},
		{code: "66 2e 0f 1f 84 00 00 00 00 00"}, {code: "66 66 2e 0f 1f 84 00 00 00 00 00"},
		{code: "f3 0f 1e fa", note: "endbr64"}, {code: "f3 0f 1e fb", note: "endbr32"},
		{code: "f3 90", note: "pause"},
		// A NOP's memory operand is never accessed.
		{code: "0f 1f 00", note: "unmapped operand", regs: kv{x86asm.RAX: hole}},
		// NOP r/m64, which x86asm does not decode.
		{code: "48 0f 1f 00", note: "rex.w", regs: kv{x86asm.RAX: hole}},
		{code: "48 0f 1f c0", note: "rex.w register"},
		{code: "66 49 0f 1f 84 00 00 00 00 00", note: "66 rex.wb", regs: kv{x86asm.R8: 0x8000000000000000}},
		// A REX followed by a legacy prefix is ignored: 66 90 then.
		{code: "41 66 90", note: "ignored rex.b"},
	},
	"push": {
		{code: "55", regs: kv{x86asm.RBP: 0x1122334455667788}, want: kv{x86asm.RSP: stackTop - 8},
			wantM: []memw{{stackTop - 8, 8, 0x1122334455667788}}},
		{code: "41 55", regs: kv{x86asm.R13: 0xabcdef}, want: kv{x86asm.RSP: stackTop - 8},
			wantM: []memw{{stackTop - 8, 8, 0xabcdef}}},
		{code: "54", note: "pushes the old rsp", want: kv{x86asm.RSP: stackTop - 8},
			wantM: []memw{{stackTop - 8, 8, stackTop}}},
		{code: "6a 80", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0xffffffffffffff80}}},
		{code: "6a 7f", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0x7f}}},
		{code: "68 ff ff ff 7f", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0x7fffffff}}},
		{code: "68 00 00 00 80", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0xffffffff80000000}}},
		{code: "ff 35 0a 08 00 00", note: "rip-relative", mem: []memw{{d, 8, 0xdeadbeefcafef00d}},
			want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0xdeadbeefcafef00d}}},
		{code: "ff 34 24", note: "address before the decrement", mem: []memw{{stackTop, 8, 0x1234}},
			want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0x1234}}},
		{code: "ff 74 24 08", mem: []memw{{stackTop + 8, 8, 0x5678}},
			want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0x5678}}},
		{code: "64 ff 34 25 28 00 00 00", fs: data, mem: []memw{{data + 0x28, 8, 0x9abc}},
			want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, 0x9abc}}},
	},
	"pop": {
		{code: "5d", mem: []memw{{stackTop, 8, 0xabc}}, want: kv{x86asm.RBP: 0xabc, x86asm.RSP: stackTop + 8}},
		{code: "41 5f", mem: []memw{{stackTop, 8, 0xdef}}, want: kv{x86asm.R15: 0xdef, x86asm.RSP: stackTop + 8}},
		{code: "5c", note: "the popped value wins", mem: []memw{{stackTop, 8, 0x1000}}, want: kv{x86asm.RSP: 0x1000}},
		{code: "8f c0", mem: []memw{{stackTop, 8, 0x77}}, want: kv{x86asm.RAX: 0x77, x86asm.RSP: stackTop + 8}},
	},
	"mov": {
		{code: "48 89 e5", want: kv{x86asm.RBP: stackTop}},
		{code: "89 c8", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x1234567890abcdef}, want: kv{x86asm.RAX: 0x90abcdef}},
		{code: "66 89 c8", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x1234567890abcdef}, want: kv{x86asm.RAX: 0xffffffffffffcdef}},
		{code: "88 c8", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x1234567890abcdef}, want: kv{x86asm.RAX: 0xffffffffffffffef}},
		{code: "88 cc", note: "ah", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x1234567890abcdef}, want: kv{x86asm.RAX: 0xffffffffffffefff}},
		{code: "40 88 cc", note: "spl", regs: kv{x86asm.RCX: 0xef}, want: kv{x86asm.RSP: stackTop&^0xff | 0xef}},
		{code: "8a e5", note: "ah from ch", regs: kv{x86asm.RCX: 0x4200}, want: kv{x86asm.RAX: 0x4200}},
		{code: "48 8b 45 08", mem: []memw{{d + 8, 8, 0x1111222233334444}}, want: kv{x86asm.RAX: 0x1111222233334444}},
		{code: "8b 45 f8", regs: kv{x86asm.RAX: ^uint64(0)}, mem: []memw{{d - 8, 8, 0x1111222233334444}}, want: kv{x86asm.RAX: 0x33334444}},
		{code: "66 8b 45 f8", regs: kv{x86asm.RAX: ^uint64(0)}, mem: []memw{{d - 8, 8, 0x1111222233334444}}, want: kv{x86asm.RAX: 0xffffffffffff4444}},
		{code: "8a 45 f8", regs: kv{x86asm.RAX: ^uint64(0)}, mem: []memw{{d - 8, 8, 0x1111222233334444}}, want: kv{x86asm.RAX: 0xffffffffffffff44}},
		{code: "48 89 04 24", regs: kv{x86asm.RAX: 0x55}, wantM: []memw{{stackTop, 8, 0x55}}},
		{code: "89 45 f8", regs: kv{x86asm.RAX: 0x1122334455667788}, mem: []memw{{d - 8, 8, ^uint64(0)}}, wantM: []memw{{d - 8, 8, 0xffffffff55667788}}},
		{code: "66 89 45 f8", regs: kv{x86asm.RAX: 0x1122334455667788}, wantM: []memw{{d - 8, 2, 0x7788}}},
		{code: "88 65 f8", regs: kv{x86asm.RAX: 0x1122334455667788}, wantM: []memw{{d - 8, 1, 0x77}}},
		{code: "c7 45 f8 ff ff ff ff", wantM: []memw{{d - 8, 4, 0xffffffff}}},
		{code: "48 c7 45 f8 ff ff ff ff", wantM: []memw{{d - 8, 8, ^uint64(0)}}},
		{code: "48 c7 45 f8 00 00 00 80", wantM: []memw{{d - 8, 8, 0xffffffff80000000}}},
		{code: "66 c7 45 f8 34 12", wantM: []memw{{d - 8, 2, 0x1234}}},
		{code: "c6 45 f8 7f", wantM: []memw{{d - 8, 1, 0x7f}}},
		{code: "b8 ff ff ff ff", regs: kv{x86asm.RAX: 0x123456789}, want: kv{x86asm.RAX: 0xffffffff}},
		{code: "48 b8 88 77 66 55 44 33 22 11", want: kv{x86asm.RAX: 0x1122334455667788}},
		{code: "49 bf 00 00 00 00 00 00 00 80", want: kv{x86asm.R15: 0x8000000000000000}},
		{code: "48 c7 c0 ff ff ff ff", want: kv{x86asm.RAX: ^uint64(0)}},
		{code: "c7 c0 ff ff ff ff", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0xffffffff}},
		{code: "b0 12", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0xffffffffffffff12}},
		{code: "b4 12", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0xffffffffffff12ff}},
		{code: "66 b8 34 12", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0xffffffffffff1234}},
		{code: "48 a1 10 10 00 50 00 00 00 00", note: "moffs", mem: []memw{{d, 8, 0x0102030405060708}}, want: kv{x86asm.RAX: 0x0102030405060708}},
		{code: "a0 10 10 00 50 00 00 00 00", mem: []memw{{d, 8, 0x0102030405060708}}, want: kv{x86asm.RAX: 0x08}},
		{code: "67 a1 10 10 00 50", mem: []memw{{d, 8, 0x0102030405060708}}, want: kv{x86asm.RAX: 0x05060708}},
		{code: "a3 10 10 00 50 00 00 00 00", regs: kv{x86asm.RAX: 0xaabbccddeeff0011}, wantM: []memw{{d, 4, 0xeeff0011}}},
		{code: "48 a3 10 10 00 50 00 00 00 00", regs: kv{x86asm.RAX: 0xaabbccddeeff0011}, wantM: []memw{{d, 8, 0xaabbccddeeff0011}}},
		{code: "48 8b 04 25 10 10 00 50", mem: []memw{{d, 8, 0x42}}, want: kv{x86asm.RAX: 0x42}},
		{code: "48 8b 05 09 08 00 00", note: "rip-relative", mem: []memw{{d, 8, 0x4242}}, want: kv{x86asm.RAX: 0x4242}},
		{code: "48 89 0d 09 08 00 00", regs: kv{x86asm.RCX: 0x77}, wantM: []memw{{d, 8, 0x77}}},
		{code: "c7 05 06 08 00 00 01 00 00 00", note: "rip-relative before an immediate", wantM: []memw{{d, 4, 1}}},
		{code: "64 48 8b 04 25 28 00 00 00", note: "fs", fs: data, mem: []memw{{data + 0x28, 8, 0x5555aaaa5555aaaa}}, want: kv{x86asm.RAX: 0x5555aaaa5555aaaa}},
		{code: "65 48 8b 04 25 10 00 00 00", note: "gs", gs: data + 0x100, mem: []memw{{data + 0x110, 8, 0x66}}, want: kv{x86asm.RAX: 0x66}},
		{code: "64 48 8b 00", note: "fs base plus register", fs: data, regs: kv{x86asm.RAX: 8}, mem: []memw{{data + 8, 8, 0x99}}, want: kv{x86asm.RAX: 0x99}},
		{code: "64 48 8b 0c 25 f8 ff ff ff", note: "go tls: fs base minus 8", fs: data + 0x100, mem: []memw{{data + 0xf8, 8, 0x77}}, want: kv{x86asm.RCX: 0x77}},
		{code: "64 48 a1 f8 ff ff ff ff ff ff ff", note: "moffs with fs", fs: data + 0x100, mem: []memw{{data + 0xf8, 8, 0x78}}, want: kv{x86asm.RAX: 0x78}},
		{code: "64 48 89 08", note: "fs store", fs: data, regs: kv{x86asm.RAX: 8, x86asm.RCX: 3}, wantM: []memw{{data + 8, 8, 3}}},
		{code: "67 8b 00", note: "32-bit address", regs: kv{x86asm.RAX: 0xffffffff00000000 | d}, mem: []memw{{d, 4, 0x31}}, want: kv{x86asm.RAX: 0x31}},
		{code: "67 8b 40 f8", note: "32-bit address wraps", regs: kv{x86asm.RAX: 0xffffffff00000000 | (d + 8)}, mem: []memw{{d, 4, 0x32}}, want: kv{x86asm.RAX: 0x32}},
		{code: "48 8b 40 f8", note: "negative displacement", regs: kv{x86asm.RAX: d + 8}, mem: []memw{{d, 8, 0x33}}, want: kv{x86asm.RAX: 0x33}},
		{code: "48 8b 04 c8", note: "index", regs: kv{x86asm.RAX: data, x86asm.RCX: 2}, mem: []memw{{d, 8, 0x34}}, want: kv{x86asm.RAX: 0x34}},
		{code: "4a 8b 44 3d 00", note: "r15 index", regs: kv{x86asm.R15: 0x10, x86asm.RBP: data}, mem: []memw{{d, 8, 0x35}}, want: kv{x86asm.RAX: 0x35}},
		{code: "48 8b 04 24", note: "read-only page is readable", regs: kv{x86asm.RSP: roPage}, mem: []memw{{roPage, 8, 0x36}}, want: kv{x86asm.RAX: 0x36}},
		{code: "48 8b 80 fc 0f 00 00", note: "crossing pages", regs: kv{x86asm.RAX: data}, mem: []memw{{data + 0xffc, 8, 0x0102030405060708}}, want: kv{x86asm.RAX: 0x0102030405060708}},
	},
	"movx": {
		{code: "0f b6 c1", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x180}, want: kv{x86asm.RAX: 0x80}},
		{code: "48 0f be c1", regs: kv{x86asm.RCX: 0x80}, want: kv{x86asm.RAX: 0xffffffffffffff80}},
		{code: "0f bf c1", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x8000}, want: kv{x86asm.RAX: 0xffff8000}},
		{code: "66 0f be c1", regs: kv{x86asm.RAX: 0x1111111111111111, x86asm.RCX: 0x80}, want: kv{x86asm.RAX: 0x111111111111ff80}},
		{code: "0f b6 c4", note: "from ah", regs: kv{x86asm.RAX: 0xab00}, want: kv{x86asm.RAX: 0xab}},
		{code: "48 0f b7 45 f8", mem: []memw{{d - 8, 8, 0xffffffffffff8001}}, want: kv{x86asm.RAX: 0x8001}},
		{code: "48 0f bf 45 f8", mem: []memw{{d - 8, 8, 0x8001}}, want: kv{x86asm.RAX: 0xffffffffffff8001}},
		{code: "48 63 c1", regs: kv{x86asm.RCX: 0x80000000}, want: kv{x86asm.RAX: 0xffffffff80000000}},
		{code: "63 c1", note: "no REX.W: a 32-bit move", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x80000000}, want: kv{x86asm.RAX: 0x80000000}},
		{code: "48 63 45 f8", mem: []memw{{d - 8, 8, 0x00000000fffffffe}}, want: kv{x86asm.RAX: 0xfffffffffffffffe}},
	},
	"lea": {
		{code: "48 8d 44 24 f8", want: kv{x86asm.RAX: stackTop - 8}},
		{code: "4c 8d 64 24 f0", want: kv{x86asm.R12: stackTop - 0x10}},
		{code: "48 8d 05 09 08 00 00", note: "rip-relative", want: kv{x86asm.RAX: d}},
		{code: "8d 04 08", regs: kv{x86asm.RAX: 0xffffffff00000001, x86asm.RCX: 0x100000002}, want: kv{x86asm.RAX: 3}},
		{code: "67 8d 04 08", regs: kv{x86asm.RAX: 0xffffffff00000001, x86asm.RCX: 0x1ffffffff}, want: kv{x86asm.RAX: 0}},
		{code: "66 8d 04 08", regs: kv{x86asm.RAX: 0x1111111111110001, x86asm.RCX: 0x2}, want: kv{x86asm.RAX: 0x1111111111110003}},
		{code: "64 48 8d 04 25 10 00 00 00", note: "no segment base", fs: data, want: kv{x86asm.RAX: 0x10}},
		{code: "48 8d 0c 80", regs: kv{x86asm.RAX: 3}, want: kv{x86asm.RCX: 15}},
		{code: "67 48 8d 44 24 f8", note: "esp", regs: kv{x86asm.RSP: 0x100000004}, want: kv{x86asm.RAX: 0xfffffffc}},
		{code: "48 8d 04 08", note: "wraps", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 2}, want: kv{x86asm.RAX: 1}},
		{code: "48 8d 04 25 00 00 00 80", note: "sign-extended disp32", want: kv{x86asm.RAX: 0xffffffff80000000}},
	},
	"arith": {
		{code: "48 83 ec 18", want: kv{x86asm.RSP: stackTop - 0x18}, wantF: f(PF | AF)},
		{code: "48 83 c4 18", want: kv{x86asm.RSP: stackTop + 0x18}, wantF: f(PF)},
		{code: "48 81 ec 00 01 00 00", want: kv{x86asm.RSP: stackTop - 0x100}, wantF: f(PF)},
		{code: "01 c8", regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 1}, want: kv{x86asm.RAX: 0}, wantF: f(CF | PF | AF | ZF)},
		{code: "48 01 c8", regs: kv{x86asm.RAX: 0x7fffffffffffffff, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0x8000000000000000}, wantF: f(OF | SF | PF | AF)},
		{code: "00 c8", regs: kv{x86asm.RAX: 0x1111111111111180, x86asm.RCX: 0x80}, want: kv{x86asm.RAX: 0x1111111111111100}, wantF: f(CF | OF | ZF | PF)},
		{code: "66 01 c8", regs: kv{x86asm.RAX: 0x7fff, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0x8000}, wantF: f(OF | SF | PF | AF)},
		{code: "11 c8", flags: f(CF), regs: kv{x86asm.RAX: 0xfffffffe, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0}, wantF: f(CF | ZF | PF | AF)},
		{code: "48 11 c8", note: "carry in and out", flags: f(CF), regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: ^uint64(0)}, want: kv{x86asm.RAX: ^uint64(0)}, wantF: f(CF | SF | PF | AF)},
		{code: "19 c8", flags: f(CF), want: kv{x86asm.RAX: 0xffffffff}, wantF: f(CF | SF | PF | AF)},
		{code: "48 19 c8", note: "no borrow in", regs: kv{x86asm.RAX: 5, x86asm.RCX: 3}, want: kv{x86asm.RAX: 2}, wantF: f(0)},
		{code: "29 c8", regs: kv{x86asm.RAX: 0x80000000, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0x7fffffff}, wantF: f(OF | PF | AF)},
		{code: "39 c8", regs: kv{x86asm.RAX: 1, x86asm.RCX: 2}, wantF: f(CF | SF | PF | AF)},
		{code: "49 3b 66 10", note: "go stack check", regs: kv{x86asm.R14: data}, mem: []memw{{data + 0x10, 8, stackTop - 0x800}}, wantF: f(PF)},
		{code: "49 3b 66 10", note: "go stack check fails", regs: kv{x86asm.R14: data}, mem: []memw{{data + 0x10, 8, stackTop + 1}}, wantF: f(CF | SF | PF | AF)},
		{code: "48 83 f8 00", wantF: f(ZF | PF)},
		{code: "3c 80", regs: kv{x86asm.RAX: 0x7f}, wantF: f(CF | OF | SF | PF)},
		{code: "83 7d f8 05", mem: []memw{{d - 8, 4, 5}}, wantF: f(ZF | PF)},
		{code: "48 85 c0", note: "clears CF OF and the undefined AF", flags: f(CF | OF | AF), wantF: f(ZF | PF)},
		{code: "85 c9", regs: kv{x86asm.RCX: 0x80000000}, wantF: f(SF | PF)},
		{code: "a8 80", regs: kv{x86asm.RAX: 0x81}, wantF: f(SF)},
		{code: "f6 45 f8 01", mem: []memw{{d - 8, 1, 3}}, flags: f(ZF | SF), wantF: f(0)},
		{code: "48 f7 c1 00 00 00 80", note: "imm32 sign-extended", regs: kv{x86asm.RCX: 0x8000000000000000}, wantF: f(SF | PF)},
		{code: "31 c0", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0}, wantF: f(ZF | PF)},
		{code: "48 31 c0", regs: kv{x86asm.RAX: ^uint64(0)}, want: kv{x86asm.RAX: 0}, wantF: f(ZF | PF)},
		{code: "09 c8", regs: kv{x86asm.RAX: 0x0f, x86asm.RCX: 0xf0}, want: kv{x86asm.RAX: 0xff}, wantF: f(PF)},
		{code: "21 c8", regs: kv{x86asm.RAX: 0xff00, x86asm.RCX: 0x0ff0}, want: kv{x86asm.RAX: 0x0f00}, wantF: f(PF)},
		{code: "48 83 e4 f0", regs: kv{x86asm.RSP: stackTop + 8}, want: kv{x86asm.RSP: stackTop}, wantF: f(PF)},
		{code: "48 0d 00 00 00 80", regs: kv{x86asm.RAX: 1}, want: kv{x86asm.RAX: 0xffffffff80000001}, wantF: f(SF)},
		{code: "34 ff", note: "xor al", regs: kv{x86asm.RAX: 0x1234}, want: kv{x86asm.RAX: 0x12cb}, wantF: f(SF)},
		{code: "81 45 f8 ff ff ff 7f", mem: []memw{{d - 8, 4, 1}}, wantM: []memw{{d - 8, 4, 0x80000000}}, wantF: f(OF | SF | PF | AF)},
		{code: "48 01 45 f8", regs: kv{x86asm.RAX: 20}, mem: []memw{{d - 8, 8, 10}}, wantM: []memw{{d - 8, 8, 30}}, wantF: f(PF)},
		{code: "48 2b 45 f8", regs: kv{x86asm.RAX: 20}, mem: []memw{{d - 8, 8, 30}}, want: kv{x86asm.RAX: 0xfffffffffffffff6}, wantF: f(CF | SF | PF | AF)},
		{code: "83 6d f8 01", mem: []memw{{d - 8, 8, 0x100000000}}, wantM: []memw{{d - 8, 8, 0x1ffffffff}}, wantF: f(CF | SF | PF | AF)},
		{code: "80 45 f8 01", mem: []memw{{d - 8, 1, 0xff}}, wantM: []memw{{d - 8, 1, 0}}, wantF: f(CF | ZF | PF | AF)},
		{code: "66 83 45 f8 ff", note: "imm8 sign-extended to 16 bits", mem: []memw{{d - 8, 2, 1}}, wantM: []memw{{d - 8, 2, 0}}, wantF: f(CF | ZF | PF | AF)},
		{code: "48 19 45 f8", flags: f(CF), regs: kv{x86asm.RAX: 1}, mem: []memw{{d - 8, 8, 2}}, wantM: []memw{{d - 8, 8, 0}}, wantF: f(ZF | PF)},
	},
	"unary": {
		{code: "ff c0", flags: f(CF), regs: kv{x86asm.RAX: 0x7fffffff}, want: kv{x86asm.RAX: 0x80000000}, wantF: f(CF | OF | SF | PF | AF)},
		{code: "48 ff c8", want: kv{x86asm.RAX: ^uint64(0)}, wantF: f(SF | PF | AF)},
		{code: "fe c0", regs: kv{x86asm.RAX: 0x12ff}, want: kv{x86asm.RAX: 0x1200}, wantF: f(ZF | PF | AF)},
		{code: "48 f7 d8", regs: kv{x86asm.RAX: 1}, want: kv{x86asm.RAX: ^uint64(0)}, wantF: f(CF | SF | PF | AF)},
		{code: "f7 d8", flags: f(CF), regs: kv{x86asm.RAX: 0xffffffff00000000}, want: kv{x86asm.RAX: 0}, wantF: f(ZF | PF)},
		{code: "f6 d8", regs: kv{x86asm.RAX: 0x80}, wantF: f(CF | OF | SF)},
		{code: "48 f7 d0", flags: f(CF | ZF), regs: kv{x86asm.RAX: 0xff}, want: kv{x86asm.RAX: 0xffffffffffffff00}},
		{code: "f7 d0", regs: kv{x86asm.RAX: 0xffffffff00000000}, want: kv{x86asm.RAX: 0xffffffff}},
		{code: "f6 55 f8", mem: []memw{{d - 8, 2, 0x0f0f}}, wantM: []memw{{d - 8, 2, 0x0ff0}}},
		{code: "ff 45 f8", mem: []memw{{d - 8, 4, 0xffffffff}}, wantM: []memw{{d - 8, 4, 0}}, wantF: f(ZF | PF | AF)},
		{code: "48 ff 4d f8", flags: f(CF), mem: []memw{{d - 8, 8, 0x8000000000000000}}, wantM: []memw{{d - 8, 8, 0x7fffffffffffffff}}, wantF: f(CF | OF | PF | AF)},
	},
	"shift": {
		{code: "48 c1 e0 03", regs: kv{x86asm.RAX: 0x2000000000000001}, want: kv{x86asm.RAX: 8}, wantF: f(CF)},
		{code: "d1 e0", regs: kv{x86asm.RAX: 0xc0000000}, want: kv{x86asm.RAX: 0x80000000}, wantF: f(CF | SF | PF)},
		{code: "d1 e0", note: "OF", regs: kv{x86asm.RAX: 0x40000000}, want: kv{x86asm.RAX: 0x80000000}, wantF: f(OF | SF | PF)},
		{code: "d3 e0", note: "count 0 changes no flag but writes eax", flags: f(CF | ZF | AF | OF), regs: kv{x86asm.RAX: 0xffffffff00000005}, want: kv{x86asm.RAX: 5}},
		{code: "d3 e0", note: "count masked to 0", flags: f(CF | ZF | AF | OF), regs: kv{x86asm.RAX: 0xffffffff00000005, x86asm.RCX: 0x20}, want: kv{x86asm.RAX: 5}},
		{code: "48 d3 e0", note: "count masked to 0 with REX.W", flags: f(SF), regs: kv{x86asm.RAX: 5, x86asm.RCX: 0x40}},
		{code: "48 d3 e0", note: "count 32 with REX.W", regs: kv{x86asm.RAX: 0x180000000, x86asm.RCX: 0x20}, want: kv{x86asm.RAX: 0x8000000000000000}, wantF: f(CF | SF | PF)},
		{code: "48 c1 e8 3f", regs: kv{x86asm.RAX: 0x8000000000000000}, want: kv{x86asm.RAX: 1}, wantF: f(0)},
		{code: "d1 e8", regs: kv{x86asm.RAX: 0x80000001}, want: kv{x86asm.RAX: 0x40000000}, wantF: f(CF | OF | PF)},
		{code: "48 c1 f8 04", regs: kv{x86asm.RAX: 0x8000000000000010}, want: kv{x86asm.RAX: 0xf800000000000001}, wantF: f(SF)},
		{code: "d1 f8", note: "clears OF", flags: f(OF), regs: kv{x86asm.RAX: 0xffffffff}, wantF: f(CF | SF | PF)},
		{code: "c0 e0 09", note: "count past the width: CF undefined, kept", flags: f(CF), regs: kv{x86asm.RAX: 0x12ff}, want: kv{x86asm.RAX: 0x1200}, wantF: f(CF | ZF | PF)},
		{code: "c0 f8 09", note: "sar past the width gives the sign", regs: kv{x86asm.RAX: 0x80}, want: kv{x86asm.RAX: 0xff}, wantF: f(CF | SF | PF)},
		{code: "c0 e8 08", regs: kv{x86asm.RAX: 0x80}, want: kv{x86asm.RAX: 0}, wantF: f(ZF | PF)},
		{code: "c0 e8 07", regs: kv{x86asm.RAX: 0x80}, want: kv{x86asm.RAX: 1}, wantF: f(0)},
		{code: "c0 e8 08", note: "count equal to the width", flags: f(CF), regs: kv{x86asm.RAX: 0x80}, want: kv{x86asm.RAX: 0}, wantF: f(CF | ZF | PF)},
		{code: "66 c1 e0 10", regs: kv{x86asm.RAX: 0x18001}, want: kv{x86asm.RAX: 0x10000}, wantF: f(ZF | PF)},
		{code: "66 c1 e0 0f", regs: kv{x86asm.RAX: 0x3}, want: kv{x86asm.RAX: 0x8000}, wantF: f(CF | SF | PF)},
		{code: "c1 65 f8 04", mem: []memw{{d - 8, 4, 0x10000001}}, wantM: []memw{{d - 8, 4, 0x10}}, wantF: f(CF)},
		{code: "c1 e0 1f", regs: kv{x86asm.RAX: 1}, want: kv{x86asm.RAX: 0x80000000}, wantF: f(SF | PF)},
		{code: "d2 e4", note: "ah by cl", regs: kv{x86asm.RAX: 0x0100, x86asm.RCX: 7}, want: kv{x86asm.RAX: 0x8000}, wantF: f(SF)},
		{code: "d0 fc", note: "sar ah,1", regs: kv{x86asm.RAX: 0x8100}, want: kv{x86asm.RAX: 0xc000}, wantF: f(CF | SF | PF)},
	},
	"xchg": {
		{code: "48 91", regs: kv{x86asm.RAX: 1, x86asm.RCX: 2}, want: kv{x86asm.RAX: 2, x86asm.RCX: 1}},
		{code: "91", regs: kv{x86asm.RAX: 0xffffffff00000001, x86asm.RCX: 0xffffffff00000002}, want: kv{x86asm.RAX: 2, x86asm.RCX: 1}},
		{code: "87 c0", note: "zeroes the upper half", regs: kv{x86asm.RAX: 0xffffffff00000001}, want: kv{x86asm.RAX: 1}},
		{code: "41 90", note: "xchg r8d,eax", regs: kv{x86asm.RAX: 0xffffffff00000001, x86asm.R8: 0xffffffff00000002}, want: kv{x86asm.RAX: 2, x86asm.R8: 1}},
		{code: "86 e0", regs: kv{x86asm.RAX: 0x1234}, want: kv{x86asm.RAX: 0x3412}},
		{code: "66 87 d1", regs: kv{x86asm.RCX: 0x1111111111112222, x86asm.RDX: 0x3333333333334444}, want: kv{x86asm.RCX: 0x1111111111114444, x86asm.RDX: 0x3333333333332222}},
	},
	"extend": {
		{code: "98", regs: kv{x86asm.RAX: 0xffffffff00008000}, want: kv{x86asm.RAX: 0xffff8000}},
		{code: "66 98", regs: kv{x86asm.RAX: 0x1111111111110080}, want: kv{x86asm.RAX: 0x111111111111ff80}},
		{code: "48 98", regs: kv{x86asm.RAX: 0x1180000000}, want: kv{x86asm.RAX: 0xffffffff80000000}},
		{code: "48 98", note: "positive", regs: kv{x86asm.RAX: 0x117fffffff}, want: kv{x86asm.RAX: 0x7fffffff}},
		{code: "99", regs: kv{x86asm.RAX: 0x80000000, x86asm.RDX: 0x1100000000}, want: kv{x86asm.RDX: 0xffffffff}},
		{code: "99", note: "positive", regs: kv{x86asm.RAX: 0x180000000 &^ 0x80000000, x86asm.RDX: ^uint64(0)}, want: kv{x86asm.RDX: 0}},
		{code: "48 99", regs: kv{x86asm.RAX: 0x8000000000000000}, want: kv{x86asm.RDX: ^uint64(0)}},
		{code: "66 99", regs: kv{x86asm.RAX: 0x8000, x86asm.RDX: 0x1111111111111111}, want: kv{x86asm.RDX: 0x111111111111ffff}},
	},
	"cmov": {
		{code: "0f 44 c1", flags: f(ZF), regs: kv{x86asm.RAX: ^uint64(0), x86asm.RCX: 0x1122334455667788}, want: kv{x86asm.RAX: 0x55667788}},
		{code: "0f 44 c1", note: "false still zeroes the upper half", regs: kv{x86asm.RAX: 0xffffffff12345678, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0x12345678}},
		{code: "48 0f 44 c1", note: "false", regs: kv{x86asm.RAX: 0xffffffff12345678, x86asm.RCX: 1}},
		{code: "66 0f 44 c1", note: "false", regs: kv{x86asm.RAX: 0xffffffff12345678, x86asm.RCX: 1}},
		{code: "66 0f 44 c1", flags: f(ZF), regs: kv{x86asm.RAX: 0xffffffff12345678, x86asm.RCX: 1}, want: kv{x86asm.RAX: 0xffffffff12340001}},
		{code: "48 0f 4c 45 f8", flags: f(SF), mem: []memw{{d - 8, 8, 0x99}}, want: kv{x86asm.RAX: 0x99}},
		{code: "48 0f 4c 45 f8", note: "SF==OF", flags: f(SF | OF), mem: []memw{{d - 8, 8, 0x99}}},
	},
	"setcc": {
		{code: "0f 94 c0", flags: f(ZF), regs: kv{x86asm.RAX: 0xff00}, want: kv{x86asm.RAX: 0xff01}},
		{code: "0f 94 c0", regs: kv{x86asm.RAX: 0xffff}, want: kv{x86asm.RAX: 0xff00}},
		{code: "0f 95 45 f8", mem: []memw{{d - 8, 8, ^uint64(0)}}, wantM: []memw{{d - 8, 1, 1}}},
		{code: "40 0f 94 c7", note: "dil", flags: f(ZF), regs: kv{x86asm.RDI: 0x1200}, want: kv{x86asm.RDI: 0x1201}},
		{code: "0f 9f c4", note: "setg ah", regs: kv{x86asm.RAX: 0}, want: kv{x86asm.RAX: 0x100}},
	},
	"branch": {
		{code: "eb 10", rip: codeAt + 2 + 0x10},
		{code: "eb fe", rip: codeAt},
		{code: "e9 00 01 00 00", rip: codeAt + 5 + 0x100},
		{code: "e9 fb ff ff ff", note: "to itself", rip: codeAt},
		{code: "ff e0", regs: kv{x86asm.RAX: 0x401000}, rip: 0x401000},
		{code: "41 ff e3", regs: kv{x86asm.R11: 0x401000}, rip: 0x401000},
		{code: "3e ff e0", note: "notrack", regs: kv{x86asm.RAX: 0x401000}, rip: 0x401000},
		{code: "f2 ff e0", note: "bnd", regs: kv{x86asm.RAX: 0x401000}, rip: 0x401000},
		{code: "ff 24 25 10 10 00 50", mem: []memw{{d, 8, 0x402000}}, rip: 0x402000},
		{code: "ff 25 0a 08 00 00", note: "plt", mem: []memw{{d, 8, 0x403000}}, rip: 0x403000},
		{code: "f2 ff 25 09 08 00 00", note: "bnd plt", mem: []memw{{d, 8, 0x403000}}, rip: 0x403000},
		{code: "ff 24 c5 00 10 00 50", note: "jump table", regs: kv{x86asm.RAX: 2}, mem: []memw{{d, 8, 0x404000}}, rip: 0x404000},
		{code: "e8 00 10 00 00", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 5}}, rip: codeAt + 5 + 0x1000},
		{code: "66 66 48 e8 00 10 00 00", note: "tls call: rex.w overrides 66", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 8}}, rip: codeAt + 8 + 0x1000},
		{code: "66 66 48 e8 f8 ff ff ff", note: "tls call backwards", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 8}}, rip: codeAt},
		{code: "66 48 e9 00 01 00 00", note: "jmp rex.w overrides 66", rip: codeAt + 7 + 0x100},
		{code: "66 48 0f 84 00 01 00 00", note: "jz rex.w overrides 66", flags: f(ZF), rip: codeAt + 8 + 0x100},
		{code: "e8 00 00 00 00", note: "call next", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 5}}, rip: codeAt + 5},
		{code: "ff d0", regs: kv{x86asm.RAX: 0x401000}, want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 2}}, rip: 0x401000},
		{code: "ff 15 0a 08 00 00", mem: []memw{{d, 8, 0x405000}}, want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 6}}, rip: 0x405000},
		{code: "ff 54 24 08", note: "target read before the push", mem: []memw{{stackTop + 8, 8, 0x406000}}, want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 4}}, rip: 0x406000},
		{code: "ff d4", note: "call rsp", want: kv{x86asm.RSP: stackTop - 8}, wantM: []memw{{stackTop - 8, 8, codeAt + 2}}, rip: stackTop},
		{code: "c3", mem: []memw{{stackTop, 8, 0x407000}}, want: kv{x86asm.RSP: stackTop + 8}, rip: 0x407000},
		{code: "c2 10 00", mem: []memw{{stackTop, 8, 0x407000}}, want: kv{x86asm.RSP: stackTop + 0x18}, rip: 0x407000},
		{code: "c2 ff ff", mem: []memw{{stackTop, 8, 0x407000}}, want: kv{x86asm.RSP: stackTop + 8 + 0xffff}, rip: 0x407000},
		{code: "f3 c3", note: "rep ret", mem: []memw{{stackTop, 8, 0x407000}}, want: kv{x86asm.RSP: stackTop + 8}, rip: 0x407000},
		{code: "f2 c3", note: "bnd ret", mem: []memw{{stackTop, 8, 0x407000}}, want: kv{x86asm.RSP: stackTop + 8}, rip: 0x407000},
		{code: "c9", regs: kv{x86asm.RBP: stackTop + 0x100}, mem: []memw{{stackTop + 0x100, 8, 0x7777}}, want: kv{x86asm.RSP: stackTop + 0x108, x86asm.RBP: 0x7777}},
		{code: "e3 10", note: "jrcxz taken", rip: codeAt + 2 + 0x10},
		{code: "e3 10", note: "jrcxz uses all of rcx", regs: kv{x86asm.RCX: 0x100000000}},
		{code: "67 e3 10", note: "jecxz", regs: kv{x86asm.RCX: 0x100000000}, rip: codeAt + 3 + 0x10},
		{code: "67 e3 10", note: "jecxz not taken", regs: kv{x86asm.RCX: 1}},
		{code: "e2 10", note: "loop ends", regs: kv{x86asm.RCX: 1}, want: kv{x86asm.RCX: 0}},
		{code: "e2 f0", note: "loop from 0", want: kv{x86asm.RCX: ^uint64(0)}, rip: codeAt + 2 - 0x10},
		{code: "e1 10", note: "loope", flags: f(ZF), regs: kv{x86asm.RCX: 2}, want: kv{x86asm.RCX: 1}, rip: codeAt + 2 + 0x10},
		{code: "e1 10", note: "loope ZF clear", regs: kv{x86asm.RCX: 2}, want: kv{x86asm.RCX: 1}},
		{code: "e0 10", note: "loopne", regs: kv{x86asm.RCX: 2}, want: kv{x86asm.RCX: 1}, rip: codeAt + 2 + 0x10},
		{code: "e0 10", note: "loopne ZF set", flags: f(ZF), regs: kv{x86asm.RCX: 2}, want: kv{x86asm.RCX: 1}},
	},
}

func TestStepTables(t *testing.T) {
	for family, cases := range tables {
		t.Run(family, func(t *testing.T) {
			for i := range cases {
				c := &cases[i]
				t.Run(c.name(), func(t *testing.T) { runCase(t, c) })
			}
		})
	}
}

// condTrue is the manual's definition of each condition code, written out
// independently of the emulator's.
var condTrue = [16]func(cf, pf, zf, sf, of bool) bool{
	func(cf, pf, zf, sf, of bool) bool { return of },              // O
	func(cf, pf, zf, sf, of bool) bool { return !of },             // NO
	func(cf, pf, zf, sf, of bool) bool { return cf },              // B
	func(cf, pf, zf, sf, of bool) bool { return !cf },             // AE
	func(cf, pf, zf, sf, of bool) bool { return zf },              // E
	func(cf, pf, zf, sf, of bool) bool { return !zf },             // NE
	func(cf, pf, zf, sf, of bool) bool { return cf || zf },        // BE
	func(cf, pf, zf, sf, of bool) bool { return !cf && !zf },      // A
	func(cf, pf, zf, sf, of bool) bool { return sf },              // S
	func(cf, pf, zf, sf, of bool) bool { return !sf },             // NS
	func(cf, pf, zf, sf, of bool) bool { return pf },              // P
	func(cf, pf, zf, sf, of bool) bool { return !pf },             // NP
	func(cf, pf, zf, sf, of bool) bool { return sf != of },        // L
	func(cf, pf, zf, sf, of bool) bool { return sf == of },        // GE
	func(cf, pf, zf, sf, of bool) bool { return zf || sf != of },  // LE
	func(cf, pf, zf, sf, of bool) bool { return !zf && sf == of }, // G
}

// Every condition of jcc rel8, jcc rel32, setcc and cmovcc, under every
// combination of the five flags they read.
func TestConditions(t *testing.T) {
	p := newPages(t)
	for cc := 0; cc < 16; cc++ {
		forms := []struct {
			code string
			kind string
		}{
			{hex.EncodeToString([]byte{0x70 + byte(cc), 0x10}), "jcc8"},
			{hex.EncodeToString([]byte{0x0f, 0x80 + byte(cc), 0x00, 0x01, 0x00, 0x00}), "jcc32"},
			{hex.EncodeToString([]byte{0x0f, 0x90 + byte(cc), 0xc0}), "setcc"},
			{hex.EncodeToString([]byte{0x48, 0x0f, 0x40 + byte(cc), 0xc1}), "cmovcc"},
		}
		for _, form := range forms {
			in := decodeHex(t, form.code, codeAt)
			ok, why := emu.Supports(in)
			require.True(t, ok, "%s: %s", form.code, why)
			for bitsSet := 0; bitsSet < 32; bitsSet++ {
				cf, pf, zf, sf, of := bitsSet&1 != 0, bitsSet&2 != 0, bitsSet&4 != 0, bitsSet&8 != 0, bitsSet&16 != 0
				var r regs.Regs
				r.RFLAGS = f(0)
				r.SetFlag(CF, cf)
				r.SetFlag(PF, pf)
				r.SetFlag(ZF, zf)
				r.SetFlag(SF, sf)
				r.SetFlag(OF, of)
				r.GPR[regs.RAX] = 0xaaaa
				r.GPR[regs.RCX] = 0xbbbb
				before := r
				require.NoError(t, emu.Step(in, &r, p))
				taken := condTrue[cc](cf, pf, zf, sf, of)
				msg := form.code + " flags " + hex.EncodeToString([]byte{byte(bitsSet)})
				assert.Equal(t, before.RFLAGS, r.RFLAGS, msg)
				switch form.kind {
				case "jcc8", "jcc32":
					want := in.Next()
					if taken {
						want = in.Args[0].Imm
					}
					assert.Equal(t, want, r.RIP, msg)
				case "setcc":
					want := uint64(0xaa00)
					if taken {
						want++
					}
					assert.Equal(t, want, r.GPR[regs.RAX], msg)
				case "cmovcc":
					want := uint64(0xaaaa)
					if taken {
						want = 0xbbbb
					}
					assert.Equal(t, want, r.GPR[regs.RAX], msg)
				}
			}
		}
	}
}

// faultCase is an instruction that must fault, changing nothing.
type faultCase struct {
	code   string
	note   string
	regs   kv
	flags  uint64
	mem    []memw
	addr   uint64
	access memio.Access
	cause  error
}

var scratchFaults = faultCases

var faultCases = []faultCase{
	{code: "55", note: "stack read-only", regs: kv{x86asm.RSP: roPage + 0x800}, addr: roPage + 0x7f8, access: memio.Write, cause: memio.ErrProtected},
	{code: "55", note: "stack unmapped", regs: kv{x86asm.RSP: hole + 0x800}, addr: hole + 0x7f8, access: memio.Write, cause: memio.ErrUnmapped},
	{code: "55", note: "stack wraps", regs: kv{x86asm.RSP: 4}, addr: 0xfffffffffffffffc, access: memio.Write, cause: memio.ErrUnmapped},
	{code: "55", note: "stack below the canonical edge", regs: kv{x86asm.RSP: 0xffff800000000004}, addr: 0xffff7ffffffffffc, access: memio.Write, cause: emu.ErrNonCanonical},
	{code: "55", note: "push straddles into the read-only page", regs: kv{x86asm.RSP: roPage + 4}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "6a 00", regs: kv{x86asm.RSP: hole + 8}, addr: hole, access: memio.Write, cause: memio.ErrUnmapped},
	{code: "ff 34 25 00 40 00 50", note: "push from a hole", addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "5d", note: "pop from a hole", regs: kv{x86asm.RSP: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "48 8b 00", regs: kv{x86asm.RAX: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "48 8b 00", note: "non-canonical", regs: kv{x86asm.RAX: 0x800000000000}, addr: 0x800000000000, access: memio.Read, cause: emu.ErrNonCanonical},
	{code: "48 8b 00", note: "straddles the canonical edge", regs: kv{x86asm.RAX: 0x7ffffffffffc}, addr: 0x800000000000, access: memio.Read, cause: emu.ErrNonCanonical},
	{code: "48 8b 00", note: "straddles into a hole", regs: kv{x86asm.RAX: hole - 4}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "48 89 08", regs: kv{x86asm.RAX: roPage, x86asm.RCX: 1}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "c7 00 01 00 00 00", regs: kv{x86asm.RAX: roPage}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "48 01 08", note: "read-modify-write of a read-only page", regs: kv{x86asm.RAX: roPage, x86asm.RCX: 1}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "48 01 08", note: "flags are not committed", flags: f(CF | ZF), regs: kv{x86asm.RAX: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "ff 00", regs: kv{x86asm.RAX: roPage}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "d3 20", note: "shift by zero of read-only memory", regs: kv{x86asm.RAX: roPage}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "0f 95 00", regs: kv{x86asm.RAX: roPage}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "48 39 00", regs: kv{x86asm.RAX: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "0f 44 00", note: "cmov reads memory when false", regs: kv{x86asm.RAX: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "64 48 8b 04 25 28 00 00 00", note: "fs base unset", addr: 0x28, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "c3", regs: kv{x86asm.RSP: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "c3", note: "non-canonical return address", mem: []memw{{stackTop, 8, 0x8000000000000000}}, addr: 0x8000000000000000, access: memio.Read, cause: emu.ErrNonCanonical},
	{code: "e8 00 00 00 00", note: "call with a read-only stack", regs: kv{x86asm.RSP: roPage + 8}, addr: roPage, access: memio.Write, cause: memio.ErrProtected},
	{code: "ff d0", note: "call to a non-canonical target", regs: kv{x86asm.RAX: 0x0001000000000000}, addr: 0x0001000000000000, access: memio.Read, cause: emu.ErrNonCanonical},
	{code: "ff e0", regs: kv{x86asm.RAX: 0xffff700000000000}, addr: 0xffff700000000000, access: memio.Read, cause: emu.ErrNonCanonical},
	{code: "ff 25 fa 37 00 00", note: "plt slot in a hole", addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
	{code: "c9", regs: kv{x86asm.RBP: hole}, addr: hole, access: memio.Read, cause: memio.ErrUnmapped},
}

func TestFaults(t *testing.T) {
	cases := faultCases
	for i := range cases {
		c := &cases[i]
		name := strings.ReplaceAll(c.code, " ", "")
		if c.note != "" {
			name += "/" + c.note
		}
		t.Run(name, func(t *testing.T) {
			in := decodeHex(t, c.code, codeAt)
			ok, why := emu.Supports(in)
			require.True(t, ok, why)
			tc := tcase{code: c.code, regs: c.regs, flags: c.flags, mem: c.mem}
			r, p := tc.setup(t)
			before, memBefore := r, p.Clone()
			err := emu.Step(in, &r, p)
			var fault *memio.Fault
			require.ErrorAs(t, err, &fault)
			assert.Equal(t, c.addr, fault.Addr, "fault address %#x", fault.Addr)
			assert.Equal(t, c.access, fault.Access)
			assert.ErrorIs(t, err, c.cause)
			assert.Equal(t, before, r, "registers changed")
			samePages(t, memBefore, p, "memory changed")
		})
	}
}

// notEmulated are instructions outside the emulated set.
var notEmulated = []string{
	"f0 48 01 08", // lock add
	"48 87 08",    // xchg with memory: implicitly locked
	"0f a2",       // cpuid
	"66 55",       // 16-bit push
	"66 5d",       // 16-bit pop
	"66 c3",       // 16-bit ret
	"66 ff e0",    // 16-bit jmp
	"66 e8 00 00", // call with an operand-size prefix (decoded as rel16 or refused)
	"f3 48 a5",    // rep movsq
	"f3 0f 1e c8", // rdsspd: not a NOP under shadow stacks
	"f3 0f b8 c1", // popcnt
	"67 e2 10",    // loop with ecx
	"0f a0",       // push fs
	"8c d8",       // mov eax, ds
	"48 0f af c1", // imul
	"f3 89 c8",    // mov with a stray rep prefix
	"f2 48 01 c8", // add with a stray repne prefix
	"8f 00",       // pop to memory
	"d1 c0",       // rol
	"c8 10 00 00", // enter
	"0f 1e c8",    // hint nop space that is not 0f 1f /0
	"66 63 c1",    // 16-bit movsxd
	"66 c9",       // 16-bit leave
	"48 0f c1 08", // xadd
	"0f b1 08",    // cmpxchg
	"f3 ff e0",    // rep jmp
	"67 55",       // push with a meaningless address-size prefix
	"48 8d c0",    // lea with a register source: invalid
	"66 48 e3 10", // jrcxz: 66 with REX.W is left to the CPU
	"48 66 50",    // push ax: the REX before 66 is ignored, so 16-bit
	"48 0f 1f 08", // 0f 1f /1 with REX.W: hint space, not a NOP
}

func TestNotEmulated(t *testing.T) {
	for _, code := range notEmulated {
		t.Run(strings.ReplaceAll(code, " ", ""), func(t *testing.T) {
			b, err := hex.DecodeString(strings.ReplaceAll(code, " ", ""))
			require.NoError(t, err)
			in, err := decode.Decode(b, codeAt)
			if err != nil {
				t.Logf("%s does not decode: %v", code, err)
				return
			}
			ok, why := emu.Supports(in)
			assert.False(t, ok, "%v", in)
			assert.NotEmpty(t, why, "%v", in)
			tc := tcase{regs: kv{x86asm.RAX: data}}
			r, p := tc.setup(t)
			before, memBefore := r, p.Clone()
			err = emu.Step(in, &r, p)
			assert.ErrorIs(t, err, emu.ErrNotEmulated)
			assert.Equal(t, before, r)
			samePages(t, memBefore, p, "memory changed")
		})
	}
}

func TestBadArguments(t *testing.T) {
	in := decodeHex(t, "55", codeAt)
	var r regs.Regs
	assert.Error(t, emu.Step(nil, &r, nil))
	assert.Error(t, emu.Step(in, nil, nil))
	// An instruction that needs memory, with none given.
	r.GPR[regs.RSP] = stackTop
	before := r
	err := emu.Step(in, &r, nil)
	require.Error(t, err)
	assert.False(t, errors.Is(err, emu.ErrNotEmulated))
	assert.Equal(t, before, r)
	// A register-only instruction needs no memory.
	in = decodeHex(t, "48 89 e5", codeAt)
	require.NoError(t, emu.Step(in, &r, nil))
	assert.Equal(t, uint64(stackTop), r.GPR[regs.RBP])
	// A corrupt length is refused, not trusted.
	bad := *in
	bad.Len = 0
	assert.Error(t, emu.Step(&bad, &r, nil))
}

// plainMem is a Memory without the Uints fast path, like a caller's own.
type plainMem struct{ p *memio.Pages }

func (m plainMem) ReadAt(b []byte, off int64) (int, error)  { return m.p.ReadAt(b, off) }
func (m plainMem) WriteAt(b []byte, off int64) (int, error) { return m.p.WriteAt(b, off) }

// Step works through io.ReaderAt and io.WriterAt alone, faults included.
func TestStepPlainMemory(t *testing.T) {
	for _, c := range []tcase{
		{code: "55", regs: kv{x86asm.RBP: 0x1122334455667788}, want: kv{x86asm.RSP: stackTop - 8},
			wantM: []memw{{stackTop - 8, 8, 0x1122334455667788}}},
		{code: "48 01 45 f8", regs: kv{x86asm.RAX: 20}, mem: []memw{{d - 8, 8, 10}}, wantM: []memw{{d - 8, 8, 30}}, wantF: f(PF)},
		{code: "66 8b 45 f8", regs: kv{x86asm.RAX: ^uint64(0)}, mem: []memw{{d - 8, 8, 0x1111222233334444}}, want: kv{x86asm.RAX: 0xffffffffffff4444}},
	} {
		in := decodeHex(t, c.code, codeAt)
		r, p := c.setup(t)
		want := r
		for g, v := range c.want {
			want.Set(g, v)
		}
		want.RIP = in.Next()
		if c.wantF != 0 {
			want.RFLAGS = c.wantF
		}
		wantMem := p.Clone()
		for _, w := range c.wantM {
			poke(t, wantMem, w)
		}
		require.NoError(t, emu.Step(in, &r, plainMem{p}), c.code)
		assert.Equal(t, want, r, c.code)
		samePages(t, wantMem, p, c.code)
	}
	// A fault through the plain path still changes nothing.
	in := decodeHex(t, "48 89 08", codeAt)
	c := tcase{regs: kv{x86asm.RAX: roPage - 4, x86asm.RCX: ^uint64(0)}}
	r, p := c.setup(t)
	before, memBefore := r, p.Clone()
	err := emu.Step(in, &r, plainMem{p})
	var fault *memio.Fault
	require.ErrorAs(t, err, &fault)
	assert.Equal(t, roPage, fault.Addr)
	assert.Equal(t, memio.Write, fault.Access)
	assert.Equal(t, before, r)
	samePages(t, memBefore, p, "memory changed")
}
