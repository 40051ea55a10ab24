package symbols

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onetrap/onetrap/internal/testprog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func lineOf(t *testing.T, src, marker string) int {
	for i, l := range strings.Split(src, "\n") {
		if strings.Contains(l, marker) {
			return i + 1
		}
	}
	t.Fatalf("marker %s not in source", marker)
	return 0
}

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v: %s", name, args, out)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testprog.Cleanup()
	os.Exit(code)
}

// cProg builds the C test program once (PIE, -g -O0) and returns its path.
func cProg(t *testing.T) string { return testprog.CProg(t) }

// goProgs builds the Go test program with symbols and DWARF, and stripped.
func goProgs(t *testing.T) (full, stripped string) { return testprog.GoProgs(t) }

func open(t *testing.T, path string) *File {
	t.Helper()
	f, err := Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func one(t *testing.T, f *File, name string) *Func {
	t.Helper()
	fns := f.Lookup(name)
	require.Len(t, fns, 1, "functions named %s", name)
	return fns[0]
}

func TestCFunctions(t *testing.T) {
	f := open(t, cProg(t))
	assert.True(t, f.PIE())
	assert.False(t, f.IsGo)

	tr := one(t, f, "two_rets")
	// test(2) jz(2) mov(5) ret(1) xor(2) rep ret(2) bnd ret(2) ret $0(3).
	assert.Equal(t, uint64(19), tr.Size)
	body, err := f.Body(tr)
	require.NoError(t, err)
	assert.Equal(t, []byte{0x85, 0xff, 0x74, 0x06, 0xb8, 0x01, 0, 0, 0, 0xc3, 0x31, 0xc0, 0xf3, 0xc3, 0xf2, 0xc3, 0xc2, 0, 0}, body[:19])

	// The file offset really holds the body.
	raw, err := os.ReadFile(f.Path)
	require.NoError(t, err)
	assert.Equal(t, body, raw[tr.Offset:tr.Offset+tr.Size])

	add := one(t, f, "add")
	assert.False(t, add.Go)
	assert.Same(t, add, f.PCToFunc(add.Addr))
	assert.Same(t, add, f.PCToFunc(add.End()-1))
	assert.NotSame(t, add, f.PCToFunc(add.End()))

	// Static functions of the same name in two units are two functions.
	assert.Len(t, f.Lookup("helper"), 2)

	// Sorted and one per address.
	for i := 1; i < len(f.Funcs); i++ {
		assert.Less(t, f.Funcs[i-1].Addr, f.Funcs[i].Addr)
	}
}

func TestCLines(t *testing.T) {
	f := open(t, cProg(t))
	line := lineOf(t, testprog.CMain, "LINE_ADD")
	addrs, err := f.LineToPC("prog.c", line)
	require.NoError(t, err)
	require.NotEmpty(t, addrs)
	add := one(t, f, "add")
	for _, a := range addrs {
		assert.True(t, add.Contains(a), "%#x in add [%#x,%#x)", a, add.Addr, add.End())
		file, l, fn := f.PCToLine(a)
		assert.Same(t, add, fn)
		assert.Equal(t, line, l)
		assert.True(t, strings.HasSuffix(file, "/prog.c"), file)
	}
	// A full path suffix matches too; an unknown file or a blank line does not.
	_, err = f.LineToPC(filepath.Join(filepath.Base(filepath.Dir(f.Path)), "prog.c"), line)
	assert.NoError(t, err)
	_, err = f.LineToPC("nosuch.c", line)
	assert.ErrorIs(t, err, ErrNoLine)
	assert.ErrorContains(t, err, "no source file matching")
	_, err = f.LineToPC("prog.c", 2) // an #include line has no code
	assert.ErrorContains(t, err, "no code at prog.c:2")

}

func TestGoFunctions(t *testing.T) {
	full, stripped := goProgs(t)
	ff := open(t, full)
	fs := open(t, stripped)
	assert.True(t, ff.IsGo)
	assert.True(t, fs.IsGo, "the stripped binary's pclntab is found")

	_, err := fs.ELF().Symbols()
	require.ErrorIs(t, err, elf.ErrNoSymbols, "the stripped binary has no .symtab")

	for _, name := range []string{"main.hot", "main.(*T).M", "main.main", "runtime.mallocgc"} {
		a := one(t, ff, name)
		b := one(t, fs, name)
		assert.True(t, a.Go, name)
		assert.True(t, b.Go, name)
		assert.Equal(t, a.Addr, b.Addr, name)
		// .symtab sizes stop at the last instruction; the pclntab's run to
		// the next function, over the int3 padding.
		assert.LessOrEqual(t, a.Size, b.Size, name)
		assert.Less(t, b.Size-a.Size, uint64(32), name)
		ba, err := ff.Body(a)
		require.NoError(t, err)
		bb, err := fs.Body(b)
		require.NoError(t, err)
		assert.Equal(t, ba[:4], bb[:4], name)
		for _, c := range bb[a.Size:] {
			assert.Equal(t, byte(0xcc), c, "%s: padding", name)
		}
	}
	// The Go entry is the stack-bound check cmp rsp,[r14+0x10] (49 3b 66 10)
	// for a function that may grow its stack.
	body, err := fs.Body(one(t, fs, "main.main"))
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(body, []byte{0x49, 0x3b, 0x66, 0x10}), "% x", body[:8])
}

// TestGoPclntabScan renames the stripped binary's .gopclntab section: the
// table is then found by its header's magic, with the same functions.
func TestGoPclntabScan(t *testing.T) {
	_, stripped := goProgs(t)
	raw, err := os.ReadFile(stripped)
	require.NoError(t, err)
	i := bytes.Index(raw, []byte(".gopclntab\x00"))
	require.Positive(t, i)
	renamed := bytes.Clone(raw)
	copy(renamed[i:], ".xopclntab")
	p := filepath.Join(t.TempDir(), "renamed")
	require.NoError(t, os.WriteFile(p, renamed, 0o755))

	want := open(t, stripped)
	f := open(t, p)
	require.Nil(t, f.ELF().Section(".gopclntab"))
	assert.True(t, f.IsGo)
	require.Equal(t, len(want.Funcs), len(f.Funcs))
	for i := range want.Funcs {
		assert.Equal(t, want.Funcs[i].Name, f.Funcs[i].Name)
		assert.Equal(t, want.Funcs[i].Addr, f.Funcs[i].Addr)
	}
}

func TestGoLines(t *testing.T) {
	full, stripped := goProgs(t)
	line := lineOf(t, testprog.GoMain, "LINE_HOT")
	for _, path := range []string{full, stripped} {
		f := open(t, path)
		addrs, err := f.LineToPC("main.go", line)
		require.NoError(t, err, path)
		require.NotEmpty(t, addrs)
		hot := one(t, f, "main.hot")
		for _, a := range addrs {
			assert.True(t, hot.Contains(a), "%s: %#x in main.hot", path, a)
			_, l, fn := f.PCToLine(a)
			assert.Same(t, hot, fn)
			assert.Equal(t, line, l)
		}
	}
}

func TestLibc(t *testing.T) {
	f := open(t, "/lib/x86_64-linux-gnu/libc.so.6")
	assert.True(t, f.PIE())
	assert.False(t, f.IsGo)
	m := one(t, f, "malloc")
	assert.Equal(t, "malloc", m.Name, "malloc is preferred over its aliases")
	assert.Greater(t, m.Size, uint64(16))
	assert.Greater(t, len(f.Funcs), 1000)

	// Every body decodes linearly, and every exit found is a near return:
	// c3 or c2 iw, possibly after prefixes (f3 rep, f2 bnd).
	rets := 0
	for i := range f.Funcs {
		fn := &f.Funcs[i]
		exits, err := f.Returns(fn)
		if fn.SizeGuessed {
			// __restore_rt and friends: hand-written, size 0, no FDE.
			assert.ErrorIs(t, err, ErrUnknownSize, fn.Name)
			continue
		}
		require.NoError(t, err, fn.Name)
		body, err := f.Body(fn)
		require.NoError(t, err)
		for _, a := range exits {
			off := a - fn.Addr
			for off < fn.Size && (body[off] == 0xf3 || body[off] == 0xf2) {
				off++
			}
			require.Less(t, off, fn.Size)
			assert.True(t, body[off] == 0xc3 || (body[off] == 0xc2 && off+3 <= fn.Size), "%s+%#x: % x", fn.Name, a-fn.Addr, body[a-fn.Addr:off+1])
		}
		rets += len(exits)
	}
	assert.Greater(t, rets, len(f.Funcs)/2)

	// Globs select many.
	names := map[string]bool{}
	for _, fn := range f.Match("str*cmp") {
		names[fn.Name] = true
	}
	assert.True(t, names["strcmp"] || names["strncmp"], "%v", names)
}

func TestNotELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\necho\n"), 0o755))
	_, err := Open(p)
	assert.ErrorIs(t, err, ErrNotELF)
	_, err = Open("/nonexistent/file")
	assert.ErrorIs(t, err, os.ErrNotExist)
}

const goCgo = `package main

/*
int twice(int x) { return 2 * x; }
*/
import "C"
import "fmt"

//go:noinline
func hot(a int) int { return a + 1 }

func main() { fmt.Println(hot(int(C.twice(2)))) }
`

// TestGoStrippedExternal checks stripped Go binaries whose text does not
// start at runtime.text (external linking puts C start-up code first): the
// pclntab's code addresses are relative to runtime.text, found through the
// runtime's moduledata, directly (fixed-address) or through its dynamic
// relocations (PIE). Each stripped build must agree with its unstripped twin.
func TestGoStrippedExternal(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(goCgo), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/cgo\n\ngo 1.22\n"), 0o644))
	env := []string{"CGO_ENABLED=1", "GOFLAGS=-buildvcs=false"}
	for _, mode := range []struct{ name, buildmode, ld string }{
		{"external", "exe", "-linkmode=external"},
		{"pie", "pie", ""},
	} {
		full := filepath.Join(dir, mode.name+"-full")
		stripped := filepath.Join(dir, mode.name+"-stripped")
		run(t, dir, env, "go", "build", "-buildmode="+mode.buildmode, "-ldflags="+mode.ld, "-o", full, ".")
		run(t, dir, env, "go", "build", "-buildmode="+mode.buildmode, "-ldflags=-s -w "+mode.ld, "-o", stripped, ".")
		ff, fs := open(t, full), open(t, stripped)
		text := fs.ELF().Section(".text")
		require.NotNil(t, text)
		syms, err := ff.ELF().Symbols()
		require.NoError(t, err)
		for _, s := range syms {
			if s.Name == "runtime.text" {
				assert.NotEqual(t, text.Addr, s.Value, "%s: runtime.text is not the start of .text", mode.name)
			}
		}
		for _, name := range []string{"main.hot", "main.main", "runtime.mallocgc"} {
			a, b := one(t, ff, name), one(t, fs, name)
			assert.Equal(t, a.Addr, b.Addr, "%s: %s", mode.name, name)
			assert.True(t, b.Go)
		}
		assert.Len(t, fs.Lookup("twice"), 0, "a stripped binary's C functions are gone")
		if assert.Len(t, ff.Lookup("twice"), 1, "the unstripped binary keeps its C functions") {
			assert.False(t, ff.Lookup("twice")[0].Go, "a C function follows the System V ABI")
		}
	}
}
