package ptrace

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/region"
	symtab "github.com/onetrap/onetrap/symbols"
)

// Trapless probes (Jump). The site's instruction, 5 bytes or more, or a
// proved region of several (see package region), is replaced by a jmp
// rel32 to a pad in an XOL area:
//
//	lea -128(%rsp),%rsp      C code only: the red zone is left alone
//	pushfq
//	lock incq counter(%rip)  a counter in a read-write mapping of its own
//	popfq
//	lea 128(%rsp),%rsp       C code only
//	<the instructions>       relocated: rip-relative by displacement, a
//	                         final jcc or jmp as rel32 to its target
//	jmp next                 the instruction after the replaced ones
//
// One instruction of 5 bytes or more has no instruction boundary inside
// it, so no branch, stopped thread or return address can point into the
// patched bytes: no flow analysis is needed. A region needs the proof, and
// threads stopped at its interior boundaries as the jump is written are
// moved into the pad (enterPads). The INT3 goes in first, as
// for any probe, and a hit on it is sent to the pad's copy (the hit was
// counted by the tracer); a world stop then writes bytes 1..4 of the
// jump and byte 0 last. The XOL area stays unwritable by the tracee:
// counters live in a mapping of their own.

const (
	padSize     = 2 * slotSize
	counterSize = xolSize // so that a fork child's copy goes like an area
	counterStep = 64      // a cache line per counter: sites do not contend
)

// A pad is the trapless form of a site.
type pad struct {
	addr    uint64  // the pad's start
	copyOff uint64  // offset of the relocated instructions
	red     uint64  // bytes of red zone skipped (128 in C code, 0 in Go)
	orig    [5]byte // the original bytes the jump replaces
	patched bool    // the jump is written
	size    uint64  // padSize, or recPadSize for a recording pad
	// A recording pad's ring and recorder; goKey: the thread key is the M.
	ring  *ring
	rec   *recorder
	goKey bool
	lay   recLayout
	count *padCount // a recording pad's counts its drops
	// reg is what the jump replaces: the probed instruction, or a region
	// of several proved by region.Plan. offs[i] is the offset, from
	// copyOff, of the copy of reg.Insns[i] (offs[len(Insns)]: the jump
	// back).
	reg  *region.Region
	offs []int
}

// origAt is the offset in the original code of the region's instruction i.
func (pd *pad) origAt(i int) uint64 {
	n := 0
	for _, in := range pd.reg.Insns[:i] {
		n += in.Len
	}
	return uint64(n)
}

// copyIndex returns i when rip is at the copy of instruction i (len(Insns)
// at the jump back).
func (pd *pad) copyIndex(rip uint64) (int, bool) {
	for i, o := range pd.offs {
		if rip == pd.addr+pd.copyOff+uint64(o) {
			return i, true
		}
	}
	return 0, false
}

// padCount is a pad's counter as Probe.Hits reads it, from any goroutine.
type padCount struct {
	addr uint64
	r    *counterReader
	last atomic.Uint64 // the last value read
	done atomic.Bool   // last is final: the pad is gone or can no longer run
}

// counterReader reads a process's counters with a memio of its own: the
// process's own is the tracer thread's.
type counterReader struct {
	mu sync.Mutex
	m  *memio.Process
}

func (c *counterReader) read(addr uint64) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		return 0, false
	}
	v, err := c.m.ReadUint(addr, 8)
	return v, err == nil
}

func (c *counterReader) close() {
	c.mu.Lock()
	if c.m != nil {
		c.m.Close()
		c.m = nil
	}
	c.mu.Unlock()
}

// load returns the counter's value: read now while the pad can run, the
// last value read once it cannot.
func (c *padCount) load() uint64 {
	if !c.done.Load() {
		if v, ok := c.r.read(c.addr); ok {
			c.store(v)
		}
	}
	return c.last.Load()
}

// store records v, the counter's value at some point: it only grows.
func (c *padCount) store(v uint64) {
	for {
		old := c.last.Load()
		if v <= old || c.last.CompareAndSwap(old, v) {
			return
		}
	}
}

// finish reads the counter one last time when it can (final) and freezes it.
func (c *padCount) finish(read bool) {
	if c.done.Load() {
		return
	}
	if read {
		c.load()
	}
	c.done.Store(true)
}

// jumpHits is the part of pr's hits its pad counted.
func (pr *Probe) jumpHits() uint64 {
	if pr.jump == nil {
		return 0
	}
	return pr.jump.load() - pr.jumpBase
}

// counterArea is a read-write anonymous mapping of counters.
type counterArea struct {
	also *counterArea
	base uint64
	next uint64
}

// canJump says whether in, alone, can be replaced by a jump to a pad: 5
// bytes or more (no instruction boundary inside the jump) and runnable
// as a boosted copy (it leaves by falling through).
func canJump(in *decode.Insn) (bool, string) {
	if in.Len < 5 {
		return false, fmt.Sprintf("a jump needs 5 bytes and the instruction has %d", in.Len)
	}
	return canBoost(in)
}

// wantsJump says whether a new probe at s, in mapping m, asked for as
// strategy with handler h, becomes trapless: asked for (an error says why
// it cannot), or under Auto where it can. It sets s.region to what the
// jump replaces: the instruction, or a proved region of several.
func (p *Process) wantsJump(s *site, m *Mapping, strategy Strategy, h Handler) (bool, error) {
	if s.rec != nil {
		h = nil // its handler only serves hits that trap
		if why := canRecord(m.Path); why != "" && strategy == Auto {
			s.noJump = why
			return false, nil
		}
	}
	if strategy != Jump && (strategy != Auto || h != nil || p.cfg.noXOL) {
		return false, nil
	}
	ok, why := canJump(s.insn)
	if ok {
		s.region = &region.Region{Addr: s.addr, Len: s.insn.Len, Insns: []*decode.Insn{s.insn}}
	} else if s.insn.Len < 5 {
		r, err := p.planRegion(s.addr, m)
		if err == nil {
			ok, s.region = true, r
		} else {
			why = fmt.Sprintf("a jump needs 5 bytes and the instruction has %d; the ones after it cannot go with it: %s", s.insn.Len, jumpReason(err))
		}
	}
	switch {
	case strategy == Auto:
		if !ok {
			s.noJump = why
		}
		return ok, nil
	case h != nil:
		return false, refuse(s.addr, s.insn, "a trapless probe runs no handler: insert it with a nil Handler")
	case p.cfg.noXOL:
		return false, refuse(s.addr, s.insn, "Jump needs an XOL area, and the process is traced with NoXOL")
	case !ok:
		return false, refuse(s.addr, s.insn, "cannot jump to a pad: %s", why)
	}
	return true, nil
}

// planRegion proves the region of several instructions at addr that a
// jump can replace (see package region), from the whole function holding
// addr as the program's file describes it (its symbol table, pclntab or
// unwind table) and as memory holds it, probes' bytes put back.
func (p *Process) planRegion(addr uint64, m *Mapping) (*region.Region, error) {
	f, err := funcFile(m.Path)
	if err != nil {
		return nil, err
	}
	ms, err := Maps(p.pid)
	if err != nil {
		return nil, err
	}
	bias, err := f.LoadBias(ms)
	if err != nil {
		return nil, err
	}
	fn := f.PCToFunc(addr - bias)
	if fn == nil {
		return nil, fmt.Errorf("no function of %s holds it", m.Path)
	}
	start := fn.Addr + bias
	if fn.Size > 1<<20 {
		return nil, fmt.Errorf("its function %s is %d bytes: too large to prove", fn.Name, fn.Size)
	}
	body := make([]byte, fn.Size)
	if _, err := p.mem.ForceReadAt(body, int64(start)); err != nil {
		return nil, fmt.Errorf("reading its function %s: %w", fn.Name, err)
	}
	for a, o := range p.sites {
		for i, b := range o.origBytes() {
			if at := a + uint64(i); at >= start && at < start+fn.Size {
				body[at-start] = b
			}
		}
	}
	r, err := region.PlanIn(procImage{p, f, bias}, body, start, addr)
	if err != nil {
		return nil, err
	}
	for a, o := range p.sites {
		if a > addr && a < r.End() || a < addr && a+o.span() > addr {
			return nil, fmt.Errorf("the probe at %#x lies in the %d bytes a jump would replace", a, r.Len)
		}
	}
	return r, nil
}

// funcFile returns the functions of the file at path, opened once per
// version of the file.
func funcFile(path string) (*symtab.File, error) {
	if path == "" || path[0] != '/' {
		return nil, fmt.Errorf("its mapping names no file (%q) to find its function in", path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s\x00%d\x00%d", path, st.Size(), st.ModTime().UnixNano())
	if v, ok := funcFiles.Load(key); ok {
		return v.(*symtab.File), nil
	}
	f, err := symtab.Open(path)
	if err != nil {
		return nil, err
	}
	if v, loaded := funcFiles.LoadOrStore(key, f); loaded {
		f.Close()
		return v.(*symtab.File), nil
	}
	return f, nil
}

var funcFiles sync.Map

// jumpReason is the reason of a refusal to place a jump, for Probe.NoJump.
func jumpReason(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason
	}
	return err.Error()
}

// goCode says whether the file at path is a Go program or library, whose
// linker budgets every stack byte below SP: its pads skip no red zone and
// use 8 bytes of stack. Cached per path.
func goCode(path string) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	if v, ok := goFiles.Load(path); ok {
		return v.(bool)
	}
	isGo := false
	if f, err := elf.Open(path); err == nil {
		isGo = f.Section(".gopclntab") != nil || f.Section(".go.buildinfo") != nil
		f.Close()
	}
	goFiles.Store(path, isGo)
	return isGo
}

var goFiles sync.Map

// reach32 says whether a rel32 at from (the end of its instruction)
// reaches to.
func reach32(from, to uint64) bool {
	d := int64(to) - int64(from)
	return d == int64(int32(d))
}

// placeJump makes s a Jump site: a pad within reach of the instruction
// (and of its rip-relative target), a counter within reach of the pad,
// the pad written. The caller writes the INT3 and queues the patch. It
// returns errNeedWorld when a mapping is needed and no thread is stopped
// to map it from (and final is not set).
func (p *Process) placeJump(s *site, path string, buf []byte, final bool) error {
	in, reg := s.insn, s.region
	size := uint64(padSize)
	if s.rec != nil {
		size = recPadSize
	}
	fits := func(x *xolArea) bool {
		if x.next+size > xolSize {
			return false
		}
		a := x.base + x.next
		if !reach32(a+size, reg.End()) || !reach32(a, reg.End()) || !reach32(a, s.addr+5) {
			return false
		}
		for _, in := range reg.Insns {
			if in.RIPRel && !(reach32(a+size, in.Target) && reach32(a, in.Target)) {
				return false
			}
		}
		return true
	}
	var x *xolArea
	last := p.xol
	for a := p.xol; a != nil; a = a.also {
		if fits(a) {
			x = a
			break
		}
		last = a
	}
	var th *thread
	if x == nil || p.counterFor(x.base+x.next) == 0 || s.rec != nil && p.ring == nil {
		if th = injector(p); th == nil {
			if !final {
				return errNeedWorld
			}
			return refuse(s.addr, in, "no thread is stopped to map a pad's area from")
		}
	}
	if x == nil {
		base, err := p.t.injectMmap(p, th, s.addr, unix.PROT_READ|unix.PROT_EXEC)
		if err != nil {
			return err
		}
		nx := &xolArea{base: base}
		if last == nil {
			p.xol = nx
		} else {
			last.also = nx
		}
		if !fits(nx) {
			return refuse(s.addr, in, "no pad within ±2GB of it: the XOL area went to %#x", base)
		}
		x = nx
	}
	at := x.base + x.next
	ctr := p.counterFor(at)
	if ctr == 0 {
		base, err := p.t.injectMmap(p, th, at, unix.PROT_READ|unix.PROT_WRITE)
		if err != nil {
			return err
		}
		c := &counterArea{base: base, also: p.counters}
		p.counters = c
		if ctr = p.counterFor(at); ctr == 0 {
			return refuse(s.addr, in, "no counter within ±2GB of its pad: the mapping went to %#x", base)
		}
	}
	pd := &pad{addr: at, reg: reg, size: size}
	if !goCode(path) {
		pd.red = 128
	}
	if s.rec != nil {
		if err := p.t.ensureRing(p, th, pd.red == 0); err != nil {
			return err
		}
		pd.ring, pd.rec, pd.goKey = p.ring, s.rec, pd.red == 0
		if p.ring.goKey != pd.goKey {
			return refuse(s.addr, in, "the ring's threads are known by their %s, and this code's by another", map[bool]string{true: "Ms (Go)", false: "thread pointers (C)"}[p.ring.goKey])
		}
	}
	code, err := pd.encode(in, ctr)
	if err != nil {
		return err
	}
	if _, err := p.mem.ForceWriteAt(code, int64(at)); err != nil {
		return fmt.Errorf("ptrace: writing the pad at %#x: %w", at, err)
	}
	for c := p.counters; c != nil; c = c.also {
		if ctr >= c.base && ctr < c.base+counterSize {
			c.next += counterStep
		}
	}
	x.next += size
	for i := uint64(0); i < size/slotSize; i++ {
		x.slots = append(x.slots, nil) // no slot: siteOfSlot finds none here
	}
	if p.counterRead == nil {
		m, err := memio.OpenProcess(p.pid)
		if err != nil {
			return err
		}
		p.counterRead = &counterReader{m: m}
	}
	copy(pd.orig[:], buf)
	pd.count = &padCount{addr: ctr, r: p.counterRead}
	s.pad = pd
	s.strategy = Jump
	// A hit on the INT3 runs the pad's copy as a boosted slot's: the
	// tracer counted it.
	s.slot, s.boosted = at+pd.copyOff, true
	p.pads = append(p.pads, s)
	return nil
}

// counterFor returns the address of a free counter within reach of a pad
// at at, or 0.
func (p *Process) counterFor(at uint64) uint64 {
	for c := p.counters; c != nil; c = c.also {
		if c.next+counterStep <= counterSize {
			a := c.base + c.next
			if reach32(at+padSize, a) && reach32(at, a) {
				return a
			}
		}
	}
	return 0
}

// injectMmap maps a private anonymous area of xolSize with prot in p,
// near addr (see xolHint), through th.
func (t *Tracer) injectMmap(p *Process, th *thread, addr uint64, prot uint64) (uint64, error) {
	var hint uint64
	if ms, err := Maps(p.pid); err == nil {
		hint = xolHint(ms, addr)
	}
	ret, err := t.inject(th, unix.SYS_MMAP, hint, xolSize, prot, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return 0, err
	}
	if int64(ret) < 0 && int64(ret) > -4096 {
		return 0, fmt.Errorf("ptrace: mapping a pad's area in process %d: %w", p.pid, unix.Errno(-int64(ret)))
	}
	return ret, nil
}

// encode returns the pad's code for in, counting at ctr.
func (pd *pad) encode(in *decode.Insn, ctr uint64) ([]byte, error) {
	b := make([]byte, 0, pd.size)
	if pd.red != 0 {
		b = append(b, 0x48, 0x8d, 0x64, 0x24, 0x80) // lea -0x80(%rsp),%rsp
	}
	b = append(b, 0x9c) // pushfq
	if pd.rec != nil {
		b = encodeRecord(b, pd.addr, pd.ring, pd.rec, ctr, pd.goKey, 8+pd.red, &pd.lay)
	} else {
		b = append(b, 0xf0, 0x48, 0xff, 0x05, 0, 0, 0, 0) // lock incq ctr(%rip)
		binary.LittleEndian.PutUint32(b[len(b)-4:], uint32(int32(int64(ctr)-int64(pd.addr+uint64(len(b))))))
	}
	b = append(b, 0x9d) // popfq
	if pd.red != 0 {
		b = append(b, 0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0) // lea 0x80(%rsp),%rsp
	}
	pd.copyOff = uint64(len(b))
	code, offs, err := pd.reg.Relocate(pd.addr + pd.copyOff)
	if err != nil {
		return nil, refuse(in.Addr, in, "the pad at %#x cannot hold its copy: %v", pd.addr, err)
	}
	b = append(b, code...)
	pd.offs = offs
	var j [14]byte
	n := jumpBack(j[:], pd.addr+uint64(len(b)), pd.reg.End())
	if n != 5 {
		return nil, refuse(in.Addr, in, "the pad at %#x is beyond ±2GB of it", pd.addr)
	}
	b = append(b, j[:n]...)
	if len(b) > int(pd.size) {
		return nil, refuse(in.Addr, in, "its pad needs %d bytes, more than %d", len(b), pd.size)
	}
	for len(b) < int(pd.size) {
		b = append(b, 0xcc)
	}
	return b, nil
}

// jumpBytes returns the jmp rel32 from s to its pad.
func (s *site) jumpBytes() [5]byte {
	var j [5]byte
	j[0] = 0xe9
	binary.LittleEndian.PutUint32(j[1:], uint32(int32(int64(s.pad.addr)-int64(s.addr+5))))
	return j
}

// span is how many bytes from s.addr belong to s: its instruction's, or
// all that its jump replaces.
func (s *site) span() uint64 {
	if s.region != nil {
		return uint64(s.region.Len)
	}
	return uint64(s.insn.Len)
}

// origBytes returns the bytes to put back at s: the INT3's one, or all
// that the jump replaced.
func (s *site) origBytes() []byte {
	if s.pad != nil && s.pad.patched {
		return s.pad.orig[:]
	}
	return []byte{s.orig}
}

// queuePatch has s's jump written once every thread is still: bytes 1..4
// first under the INT3, then byte 0 (the order the kernel's text_poke
// uses, which a thread running meanwhile would also survive).
func (t *Tracer) queuePatch(p *Process, s *site) {
	image := p.image
	t.needWorld(p, false, func() {
		if p.finished || p.image != image || p.sites[s.addr] != s || s.pad.patched {
			return
		}
		if !t.enterPads(p, s) {
			return // stays an INT3 probe, served through the pad's copy
		}
		j := s.jumpBytes()
		if _, err := p.mem.ForceWriteAt(j[1:], int64(s.addr+1)); err != nil {
			return // stays an INT3 probe, served through the pad's copy
		}
		if _, err := p.mem.ForceWriteAt(j[:1], int64(s.addr)); err != nil {
			p.mem.ForceWriteAt(s.pad.orig[1:], int64(s.addr+1))
			return
		}
		s.pad.patched = true
		t.traceExits(p)
	})
}

// traceExits has p's threads stop at their exit (PTRACE_O_TRACEEXIT), where
// the memory is still there: the counters are read at each (see
// exitStop), so the last thread's reading is final. New threads inherit
// the option. Only processes with a jump pay the extra stop.
func (t *Tracer) traceExits(p *Process) {
	if p.exitStops {
		return
	}
	p.exitStops = true
	for _, th := range p.threads {
		if th.zombie || th.state == running || th.state == stepping || th.state == vforking || th.state == leaving {
			continue
		}
		ptsys.Raw(unix.PTRACE_SETOPTIONS, th.tid, 0, traceOptions|unix.PTRACE_O_TRACEEXIT)
	}
}

// exitStop reads p's counters at a thread's exit stop.
func (p *Process) exitStop(th *thread) {
	p.threadExits(th)
	for _, s := range p.pads {
		if !s.pad.count.done.Load() {
			s.pad.count.load()
		}
	}
}

// finishPads freezes p's counters: read one last time when the memory is
// still there (read), else the last reading stands (an exit stop's).
func (p *Process) finishPads(read bool) {
	for _, s := range p.pads {
		s.pad.count.finish(read)
	}
	if p.counterRead != nil {
		p.counterRead.close()
		p.counterRead = nil
	}
	p.pads, p.counters = nil, nil
}

// A thread in a pad is at one of its instruction boundaries. padPlace
// says where it belongs in the original code, undoing the counting part
// in th.pregs: before the count, at the original first instruction (its
// hit is yet to be counted); after it, at the copy of one of the replaced
// instructions (counted, not yet run); after the copy, at the end of the
// replaced bytes.
type padPlace uint8

const (
	padOrig padPlace = iota + 1
	padCopy
	padNext
)

// padAt returns the site whose pad holds rip, if any.
func (p *Process) padAt(rip uint64) *site {
	for _, s := range p.pads {
		if rip >= s.pad.addr && rip < s.pad.addr+s.pad.size {
			return s
		}
	}
	return nil
}

// undoPad moves th.pregs out of the counting part of s's pad and says
// where the thread belongs, with i the replaced instruction it is at for
// padCopy; ok is false off an instruction boundary.
func (p *Process) undoPad(th *thread, s *site) (where padPlace, i int, ok bool) {
	pd, r := s.pad, &th.pregs
	off := r.Rip - pd.addr
	push := uint64(0)
	if pd.red != 0 {
		push = 5 // the lea before the pushfq
	}
	flags := func() bool {
		v, err := p.mem.ReadUint(r.Rsp, 8)
		if err != nil {
			return false
		}
		r.Eflags = v
		return true
	}
	switch {
	case off == 0:
		return padOrig, 0, true
	case off == push && pd.red != 0:
		r.Rsp += pd.red
		return padOrig, 0, true
	case pd.rec != nil && off < pd.copyOff:
		where, ok := p.undoRecord(th, s)
		return where, 0, ok
	case off == push+1: // after pushfq
		if !flags() {
			return 0, 0, false
		}
		r.Rsp += 8 + pd.red
		return padOrig, 0, true
	case off == push+9: // counted, before popfq
		if !flags() {
			return 0, 0, false
		}
		r.Rsp += 8 + pd.red
		return padCopy, 0, true
	case off == push+10 && pd.red != 0: // before the second lea
		r.Rsp += pd.red
		return padCopy, 0, true
	}
	if i, ok := pd.copyIndex(r.Rip); ok {
		if i == len(pd.reg.Insns) {
			return padNext, i, true
		}
		return padCopy, i, true
	}
	return 0, 0, false
}

// padSignal delivers sig, which th stopped with in a pad, never there (see
// signalled): before the count the thread goes back to the original
// instruction, which jumps to the pad again once the handler returns;
// after the copy, to the end of the replaced bytes; in the copy, to the
// replaced instruction it is at when the jump left that one's bytes
// intact. A fault the copy raised is reported at the original address of
// its instruction (si_addr too where it names the instruction). A thread
// elsewhere in the copy (counted, not yet through) is stepped on first,
// with the signal kept. A fault the recording part raised is not the
// program's: it goes nowhere (see padOwnFault). It reports false when th
// is in no pad.
func (t *Tracer) padSignal(th *thread, sig unix.Signal) bool {
	p, tid := th.p, th.tid
	s := p.padAt(th.pregs.Rip)
	if s == nil {
		return false
	}
	pd := s.pad
	own := pd.rec != nil && th.pregs.Rip-pd.addr < pd.copyOff
	where, i, ok := p.undoPad(th, s)
	if !ok {
		return false
	}
	if own && (sig == unix.SIGSEGV || sig == unix.SIGBUS) {
		if ptsys.GetSiginfo(tid, &th.si) != 0 {
			return true // gone
		}
		if th.si.Code() > 0 {
			t.padOwnFault(th, s, where)
			return true
		}
	}
	if where == padCopy {
		if ptsys.GetSiginfo(tid, &th.si) != 0 {
			return true // gone
		}
		if th.si.Code() > 0 && (sig == unix.SIGSEGV || sig == unix.SIGBUS || sig == unix.SIGILL || sig == unix.SIGFPE) {
			t.padFault(th, s, i)
			t.deliver(th, sig)
			return true
		}
	}
	to := uint64(0)
	switch {
	case where == padOrig:
		to = s.addr
	case where == padNext:
		to = pd.reg.End()
	case i > 0 && pd.origAt(i) >= 5:
		to = s.addr + pd.origAt(i)
	}
	if to != 0 {
		th.pregs.Rip = to
		ptsys.SetRegs(tid, &th.pregs)
		t.deliver(th, sig)
		return true
	}
	// Counted but before the popfq, undoPad has taken the flags and the
	// stack back already: the copy is where it goes on from.
	th.pregs.Rip = pd.addr + pd.copyOff + uint64(pd.offs[i])
	if ptsys.SetRegs(tid, &th.pregs) != 0 {
		return true
	}
	th.keep(&th.si)
	t.startStep(th, stepThrough, s, th.pregs.Rip, true)
	return true
}

// padOwnFault serves the hit of th, whose recording pad faulted in its
// own code: the FS base, or the g or M, it reads the thread's key through
// is not there (a thread before its TLS is set up, in ld.so or an IFUNC
// resolver, or one that cleared FS). undoPad has put th's registers back
// as they are at the probe and, past the reservation, published the
// record (padCopy); before it (padOrig) nothing is reserved and the hit
// is served here as a trap serves it. The thread goes on at the copy, the
// fault delivered nowhere: every hit of such a thread stops it, none is
// lost, the program's instructions run once.
func (t *Tracer) padOwnFault(th *thread, s *site, where padPlace) {
	pd := s.pad
	if where == padOrig {
		th.r.LoadPtrace(&th.pregs)
		t.handle(th, s)
	}
	th.pregs.Rip = pd.addr + pd.copyOff + uint64(pd.offs[0])
	if ptsys.SetRegs(th.tid, &th.pregs) != 0 {
		return // gone
	}
	t.resume(th, 0)
}

// padFault moves th, whose copy of the replaced instruction i faulted,
// to that instruction's original address, in si_addr too where it names
// the instruction.
func (t *Tracer) padFault(th *thread, s *site, i int) {
	at := s.addr + s.pad.origAt(i)
	th.pregs.Rip = at
	ptsys.SetRegs(th.tid, &th.pregs)
	if sig := unix.Signal(th.si.Signo()); sig == unix.SIGILL || sig == unix.SIGFPE {
		th.si.SetAddr(at)
		ptsys.SetSiginfo(th.tid, &th.si)
	}
}

// padStepped goes on with th, stepped through one instruction of s's pad
// copy before a signal is delivered: it reports true when th is where the
// signal can be delivered (its registers in th.pregs and written), false
// when it was stepped again.
func (t *Tracer) padStepped(th *thread, s *site) bool {
	pd := s.pad
	i, in := pd.copyIndex(th.pregs.Rip)
	switch {
	case th.stepFault && in:
		t.padFault(th, s, i)
		th.keep(&th.si)
		return true
	case !in:
		// Out of the pad: the last instruction's branch was taken.
	case i == len(pd.reg.Insns):
		th.pregs.Rip = pd.reg.End()
	case pd.origAt(i) >= 5:
		th.pregs.Rip = s.addr + pd.origAt(i)
	default:
		t.startStep(th, stepThrough, s, th.pregs.Rip, true)
		return false
	}
	ptsys.SetRegs(th.tid, &th.pregs)
	return true
}

// enterPads moves every still thread of p at an interior instruction
// boundary of s's replaced bytes to the matching point of its pad, before
// the jump is written. A thread at a hit is at a probe's address, which
// the proof keeps out of the replaced bytes; a parked one is moved in the
// registers its debugger sees too. It reports false, and moves none, when
// a thread is inside the bytes off an instruction boundary (which the
// proof says cannot be): the site then stays an INT3 probe.
func (t *Tracer) enterPads(p *Process, s *site) bool {
	pd := s.pad
	var moves []*thread
	for _, th := range p.threads {
		if th.zombie || th.hit != 0 || (th.state != held && th.state != parked) {
			continue
		}
		if ptsys.GetRegs(th.tid, &th.pregs) != 0 {
			continue
		}
		if th.pregs.Rip == s.addr+1 && (th.pending && ptsys.Event(th.ws) == 0 && th.ws.StopSignal() == unix.SIGTRAP ||
			sigPending(th.tgid, th.tid, unix.SIGTRAP)) {
			// Past the INT3, its hit yet to be served: the report is kept
			// for after the world stop, or the SIGTRAP is still queued
			// (an interrupt is reported before a pending signal). The
			// hit is served through the pad then.
			continue
		}
		if off := th.pregs.Rip - s.addr; th.pregs.Rip > s.addr && off < uint64(pd.reg.Len) {
			if _, ok := pd.reg.Boundary(int(off)); !ok {
				return false
			}
			moves = append(moves, th)
		}
	}
	for _, th := range moves {
		i, _ := pd.reg.Boundary(int(th.pregs.Rip - s.addr))
		th.pregs.Rip = pd.addr + pd.copyOff + uint64(pd.offs[i])
		ptsys.SetRegs(th.tid, &th.pregs)
		if th.state == parked && (th.parked || th.dirty) {
			th.r.RIP = th.pregs.Rip
			th.orig.Rip = th.pregs.Rip
		}
		t.padEntries++
	}
	return true
}

// leavePads moves every still thread of p that is in one of the pads of
// only (all when nil) back to the original code, whose bytes the caller
// restores: before the count to the first instruction, in the copy to the
// instruction it is at (counted once, run once), after the copy to the end
// of the replaced bytes.
func (t *Tracer) leavePads(p *Process, only *site) {
	if p.pads == nil {
		return
	}
	for _, th := range p.threads {
		if th.zombie || (th.state != held && th.state != serving && th.state != parked) || th.hit != 0 {
			continue
		}
		if ptsys.GetRegs(th.tid, &th.pregs) != 0 {
			continue
		}
		s := p.padAt(th.pregs.Rip)
		if s == nil || (only != nil && s != only) {
			continue
		}
		where, i, ok := p.undoPad(th, s)
		if !ok {
			continue
		}
		th.pregs.Rip = s.addr
		switch where {
		case padCopy:
			th.pregs.Rip += s.pad.origAt(i)
		case padNext:
			th.pregs.Rip = s.pad.reg.End()
		}
		ptsys.SetRegs(th.tid, &th.pregs)
		t.slotExits++
	}
}

// errJumpRemove tells removeThen that remove left a Jump site's bytes to
// removeJump.
var errJumpRemove = errors.New("ptrace: a jump site to remove in a world stop")

// removeThen is Remove: done is called once the probe is out.
func (p *Process) removeThen(pr *Probe, done func(error)) {
	var s *site
	if pr != nil {
		s = pr.s
	}
	if err := p.remove(pr); err != errJumpRemove {
		done(err)
		return
	}
	p.t.removeJump(p, s, done)
}

// removeJump takes out s, a Jump site whose last probe went: in a world
// stop, threads leave its pad and its bytes go back; the counter is read
// one last time. The pad stays, never reused. done is called then.
func (t *Tracer) removeJump(p *Process, s *site, done func(error)) {
	if !s.pad.patched {
		_, err := p.mem.ForceWriteAt([]byte{s.orig}, int64(s.addr))
		s.pad.count.finish(false)
		done(err)
		return
	}
	image := p.image
	t.needWorld(p, false, func() {
		if p.finished || p.image != image {
			done(nil)
			return
		}
		t.leavePads(p, s)
		_, err := p.mem.ForceWriteAt(s.pad.orig[:], int64(s.addr))
		s.pad.count.finish(true)
		done(err)
	})
}

// unmapCounters removes the counter mappings at detach, through th.
func (t *Tracer) unmapCounters(p *Process, th *thread) error {
	for c := p.counters; c != nil; c = c.also {
		ret, err := t.inject(th, unix.SYS_MUNMAP, c.base, counterSize)
		if err != nil {
			return err
		}
		if ret != 0 {
			return fmt.Errorf("ptrace: unmapping the counters at %#x of process %d: %w", c.base, p.pid, unix.Errno(-int64(ret)))
		}
	}
	p.counters = nil
	return nil
}

// procImage is a process as region.PlanIn reads it: jump tables from its
// memory (relocated, as the code uses them), code where the file mapped
// at bias has it.
type procImage struct {
	p    *Process
	f    *symtab.File
	bias uint64
}

func (i procImage) ReadAt(b []byte, addr uint64) (int, error) {
	return i.p.mem.ForceReadAt(b, int64(addr))
}

func (i procImage) Executable(addr uint64) bool { return i.f.Executable(addr - i.bias) }
