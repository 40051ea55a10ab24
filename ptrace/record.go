package ptrace

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// Trapless recording. A recording probe's pad writes a Record of each hit
// into a ring in memory the tracer shares with the tracee (a memfd the
// tracee creates by an injected memfd_create, maps MAP_SHARED and closes;
// the tracer maps it through /proc/PID/fd), and a goroutine of the tracer
// drains the ring while the process runs. The pad, after the counting
// pad's lea and pushfq:
//
//	push %rax; push %rcx; push %rdx
//	movabs $ring,%rcx
//	mov (%rcx),%rax                 head
//	1: mov %rax,%rdx; sub 64(%rcx),%rdx; cmp $cap,%rdx; jge drop
//	lea 1(%rax),%rdx; lock cmpxchg %rdx,(%rcx); jne 1b
//	push %rax                       n, the record's place in the ring
//	and $mask,%eax; shl $7,%rax; lea 4096(%rcx,%rax),%rcx
//	movl $id,8(%rcx)
//	mov %fs:0,%rax (C) | mov %fs:-8,%rax; mov 48(%rax),%rax (Go)
//	mov %rax,24(%rcx)               the thread's key
//	mov %reg,32+8i(%rcx)...         the registers asked for
//	rdtsc; shl $32,%rdx; or %rdx,%rax; mov %rax,16(%rcx)
//	pop %rax; lea 1(%rax),%rax; mov %rax,(%rcx)   published last
//	jmp 2f
//	drop: lock incq counter(%rip)   the probe's drops
//	2: pop %rdx; pop %rcx; pop %rax
//
// then popfq, the lea back, the copy and the jump back. A slot is
// reserved by a compare-and-swap of the head that fails only when another
// thread reserved one meanwhile (the kernel's perf ring does the same): a
// lock xadd would reserve a place it cannot use when the ring is full,
// and leave a hole the consumer could not tell from a record being
// written. The record is published by its sequence word, written last
// (x86 stores are seen in order); the consumer reads records in
// reservation order, so one thread's records come in the order it made
// them. A full ring drops the record and counts it; the pad never waits.
//
// The thread's key is the thread pointer in C (%fs:0 holds it in the
// x86-64 TLS ABI, glibc's and musl's) and the M in pure Go (g at -8(FS),
// its m at offset 48, a layout unchanged since Go 1.5); the tracer maps
// keys to tids from the FS base of stopped threads (a new thread's first
// stop, each thread's exit stop, and a world stop when an unknown key
// shows up), each mapping valid for the records reserved before the
// thread's exit, so a key reused by a later thread is told apart.

// Reg names a general register by its hardware number: regs.RAX to
// regs.R15.
type Reg uint8

func (r Reg) String() string {
	if n := regs.Name(int(r)); n != "" {
		return n
	}
	return "Reg(" + strconv.Itoa(int(r)) + ")"
}

// CArgs are the integer argument registers of the SysV ABI, in order.
var CArgs = []Reg{regs.RDI, regs.RSI, regs.RDX, regs.RCX, regs.R8, regs.R9}

// GoArgs are the integer argument registers of Go's register ABI, in order.
var GoArgs = []Reg{regs.RAX, regs.RBX, regs.RCX, regs.RDI, regs.RSI, regs.R8, regs.R9, regs.R10}

// MaxRecordRegs is how many registers a record holds.
const MaxRecordRegs = 8

// RecordSpec says what a recording probe records at each hit.
type RecordSpec struct {
	// Regs are the registers recorded, at most MaxRecordRegs, as they are
	// at the probe (RSP too).
	Regs []Reg
}

// A Record is one hit of a recording probe.
type Record struct {
	Probe *Probe
	Tid   int   // the thread that hit it; 0 if it ended unseen
	Time  int64 // when, in CLOCK_MONOTONIC nanoseconds of this machine
	// Regs holds the registers of the probe's RecordSpec, in its order.
	Regs [MaxRecordRegs]uint64
}

// An Observer is called for each record of a recording probe, on a
// goroutine of the tracer, one record at a time, each thread's records in
// the order the thread made them. It gets a copy: it cannot change the
// thread, which has run on. It should be quick: while it runs, the ring
// fills.
type Observer func(Record)

// RingSize sets the number of records the process's ring holds (rounded up
// to a power of two; default 65536, 128 bytes each). A hit that finds the
// ring full is dropped and counted (Probe.Drops).
func RingSize(records int) Option { return func(c *config) { c.ringSize = records } }

const (
	recSize      = 128
	recShift     = 7
	ringHdr      = 4096
	ringTailOff  = 64
	defaultRing  = 1 << 16
	recPadSize   = 16 * slotSize
	recTrapBit   = 1 << 31 // in the id: written by the tracer at a trap, the key is the tid
	gMOffset     = 48      // runtime.g.m
	recOffSeq    = 0
	recOffID     = 8
	recOffTSC    = 16
	recOffKey    = 24
	recOffRegs   = 32
	keyLive      = ^uint64(0)
	drainPeriod  = time.Millisecond
	recNameBytes = 16
)

// recorder is what a recording probe records and who sees it.
type recorder struct {
	p    *Process
	regs []Reg
	obs  Observer
	id   uint32
	pr   *Probe // set once placed
	// registered: it has its id.
	registered bool
}

// Record puts a recording probe at addr: each hit is recorded as spec
// asks and handed to obs (see Observer). Where the site can take a jump
// (see Jump), no hit traps: the pad writes the record into a ring shared
// with the tracer; elsewhere the hit traps and the tracer writes the same
// record into the ring, so obs sees one stream either way (Probe.NoJump
// says why a probe traps). A recording probe has its address to itself.
// Hits counts records seen and dropped; Drops those dropped. A fork child
// followed with FollowForks gets no copy of a recording probe (it has no
// ring): its records are none.
func (p *Process) Record(addr uint64, spec RecordSpec, obs Observer) (*Probe, error) {
	if obs == nil {
		return nil, fmt.Errorf("ptrace: Record at %#x: a nil Observer", addr)
	}
	if len(spec.Regs) > MaxRecordRegs {
		return nil, fmt.Errorf("ptrace: Record at %#x: %d registers asked for, at most %d", addr, len(spec.Regs), MaxRecordRegs)
	}
	for _, r := range spec.Regs {
		if r > regs.R15 {
			return nil, fmt.Errorf("ptrace: Record at %#x: no register %v", addr, r)
		}
	}
	select {
	case <-p.done:
		return nil, fmt.Errorf("ptrace: process %d is no longer traced", p.pid)
	default:
	}
	rec := &recorder{p: p, regs: append([]Reg(nil), spec.Regs...), obs: obs}
	var pr *Probe
	onTracer := p.t.hand.On()
	err := p.t.call(func(done func(error)) {
		p.insertRec(addr, Auto, rec.trapHit, rec, onTracer, func(q *Probe, err error) {
			pr = q
			done(err)
		})
	})
	return pr, err
}

// Drops returns how many hits of a recording probe were not recorded: the
// ring was full.
func (pr *Probe) Drops() uint64 {
	if pr.rec == nil {
		return 0
	}
	return pr.jumpHits() + pr.trapDrops.Load()
}

// register gives rec its id, on the tracer thread, before its probe is
// placed.
func (p *Process) register(rec *recorder) {
	rec.registered = true
	old := p.recProbes.Load()
	var list []*recorder
	if old != nil {
		list = append(list, *old...)
	}
	rec.id = uint32(len(list))
	list = append(list, rec)
	p.recProbes.Store(&list)
}

// trapHit is a recording probe's handler where its hit traps: the record
// goes into the ring (or, with no ring, straight to the observer).
func (rec *recorder) trapHit(tid int, pr *Probe, r *regs.Regs, _ memio.Memory) {
	var vals [MaxRecordRegs]uint64
	for i, g := range rec.regs {
		vals[i] = r.GPR[g]
	}
	if rg := rec.p.ring; rg != nil {
		if !rg.put(rec.id|recTrapBit, uint64(tid), &vals) {
			pr.trapDrops.Add(1)
		}
		return
	}
	func() {
		defer func() { recover() }()
		rec.obs(Record{Probe: pr, Tid: tid, Time: monoNow(), Regs: vals})
	}()
}

func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func rdtsc() uint64

// tscClock converts rdtsc values to CLOCK_MONOTONIC nanoseconds: the
// tracer runs on the same machine, with the same invariant TSC. The rate
// is measured over the whole time since the first sample, the offset from
// a sample at most tscResample old.
var tscClock struct {
	mu          sync.Mutex
	first, last tscSample
	nsPerCycle  float64
}

type tscSample struct {
	tsc uint64
	ns  int64
}

const tscResample = 100 * time.Millisecond

// sampleTSC reads the TSC and the clock together (the TSC read on both
// sides of the clock's).
func sampleTSC() tscSample {
	t1 := rdtsc()
	ns := monoNow()
	t2 := rdtsc()
	return tscSample{t1 + (t2-t1)/2, ns}
}

// tscCalibrate takes the first two samples, 20 ms apart, once.
func tscCalibrate() {
	c := &tscClock
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nsPerCycle != 0 {
		return
	}
	c.first = sampleTSC()
	time.Sleep(20 * time.Millisecond)
	c.last = sampleTSC()
	c.nsPerCycle = float64(c.last.ns-c.first.ns) / float64(c.last.tsc-c.first.tsc)
}

// tscConv is a conversion from a recent sample.
type tscConv struct {
	at         tscSample
	nsPerCycle float64
}

// tscNow returns the conversion to use now, sampling again when the last
// sample is older than tscResample.
func tscNow() tscConv {
	tscCalibrate()
	c := &tscClock
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := rdtsc(); float64(now-c.last.tsc)*c.nsPerCycle > float64(tscResample) {
		c.last = sampleTSC()
		c.nsPerCycle = float64(c.last.ns-c.first.ns) / float64(c.last.tsc-c.first.tsc)
	}
	return tscConv{c.last, c.nsPerCycle}
}

func (v tscConv) mono(tsc uint64) int64 {
	return v.at.ns + int64(float64(int64(tsc-v.at.tsc))*v.nsPerCycle)
}

// A ring is a process's shared record ring.
type ring struct {
	p       *Process
	mem     []byte // the tracer's mapping
	base    uint64 // the tracee's
	size    uint64
	cap     uint64 // records, a power of two
	tail    uint64 // the consumer's
	keys    keyMap
	goKey   bool // keys are Ms (a Go program)
	stop    chan struct{}
	done    chan struct{}
	refresh chan struct{} // a key refresh under way, closed when done
	lost    atomic.Uint64 // records never published (their thread killed)
}

func (rg *ring) word(off uint64) *uint64 { return (*uint64)(unsafe.Pointer(&rg.mem[off])) }

// put writes a record at a trap (the thread stopped, its earlier records
// published): reserved and published as the pads do. It reports false
// when the ring is full.
func (rg *ring) put(id uint32, tid uint64, vals *[MaxRecordRegs]uint64) bool {
	head, tail := rg.word(0), rg.word(ringTailOff)
	var n uint64
	for {
		n = atomic.LoadUint64(head)
		if int64(n-atomic.LoadUint64(tail)) >= int64(rg.cap) {
			return false
		}
		if atomic.CompareAndSwapUint64(head, n, n+1) {
			break
		}
	}
	off := ringHdr + (n&(rg.cap-1))<<recShift
	r := rg.mem[off : off+recSize]
	binary.LittleEndian.PutUint32(r[recOffID:], id)
	binary.LittleEndian.PutUint64(r[recOffKey:], tid)
	for i, v := range vals {
		binary.LittleEndian.PutUint64(r[recOffRegs+8*i:], v)
	}
	binary.LittleEndian.PutUint64(r[recOffTSC:], rdtsc())
	atomic.StoreUint64(rg.word(off+recOffSeq), n+1)
	return true
}

// keyMap maps thread keys to tids, each mapping valid for the records
// reserved before until (the thread's exit).
type keyMap struct {
	mu sync.Mutex
	m  map[uint64][]keyTid
}

type keyTid struct {
	tid   int
	until uint64
}

// set maps key to tid for the records before until (keyLive: from now
// on). A live mapping of key to another thread ends at now: that thread
// ended unseen, and the key is reused.
func (k *keyMap) set(key uint64, tid int, until, now uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[uint64][]keyTid{}
	}
	l := k.m[key]
	for i := range l {
		if l[i].tid == tid && l[i].until == keyLive {
			l[i].until = until
			return
		}
	}
	for i := range l {
		if l[i].until == keyLive {
			l[i].until = now
		}
	}
	k.m[key] = append(l, keyTid{tid, until})
}

// tid returns the tid key stood for at record n.
func (k *keyMap) tid(key, n uint64) (int, bool) {
	e, ok := k.lookup(key, n)
	return e.tid, ok
}

// lookup returns the mapping of key at record n, and until which record
// it holds as far as is known now (a later change of it can only be at
// the head of the ring then, beyond the records drained now).
func (k *keyMap) lookup(key, n uint64) (keyTid, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	best, ok := keyTid{until: 0}, false
	for _, e := range k.m[key] {
		if e.until > n && (!ok || e.until < best.until) {
			best, ok = e, true
		}
	}
	return best, ok
}

// threadKey returns th's key, read from its FS base (th is stopped).
func (p *Process) threadKey(th *thread, goKey bool) (uint64, bool) {
	var r unix.PtraceRegs
	if ptsys.GetRegs(th.tid, &r) != 0 || r.Fs_base == 0 {
		return 0, false
	}
	if !goKey {
		return r.Fs_base, true
	}
	g, err := p.mem.ReadUint(r.Fs_base-8, 8)
	if err != nil || g == 0 {
		return 0, false
	}
	m, err := p.mem.ReadUint(g+gMOffset, 8)
	return m, err == nil && m != 0
}

// seeThread records th's key (th stopped, alive: live from now on).
func (p *Process) seeThread(th *thread) {
	rg := p.ring
	if rg == nil || th.guest {
		return
	}
	if key, ok := p.threadKey(th, rg.goKey); ok {
		rg.keys.set(key, th.tid, keyLive, atomic.LoadUint64(rg.word(0)))
	}
}

// threadExits records that th, at its exit stop, makes no record after
// the ring's head now.
func (p *Process) threadExits(th *thread) {
	rg := p.ring
	if rg == nil || th.guest {
		return
	}
	if key, ok := p.threadKey(th, rg.goKey); ok {
		head := atomic.LoadUint64(rg.word(0))
		rg.keys.set(key, th.tid, head, head)
	}
}

// canRecord says why the code in the file at path cannot write records
// from a pad, or "". A Go program's pad finds g at -8(FS): where the
// runtime keeps it when linked alone, and where the program's TLS block,
// runtime.tlsg alone, lies below the thread pointer when linked with a C
// library (cgo).
func canRecord(path string) string {
	if !goCode(path) {
		return ""
	}
	f, err := elf.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_TLS && (ph.Memsz > 8 || ph.Align > 8) {
			return fmt.Sprintf("a Go program with a TLS block of %d bytes: its threads' g may not be at -8(FS), which a record pad reads", ph.Memsz)
		}
	}
	return ""
}

// ensureRing sets up p's ring through th: memfd_create, mmap MAP_SHARED,
// madvise MADV_DONTFORK (a fork child does not get it: its probes' bytes
// are put back before it runs), the tracer's mapping, close.
func (t *Tracer) ensureRing(p *Process, th *thread, goKey bool) error {
	if p.ring != nil {
		return nil
	}
	n := uint64(defaultRing)
	if p.cfg.ringSize > 0 {
		n = 1
		for n < uint64(p.cfg.ringSize) {
			n <<= 1
		}
	}
	if n > 1<<24 {
		return fmt.Errorf("ptrace: a ring of %d records is too large (at most %d)", n, 1<<24)
	}
	size := ringHdr + n*recSize
	// The memfd's name goes on the thread's stack, below its red zone.
	var regs unix.PtraceRegs
	if e := ptsys.GetRegs(th.tid, &regs); e != 0 {
		return errno("get registers of", th.tid, e)
	}
	at := (regs.Rsp - 512) &^ 15
	var saved [recNameBytes]byte
	if _, err := p.mem.ForceReadAt(saved[:], int64(at)); err != nil {
		return fmt.Errorf("ptrace: naming the ring of process %d: %w", p.pid, err)
	}
	name := [recNameBytes]byte{'o', 'n', 'e', 't', 'r', 'a', 'p', '-', 'r', 'i', 'n', 'g'}
	if _, err := p.mem.ForceWriteAt(name[:], int64(at)); err != nil {
		return fmt.Errorf("ptrace: naming the ring of process %d: %w", p.pid, err)
	}
	fd, err := t.inject(th, unix.SYS_MEMFD_CREATE, at, unix.MFD_CLOEXEC)
	p.mem.ForceWriteAt(saved[:], int64(at))
	if err != nil {
		return err
	}
	if int64(fd) < 0 {
		return fmt.Errorf("ptrace: memfd_create in process %d: %w", p.pid, unix.Errno(-int64(fd)))
	}
	closeFd := func() { t.inject(th, unix.SYS_CLOSE, fd) }
	if ret, err := t.inject(th, unix.SYS_FTRUNCATE, fd, size); err != nil || ret != 0 {
		closeFd()
		return fmt.Errorf("ptrace: sizing the ring of process %d: %v %v", p.pid, err, unix.Errno(-int64(ret)))
	}
	// Populated: no hit pays a page fault.
	base, err := t.inject(th, unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE, fd, 0)
	if err != nil || int64(base) < 0 && int64(base) > -4096 {
		closeFd()
		return fmt.Errorf("ptrace: mapping the ring in process %d: %v %v", p.pid, err, unix.Errno(-int64(base)))
	}
	unmap := func() { t.inject(th, unix.SYS_MUNMAP, base, size) }
	if ret, err := t.inject(th, unix.SYS_MADVISE, base, size, unix.MADV_DONTFORK); err != nil || ret != 0 {
		unmap()
		closeFd()
		return fmt.Errorf("ptrace: madvise of the ring in process %d: %v %v", p.pid, err, unix.Errno(-int64(ret)))
	}
	f, err := os.OpenFile("/proc/"+strconv.Itoa(p.pid)+"/fd/"+strconv.FormatUint(fd, 10), os.O_RDWR, 0)
	closeFd()
	if err != nil {
		unmap()
		return fmt.Errorf("ptrace: opening the ring of process %d: %w", p.pid, err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	f.Close()
	if err != nil {
		unmap()
		return fmt.Errorf("ptrace: mapping the ring of process %d: %w", p.pid, err)
	}
	tscCalibrate()
	rg := &ring{p: p, mem: mem, base: base, size: size, cap: n, goKey: goKey,
		stop: make(chan struct{}), done: make(chan struct{})}
	p.ring = rg
	p.ringDone.Store(&rg.done)
	for _, o := range p.threads {
		if !o.zombie {
			p.seeThread(o)
		}
	}
	// Threads stop at their exit, where their keys are read, once a world
	// stop writes the jump (see queuePatch).
	go rg.consume()
	return nil
}

// unmapRing removes the tracee's mapping of the ring at detach, through th.
func (t *Tracer) unmapRing(p *Process, th *thread) error {
	rg := p.ring
	if rg == nil {
		return nil
	}
	ret, err := t.inject(th, unix.SYS_MUNMAP, rg.base, rg.size)
	if err != nil {
		return err
	}
	if ret != 0 {
		return fmt.Errorf("ptrace: unmapping the ring at %#x of process %d: %w", rg.base, p.pid, unix.Errno(-int64(ret)))
	}
	return nil
}

// finishRing lets p's consumer drain what is left and end: the process
// exited, execed or is detached. Records keep coming from no pad.
func (p *Process) finishRing() {
	if rg := p.ring; rg != nil {
		p.ring = nil
		close(rg.stop)
	}
}

// waitRecords returns, once p has ended (exited, or detached), when its
// last consumer has delivered its last record. (A ring of an image before
// an exec was finished at the exec.)
func (p *Process) waitRecords() {
	if d := p.ringDone.Load(); d != nil {
		<-*d
	}
}

// consume drains the ring until stopped, then once more, and unmaps it.
func (rg *ring) consume() {
	defer close(rg.done)
	defer unix.Munmap(rg.mem)
	tick := time.NewTicker(drainPeriod)
	defer tick.Stop()
	for {
		select {
		case <-rg.stop:
			rg.drain(true)
			return
		case <-tick.C:
			rg.drain(false)
		}
	}
}

// drain delivers the published records in reservation order. A record
// not yet published stops it, unless final (its thread was killed in its
// pad: the record is lost).
func (rg *ring) drain(final bool) {
	for {
		if rg.drainSome(final) {
			return
		}
	}
}

// drainSome delivers records until none is ready (true) or an observer
// panicked (false: the record is skipped).
func (rg *ring) drainSome(final bool) (stopped bool) {
	defer func() {
		if recover() != nil {
			rg.tail++
			atomic.StoreUint64(rg.word(ringTailOff), rg.tail)
			stopped = false
		}
	}()
	list := rg.p.recProbes.Load()
	conv := tscNow()
	head := atomic.LoadUint64(rg.word(0))
	mask := rg.cap - 1
	// The last key's mapping: it holds for the records up to head (see
	// lookup).
	var lastKey uint64
	var last keyTid
	for rg.tail < head {
		n := rg.tail
		off := ringHdr + (n&mask)<<recShift
		if atomic.LoadUint64(rg.word(off+recOffSeq)) != n+1 {
			if !final {
				break
			}
			rg.lost.Add(1)
			rg.tail++
			continue
		}
		r := rg.mem[off : off+recSize : off+recSize]
		id := binary.LittleEndian.Uint32(r[recOffID:])
		key := binary.LittleEndian.Uint64(r[recOffKey:])
		var rec Record
		rec.Time = conv.mono(binary.LittleEndian.Uint64(r[recOffTSC:]))
		for i := range rec.Regs {
			rec.Regs[i] = binary.LittleEndian.Uint64(r[recOffRegs+8*i:])
		}
		trapped := id&recTrapBit != 0
		id &^= recTrapBit
		if list == nil || int(id) >= len(*list) {
			list = rg.p.recProbes.Load()
		}
		if list == nil || int(id) >= len(*list) {
			rg.tail++ // cannot be: no such probe
			continue
		}
		rc := (*list)[id]
		rec.Probe = rc.pr
		if trapped {
			rec.Tid = int(key)
		} else {
			if key != lastKey || n >= last.until {
				e, ok := rg.keys.lookup(key, n)
				if !ok {
					e = keyTid{tid: rg.tidOf(key, n, final)}
				}
				lastKey, last = key, e
			}
			rec.Tid = last.tid
			rc.pr.recs.Add(1)
		}
		rg.tail++
		if rg.tail&1023 == 0 {
			atomic.StoreUint64(rg.word(ringTailOff), rg.tail)
		}
		rc.obs(rec)
	}
	atomic.StoreUint64(rg.word(ringTailOff), rg.tail)
	return true
}

// tidOf returns the tid of key at record n, asking the tracer to read the
// keys of the stopped threads when it is unknown (not when final).
func (rg *ring) tidOf(key, n uint64, final bool) int {
	if tid, ok := rg.keys.tid(key, n); ok {
		return tid
	}
	if final {
		return 0
	}
	p := rg.p
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.t.call(func(fin func(error)) {
			if p.finished {
				fin(nil)
				return
			}
			p.t.needWorld(p, false, func() {
				if !p.finished && p.ring == rg {
					for _, th := range p.threads {
						if !th.zombie {
							p.seeThread(th)
						}
					}
				}
				fin(nil)
			})
		})
	}()
	select {
	case <-done:
	case <-rg.stop:
	}
	if tid, ok := rg.keys.tid(key, n); ok {
		return tid
	}
	rg.keys.set(key, 0, keyLive, n) // no thread has it: asked once
	return 0
}

// encodeRecord appends the recording part of rec's pad to b: the pad
// starts at addr, writes into rg, counts drops at ctr. stack is what the
// pad pushed before (the red zone, the flags).
func encodeRecord(b []byte, addr uint64, rg *ring, rec *recorder, ctr uint64, goKey bool, stack uint64, lay *recLayout) []byte {
	lay.pushes = uint64(len(b))
	b = append(b, 0x50, 0x51, 0x52)                  // push rax, rcx, rdx
	b = append(b, 0x48, 0xb9)                        // movabs $ring,%rcx
	b = binary.LittleEndian.AppendUint64(b, rg.base) //
	b = append(b, 0x48, 0x8b, 0x01)                  // mov (%rcx),%rax
	loop := len(b)
	b = append(b, 0x48, 0x89, 0xc2)       // mov %rax,%rdx
	b = append(b, 0x48, 0x2b, 0x51, 0x40) // sub 64(%rcx),%rdx
	b = append(b, 0x48, 0x81, 0xfa)       // cmp $cap,%rdx
	b = binary.LittleEndian.AppendUint32(b, uint32(rg.cap))
	// Signed: a head read before the consumer and other threads moved
	// the tail past it is not a full ring (the cmpxchg fails then).
	b = append(b, 0x0f, 0x8d, 0, 0, 0, 0) // jge drop
	jae := len(b)
	b = append(b, 0x48, 0x8d, 0x50, 0x01)       // lea 1(%rax),%rdx
	b = append(b, 0xf0, 0x48, 0x0f, 0xb1, 0x11) // lock cmpxchg %rdx,(%rcx)
	lay.jne = uint64(len(b))
	b = append(b, 0x75, byte(int8(loop-(len(b)+2))))
	lay.pushN = uint64(len(b))
	b = append(b, 0x50) // push %rax
	b = append(b, 0x25) // and $mask,%eax
	b = binary.LittleEndian.AppendUint32(b, uint32(rg.cap-1))
	b = append(b, 0x48, 0xc1, 0xe0, recShift)               // shl $7,%rax
	b = append(b, 0x48, 0x8d, 0x8c, 0x01, 0x00, 0x10, 0, 0) // lea 4096(%rcx,%rax),%rcx
	b = append(b, 0xc7, 0x41, recOffID)                     // movl $id,8(%rcx)
	b = binary.LittleEndian.AppendUint32(b, rec.id)
	if goKey {
		b = append(b, 0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff) // mov %fs:-8,%rax
		b = append(b, 0x48, 0x8b, 0x40, gMOffset)                           // mov 48(%rax),%rax
	} else {
		b = append(b, 0x64, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0) // mov %fs:0,%rax
	}
	b = append(b, 0x48, 0x89, 0x41, recOffKey) // mov %rax,24(%rcx)
	// On the stack now: n, rdx, rcx, rax, then what came before.
	for i, g := range rec.regs {
		disp := byte(recOffRegs + 8*i)
		switch g {
		case regs.RAX, regs.RCX, regs.RDX:
			slot := map[Reg]byte{regs.RDX: 8, regs.RCX: 16, regs.RAX: 24}[g]
			b = append(b, 0x48, 0x8b, 0x44, 0x24, slot) // mov slot(%rsp),%rax
			b = append(b, 0x48, 0x89, 0x41, disp)       // mov %rax,disp(%rcx)
		case regs.RSP:
			b = append(b, 0x48, 0x8d, 0x84, 0x24) // lea 32+stack(%rsp),%rax
			b = binary.LittleEndian.AppendUint32(b, uint32(32+stack))
			b = append(b, 0x48, 0x89, 0x41, disp)
		default:
			rex := byte(0x48)
			if g >= regs.R8 {
				rex |= 0x04
			}
			b = append(b, rex, 0x89, 0x41|byte(g&7)<<3, disp) // mov %g,disp(%rcx)
		}
	}
	b = append(b, 0x0f, 0x31)                  // rdtsc
	b = append(b, 0x48, 0xc1, 0xe2, 0x20)      // shl $32,%rdx
	b = append(b, 0x48, 0x09, 0xd0)            // or %rdx,%rax
	b = append(b, 0x48, 0x89, 0x41, recOffTSC) // mov %rax,16(%rcx)
	lay.popN = uint64(len(b))
	b = append(b, 0x58) // pop %rax
	lay.incN = uint64(len(b))
	b = append(b, 0x48, 0x8d, 0x40, 0x01) // lea 1(%rax),%rax
	lay.pub = uint64(len(b))
	b = append(b, 0x48, 0x89, 0x01) // mov %rax,(%rcx): published
	lay.jmp = uint64(len(b))
	b = append(b, 0xeb, 8) // jmp over the drop
	binary.LittleEndian.PutUint32(b[jae-4:], uint32(len(b)-jae))
	lay.drop = uint64(len(b))
	b = append(b, 0xf0, 0x48, 0xff, 0x05, 0, 0, 0, 0) // lock incq ctr(%rip)
	binary.LittleEndian.PutUint32(b[len(b)-4:], uint32(int32(int64(ctr)-int64(addr+uint64(len(b))))))
	lay.pops = uint64(len(b))
	b = append(b, 0x5a, 0x59, 0x58) // pop rdx, rcx, rax
	return b
}

// recLayout holds the offsets, in a recording pad, of the points where
// what the thread has done is known (see undoRecord).
type recLayout struct {
	pushes uint64 // push rax, rcx, rdx: one byte each
	jne    uint64 // the jne after the cmpxchg: reserved when ZF is set
	pushN  uint64 // push %rax: n in rax
	popN   uint64 // pop %rax: n on the stack
	incN   uint64 // lea 1(%rax),%rax: n in rax
	pub    uint64 // the store that publishes: n+1 in rax
	jmp    uint64 // the jmp after it: published
	drop   uint64 // lock incq of the drop counter
	pops   uint64 // pop rdx, rcx, rax, then popfq (and the lea in C)
}

// undoRecord moves th (registers in th.pregs), stopped in the recording
// part of s's pad, out of it with no instruction run: before its
// reservation (or at a drop not yet counted), back to the original
// instruction, its hit to be made again (padOrig); after it, the record
// is completed and published by the tracer, and the thread goes to the
// copy (padCopy), its registers, flags and stack its own.
func (p *Process) undoRecord(th *thread, s *site) (padPlace, bool) {
	pd, r := s.pad, &th.pregs
	lay := &pd.lay
	off := r.Rip - pd.addr
	word := func(k uint64) (uint64, bool) {
		v, err := p.mem.ReadUint(r.Rsp+8*k, 8)
		return v, err == nil
	}
	// restore pops what the pad pushed: k of rax, rcx, rdx (n above them
	// when withN), then the flags and the red zone.
	restore := func(k uint64, withN bool) bool {
		if withN {
			r.Rsp += 8
		}
		dst := []*uint64{&r.Rax, &r.Rcx, &r.Rdx}[:k]
		for i := range dst {
			v, ok := word(uint64(len(dst) - 1 - i))
			if !ok {
				return false
			}
			*dst[i] = v
		}
		fl, ok := word(k)
		if !ok {
			return false
		}
		r.Eflags = fl
		r.Rsp += 8*k + 8 + pd.red
		return true
	}
	complete := func(n uint64, withN bool) (padPlace, bool) {
		if !restore(3, withN) {
			return 0, false
		}
		p.publish(th, pd, n)
		return padCopy, true
	}
	const zf = 1 << 6
	switch {
	case off >= lay.pushes && off <= lay.pushes+3:
		return padOrig, restore(off-lay.pushes, false)
	case off == lay.jne && r.Eflags&zf != 0:
		return complete(r.Rax, false)
	case off > lay.pushes+3 && off <= lay.jne:
		return padOrig, restore(3, false)
	case off == lay.pushN:
		return complete(r.Rax, false)
	case off > lay.pushN && off <= lay.popN:
		n, ok := word(0)
		if !ok {
			return 0, false
		}
		return complete(n, true)
	case off == lay.incN:
		return complete(r.Rax, false)
	case off == lay.pub:
		return complete(r.Rax-1, false)
	case off == lay.jmp:
		return padCopy, restore(3, false)
	case off == lay.drop:
		return padOrig, restore(3, false)
	case off >= lay.pops && off <= lay.pops+3:
		return padCopy, restore(3-(off-lay.pops), false)
	case off == lay.pops+4 && pd.red != 0:
		r.Rsp += pd.red
		return padCopy, true
	}
	return 0, false
}

// publish writes th's record n of pd's probe, th's registers in th.pregs
// as they are at the probe, into the ring, for a thread undoRecord took
// out of the pad after its reservation. It is written as a trap's: the
// key is th's tid, which the tracer knows even where the thread's own key
// cannot be read (see padOwnFault), and the hit is counted here.
func (p *Process) publish(th *thread, pd *pad, n uint64) {
	rg := pd.ring
	if p.ring != rg {
		return // the consumer is gone
	}
	var rr regs.Regs
	rr.LoadPtrace(&th.pregs)
	var vals [MaxRecordRegs]uint64
	for i, g := range pd.rec.regs {
		vals[i] = rr.GPR[g]
	}
	if pr := pd.rec.pr; pr != nil {
		pr.hits.Add(1)
	}
	off := ringHdr + (n&(rg.cap-1))<<recShift
	rec := rg.mem[off : off+recSize]
	binary.LittleEndian.PutUint32(rec[recOffID:], pd.rec.id|recTrapBit)
	binary.LittleEndian.PutUint64(rec[recOffKey:], uint64(th.tid))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(rec[recOffRegs+8*i:], v)
	}
	binary.LittleEndian.PutUint64(rec[recOffTSC:], rdtsc())
	atomic.StoreUint64(rg.word(off+recOffSeq), n+1)
}
