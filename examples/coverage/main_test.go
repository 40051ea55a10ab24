package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var lastLine = regexp.MustCompile(`^entries=(\d+) emulate=(\d+) \((\d+\.\d)%\) outofline=(\d+) rejected=(\d+) undecoded=(\d+)$`)

const libc = "/lib/x86_64-linux-gnu/libc.so.6"

func gofmtBinary() string { return filepath.Join(runtime.GOROOT(), "bin", "gofmt") }

// checkLine parses the summary line and checks that the four counts add up.
func checkLine(t *testing.T, line string) [6]int {
	t.Helper()
	m := lastLine.FindStringSubmatch(line)
	require.NotNil(t, m, "last line %q", line)
	var n [6]int
	for i, s := range []string{m[1], m[2], m[4], m[5], m[6]} {
		v, err := strconv.Atoi(s)
		require.NoError(t, err)
		n[i] = v
	}
	assert.Equal(t, n[0], n[1]+n[2]+n[3]+n[4], "the four counts add up to entries: %s", line)
	assert.Greater(t, n[0], 0)
	want := strconv.FormatFloat(100*float64(n[1])/float64(n[0]), 'f', 1, 64)
	assert.Equal(t, want, m[3], "percentage to one decimal")
	return n
}

func runCov(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	require.Equal(t, 0, run(args, &o, &e), "stderr: %s", e.String())
	return o.String(), e.String()
}

func lastOf(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func TestRealFiles(t *testing.T) {
	out, _ := runCov(t, libc, gofmtBinary())
	n1 := checkLine(t, lastOf(out))
	assert.Contains(t, out, libc+" (C): functions=")
	assert.Contains(t, out, gofmtBinary()+" (Go): functions=")

	// Per-file lines add up to the total.
	var sum int
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, " entries="); i >= 0 && strings.Contains(l, "functions=") {
			sum += checkLine(t, l[i+1:])[0]
		}
	}
	assert.Equal(t, n1[0], sum)

	// Depth 3 decodes at least as many instructions, at most three per function.
	out3, _ := runCov(t, "-depth", "3", "-files=false", libc, gofmtBinary())
	n3 := checkLine(t, lastOf(out3))
	assert.Greater(t, n3[0], n1[0])
	assert.LessOrEqual(t, n3[0], 3*n1[0])
	assert.NotContains(t, out3, "functions=", "-files=false drops the per-file sections")
}

func TestJSON(t *testing.T) {
	out, errOut := runCov(t, "-json", "-top", "5", libc)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	n := checkLine(t, lastOf(errOut))
	assert.Equal(t, n[0], rep.Total.Entries)
	assert.Equal(t, n[1], rep.Total.Emulate)
	require.Len(t, rep.Files, 1)
	assert.Equal(t, libc, rep.Files[0].Path)
	assert.Equal(t, rep.Files[0].Functions, rep.Total.Entries, "depth 1: one entry per function")
	assert.LessOrEqual(t, len(rep.Top["emulate"]), 5)
	require.NotEmpty(t, rep.Top["emulate"])
	// Each example's bytes decode to the shape it illustrates.
	for _, s := range rep.Top["emulate"] {
		b, err := hexDecode(s.Bytes)
		require.NoError(t, err)
		in, err := decode.Decode(b, 0x1000)
		require.NoError(t, err, s.Bytes)
		ok, why := emu.Supports(in)
		assert.True(t, ok, "%s: %s", s.Bytes, why)
		assert.Equal(t, s.Shape, ShapeOf(in), s.Bytes)
	}
}

// TestWalk gives a directory: non-ELF files are skipped, and a symlink to a
// file already listed is measured once.
func TestWalk(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "script.sh"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.Symlink(gofmtBinary(), filepath.Join(dir, "gofmt-link")))
	out, _ := runCov(t, "-json", dir, gofmtBinary())
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Len(t, rep.Files, 1)
	assert.Equal(t, 1, rep.Skipped)
}

func TestShapes(t *testing.T) {
	cases := []struct {
		code  []byte
		shape string
	}{
		{[]byte{0x55}, "push r64"},
		{[]byte{0x48, 0x8b, 0x05, 0x10, 0, 0, 0}, "mov r64, m64[rip]"},
		{[]byte{0x0f, 0x29, 0x44, 0x24, 0xe8}, "movaps m128, xmm"},
		{[]byte{0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0}, "mov r64, fs:m64"},
		{[]byte{0xf0, 0x0f, 0xb1, 0x0a}, "lock cmpxchg m32, r32"},
		{[]byte{0xf3, 0x0f, 0x1e, 0xfa}, "endbr64"},
		{[]byte{0x48, 0x83, 0xec, 0x18}, "sub r64, imm"},
		{[]byte{0xe8, 0, 0, 0, 0}, "call rel"},
		{[]byte{0xf2, 0xc3}, "bnd ret"},
	}
	for _, c := range cases {
		in, err := decode.Decode(c.code, 0x1000)
		require.NoError(t, err, "% x", c.code)
		assert.Equal(t, c.shape, ShapeOf(in), "% x", c.code)
	}
}

func TestUsage(t *testing.T) {
	var o, e bytes.Buffer
	assert.Equal(t, 2, run(nil, &o, &e))
	assert.Contains(t, e.String(), "usage")
	assert.Equal(t, 2, run([]string{"-depth", "0", libc}, &o, &e))
	assert.Equal(t, 1, run([]string{"/nonexistent"}, &o, &e))
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// cTrapless has entries of each kind: one instruction of 5 bytes (the
// mov), a frame whose first instructions form a region, and a loop that
// goes back into the first bytes (spin's, to its second instruction).
const cTrapless = `
__attribute__((noinline)) int seven(void) { return 7; }
__attribute__((noinline)) long framed(long *a, long n) {
	long s = 0;
	for (long i = 0; i < n; i++) s += a[i] * seven();
	return s;
}
int spin(int *p);
__asm__(".text\n.globl spin\n.type spin,@function\nspin:\n"
	"\tpush %rbx\n1:\tmov (%rdi), %eax\n\tlock decl (%rdi)\n\tjnz 1b\n\tpop %rbx\n\tret\n.size spin, .-spin\n");
int main(int argc, char **argv) { long a[3] = {1, 2, argc}; int x = argc; return (int)framed(a, 3) + spin(&x); }
`

// TestTrapless: the jump1 and jump counts of function entries, on a
// program built now and on a Go binary.
func TestTrapless(t *testing.T) {
	files := []string{gofmtBinary()}
	if _, err := exec.LookPath("gcc"); err == nil {
		dir := t.TempDir()
		src, exe := filepath.Join(dir, "prog.c"), filepath.Join(dir, "prog")
		require.NoError(t, os.WriteFile(src, []byte(cTrapless), 0o644))
		out, err := exec.Command("gcc", "-O2", "-o", exe, src).CombinedOutput()
		require.NoError(t, err, "%s", out)
		files = append(files, exe)
	}
	out, _ := runCov(t, append([]string{"-json"}, files...)...)
	var rep Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Files, len(files))
	for _, r := range rep.Files {
		tr := r.Trapless
		assert.Equal(t, r.Functions, tr.Functions, r.Path)
		assert.Greater(t, tr.Jump1, 0, r.Path)
		assert.Greater(t, tr.Jump, tr.Jump1, "%s: regions add to single instructions", r.Path)
		assert.LessOrEqual(t, tr.Jump, tr.Functions, r.Path)
		refused := 0
		for _, n := range tr.Refused {
			refused += n
		}
		assert.Equal(t, tr.Functions-tr.Jump, refused, "%s: every other entry has a rule", r.Path)
		if !r.Go {
			// spin's loop goes back to its second instruction.
			assert.GreaterOrEqual(t, tr.Refused["branch-into"], 1, "%s: %v", r.Path, tr.Refused)
		}
	}
	assert.Equal(t, rep.Go.Trapless.Functions+rep.C.Trapless.Functions, rep.Total.Trapless.Functions)

	// Entries are counted once whatever the depth, and the text says so.
	text, _ := runCov(t, append([]string{"-depth", "3"}, files...)...)
	assert.Contains(t, text, "  trapless: "+rep.Files[0].Trapless.Line())
	assert.Contains(t, text, "  all:                "+rep.Total.Trapless.Line())
	assert.Contains(t, text, "  refused: ")
}
