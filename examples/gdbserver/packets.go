package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// supported is the answer to qSupported. ConditionalBreakpoints makes
// gdb send conditions with Z0 when `set breakpoint condition-evaluation
// target`; swbreak, that stops at breakpoints come with the pc already on
// the breakpoint.
const supported = "PacketSize=20000;QStartNoAckMode+;qXfer:features:read+;qXfer:auxv:read+;" +
	"qXfer:libraries-svr4:read+;qXfer:exec-file:read+;QPassSignals+;QNonStop+;" +
	"ConditionalBreakpoints+;swbreak+;vContSupported+"

// handle answers one packet; true when the session is over.
func (s *server) handle(pkt string) bool {
	if pkt == "" {
		s.c.send("")
		return false
	}
	switch pkt[0] {
	case '?':
		s.c.send(s.status())
	case 'g':
		s.c.send(s.readRegs())
	case 'G':
		s.c.send(s.writeRegs(pkt[1:]))
	case 'p':
		s.c.send(s.readReg(pkt[1:]))
	case 'P':
		s.c.send(s.writeReg(pkt[1:]))
	case 'm':
		s.c.send(s.readMem(pkt[1:]))
	case 'M', 'X':
		s.c.send(s.writeMem(pkt))
	case 'Z', 'z':
		s.c.send(s.breakpoint(pkt))
	case 'H':
		s.c.send(s.setThread(pkt[1:]))
	case 'T':
		tid, err := parseTid(pkt[1:])
		if _, e := os.Stat(fmt.Sprintf("/proc/%d/task/%d", s.pid, tid)); err != nil || e != nil {
			s.c.send("E01")
		} else {
			s.c.send("OK")
		}
	case 'c', 'C', 's', 'S':
		s.legacyResume(pkt)
	case 'D':
		s.detach()
		s.c.send("OK")
		return true
	case 'k':
		s.kill()
		return true
	case 'v':
		return s.handleV(pkt)
	case 'q', 'Q':
		s.c.send(s.query(pkt))
		if pkt == "QStartNoAckMode" {
			// After this OK (which gdb still acknowledges) neither side acks.
			s.c.noAck = true
		}
	default:
		s.c.send("")
	}
	return false
}

// status answers '?': the last stop in all-stop mode; in non-stop mode
// every stopped thread, the first now and the rest through vStopped.
func (s *server) status() string {
	if s.exit != "" {
		return s.exit
	}
	if !s.nonStop {
		return s.reply(s.last)
	}
	s.notes = nil
	for _, tid := range s.threads() {
		if st, ok := s.stopped[tid]; ok {
			s.notes = append(s.notes, s.reply(st))
		}
	}
	if len(s.notes) == 0 {
		return "OK"
	}
	return s.notes[0]
}

func (s *server) readRegs() string {
	r, err := s.p.Regs(s.thread())
	if err != nil {
		return "E01"
	}
	return encodeRegs(&r)
}

func (s *server) writeRegs(data string) string {
	tid := s.thread()
	r, err := s.p.Regs(tid)
	if err != nil {
		return "E01"
	}
	if decodeRegs(&r, data) != nil || s.p.SetRegs(tid, &r) != nil {
		return "E01"
	}
	return "OK"
}

func (s *server) readReg(arg string) string {
	n, err := strconv.ParseUint(arg, 16, 16)
	if err != nil || n >= numRegs {
		return "E01"
	}
	r, err := s.p.Regs(s.thread())
	if err != nil {
		return "E01"
	}
	var b strings.Builder
	encodeReg(&b, &r, int(n))
	return b.String()
}

func (s *server) writeReg(arg string) string {
	ns, vs, _ := strings.Cut(arg, "=")
	n, err := strconv.ParseUint(ns, 16, 16)
	if err != nil || n >= numRegs {
		return "E01"
	}
	tid := s.thread()
	r, err := s.p.Regs(tid)
	if err != nil {
		return "E01"
	}
	v, err := leHex(vs)
	if err != nil || !setReg(&r, int(n), v) {
		return "E01"
	}
	if s.p.SetRegs(tid, &r) != nil {
		return "E01"
	}
	return "OK"
}

// addrLen parses "addr,length".
func addrLen(s string) (uint64, int, error) {
	a, l, _ := strings.Cut(s, ",")
	addr, err := strconv.ParseUint(a, 16, 64)
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.ParseUint(l, 16, 32)
	return addr, int(n), err
}

func (s *server) readMem(arg string) string {
	addr, n, err := addrLen(arg)
	if err != nil {
		return "E01"
	}
	if n > 0x8000 {
		n = 0x8000
	}
	buf := make([]byte, n)
	// ReadAt shows the program's own bytes under the breakpoints' INT3s,
	// as gdb expects of a target that inserts them itself.
	got, _ := s.p.ReadAt(buf, addr)
	if got == 0 && n > 0 {
		return "E14"
	}
	return hex.EncodeToString(buf[:got])
}

func (s *server) writeMem(pkt string) string {
	spec, data, ok := strings.Cut(pkt[1:], ":")
	if !ok {
		return "E01"
	}
	addr, n, err := addrLen(spec)
	if err != nil {
		return "E01"
	}
	var b []byte
	if pkt[0] == 'M' {
		if b, err = hexBytes(data); err != nil {
			return "E01"
		}
	} else {
		b = []byte(data)
	}
	if len(b) != n {
		return "E01"
	}
	if n == 0 {
		return "OK"
	}
	for a := range s.bps {
		if a >= addr && a < addr+uint64(n) {
			return "E01" // the library cannot patch under a probe
		}
	}
	if _, err := s.p.Memory().WriteAt(b, int64(addr)); err != nil {
		return "E14"
	}
	return "OK"
}

// breakpoint answers Z0/z0 (software breakpoints, with conditions:
// "Z0,addr,kind;X len,bytecode;X ..."); other kinds are not supported.
func (s *server) breakpoint(pkt string) string {
	if len(pkt) < 2 || pkt[1] != '0' {
		return ""
	}
	fields := strings.Split(pkt[3:], ";")
	addr, _, err := addrLen(fields[0])
	if err != nil {
		return "E01"
	}
	if pkt[0] == 'z' {
		s.remove(addr)
		return "OK"
	}
	var conds [][]byte
	for _, f := range fields[1:] {
		if !strings.HasPrefix(f, "X") {
			continue // cmds: (dprintf on the target) is not supported
		}
		_, code, ok := strings.Cut(f[1:], ",")
		b, err := hexBytes(code)
		if !ok || err != nil {
			return "E01"
		}
		conds = append(conds, b)
	}
	if err := s.insert(addr, conds); err != nil {
		fmt.Fprintf(s.log, "gdbserver: breakpoint at %#x: %v\n", addr, err)
		return "E01"
	}
	return "OK"
}

func (s *server) setThread(arg string) string {
	if arg == "" {
		return "E01"
	}
	tid, err := parseTid(arg[1:])
	if err != nil {
		return "E01"
	}
	if arg[0] == 'g' {
		s.gThread = max(tid, 0)
	}
	return "OK"
}

// legacyResume maps c, C, s and S onto vCont: all threads continue, or
// the current one steps.
func (s *server) legacyResume(pkt string) {
	a := action{kind: pkt[0] | 0x20, tid: -1}
	arg := pkt[1:]
	if pkt[0] == 'C' || pkt[0] == 'S' {
		sig, _, _ := strings.Cut(arg, ";")
		n, _ := strconv.ParseUint(sig, 16, 8)
		a.sig = fromGDB(int(n))
	}
	if a.kind == 's' {
		a.tid = s.current
	}
	s.resume([]action{a})
	if s.nonStop {
		s.c.send("OK")
	}
}

func (s *server) handleV(pkt string) bool {
	switch {
	case pkt == "vCont?":
		s.c.send("vCont;c;C;s;S;t")
	case strings.HasPrefix(pkt, "vCont;"):
		acts, err := parseVCont(pkt[len("vCont;"):])
		if err != nil {
			s.c.send("E01")
			break
		}
		if s.exit != "" {
			s.c.send(s.exit)
			break
		}
		s.resume(acts)
		if s.nonStop {
			s.c.send("OK")
		}
	case pkt == "vStopped":
		if len(s.notes) > 0 {
			s.notes = s.notes[1:]
		}
		if len(s.notes) > 0 {
			s.c.send(s.notes[0])
		} else {
			s.c.send("OK")
		}
	case strings.HasPrefix(pkt, "vKill"):
		s.kill()
		s.c.send("OK")
		return true
	default:
		s.c.send("")
	}
	return false
}

func (s *server) query(pkt string) string {
	name, args, _ := strings.Cut(pkt, ":")
	if cmd, ok := strings.CutPrefix(pkt, "qRcmd,"); ok {
		name, args = "qRcmd", cmd
	}
	switch name {
	case "qSupported":
		return supported
	case "QStartNoAckMode":
		return "OK"
	case "QNonStop":
		s.nonStop = args == "1"
		return "OK"
	case "QPassSignals":
		s.pass = map[unix.Signal]bool{}
		for _, h := range strings.Split(args, ";") {
			if n, err := strconv.ParseUint(h, 16, 8); err == nil {
				s.pass[fromGDB(int(n))] = true
			}
		}
		return "OK"
	case "qXfer":
		return s.xfer(args)
	case "qC":
		return fmt.Sprintf("QC%x", s.current)
	case "qfThreadInfo":
		var b strings.Builder
		b.WriteString("m")
		for i, tid := range s.threads() {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%x", tid)
		}
		if b.Len() == 1 {
			return "l"
		}
		return b.String()
	case "qsThreadInfo":
		return "l"
	case "qAttached":
		if s.attached {
			return "1"
		}
		return "0"
	case "qSymbol":
		return "OK"
	case "qRcmd":
		cmd, err := hexBytes(args)
		if err != nil {
			return "E01"
		}
		return s.monitor(strings.TrimSpace(string(cmd)))
	}
	return ""
}

// monitor runs a "monitor" command; its output goes to gdb's console.
func (s *server) monitor(cmd string) string {
	var out string
	switch cmd {
	case "hits":
		out = s.stats()
	default:
		out = "commands: hits (each breakpoint's hits, and the stops reported)\n"
	}
	s.c.send("O" + hex.EncodeToString([]byte(out)))
	return "OK"
}

// xfer answers qXfer:OBJECT:read:ANNEX:OFFSET,LENGTH.
func (s *server) xfer(args string) string {
	parts := strings.SplitN(args, ":", 4)
	if len(parts) != 4 || parts[1] != "read" {
		return ""
	}
	var data []byte
	switch parts[0] {
	case "features":
		if parts[2] != "target.xml" {
			return "E00"
		}
		data = []byte(targetXML)
	case "auxv":
		b, err := auxv(s.pid)
		if err != nil {
			return "E01"
		}
		data = b
	case "libraries-svr4":
		doc, err := librariesSVR4(s.pid, s.p.Memory())
		if err != nil {
			fmt.Fprintf(s.log, "gdbserver: libraries: %v\n", err)
		}
		data = []byte(doc)
	case "exec-file":
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.pid))
		if err != nil {
			return "E01"
		}
		data = []byte(exe)
	default:
		return ""
	}
	return xfer(data, parts[3])
}
