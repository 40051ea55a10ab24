package emu_test

import (
	"debug/elf"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// countingMem is a memio.Memory that counts the writes that reach it.
type countingMem struct {
	p      *memio.Pages
	writes int
}

func (m *countingMem) ReadAt(b []byte, off int64) (int, error) { return m.p.ReadAt(b, off) }
func (m *countingMem) WriteAt(b []byte, off int64) (int, error) {
	n, err := m.p.WriteAt(b, off)
	if n > 0 {
		m.writes++
	}
	return n, err
}
func (m *countingMem) ReadUint(addr uint64, size int) (uint64, error) {
	return m.p.ReadUint(addr, size)
}
func (m *countingMem) WriteUint(addr uint64, size int, v uint64) error {
	err := m.p.WriteUint(addr, size, v)
	if err == nil {
		m.writes++
	}
	return err
}

// functionEntries returns the first bytes of every function symbol of the
// ELF file at path.
func functionEntries(t *testing.T, path string) [][]byte {
	f, err := elf.Open(path)
	if err != nil {
		t.Logf("%s: %v", path, err)
		return nil
	}
	defer f.Close()
	syms, _ := f.Symbols()
	dyn, _ := f.DynamicSymbols()
	syms = append(syms, dyn...)
	var out [][]byte
	seen := map[uint64]bool{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Value == 0 || seen[s.Value] {
			continue
		}
		seen[s.Value] = true
		for _, sec := range f.Sections {
			if sec.Flags&elf.SHF_EXECINSTR == 0 || s.Value < sec.Addr || s.Value >= sec.Addr+sec.Size {
				continue
			}
			n := min(uint64(64), sec.Addr+sec.Size-s.Value)
			b := make([]byte, n)
			if _, err := sec.ReadAt(b, int64(s.Value-sec.Addr)); err == nil {
				out = append(out, b)
			}
		}
	}
	return out
}

// randomCode returns n byte sequences shaped like instructions: prefixes the
// emulator cares about, a one- or two-byte opcode, then random ModRM, SIB,
// displacement and immediate bytes.
func randomCode(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	pfx := []byte{0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x3e, 0x64, 0x65, 0x40, 0x41, 0x48, 0x49, 0x4c, 0x4d}
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		var b []byte
		for k := rng.IntN(4); k > 0; k-- {
			if rng.IntN(3) == 0 {
				b = append(b, pfx[rng.IntN(len(pfx))])
			}
		}
		if rng.IntN(4) == 0 {
			b = append(b, 0x0f)
		}
		b = append(b, byte(rng.IntN(256)))
		for len(b) < 15 {
			b = append(b, byte(rng.IntN(256)))
		}
		out = append(out, b)
	}
	return out
}

// tableCode returns the bytes of every instruction in this package's tests.
func tableCode(t *testing.T) [][]byte {
	var hexes []string
	for _, cases := range tables {
		for _, c := range cases {
			hexes = append(hexes, c.code)
		}
	}
	for _, c := range faultCases {
		hexes = append(hexes, c.code)
	}
	hexes = append(hexes, notEmulated...)
	var out [][]byte
	for _, h := range hexes {
		b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
		require.NoError(t, err)
		out = append(out, b)
	}
	for cc := byte(0); cc < 16; cc++ {
		out = append(out, []byte{0x70 + cc, 0x10}, []byte{0x0f, 0x80 + cc, 0, 1, 0, 0},
			[]byte{0x0f, 0x90 + cc, 0xc0}, []byte{0x0f, 0x40 + cc, 0x45, 0xf8})
	}
	return out
}

// corpusState returns registers that point into the test pages, so that most
// memory operands resolve, with some variety drawn from rng.
func corpusState(rng *rand.Rand) regs.Regs {
	var r regs.Regs
	for i := range r.GPR {
		r.GPR[i] = data + uint64(rng.IntN(0x1000))
	}
	if rng.IntN(8) == 0 {
		r.GPR[rng.IntN(16)] = rng.Uint64()
	}
	r.GPR[regs.RCX] = uint64(rng.IntN(70))
	r.GPR[regs.RSP] = stackTop - uint64(rng.IntN(0x100))&^7
	r.RIP = codeAt
	r.RFLAGS = 0x202 | rng.Uint64()&emu.StatusFlags
	r.FSBase = data
	r.GSBase = data + 0x100
	r.CS, r.SS = 0x33, 0x2b
	return r
}

// Supports and Step agree on every instruction of a large corpus: Supports
// says yes exactly when Step does not answer ErrNotEmulated. Step never
// panics (an InternalError would say it did), changes nothing when it fails,
// writes memory at most once, and never touches registers other than the
// general ones, rip and the status flags.
func TestSupportsMatchesStep(t *testing.T) {
	var corpus [][]byte
	corpus = append(corpus, tableCode(t)...)
	for _, path := range []string{"/usr/lib/x86_64-linux-gnu/libc.so.6", goBinary()} {
		entries := functionEntries(t, path)
		t.Logf("%s: %d function entries", path, len(entries))
		corpus = append(corpus, entries...)
	}
	corpus = append(corpus, randomCode(40000)...)

	rng := rand.New(rand.NewPCG(3, 4))
	// One address space serves every step: what a successful step writes
	// does not matter to the next, and a failed step must write nothing.
	m := &countingMem{p: newPages(t)}
	seen := map[string]bool{}
	var nInsn, nEmulate, nStepped, nFault int
	for _, code := range corpus {
		// Up to three instructions from each sequence.
		for k, off := 0, 0; k < 3 && off < len(code); k++ {
			in, err := decode.Decode(code[off:], codeAt)
			if err != nil {
				break
			}
			off += in.Len
			key := string(in.Code())
			if seen[key] {
				continue
			}
			seen[key] = true
			nInsn++
			if ok, _ := emu.Supports(in); ok {
				nEmulate++
			}
			for trial := 0; trial < 2; trial++ {
				switch checkStep(t, in, corpusState(rng), m) {
				case stepped:
					nStepped++
				case faulted:
					nFault++
				}
			}
		}
	}
	t.Logf("%d distinct instructions, %d emulable; %d steps succeeded, %d faulted", nInsn, nEmulate, nStepped, nFault)
	require.Greater(t, nEmulate, 1000, "the corpus exercises the emulated set")
}

type outcome int

const (
	stepped outcome = iota
	faulted
	refused
)

// checkStep runs Step on in from r and checks what must hold whatever the
// instruction: Supports and Step agree on what is emulated, Step does not panic
// (an InternalError would say it did), a failed Step changes nothing, a
// successful one writes memory at most once and changes only the general
// registers, rip and the status flags.
func checkStep(t testing.TB, in *decode.Insn, r regs.Regs, m *countingMem) outcome {
	t.Helper()
	m.writes = 0
	before := r
	err := emu.Step(in, &r, m)
	var ie *emu.InternalError
	if errors.As(err, &ie) {
		t.Fatalf("% x (%v): %v", in.Code(), in, err)
	}
	if ok, why := emu.Supports(in); ok == errors.Is(err, emu.ErrNotEmulated) {
		t.Fatalf("% x (%v): Supports says %v (%s) but Step says %v", in.Code(), in, ok, why, err)
	}
	if err != nil {
		if r != before || m.writes != 0 {
			t.Fatalf("% x (%v): failed with %v but changed state (writes %d)", in.Code(), in, err, m.writes)
		}
		if errors.Is(err, emu.ErrNotEmulated) {
			return refused
		}
		var fault *memio.Fault
		if !errors.As(err, &fault) {
			t.Fatalf("% x (%v): error is neither ErrNotEmulated nor a Fault: %v", in.Code(), in, err)
		}
		return faulted
	}
	if m.writes > 1 {
		t.Fatalf("% x (%v): %d memory writes", in.Code(), in, m.writes)
	}
	after := r
	after.GPR, after.RIP = before.GPR, before.RIP
	after.RFLAGS = after.RFLAGS&^emu.StatusFlags | before.RFLAGS&emu.StatusFlags
	if after != before {
		t.Fatalf("% x (%v): changed more than the general registers, rip and status flags", in.Code(), in)
	}
	if in.Flow == decode.FlowNone && r.RIP != in.Next() {
		t.Fatalf("% x (%v): rip %#x, not the next instruction", in.Code(), in, r.RIP)
	}
	return stepped
}

// FuzzStep checks checkStep's invariants on arbitrary bytes and states.
func FuzzStep(f *testing.F) {
	for _, cases := range tables {
		for _, c := range cases {
			b, _ := hex.DecodeString(strings.ReplaceAll(c.code, " ", ""))
			f.Add(b, uint64(1))
		}
	}
	m := &countingMem{p: newPages(f)}
	f.Fuzz(func(t *testing.T, code []byte, seed uint64) {
		in, err := decode.Decode(code, codeAt)
		if err != nil {
			return
		}
		checkStep(t, in, corpusState(rand.New(rand.NewPCG(seed, seed>>32))), m)
	})
}

// goBinary returns the path of the go command that runs the tests.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil {
			return p
		}
	}
	if root := os.Getenv("GOROOT"); root != "" {
		return filepath.Join(root, "bin", "go")
	}
	return "/usr/local/go/bin/go"
}
