package fuzz

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/onetrap/onetrap/regs"
)

// A reproducer is text that names a case completely:
//
//	form: add r/m, r
//	code: 48 01 18
//	regs: rip=0x50000ffd rflags=0x202 rax=0x50001040 ... fs_base=0x1 gs_base=0x2
//	mem: 0x50001038 <hex bytes>
//
// The data window holds Background except where mem lines say otherwise.
// Other lines (insn:, why:, cpu:, emu:) explain and are ignored when read
// back; blank lines separate cases and # starts a comment. The regression
// file (testdata/regressions.txt) is a list of them.

// Case is a replayable instruction and starting state.
type Case struct {
	Name  string // the form, or a description
	Code  []byte
	Start State
	Line  int // where the case starts in its file
}

// String formats m as a reproducer followed by what each side did.
func (m *Mismatch) String() string {
	var b strings.Builder
	writeCase(&b, m.Form, m.Code, &m.Start)
	fmt.Fprintf(&b, "insn: %s\n", m.Text)
	for _, w := range m.Why {
		fmt.Fprintf(&b, "why: %s\n", w)
	}
	if m.Start.Regs.RIP == 0 {
		return b.String() // a length disagreement: no state was run
	}
	if m.CPU.Faulted() {
		fmt.Fprintf(&b, "cpu: %s code=%d addr=%#x\n", sigName(&m.CPU), m.CPU.Code, m.CPU.Addr)
	} else {
		fmt.Fprintf(&b, "cpu: completed\n")
	}
	fmt.Fprintf(&b, "cpu regs: %s\n", m.CPU.Regs.String())
	fmt.Fprintf(&b, "emu: err=%v\n", m.EmuErr)
	fmt.Fprintf(&b, "emu regs: %s\n", m.Emu.String())
	return b.String()
}

func writeCase(b *strings.Builder, name string, code []byte, st *State) {
	fmt.Fprintf(b, "form: %s\n", name)
	fmt.Fprintf(b, "code: % x\n", code)
	if st.Regs.RIP == 0 {
		return
	}
	fmt.Fprintf(b, "regs: %s\n", st.Regs.String())
	for i := 0; i < WindowSize; {
		if st.Mem[i] == background[i] {
			i++
			continue
		}
		j := i
		for j < WindowSize && j-i < 64 && (st.Mem[j] != background[j] || j+1 < WindowSize && st.Mem[j+1] != background[j+1]) {
			j++
		}
		fmt.Fprintf(b, "mem: %#x %x\n", WindowAddr+uint64(i), st.Mem[i:j])
		i = j
	}
}

// FormatCase formats c as a reproducer.
func FormatCase(c *Case) string {
	var b strings.Builder
	writeCase(&b, c.Name, c.Code, &c.Start)
	return b.String()
}

// ParseCases reads reproducers.
func ParseCases(r io.Reader) ([]Case, error) {
	var (
		out []Case
		cur *Case
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			cur = nil
			continue
		}
		key, val, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: no key in %q", line, l)
		}
		val = strings.TrimSpace(val)
		if cur == nil {
			out = append(out, Case{Line: line})
			cur = &out[len(out)-1]
			cur.Start.Mem = background
		}
		var err error
		switch key {
		case "form":
			cur.Name = val
		case "code":
			cur.Code, err = hex.DecodeString(strings.ReplaceAll(val, " ", ""))
		case "regs":
			err = parseRegs(val, &cur.Start.Regs)
		case "mem":
			err = parseMem(val, &cur.Start)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %v", line, key, err)
		}
	}
	return out, sc.Err()
}

func parseRegs(s string, r *regs.Regs) error {
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("bad field %q", f)
		}
		n, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			return err
		}
		switch k {
		case "rip":
			r.RIP = n
		case "rflags":
			r.RFLAGS = n
		case "fs_base":
			r.FSBase = n
		case "gs_base":
			r.GSBase = n
		default:
			i := -1
			for j, name := range gprNames {
				if name == k {
					i = j
				}
			}
			if i < 0 {
				return fmt.Errorf("unknown register %q", k)
			}
			r.GPR[i] = n
		}
	}
	return nil
}

func parseMem(s string, st *State) error {
	a, h, ok := strings.Cut(s, " ")
	if !ok {
		return fmt.Errorf("want ADDR HEX, got %q", s)
	}
	addr, err := strconv.ParseUint(a, 0, 64)
	if err != nil {
		return err
	}
	b, err := hex.DecodeString(strings.TrimSpace(h))
	if err != nil {
		return err
	}
	if addr < WindowAddr || addr+uint64(len(b)) > WindowAddr+WindowSize {
		return fmt.Errorf("%#x+%d is outside the window", addr, len(b))
	}
	copy(st.Mem[addr-WindowAddr:], b)
	return nil
}
