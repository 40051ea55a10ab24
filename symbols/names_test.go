package symbols

import (
	"bufio"
	"debug/elf"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/internal/testprog"
)

const libc = "/lib/x86_64-linux-gnu/libc.so.6"

// stripped returns a copy of the binary at path without .symtab.
func stripped(t *testing.T, path string) string {
	out := filepath.Join(t.TempDir(), filepath.Base(path)+".stripped")
	b, err := exec.Command("strip", "-o", out, path).CombinedOutput()
	require.NoError(t, err, "%s", b)
	return out
}

// TestUnwindStarts strips the C program: its functions are then found by
// their .eh_frame FDEs, at exactly the addresses the unstripped binary's
// symbols give, and named sub_ADDR.
func TestUnwindStarts(t *testing.T) {
	for _, pie := range []bool{true, false} {
		flags := []string{"-g", "-O0", "-fPIE", "-pie"}
		name := "prog-pie"
		if !pie {
			flags, name = []string{"-g", "-O0", "-fno-pie", "-no-pie"}, "prog-nopie"
		}
		full := open(t, testprog.C(t, name, "cc", testprog.CSources, testprog.CFiles, flags...))
		assert.Equal(t, pie, full.PIE())
		bare := open(t, stripped(t, full.Path))
		_, err := bare.ELF().Symbols()
		require.ErrorIs(t, err, elf.ErrNoSymbols)

		syms, err := full.ELF().Symbols()
		require.NoError(t, err)
		want := map[uint64]string{}
		text := full.ELF().Section(".text")
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 && s.Value >= text.Addr && s.Value < text.Addr+text.Size {
				want[s.Value] = s.Name
			}
		}
		// Hand-written functions without CFI have no FDE.
		for _, n := range []string{"two_rets", "no_ret", "bad_body"} {
			delete(want, one(t, full, n).Addr)
		}
		got := map[uint64]string{}
		for _, fn := range bare.Funcs {
			if fn.Addr >= text.Addr && fn.Addr < text.Addr+text.Size {
				got[fn.Addr] = fn.Name
			}
		}
		for a, n := range want {
			g, ok := got[a]
			if assert.True(t, ok, "%s: %s at %#x has no function in the stripped binary", name, n, a) {
				assert.Equal(t, full.PCToFunc(a).Size, bare.PCToFunc(a).Size, "%s: %s", name, n)
				assert.Equal(t, "sub_"+strconv.FormatUint(a, 16), g)
			}
		}
		for a, g := range got {
			if strings.HasPrefix(g, "sub_") {
				_, ok := want[a]
				assert.True(t, ok, "%s: %s is no symbol's address", name, g)
			}
		}
	}
}

// TestSizeZero: a symbol of size 0 runs to the next function; its entry
// can be probed, its returns cannot be trusted and are refused.
func TestSizeZero(t *testing.T) {
	f := open(t, cProg(t))
	fn, err := f.LookupFunc("nosize")
	require.NoError(t, err)
	assert.True(t, fn.SizeGuessed)
	assert.Positive(t, fn.Size)
	body, err := f.Body(fn)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xb8, 7, 0, 0, 0, 0xc3}, body[:6])
	_, err = f.Returns(fn)
	assert.ErrorIs(t, err, ErrUnknownSize)
}

// TestAddr2line checks PCToLine and LineToPC against binutils' addr2line on
// every line-table address of add and main.
func TestAddr2line(t *testing.T) {
	f := open(t, cProg(t))
	var pcs []uint64
	for _, name := range []string{"add", "main"} {
		fn := one(t, f, name)
		for pc := fn.Addr; pc < fn.End(); pc++ {
			if _, l, _ := f.PCToLine(pc); l > 0 {
				pcs = append(pcs, pc)
			}
		}
	}
	require.NotEmpty(t, pcs)
	args := []string{"-e", f.Path}
	for _, pc := range pcs {
		args = append(args, strconv.FormatUint(pc, 16))
	}
	out, err := exec.Command("addr2line", args...).Output()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, len(pcs))
	for i, pc := range pcs {
		file, line, _ := f.PCToLine(pc)
		// "path/prog.c:12" or "path/prog.c:12 (discriminator 1)"
		want, _, _ := strings.Cut(lines[i], " ")
		wf, wl, _ := strings.Cut(want, ":")
		assert.Equal(t, filepath.Base(wf), filepath.Base(file), "%#x", pc)
		assert.Equal(t, wl, strconv.Itoa(line), "%#x", pc)
		// LineToPC of that line includes a statement at or before pc in
		// the same function.
		addrs, err := f.LineToPC("prog.c", line)
		require.NoError(t, err)
		assert.NotEmpty(t, addrs)
	}
	addrs, err := f.LineToPC("prog.c", lineOf(t, testprog.CMain, "LINE_ADD"))
	require.NoError(t, err)
	for _, a := range addrs {
		out, err := exec.Command("addr2line", "-e", f.Path, strconv.FormatUint(a, 16)).Output()
		require.NoError(t, err)
		assert.True(t, strings.HasSuffix(strings.Fields(string(out))[0], "prog.c:"+strconv.Itoa(lineOf(t, testprog.CMain, "LINE_ADD"))), "%s", out)
	}
}

// TestGoObjdumpLines checks PCToLine on every instruction of main.hot and
// main.main against go tool objdump's line column, stripped binary too.
func TestGoObjdumpLines(t *testing.T) {
	full, bare := goProgs(t)
	out, err := exec.Command("go", "tool", "objdump", "-s", "^main\\.(hot|main)$", full).Output()
	require.NoError(t, err)
	re := regexp.MustCompile(`^\s+(\S+):(\d+)\s+0x([0-9a-f]+)`)
	n := 0
	for _, path := range []string{full, bare} {
		f := open(t, path)
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			m := re.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			pc, err := strconv.ParseUint(m[3], 16, 64)
			require.NoError(t, err)
			file, line, fn := f.PCToLine(pc)
			require.NotNil(t, fn, "%#x", pc)
			assert.Equal(t, m[1], filepath.Base(file), "%#x", pc)
			assert.Equal(t, m[2], strconv.Itoa(line), "%#x", pc)
			n++
		}
	}
	assert.Greater(t, n, 20)
}

// TestCPlusPlus finds C++ functions by their mangled names, exactly and by
// glob, and tells overloads apart.
func TestCPlusPlus(t *testing.T) {
	src := `namespace ns {
__attribute__((noinline)) int add(int a, int b) { return a + b; }
__attribute__((noinline)) double add(double a, double b) { return a + b; }
struct S { int v; __attribute__((noinline)) int get() const { return v; } };
}
int main(int argc, char **) { ns::S s{argc}; return ns::add(argc, 1) + (int)ns::add(1.0, 2.0) + s.get(); }
`
	f := open(t, testprog.C(t, "cxx", "c++", map[string]string{"p.cc": src}, []string{"p.cc"}, "-O1", "-g"))
	i, err := f.LookupFunc("_ZN2ns3addEii")
	require.NoError(t, err)
	d, err := f.LookupFunc("_ZN2ns3addEdd")
	require.NoError(t, err)
	assert.NotEqual(t, i.Addr, d.Addr)
	_, err = f.LookupFunc("_ZNK2ns1S3getEv")
	require.NoError(t, err)
	assert.Len(t, f.Match("_ZN2ns3add*"), 2)
	_, err = f.LookupFunc("ns::add")
	assert.ErrorIs(t, err, ErrNoSymbol)
}

// TestVersionedNames: memcpy has two versions in glibc; the bare name is
// the default one (an IFUNC), as the dynamic linker binds it.
func TestVersionedNames(t *testing.T) {
	f := open(t, libc)
	def, err := f.LookupFunc("memcpy")
	require.NoError(t, err)
	same, err := f.LookupFunc("memcpy@@GLIBC_2.14")
	require.NoError(t, err)
	assert.Same(t, def, same)
	assert.True(t, def.IFunc)
	old, err := f.LookupFunc("memcpy@GLIBC_2.2.5")
	require.NoError(t, err)
	assert.NotEqual(t, def.Addr, old.Addr)
	assert.True(t, old.HasName("memcpy@GLIBC_2.2.5"), "%s %v", old.Name, old.Aliases)
	assert.True(t, def.HasName("memcpy"), "%s %v", def.Name, def.Aliases)
	s, err := f.LookupFunc("strlen")
	require.NoError(t, err)
	assert.True(t, s.IFunc)
	assert.NotEmpty(t, f.IFuncSlots(s), "libc calls strlen itself through an IRELATIVE slot")
	_, err = f.LookupFunc("memcpy@@GLIBC_9")
	assert.ErrorIs(t, err, ErrNoSymbol)
}

// TestDebugFile reads libc's separate debug information when installed:
// local symbols such as __strlen_avx2 appear.
func TestDebugFile(t *testing.T) {
	f := open(t, libc)
	id := buildID(f.ELF())
	require.NotEmpty(t, id)
	if f.DebugFile == "" {
		t.Skip("no debug information installed for libc (libc6-dbg)")
	}
	assert.True(t, strings.HasPrefix(f.DebugFile, DebugDir+"/.build-id/"), f.DebugFile)
	fn, err := f.LookupFunc("__strlen_avx2")
	require.NoError(t, err)
	assert.False(t, fn.IFunc)
	_, err = f.LookupFunc("__strlen_sse2")
	require.NoError(t, err)
}

// TestGoABIWrapper: runtime.newproc is both a Go function and an ABI0
// wrapper for assembly; the name selects the Go function, stripped or not.
func TestGoABIWrapper(t *testing.T) {
	full, bare := goProgs(t)
	ff, fb := open(t, full), open(t, bare)
	a, err := ff.LookupFunc("runtime.newproc")
	require.NoError(t, err)
	b, err := fb.LookupFunc("runtime.newproc")
	require.NoError(t, err)
	assert.Equal(t, a.Addr, b.Addr)
	wa, err := ff.LookupFunc("runtime.newproc.abi0")
	require.NoError(t, err)
	wb, err := fb.LookupFunc("runtime.newproc.abi0")
	require.NoError(t, err)
	assert.Equal(t, wa.Addr, wb.Addr)
	assert.NotEqual(t, a.Addr, wa.Addr)
	syms, err := ff.ELF().Symbols()
	require.NoError(t, err)
	for _, s := range syms {
		if s.Name == "runtime.newproc" {
			assert.Equal(t, s.Value, a.Addr, "the symbol table's ABIInternal function")
		}
	}
	// The Go stack check of main.hot is skipped.
	hot := one(t, ff, "main.hot")
	body, err := ff.Body(hot)
	require.NoError(t, err)
	skip := ff.StackCheckSkip(hot)
	if skip > 0 {
		assert.Equal(t, []byte{0x49, 0x3b, 0x66, 0x10}, body[:4])
	}
	main := one(t, ff, "main.main")
	skip = ff.StackCheckSkip(main)
	body, err = ff.Body(main)
	require.NoError(t, err)
	assert.Equal(t, []byte{0x49, 0x3b, 0x66, 0x10}, body[:4], "cmp rsp,[r14+0x10]")
	assert.Contains(t, []uint64{6, 10}, skip, "the cmp and a jbe rel8 or rel32")
	assert.Zero(t, ff.StackCheckSkip(one(t, open(t, cProg(t)), "add")), "a C function")
}
