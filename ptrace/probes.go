package ptrace

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/onetrap/onetrap/decode"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64
	Perms      string // "r-xp"
	Path       string
}

// Maps returns the memory mappings of process pid.
func Maps(pid int) ([]Mapping, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return nil, fmt.Errorf("ptrace: %w", err)
	}
	defer f.Close()
	var ms []Mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		lo, hi, _ := strings.Cut(fs[0], "-")
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		m := Mapping{Start: a, End: b, Perms: fs[1]}
		if len(fs) >= 6 {
			m.Path = strings.Join(fs[5:], " ")
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

func (p *Process) insert(addr uint64, strategy Strategy, h Handler) (*Probe, error) {
	if p.finished {
		return nil, fmt.Errorf("ptrace: process %d is no longer traced", p.pid)
	}
	if strategy > SingleStep {
		return nil, fmt.Errorf("ptrace: unknown strategy %v", strategy)
	}
	if s := p.sites[addr]; s != nil {
		if strategy != Auto && strategy != s.strategy {
			return nil, fmt.Errorf("ptrace: the probe at %#x runs as %v; a second one cannot run as %v", addr, s.strategy, strategy)
		}
		pr := &Probe{Addr: addr, Insn: s.insn, Strategy: s.strategy, handler: h, s: s}
		// A new slice: a hit being served may be ranging over the old one.
		s.probes = append(s.probes[:len(s.probes):len(s.probes)], pr)
		return pr, nil
	}
	ms, err := Maps(p.pid)
	if err != nil {
		return nil, err
	}
	var m *Mapping
	for i := range ms {
		if addr >= ms[i].Start && addr < ms[i].End {
			m = &ms[i]
		}
	}
	if m == nil {
		return nil, fmt.Errorf("ptrace: address %#x is not mapped in process %d", addr, p.pid)
	}
	if !strings.Contains(m.Perms, "x") {
		return nil, fmt.Errorf("ptrace: address %#x is in a %s mapping of process %d (%s), not executable", addr, m.Perms, p.pid, m.Path)
	}
	if p.xol != nil && addr >= p.xol.base && addr < p.xol.base+xolSize {
		return nil, fmt.Errorf("ptrace: address %#x is in the XOL area", addr)
	}
	n := uint64(decode.MaxLen)
	if m.End-addr < n {
		n = m.End - addr
	}
	buf := make([]byte, n)
	if _, err := p.mem.ForceReadAt(buf, int64(addr)); err != nil {
		return nil, fmt.Errorf("ptrace: reading the instruction at %#x: %w", addr, err)
	}
	if buf[0] == 0xcc {
		return nil, fmt.Errorf("ptrace: address %#x already holds an INT3 that is not a probe's", addr)
	}
	in, err := decode.Decode(buf, addr)
	if err != nil {
		return nil, fmt.Errorf("ptrace: cannot probe %#x: %w", addr, err)
	}
	if in.Kind == decode.Reject {
		return nil, fmt.Errorf("ptrace: cannot probe %#x (%v): %s", addr, in, in.Reason)
	}
	for _, o := range p.sites {
		if (addr > o.addr && addr < o.insn.Next()) || (o.addr > addr && o.addr < in.Next()) {
			return nil, fmt.Errorf("ptrace: the instruction at %#x overlaps the probe at %#x", addr, o.addr)
		}
	}
	switch strategy {
	case Auto:
		strategy = OutOfLine
		if in.Kind == decode.Emulate {
			strategy = Emulate
		}
	case Emulate:
		if in.Kind != decode.Emulate {
			return nil, fmt.Errorf("ptrace: %v at %#x cannot be emulated: %s", in, addr, in.Reason)
		}
	}
	s := &site{addr: addr, orig: buf[0], insn: in, strategy: strategy, scratch: -1}
	if strategy == OutOfLine {
		if err := p.t.ensureXOL(p, addr); err != nil {
			return nil, err
		}
		if err := p.t.prepareSlot(p, s); err != nil {
			return nil, err
		}
	}
	if _, err := p.mem.ForceWriteAt([]byte{0xcc}, int64(addr)); err != nil {
		return nil, fmt.Errorf("ptrace: writing the INT3 at %#x: %w", addr, err)
	}
	pr := &Probe{Addr: addr, Insn: in, Strategy: strategy, handler: h, s: s}
	s.probes = []*Probe{pr}
	p.sites[addr] = s
	delete(p.removed, addr)
	return pr, nil
}

func (p *Process) remove(pr *Probe) error {
	if pr == nil {
		return errors.New("ptrace: Remove of a nil probe")
	}
	s := pr.s
	if p.finished || s == nil || p.sites[s.addr] != s {
		return fmt.Errorf("ptrace: the probe at %#x is not in place", pr.Addr)
	}
	kept := make([]*Probe, 0, len(s.probes))
	for _, o := range s.probes {
		if o != pr {
			kept = append(kept, o)
		}
	}
	s.probes = kept
	pr.s = nil
	if len(kept) > 0 {
		return nil
	}
	delete(p.sites, s.addr)
	p.removed[s.addr] = true
	if _, err := p.mem.ForceWriteAt([]byte{s.orig}, int64(s.addr)); err != nil {
		return fmt.Errorf("ptrace: restoring the byte at %#x: %w", s.addr, err)
	}
	return nil
}
