package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// The register file gdb sees is the one of gdb's own amd64 Linux target
// description (features core, sse, linux, segments), in its order: gdb
// requires the x87 registers in the core feature, and its Linux ABI needs
// orig_rax. The x87 and SSE registers are sent as unavailable ("xx"): the
// library gives the general registers only.

// gdbGPR maps gdb's register numbers 0..15 to regs' indices.
var gdbGPR = [16]int{
	regs.RAX, regs.RBX, regs.RCX, regs.RDX, regs.RSI, regs.RDI, regs.RBP, regs.RSP,
	regs.R8, regs.R9, regs.R10, regs.R11, regs.R12, regs.R13, regs.R14, regs.R15,
}

// Register numbers past the GPRs, as the target description numbers them.
const (
	regRIP     = 16
	regEFLAGS  = 17
	regCS      = 18 // then ss ds es fs gs
	regST0     = 24 // st0..st7, then fctrl fstat ftag fiseg fioff foseg fooff fop
	regXMM0    = 40 // xmm0..xmm15, then mxcsr
	regMXCSR   = 56
	regOrigRAX = 57
	regFSBase  = 58
	regGSBase  = 59
	numRegs    = 60
)

// regSize returns register n's size in bytes.
func regSize(n int) int {
	switch {
	case n < regEFLAGS, n == regOrigRAX, n == regFSBase, n == regGSBase:
		return 8
	case n < regST0:
		return 4 // eflags and the segment selectors
	case n < regST0+8:
		return 10
	case n < regXMM0:
		return 4
	case n < regMXCSR:
		return 16
	}
	return 4
}

// regValue returns register n of r, and false for one not available.
func regValue(r *regs.Regs, n int) (uint64, bool) {
	if n < 16 {
		return r.GPR[gdbGPR[n]], true
	}
	switch n {
	case regRIP:
		return r.RIP, true
	case regEFLAGS:
		return r.RFLAGS, true
	case regCS, regCS + 1, regCS + 2, regCS + 3, regCS + 4, regCS + 5:
		return *segment(r, n), true
	case regOrigRAX:
		return r.OrigRAX, true
	case regFSBase:
		return r.FSBase, true
	case regGSBase:
		return r.GSBase, true
	}
	return 0, false
}

func segment(r *regs.Regs, n int) *uint64 {
	return [...]*uint64{&r.CS, &r.SS, &r.DS, &r.ES, &r.FS, &r.GS}[n-regCS]
}

// setReg sets register n of r; false for one that cannot be written.
func setReg(r *regs.Regs, n int, v uint64) bool {
	switch {
	case n < 16:
		r.GPR[gdbGPR[n]] = v
	case n == regRIP:
		r.RIP = v
	case n == regEFLAGS:
		r.RFLAGS = v
	case n >= regCS && n < regST0:
		*segment(r, n) = v
	case n == regOrigRAX:
		r.OrigRAX = v
	case n == regFSBase:
		r.FSBase = v
	case n == regGSBase:
		r.GSBase = v
	default:
		return false
	}
	return true
}

// encodeReg appends register n in the protocol's form: target-order
// (little-endian) hex, or x's when unavailable.
func encodeReg(b *strings.Builder, r *regs.Regs, n int) {
	size := regSize(n)
	v, ok := regValue(r, n)
	if !ok {
		b.WriteString(strings.Repeat("xx", size))
		return
	}
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], v)
	b.WriteString(hex.EncodeToString(buf[:size]))
}

// encodeRegs is the g packet's reply.
func encodeRegs(r *regs.Regs) string {
	var b strings.Builder
	for n := 0; n < numRegs; n++ {
		encodeReg(&b, r, n)
	}
	return b.String()
}

// decodeRegs applies a G packet to r; unavailable registers are skipped.
func decodeRegs(r *regs.Regs, data string) error {
	off := 0
	for n := 0; n < numRegs && off < len(data); n++ {
		size := regSize(n) * 2
		if off+size > len(data) {
			return fmt.Errorf("G packet too short at register %d", n)
		}
		field := data[off : off+size]
		off += size
		if strings.Contains(field, "x") {
			continue
		}
		if n >= regST0 && n < regOrigRAX {
			continue // not writable through this API; gdb writes what it read
		}
		v, err := leHex(field)
		if err != nil {
			return err
		}
		setReg(r, n, v)
	}
	return nil
}

// leHex decodes little-endian hex of up to 8 bytes.
func leHex(s string) (uint64, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) > 8 {
		return 0, fmt.Errorf("bad register value %q", s)
	}
	var buf [8]byte
	copy(buf[:], b)
	return binary.LittleEndian.Uint64(buf[:]), nil
}

// targetXML is the target description, gdb's own amd64 Linux layout.
var targetXML = func() string {
	var b strings.Builder
	reg := func(name string, bits int, typ, group string, regnum int) {
		fmt.Fprintf(&b, `<reg name="%s" bitsize="%d" type="%s" regnum="%d"`, name, bits, typ, regnum)
		if group != "" {
			fmt.Fprintf(&b, ` group="%s"`, group)
		}
		b.WriteString("/>\n")
	}
	b.WriteString(`<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target>
<architecture>i386:x86-64</architecture>
<osabi>GNU/Linux</osabi>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>
`)
	names := []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
		"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}
	for i, n := range names {
		typ := "int64"
		if n == "rbp" || n == "rsp" {
			typ = "data_ptr"
		}
		reg(n, 64, typ, "", i)
	}
	reg("rip", 64, "code_ptr", "", regRIP)
	reg("eflags", 32, "i386_eflags", "", regEFLAGS)
	for i, n := range []string{"cs", "ss", "ds", "es", "fs", "gs"} {
		reg(n, 32, "int32", "", regCS+i)
	}
	for i := 0; i < 8; i++ {
		reg(fmt.Sprintf("st%d", i), 80, "i387_ext", "", regST0+i)
	}
	for i, n := range []string{"fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop"} {
		reg(n, 32, "int", "float", regST0+8+i)
	}
	b.WriteString(`</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v8bf16" type="bfloat16" count="8"/>
<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/>
<vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/>
<vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v8_bfloat16" type="v8bf16"/><field name="v4_float" type="v4f"/>
<field name="v2_double" type="v2d"/><field name="v16_int8" type="v16i8"/>
<field name="v8_int16" type="v8i16"/><field name="v4_int32" type="v4i32"/>
<field name="v2_int64" type="v2i64"/><field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
`)
	for i := 0; i < 16; i++ {
		reg(fmt.Sprintf("xmm%d", i), 128, "vec128", "", regXMM0+i)
	}
	reg("mxcsr", 32, "i386_mxcsr", "vector", regMXCSR)
	b.WriteString("</feature>\n<feature name=\"org.gnu.gdb.i386.linux\">\n")
	reg("orig_rax", 64, "int", "system", regOrigRAX)
	b.WriteString("</feature>\n<feature name=\"org.gnu.gdb.i386.segments\">\n")
	reg("fs_base", 64, "int", "", regFSBase)
	reg("gs_base", 64, "int", "", regGSBase)
	b.WriteString("</feature>\n</target>\n")
	return b.String()
}()

// Linux signal numbers to gdb's (include/gdb/signals.def), which follow
// an older numbering above 15.
var gdbSignals = map[unix.Signal]int{
	unix.SIGHUP: 1, unix.SIGINT: 2, unix.SIGQUIT: 3, unix.SIGILL: 4, unix.SIGTRAP: 5,
	unix.SIGABRT: 6, unix.SIGFPE: 8, unix.SIGKILL: 9, unix.SIGBUS: 10, unix.SIGSEGV: 11,
	unix.SIGSYS: 12, unix.SIGPIPE: 13, unix.SIGALRM: 14, unix.SIGTERM: 15, unix.SIGURG: 16,
	unix.SIGSTOP: 17, unix.SIGTSTP: 18, unix.SIGCONT: 19, unix.SIGCHLD: 20, unix.SIGTTIN: 21,
	unix.SIGTTOU: 22, unix.SIGIO: 23, unix.SIGXCPU: 24, unix.SIGXFSZ: 25, unix.SIGVTALRM: 26,
	unix.SIGPROF: 27, unix.SIGWINCH: 28, unix.SIGUSR1: 30, unix.SIGUSR2: 31, unix.SIGPWR: 32,
	unix.SIGSTKFLT: 0x5e,
}

// toGDB returns gdb's number for a Linux signal.
func toGDB(s unix.Signal) int {
	if n, ok := gdbSignals[s]; ok {
		return n
	}
	switch {
	case s >= 33 && s <= 63:
		return 45 + int(s) - 33 // GDB_SIGNAL_REALTIME_33 onwards
	case s == 32:
		return 77
	case s == 64:
		return 78
	}
	return 143 // GDB_SIGNAL_UNKNOWN
}

// fromGDB returns the Linux signal for gdb's number, 0 for none known.
func fromGDB(n int) unix.Signal {
	for s, g := range gdbSignals {
		if g == n {
			return s
		}
	}
	switch {
	case n >= 45 && n <= 75:
		return unix.Signal(n - 45 + 33)
	case n == 77:
		return 32
	case n == 78:
		return 64
	}
	return 0
}

// auxv returns the process's auxiliary vector, raw, as qXfer:auxv:read
// sends it.
func auxv(pid int) ([]byte, error) { return os.ReadFile(fmt.Sprintf("/proc/%d/auxv", pid)) }

// auxvEntry returns the value of auxiliary vector entry tag, 0 if absent.
func auxvEntry(raw []byte, tag uint64) uint64 {
	for i := 0; i+16 <= len(raw); i += 16 {
		if binary.LittleEndian.Uint64(raw[i:]) == tag {
			return binary.LittleEndian.Uint64(raw[i+8:])
		}
	}
	return 0
}

// Auxiliary vector tags, ELF program header types and dynamic tags used
// to find the dynamic loader's link map.
const (
	atPHDR   = 3
	atPHNUM  = 5
	atBASE   = 7
	atENTRY  = 9
	ptDYN    = 2
	ptPHDR   = 6
	dtNULL   = 0
	dtDEBUG  = 21
	phdrSize = 56
)

func word(m memio.Memory, addr uint64) (uint64, error) {
	var b [8]byte
	if _, err := m.ReadAt(b[:], int64(addr)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// rDebug finds the loader's struct r_debug through the executable's
// DT_DEBUG entry in memory: 0 until the loader has filled it in.
func rDebug(raw []byte, m memio.Memory) (uint64, error) {
	phdr, phnum := auxvEntry(raw, atPHDR), auxvEntry(raw, atPHNUM)
	if phdr == 0 || phnum == 0 || phnum > 256 {
		return 0, fmt.Errorf("no program headers in auxv")
	}
	buf := make([]byte, phnum*phdrSize)
	if _, err := m.ReadAt(buf, int64(phdr)); err != nil {
		return 0, err
	}
	var bias, dyn uint64
	for i := uint64(0); i < phnum; i++ {
		h := buf[i*phdrSize:]
		vaddr := binary.LittleEndian.Uint64(h[16:])
		switch binary.LittleEndian.Uint32(h) {
		case ptPHDR:
			bias = phdr - vaddr
		case ptDYN:
			dyn = vaddr
		}
	}
	if dyn == 0 {
		return 0, nil // static: no loader, no libraries
	}
	for a := dyn + bias; ; a += 16 {
		tag, err := word(m, a)
		if err != nil || tag == dtNULL {
			return 0, err
		}
		if tag == dtDEBUG {
			return word(m, a+8)
		}
	}
}

// librariesSVR4 is the qXfer:libraries-svr4:read document: the loader's
// link map, so that gdb loads the libraries' symbols without reading the
// target's memory itself.
func librariesSVR4(pid int, m memio.Memory) (string, error) {
	raw, err := auxv(pid)
	if err != nil {
		return "", err
	}
	rd, err := rDebug(raw, m)
	if err != nil || rd == 0 {
		return `<library-list-svr4 version="1.0"/>`, err
	}
	lm, err := word(m, rd+8) // r_map, after the int r_version and padding
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<library-list-svr4 version="1.0" main-lm="0x%x">`, lm)
	// The first entry is the executable itself; gdb knows it already.
	for n, first := 0, true; lm != 0 && n < 4096; n++ {
		var f [5]uint64 // l_addr l_name l_ld l_next l_prev
		for i := range f {
			if f[i], err = word(m, lm+uint64(8*i)); err != nil {
				return "", err
			}
		}
		if !first {
			name := cString(m, f[1])
			fmt.Fprintf(&b, `<library name="%s" lm="0x%x" l_addr="0x%x" l_ld="0x%x" lmid="0x0"/>`,
				xmlEscape(name), lm, f[0], f[2])
		}
		first = false
		lm = f[3]
	}
	b.WriteString("</library-list-svr4>")
	return b.String(), nil
}

func cString(m memio.Memory, addr uint64) string {
	buf := make([]byte, 256)
	var out []byte
	for len(out) < 4096 {
		n, _ := m.ReadAt(buf, int64(addr)+int64(len(out)))
		if n == 0 {
			break
		}
		if i := strings.IndexByte(string(buf[:n]), 0); i >= 0 {
			return string(append(out, buf[:i]...))
		}
		out = append(out, buf[:n]...)
	}
	return string(out)
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// firstInsn returns where a process stopped before its first
// instruction will start: the dynamic loader's entry, or the executable's
// for a static one.
func firstInsn(pid int, m memio.Memory) (uint64, error) {
	raw, err := auxv(pid)
	if err != nil {
		return 0, err
	}
	base := auxvEntry(raw, atBASE)
	if base == 0 {
		return auxvEntry(raw, atENTRY), nil
	}
	entry, err := word(m, base+24) // e_entry of the loader's ELF header
	return base + entry, err
}
