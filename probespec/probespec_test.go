package probespec

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		{in: "foo arg1 rsi n=arg3 E=EDX", want: Spec{Func: "foo", Args: []ArgSpec{
			{Label: "arg1", N: 1}, {Label: "rsi", Reg: gprByName["rsi"]}, {Label: "n", N: 3}, {Label: "E", Reg: gprByName["edx"]}}}},
		{in: "", err: "empty"},
		{in: "foo%entry", err: "unknown suffix"},
		{in: "foo+bar", err: "bad offset"},
		{in: "foo+0x10%return", err: "do not combine"},
		{in: "0x10%return", err: "not to an address"},
		{in: "main.c:10%return", err: "not to FILE:LINE"},
		{in: "main.c:0", err: "line number >= 1"},
		{in: "0xzz", err: "bad address"},
		{in: "foo arg0", err: "from arg1"},
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
	for _, s := range []string{"malloc", "foo+0x10", "0x401000", "main.c:42", "libc:malloc%return arg1 rdi",
		"a:b:c:7", "[a-", "*", "x%return%return", "libc.so.6:", "f n=arg2 e=EAX"} {
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
