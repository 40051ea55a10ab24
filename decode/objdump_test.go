package decode

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const libcPath = "/lib/x86_64-linux-gnu/libc.so.6"

// objdumpStarts runs objdump over file's executable sections and returns
// the address of every instruction it prints, with its text.
func objdumpStarts(t *testing.T, file string) map[uint64]string {
	t.Helper()
	path, err := exec.LookPath("objdump")
	require.NoError(t, err, "objdump (binutils) is required for this test; install binutils")
	out, err := exec.Command(path, "-d", "-w", "--no-show-raw-insn", file).Output()
	require.NoError(t, err, "objdump -d %s", file)
	starts := make(map[uint64]string, len(out)/20)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Instruction lines look like "   29f10:\tpush   r15".
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || colon+1 >= len(line) || line[colon+1] != '\t' {
			continue
		}
		a, err := strconv.ParseUint(strings.TrimSpace(line[:colon]), 16, 64)
		if err != nil {
			continue
		}
		starts[a] = strings.TrimSpace(line[colon+2:])
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, starts, "objdump printed no instructions for %s", file)
	return starts
}

type funcBody struct {
	name       string
	addr, size uint64
}

// functionBodies lists the function symbols of an ELF file that lie in an
// executable section, with their bytes' section.
func functionBodies(t *testing.T, f *elf.File) []funcBody {
	t.Helper()
	var syms []elf.Symbol
	if s, err := f.Symbols(); err == nil {
		syms = append(syms, s...)
	}
	if s, err := f.DynamicSymbols(); err == nil {
		syms = append(syms, s...)
	}
	seen := map[uint64]bool{}
	var out []funcBody
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || s.Value == 0 || seen[s.Value] {
			continue
		}
		seen[s.Value] = true
		out = append(out, funcBody{s.Name, s.Value, s.Size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

// TestObjdumpBoundariesLibc decodes every function body of the system's libc
// linearly and requires each instruction boundary to be one objdump also
// finds. Rejected instructions are the only allowed disagreement: after one,
// decoding resumes at objdump's next boundary.
func TestObjdumpBoundariesLibc(t *testing.T) {
	starts := objdumpStarts(t, libcPath)
	f, err := elf.Open(libcPath)
	require.NoError(t, err)
	defer f.Close()
	bodies := functionBodies(t, f)
	require.NotEmpty(t, bodies, "no function symbols in %s", libcPath)

	var exec []*elf.Section
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Type == elf.SHT_PROGBITS {
			exec = append(exec, s)
		}
	}
	data := map[*elf.Section][]byte{}
	var total, rejected, undecoded, copyable, mismatches, rejectedMismatches int
	var firstMismatch []string
	for _, fb := range bodies {
		var sec *elf.Section
		for _, s := range exec {
			if fb.addr >= s.Addr && fb.addr+fb.size <= s.Addr+s.Size {
				sec = s
			}
		}
		if _, ok := starts[fb.addr]; sec == nil || !ok {
			continue // not code objdump disassembles (e.g. an IFUNC resolver in another section)
		}
		if data[sec] == nil {
			d, err := sec.Data()
			require.NoError(t, err)
			data[sec] = d
		}
		d := data[sec]
		end := fb.addr + fb.size
		for pc := fb.addr; pc < end; {
			off := pc - sec.Addr
			in, err := Decode(d[off:min(off+MaxLen, uint64(len(d)))], pc)
			total++
			if err != nil {
				var de *Error
				require.True(t, errors.As(err, &de), "error is not a *decode.Error: %v", err)
				undecoded++
				if len(firstMismatch) < 20 {
					firstMismatch = append(firstMismatch, fb.name+": "+err.Error())
				}
				pc = nextStart(starts, pc, end)
				continue
			}
			next := in.Next()
			switch {
			case next < end && !has(starts, next):
				if in.Verdict == Refused {
					rejectedMismatches++
				} else {
					mismatches++
					if len(firstMismatch) < 20 {
						firstMismatch = append(firstMismatch, fmt.Sprintf("%s: %#x: %s: len %d [% x]", fb.name, pc, in, in.Len, in.Code()))
					}
				}
				next = nextStart(starts, pc, end)
			case in.Verdict == Refused:
				rejected++
			case in.Verdict == CanRun:
				copyable++
			}
			pc = next
		}
	}
	t.Logf("libc: %d functions, %d instructions, %d that a copy can run, %d refused, %d undecoded, %d boundary mismatches (%d more on rejected instructions)",
		len(bodies), total, copyable, rejected, undecoded, mismatches, rejectedMismatches)
	require.Greater(t, total, 100000, "too few instructions decoded: the walk is broken")
	require.Zero(t, mismatches, "boundary disagreements with objdump:\n%s", strings.Join(firstMismatch, "\n"))
	require.Zero(t, undecoded, "instructions objdump decodes but Decode does not:\n%s", strings.Join(firstMismatch, "\n"))
}

// nextStart returns objdump's first instruction boundary after pc, or end.
func nextStart(starts map[uint64]string, pc, end uint64) uint64 {
	for a := pc + 1; a < end && a <= pc+MaxLen; a++ {
		if has(starts, a) {
			return a
		}
	}
	return end
}

func has(starts map[uint64]string, a uint64) bool { _, ok := starts[a]; return ok }

// TestObjdumpEveryInstructionLibc decodes, at every address where objdump
// prints an instruction in libc's executable sections (local functions and
// padding included), and requires the same length as the distance to
// objdump's next instruction. objdump's "(bad)" bytes must be errors or
// rejected; nothing objdump decodes may be undecodable, except encodings
// this package refuses by design (XOP, APX, 3DNow!).
func TestObjdumpEveryInstructionLibc(t *testing.T) {
	st, report := compareEveryInstruction(t, libcPath)
	t.Logf("libc: %d instructions checked, %d (bad) skipped, %d mismatches, %d on rejected instructions, %d undecoded",
		st.checked, st.bad, st.mismatches, st.rejectedMismatches, st.undecoded)
	require.Greater(t, st.checked, 300000, "too few instructions checked: the walk is broken")
	require.Zero(t, st.mismatches+st.undecoded, "disagreements with objdump:\n%s", strings.Join(report, "\n"))
}

type objdumpStats struct {
	checked, bad, mismatches, rejectedMismatches, undecoded int
}

// compareEveryInstruction decodes at every instruction objdump prints in
// file and compares lengths.
func compareEveryInstruction(t *testing.T, file string) (st objdumpStats, report []string) {
	starts := objdumpStarts(t, file)
	f, err := elf.Open(file)
	require.NoError(t, err)
	defer f.Close()
	addrs := make([]uint64, 0, len(starts))
	for a := range starts {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	for _, sec := range f.Sections {
		if sec.Flags&elf.SHF_EXECINSTR == 0 || sec.Type != elf.SHT_PROGBITS {
			continue
		}
		d, err := sec.Data()
		require.NoError(t, err)
		lo := sort.Search(len(addrs), func(i int) bool { return addrs[i] >= sec.Addr })
		for i := lo; i+1 < len(addrs) && addrs[i+1] < sec.Addr+sec.Size; i++ {
			pc, next := addrs[i], addrs[i+1]
			if next-pc > MaxLen {
				continue // a gap objdump skipped (zero padding shown as "...")
			}
			off := pc - sec.Addr
			in, err := Decode(d[off:min(off+MaxLen, uint64(len(d)))], pc)
			text := starts[pc]
			if strings.HasPrefix(text, "(bad)") {
				st.bad++
				continue
			}
			st.checked++
			if err != nil {
				st.undecoded++
				if len(report) < 20 && os.Getenv("DECODE_SHOW_UNDECODED") != "" {
					report = append(report, fmt.Sprintf("%#x: objdump %q: %v", pc, text, err))
				}
				continue
			}
			if in.Next() != next {
				if in.Verdict == Refused {
					st.rejectedMismatches++
					continue
				}
				st.mismatches++
				if len(report) < 20 {
					report = append(report, fmt.Sprintf("%#x: objdump %q (%d bytes), Decode %s (%d bytes) [% x]", pc, text, next-pc, in, in.Len, in.Code()))
				}
			}
		}
	}
	return st, report
}

// TestObjdumpTableCases lays every table case that decodes (and is not
// rejected) into one raw blob, each followed by 16 one-byte NOPs so that
// objdump resynchronises, and requires objdump to find the same length.
func TestObjdumpTableCases(t *testing.T) {
	path, err := exec.LookPath("objdump")
	require.NoError(t, err, "objdump (binutils) is required for this test; install binutils")
	type placed struct {
		off int
		in  *Insn
	}
	var blob []byte
	var cases []placed
	for _, code := range allCases() {
		in, err := Decode(hx(t, code), 0)
		if err != nil || in.Verdict == Refused {
			continue
		}
		if in.Code()[0] >= 0x40 && in.Code()[0] <= 0x4f && in.Len > 1 && isLegacyPrefix(in.Code()[1]) {
			continue // objdump prints an ignored REX as an instruction of its own
		}
		cases = append(cases, placed{len(blob), in})
		blob = append(blob, in.Code()...)
		blob = append(blob, bytes.Repeat([]byte{0x90}, 16)...)
	}
	require.Greater(t, len(cases), 150)
	file := t.TempDir() + "/cases.bin"
	require.NoError(t, os.WriteFile(file, blob, 0o644))
	out, err := exec.Command(path, "-D", "-b", "binary", "-m", "i386:x86-64", "-w", "--no-show-raw-insn", file).Output()
	require.NoError(t, err)
	starts := map[uint64]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		colon := strings.IndexByte(line, ':')
		if colon <= 0 || colon+1 >= len(line) || line[colon+1] != '\t' {
			continue
		}
		if a, err := strconv.ParseUint(strings.TrimSpace(line[:colon]), 16, 64); err == nil {
			starts[a] = strings.TrimSpace(line[colon+2:])
		}
	}
	for _, c := range cases {
		text, ok := starts[uint64(c.off)]
		assert.True(t, ok, "objdump does not start an instruction at % x", c.in.Code())
		assert.True(t, has(starts, uint64(c.off+c.in.Len)), "% x: Decode %d bytes, objdump %q", c.in.Code(), c.in.Len, text)
	}
}
