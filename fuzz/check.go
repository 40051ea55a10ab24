package fuzz

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
	"golang.org/x/arch/x86/x86asm"
	"golang.org/x/sys/unix"
)

// Mismatch is a case on which the emulator and the CPU disagree, with
// everything needed to replay it.
type Mismatch struct {
	Form  string // the template, when the case came from one
	Code  []byte
	Text  string // the decoder's reading of Code
	Start State
	CPU   Outcome
	Emu   regs.Regs
	// EmuMem is the emulator's read-write pages afterwards.
	EmuMem [rwSize]byte
	EmuErr error
	Why    []string
}

// Checker runs cases on the CPU (through an Oracle) and through emu.Step and
// compares them.
type Checker struct {
	O   *Oracle
	mem *memio.Pages
	// proc, when set, is the sandbox's own memory through memio.Process:
	// emu.Step then works on the real pages, as it does on a probe hit.
	proc   *memio.Process
	window [WindowSize]byte
	out    Outcome
	buf    [rwSize]byte
	r      regs.Regs
	// foreign are the sandbox's mappings that are not the package's pages.
	foreign [][2]uint64

	// FaultAddrDiffs counts cases where both sides faulted but the CPU's
	// fault address (si_addr) differs from the *memio.Fault's Addr;
	// FaultAddrExamples describes the first of each kind (which pages the
	// two addresses lie in).
	FaultAddrDiffs    int
	FaultAddrExamples map[string]string
}

// pageName names the sandbox page holding a.
func pageName(a uint64) string {
	switch {
	case a >= CodePage && a < DataAddr:
		return "code"
	case a >= DataAddr && a < ROAddr:
		return "rw"
	case a >= ROAddr && a < HoleAddr:
		return "ro"
	case a >= HoleAddr && a < HoleAddr+PageSize:
		return "hole"
	}
	return "elsewhere"
}

// faultKind classifies a fault-address disagreement.
func faultKind(cpu uint64, f *memio.Fault) string {
	return fmt.Sprintf("cpu %s, emu %s %s in %s", pageName(cpu), f.Access, f.Err, pageName(f.Addr))
}

// ErrForeign is returned by Check for a case that would touch the sandbox's
// own mappings (its image, stack, vDSO), which the emulator's memory does
// not model: such a case cannot be compared.
var ErrForeign = errors.New("fuzz: the case touches memory outside the sandbox's pages")

// touchesForeign reports whether in, from registers r, names memory in one
// of the sandbox's mappings other than the pages this package maps.
func (c *Checker) touchesForeign(in *decode.Insn, r *regs.Regs) bool {
	hit := func(a, n uint64) bool {
		for _, m := range c.foreign {
			if a < m[1] && a+n > m[0] {
				return true
			}
		}
		return false
	}
	sp := r.GPR[regs.RSP]
	switch in.Op {
	case x86asm.PUSH, x86asm.CALL:
		if hit(sp-8, 8) {
			return true
		}
	case x86asm.POP, x86asm.RET:
		if hit(sp, 8) {
			return true
		}
	case x86asm.LEAVE:
		if hit(r.GPR[regs.RBP], 8) {
			return true
		}
	}
	for i := range in.Args {
		a := &in.Args[i]
		if a.Kind == decode.ArgNone {
			break
		}
		if a.Kind == decode.ArgMem && hit(effAddr(&a.Mem, r), uint64(max(a.Size, 8))) {
			return true
		}
	}
	return false
}

// effAddr computes the address memory operand m names from registers r.
func effAddr(m *decode.Mem, r *regs.Regs) uint64 {
	a := uint64(m.Disp)
	if m.Base != 0 {
		a += r.Get(m.Base)
	}
	if m.Index != 0 {
		a += r.Get(m.Index) * uint64(m.Scale)
	}
	if m.AddrSize == 4 {
		a &= 0xffffffff
	}
	switch m.Seg {
	case x86asm.FS:
		a += r.FSBase
	case x86asm.GS:
		a += r.GSBase
	}
	return a
}

// foreignMappings parses /proc/PID/maps text into the ranges outside this
// package's pages.
func foreignMappings(maps string) [][2]uint64 {
	var out [][2]uint64
	for _, l := range strings.Split(maps, "\n") {
		var lo, hi uint64
		if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err != nil {
			continue
		}
		if lo >= CodePage && hi <= HoleAddr {
			continue
		}
		// Pages just below and above, with a margin for straddling accesses.
		out = append(out, [2]uint64{lo - min(lo, 16), hi + 16})
	}
	return out
}

// NewChecker returns a Checker over o.
func NewChecker(o *Oracle) (*Checker, error) {
	m := memio.NewPages()
	if err := m.Map(CodePage, PageSize, memio.ProtRead); err != nil {
		return nil, err
	}
	if err := m.Map(DataAddr, rwSize, memio.ProtRW); err != nil {
		return nil, err
	}
	if err := m.Map(ROAddr, PageSize, memio.ProtRead); err != nil {
		return nil, err
	}
	return &Checker{O: o, mem: m, foreign: foreignMappings(o.Maps())}, nil
}

// NewProcessChecker returns a Checker whose emulator works on the sandbox's
// own memory through memio.Process (process_vm_readv/writev), as on a probe
// hit, instead of on in-memory pages: it tests memio.Process too, its page
// protections and the atomicity of its accesses. Close it when done.
func NewProcessChecker(o *Oracle) (*Checker, error) {
	c, err := NewChecker(o)
	if err != nil {
		return nil, err
	}
	if c.proc, err = memio.OpenProcess(o.Pid()); err != nil {
		return nil, err
	}
	return c, nil
}

// Close releases what the Checker holds (the Process of a process checker).
func (c *Checker) Close() error {
	if c.proc != nil {
		return c.proc.Close()
	}
	return nil
}

// Check runs in (decoded from its bytes at st.Regs.RIP, Kind Emulate) from st
// on the CPU and through emu.Step, and returns the disagreement, or nil. The
// error is the oracle's own failure.
func (c *Checker) Check(in *decode.Insn, st *State) (*Mismatch, error) {
	if f := st.Regs.RFLAGS; f&0x202 != 0x202 || f&^(statusFlags|regs.DF|0x202) != 0 {
		return nil, fmt.Errorf("fuzz: rflags %#x: a user thread always has IF and bit 1 set, and a case may set only the status flags and DF besides", f)
	}
	if c.touchesForeign(in, &st.Regs) {
		return nil, ErrForeign
	}
	code := in.Code()
	out := &c.out
	var emuErr error
	if c.proc != nil {
		// The emulator first, on the sandbox's pages; then the CPU from
		// the same start.
		if err := c.O.Poke(code, st.Regs.RIP, &st.Mem); err != nil {
			return nil, err
		}
		c.r = st.Regs
		emuErr = safeStep(in, &c.r, c.proc)
		if err := c.O.Peek(&c.window); err != nil {
			return nil, err
		}
		copy(c.buf[:], c.window[:rwSize])
		if !bytes.Equal(c.window[rwSize:], st.Mem[rwSize:]) {
			return &Mismatch{Code: append([]byte(nil), code...), Text: insnText(in), Start: *st, EmuErr: emuErr,
				Emu: c.r, EmuMem: c.buf, Why: []string{"emu.Step changed the read-only page through memio.Process"}}, nil
		}
	}
	if err := c.O.Run(code, st, out); err != nil {
		return nil, err
	}
	if c.proc == nil {
		// The emulator sees the same memory: the window and the code page.
		if err := c.mem.Poke(WindowAddr, st.Mem[:]); err != nil {
			return nil, err
		}
		if err := c.mem.Poke(CodePage, c.O.code[:]); err != nil {
			return nil, err
		}
		c.r = st.Regs
		emuErr = safeStep(in, &c.r, c.mem)
		if err := c.mem.Peek(DataAddr, c.buf[:]); err != nil {
			return nil, err
		}
	}
	why := c.compare(in, st, out, emuErr)
	if len(why) == 0 {
		return nil, nil
	}
	m := &Mismatch{Code: append([]byte(nil), code...), Text: insnText(in), Start: *st, CPU: *out,
		Emu: c.r, EmuMem: c.buf, EmuErr: emuErr, Why: why}
	return m, nil
}

func insnText(in *decode.Insn) string {
	if in.Inst.Op == 0 {
		return in.Op.String()
	}
	return in.Inst.String()
}

// safeStep is emu.Step with any panic turned into an error: a panic is a
// finding, not the end of the campaign.
func safeStep(in *decode.Insn, r *regs.Regs, m memio.Memory) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("emu.Step panicked: %v", p)
		}
	}()
	return emu.Step(in, r, m)
}

var gprNames = [16]string{"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// compare lists the differences between the CPU's outcome and the emulator's.
func (c *Checker) compare(in *decode.Insn, st *State, out *Outcome, emuErr error) []string {
	var why []string
	var fault *memio.Fault
	isFault := errors.As(emuErr, &fault)
	cpuFault := out.Signal == unix.SIGSEGV || out.Signal == unix.SIGBUS
	switch {
	case out.Syscall || out.Faulted() && !cpuFault:
		why = append(why, fmt.Sprintf("the CPU raised %v (code %d): the instruction should not be emulated", sigName(out), out.Code))
		if emuErr != nil {
			why = append(why, "emu: "+emuErr.Error())
		}
		return why
	case cpuFault && emuErr == nil:
		why = append(why, fmt.Sprintf("the CPU faulted (%s at %#x) but emu.Step succeeded", sigName(out), out.Addr))
	case cpuFault && !isFault:
		why = append(why, fmt.Sprintf("the CPU faulted (%s at %#x) but emu.Step returned %v, not a *memio.Fault", sigName(out), out.Addr, emuErr))
	case !cpuFault && emuErr != nil:
		why = append(why, fmt.Sprintf("the CPU ran the instruction but emu.Step returned: %v", emuErr))
	case (out.Code == segvMapErr || out.Code == segvAccErr) && fault.Addr != out.Addr:
		// Both faulted; only the address they name differs. The caller
		// lets the CPU run the instruction after a fault, so the tracee
		// sees the CPU's address: counted, not a mismatch.
		c.FaultAddrDiffs++
		kind := faultKind(out.Addr, fault)
		if c.FaultAddrExamples == nil {
			c.FaultAddrExamples = map[string]string{}
		}
		if _, ok := c.FaultAddrExamples[kind]; !ok {
			c.FaultAddrExamples[kind] = fmt.Sprintf("% x (%s) from %s: cpu %s at %#x, emu %v",
				in.Code(), insnText(in), st.Regs.String(), sigName(out), out.Addr, fault)
		}
	}
	if emuErr != nil {
		// Atomic: on any error nothing changes.
		if c.r != st.Regs {
			why = append(why, "emu.Step failed but changed registers: "+regDiff(&st.Regs, &c.r, ^uint64(0)))
		}
		if !bytes.Equal(c.buf[:], st.Mem[:rwSize]) {
			why = append(why, "emu.Step failed but changed memory: "+memDiff(st.Mem[:rwSize], c.buf[:]))
		}
		return why
	}
	if cpuFault {
		return why
	}
	manual := statusFlags &^ UndefinedFlags(in, &st.Regs)
	if claimed := emu.DefinedFlags(in, &st.Regs) & statusFlags; claimed != manual {
		why = append(why, fmt.Sprintf("emu.DefinedFlags says %s, the manual %s", flagNames(claimed), flagNames(manual)))
	}
	// Every RFLAGS bit is compared but the status flags the manual leaves
	// undefined: DF, IF and the reserved bits must come through unchanged.
	fmask := ^uint64(0) &^ (statusFlags &^ manual)
	if d := regDiff(&out.Regs, &c.r, fmask); d != "" {
		why = append(why, "registers differ (cpu vs emu): "+d)
	}
	if !bytes.Equal(c.buf[:], out.Mem[:rwSize]) {
		why = append(why, "memory differs (cpu vs emu): "+memDiff(out.Mem[:rwSize], c.buf[:]))
	}
	return why
}

func sigName(out *Outcome) string {
	if out.Syscall {
		return "a syscall"
	}
	return unix.SignalName(out.Signal)
}

// regDiff describes the registers that differ between a and b, comparing the
// RFLAGS bits in fmask only.
func regDiff(a, b *regs.Regs, fmask uint64) string {
	var d []string
	for i := range a.GPR {
		if a.GPR[i] != b.GPR[i] {
			d = append(d, fmt.Sprintf("%s %#x vs %#x", gprNames[i], a.GPR[i], b.GPR[i]))
		}
	}
	if a.RIP != b.RIP {
		d = append(d, fmt.Sprintf("rip %#x vs %#x", a.RIP, b.RIP))
	}
	if x := (a.RFLAGS ^ b.RFLAGS) & fmask; x != 0 {
		d = append(d, fmt.Sprintf("rflags %#x vs %#x (differing %s)", a.RFLAGS&fmask, b.RFLAGS&fmask, flagNames(x)))
	}
	if a.FSBase != b.FSBase {
		d = append(d, fmt.Sprintf("fs_base %#x vs %#x", a.FSBase, b.FSBase))
	}
	if a.GSBase != b.GSBase {
		d = append(d, fmt.Sprintf("gs_base %#x vs %#x", a.GSBase, b.GSBase))
	}
	return strings.Join(d, ", ")
}

func flagNames(x uint64) string {
	var n []string
	for _, f := range []struct {
		b    uint64
		name string
	}{{regs.CF, "CF"}, {regs.PF, "PF"}, {regs.AF, "AF"}, {regs.ZF, "ZF"}, {regs.SF, "SF"}, {regs.DF, "DF"}, {regs.OF, "OF"}} {
		if x&f.b != 0 {
			n = append(n, f.name)
			x &^= f.b
		}
	}
	if x != 0 {
		n = append(n, fmt.Sprintf("%#x", x))
	}
	return strings.Join(n, "|")
}

// memDiff describes the byte runs (addresses in the window) where a and b differ.
func memDiff(a, b []byte) string {
	var d []string
	for i := 0; i < len(a); {
		if a[i] == b[i] {
			i++
			continue
		}
		j := i
		for j < len(a) && j-i < 16 && a[j] != b[j] {
			j++
		}
		d = append(d, fmt.Sprintf("%#x: % x vs % x", WindowAddr+uint64(i), a[i:j], b[i:j]))
		i = j
		if len(d) == 8 {
			d = append(d, "...")
			break
		}
	}
	return strings.Join(d, "; ")
}
