package probespec

import (
	"testing"

	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Spec
		err  string
	}{
		{in: "malloc", want: Spec{Func: "malloc"}},
		{in: "main.(*T).M", want: Spec{Func: "main.(*T).M", Glob: true}},
		{in: "foo+16", want: Spec{Func: "foo", Offset: 16}},
		{in: "foo+0x1f", want: Spec{Func: "foo", Offset: 0x1f}},
		{in: "0x401000", want: Spec{Addr: 0x401000, HasAddr: true}},
		{in: "main.c:42", want: Spec{File: "main.c", Line: 42}},
		{in: "src/net/http/server.go:100", want: Spec{File: "src/net/http/server.go", Line: 100}},
		{in: "libfoo.so:foo.c:7", want: Spec{Lib: "libfoo.so", File: "foo.c", Line: 7}},
		{in: "http.*", want: Spec{Func: "http.*", Glob: true}},
		{in: "libc:malloc", want: Spec{Lib: "libc", Func: "malloc"}},
		{in: "libc.so.6:malloc%return", want: Spec{Lib: "libc.so.6", Func: "malloc", Return: true}},
		{in: "/usr/lib/libz.so.1:inflate+4", want: Spec{Lib: "/usr/lib/libz.so.1", Func: "inflate", Offset: 4}},
		{in: "libc:0x1000", want: Spec{Lib: "libc", Addr: 0x1000, HasAddr: true}},
		{in: "type:.eq.main.T", want: Spec{Func: "type:.eq.main.T"}},
		{in: "foo%return", want: Spec{Func: "foo", Return: true}},
		{in: "foo arg0 rsi n=arg2 E=EDX", want: Spec{Func: "foo", Args: []ArgSpec{
			{Label: "arg0", Arg: true}, {Label: "rsi", Reg: gprByName["rsi"]}, {Label: "n", N: 2, Arg: true}, {Label: "E", Reg: gprByName["edx"]}}}},
		{in: "foo s=arg0:str retval:d", want: Spec{Func: "foo", Args: []ArgSpec{
			{Label: "s", Arg: true, Type: TypeCString}, {Label: "retval", Ret: true, Type: TypeSigned}}}},
		{in: "", err: "empty"},
		{in: "foo%entry", err: "unknown suffix"},
		{in: "foo+bar", err: "bad offset"},
		{in: "foo+0x10%return", err: "do not combine"},
		{in: "0x10%return", err: "not to an address"},
		{in: "main.c:10%return", err: "not to FILE:LINE"},
		{in: "main.c:0", err: "line number >= 1"},
		{in: "0xzz", err: "bad address"},
		{in: "foo arg-1", err: "count from arg0"},
		{in: "foo arg0:float", err: "unknown type"},
		{in: "foo if arg0", err: "no comparison"},
		{in: "foo xmm0", err: "not a general register"},
		{in: "foo =rdi", err: "bad argument"},
		{in: "foo[ab", err: "unterminated"},
		{in: ":foo", err: "empty library"},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			sp, err := Parse(c.in)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			c.want.Raw = c.in
			assert.Equal(t, &c.want, sp)
		})
	}
}

// FuzzParse: any text parses or fails with an error, never a panic, and
// a parsed spec names exactly one kind of location.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"malloc", "foo+0x10", "0x401000", "main.c:42", "libc:malloc%return arg0 rdi",
		"a:b:c:7", "[a-", "*", "x%return%return", "libc.so.6:", "f n=arg1 e=EAX"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sp, err := Parse(s)
		if err != nil {
			return
		}
		kinds := 0
		for _, b := range []bool{sp.HasAddr, sp.File != "", sp.Func != ""} {
			if b {
				kinds++
			}
		}
		if kinds != 1 {
			t.Fatalf("%q parsed to %+v", s, sp)
		}
	})
}

func TestCond(t *testing.T) {
	sp, err := Parse("malloc if arg0 > 4096 || arg1:d < -1 && retval == 0")
	require.NoError(t, err)
	c, err := sp.Cond.resolve(uprobe.SysV)
	require.NoError(t, err)
	assert.True(t, c.NeedsRet)
	var entry, ret regs.Regs
	set := func(r *regs.Regs, reg x86asm.Reg, v uint64) { r.Set(reg, v) }
	set(&entry, x86asm.RDI, 4097)
	assert.True(t, c.Eval(&entry, nil, nil, 0))
	set(&entry, x86asm.RDI, 4096)
	assert.False(t, c.Eval(&entry, nil, nil, 0), "arg1 0 is not < -1")
	set(&entry, x86asm.RSI, ^uint64(1)) // -2
	assert.True(t, c.Eval(&entry, nil, nil, 0), "undecided until the return")
	set(&ret, x86asm.RAX, 1)
	assert.False(t, c.Eval(&entry, &ret, nil, 0))
	set(&ret, x86asm.RAX, 0)
	assert.True(t, c.Eval(&entry, &ret, nil, 0))

	// A 32-bit signed type reads the low half, sign-extended.
	sp, err = Parse("f if arg0:i32 == -2")
	require.NoError(t, err)
	c, err = sp.Cond.resolve(uprobe.SysV)
	require.NoError(t, err)
	set(&entry, x86asm.RDI, 0xfffffffe)
	assert.True(t, c.Eval(&entry, nil, nil, 0))
}
