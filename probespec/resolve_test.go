package probespec

import (
	"os"
	"sort"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/internal/testprog"
	"github.com/onetrap/onetrap/symbols"
	"github.com/onetrap/onetrap/uprobe"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testprog.Cleanup()
	os.Exit(code)
}

func open(t *testing.T, path string) *uprobe.Executable {
	t.Helper()
	ex, err := uprobe.OpenExecutable(path)
	require.NoError(t, err)
	t.Cleanup(func() { ex.Close() })
	return ex
}

func one(t *testing.T, f *symbols.File, name string) *symbols.Func {
	t.Helper()
	fn, err := f.LookupFunc(name)
	require.NoError(t, err)
	return fn
}

func TestResolveC(t *testing.T) {
	f := open(t, testprog.CProg(t))
	tr := one(t, f.File, "two_rets")
	add := one(t, f.File, "add")
	cases := []struct {
		spec  string
		addrs []uint64
		err   string
	}{
		{spec: "two_rets", addrs: []uint64{tr.Addr}},
		{spec: "two_rets+2", addrs: []uint64{tr.Addr + 2}},                                                // jz after test (85 ff)
		{spec: "two_rets+0x9", addrs: []uint64{tr.Addr + 9}},                                              // the first ret (c3)
		{spec: "two_rets+1", err: "not an instruction boundary"},                                          // inside 85 ff
		{spec: "two_rets+5", err: "not an instruction boundary"},                                          // inside b8 01 00 00 00
		{spec: "two_rets+19", err: "past the end"},                                                        // size is 19
		{spec: "two_rets%return", addrs: []uint64{tr.Addr + 9, tr.Addr + 12, tr.Addr + 14, tr.Addr + 16}}, // c3, f3 c3, f2 c3, c2 00 00
		{spec: "no_ret%return", err: "no RET instruction"},
		{spec: "bad_body%return", err: "cannot decode bad_body+0x3"}, // 0f 0b is ud2, then a lone REX.W
		{spec: "helper", err: "ambiguous"},
		{spec: "nosuch", err: "no function matches"},
		{spec: "two_r?ts", addrs: []uint64{tr.Addr}},
		{spec: "[at][dw]*", addrs: sortU(add.Addr, tr.Addr)},
		{spec: "0x" + strconv.FormatUint(add.Addr+1, 16), addrs: []uint64{add.Addr + 1}}, // push rbp is 1 byte
		{spec: "0x" + strconv.FormatUint(tr.Addr+3, 16), err: "not an instruction boundary"},
		{spec: "0x1", err: "not in an executable segment"},
		{spec: "strlen", err: "no function matches"},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			sp, err := Parse(c.spec)
			require.NoError(t, err)
			sites, err := sp.Resolve(f, nil)
			if c.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.err)
				return
			}
			require.NoError(t, err)
			var got []uint64
			for _, s := range sites {
				got = append(got, s.Addr)
			}
			assert.Equal(t, c.addrs, got)
		})
	}
}

func sortU(a ...uint64) []uint64 {
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	return a
}

func TestResolveGo(t *testing.T) {
	_, stripped := testprog.GoProgs(t)
	f := open(t, stripped)
	sp, err := Parse("main.hot arg0 arg1 r=rbx")
	require.NoError(t, err)
	sites, err := sp.Resolve(f, nil)
	require.NoError(t, err)
	require.Len(t, sites, 1)
	assert.Equal(t, uprobe.GoRegs, sites[0].ABI())
	assert.Equal(t, []Arg{{Label: "arg0", Reg: x86asm.RAX}, {Label: "arg1", Reg: x86asm.RBX}, {Label: "r", Reg: x86asm.RBX}}, sites[0].Args)

	// The exact Go method name wins although it contains '*'.
	sp, err = Parse("main.(*T).M")
	require.NoError(t, err)
	sites, err = sp.Resolve(f, nil)
	require.NoError(t, err)
	require.Len(t, sites, 1)
	assert.Equal(t, "main.(*T).M", sites[0].Func.Name)

	// Exits of a Go function: every RET, and each is a c3 in the body.
	sp, err = Parse("main.hot%return")
	require.NoError(t, err)
	sites, err = sp.Resolve(f, nil)
	require.NoError(t, err)
	require.NotEmpty(t, sites)
	hot := one(t, f.File, "main.hot")
	body, err := f.File.Body(hot)
	require.NoError(t, err)
	for _, s := range sites {
		assert.True(t, s.Return)
		assert.Equal(t, byte(0xc3), body[s.Addr-hot.Addr])
	}

	// A glob with a package path matches the name after the last '/'.
	sp, err = Parse("fmt.Fprint*")
	require.NoError(t, err)
	sites, err = sp.Resolve(f, nil)
	require.NoError(t, err)
	assert.NotEmpty(t, sites)

	sp, err = Parse("main.hot arg9")
	require.NoError(t, err)
	_, err = sp.Resolve(f, nil)
	assert.ErrorIs(t, err, uprobe.ErrNotInRegister)
	assert.ErrorContains(t, err, "integer arguments 1 to 9 in registers")
}

func TestResolveLibc(t *testing.T) {
	f := open(t, "/lib/x86_64-linux-gnu/libc.so.6")
	m := one(t, f.File, "malloc")
	sp, err := Parse("libc:malloc arg0 size=rdi")
	require.NoError(t, err)
	assert.Equal(t, "libc", sp.Lib)
	assert.True(t, symbols.MatchLib(sp.Lib, f.Path()))
	sites, err := sp.Resolve(f, nil)
	require.NoError(t, err)
	require.Len(t, sites, 1)
	assert.Equal(t, m.Addr, sites[0].Addr)
	assert.Equal(t, []Arg{{Label: "arg0", Reg: x86asm.RDI}, {Label: "size", Reg: x86asm.RDI}}, sites[0].Args)

	// An IFUNC's implementation is known only in a process.
	sp, err = Parse("strlen")
	require.NoError(t, err)
	_, err = sp.Resolve(f, nil)
	assert.ErrorIs(t, err, symbols.ErrIFunc)
}
