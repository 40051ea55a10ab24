package ptrace

import (
	"bytes"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/internal/ptsys"
)

// inject makes th, stopped at a hit, an interrupt or a signal, execute one
// system call: its registers are pointed at a syscall instruction the
// process already has (see findSyscall; nothing in its text is written,
// so no other thread need be stopped), it is stepped, and its registers
// and siginfo are put back. It returns the raw result. The step is waited
// for here, the one wait for a single thread the tracer makes: a thread
// running mmap or munmap does not block, and reports of other threads
// that come meanwhile are queued for the loop.
func (t *Tracer) inject(th *thread, nr uint64, args ...uint64) (uint64, error) {
	p, tid := th.p, th.tid
	if (th.state == serving || th.state == parked) && th.hit != 0 && !t.stillStopped(th) {
		return 0, fmt.Errorf("ptrace: thread %d of process %d was replaced by an execve", tid, p.pid)
	}
	if p.sysAt == 0 {
		at, err := findSyscall(p)
		if err != nil {
			return 0, err
		}
		p.sysAt = at
	}
	var saved, rr unix.PtraceRegs
	var si ptsys.Siginfo
	if e := ptsys.GetRegs(tid, &saved); e != 0 {
		return 0, errno("get registers of", tid, e)
	}
	haveSi := ptsys.GetSiginfo(tid, &si) == 0
	rr = saved
	rr.Rip = p.sysAt
	// orig_rax -1 keeps the kernel from restarting a system call the thread
	// was interrupted in while it runs ours; restoring saved restores that.
	rr.Orig_rax = ^uint64(0)
	rr.Rax = nr
	a := [6]uint64{}
	copy(a[:], args)
	rr.Rdi, rr.Rsi, rr.Rdx, rr.R10, rr.R8, rr.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if e := ptsys.SetRegs(tid, &rr); e != 0 {
		return 0, errno("set registers of", tid, e)
	}
	ret, err := t.injectStep(th, &rr)
	if err != nil {
		return 0, err
	}
	// Now in the step's signal-delivery-stop, whatever stop it was in.
	th.stopEv = 0

	if e := ptsys.SetRegs(tid, &saved); e != 0 {
		return 0, errno("restore registers of", tid, e)
	}
	if haveSi {
		ptsys.SetSiginfo(tid, &si)
	}
	return ret, nil
}

// injectStep steps th through the injected syscall instruction and
// returns rax after it.
func (t *Tracer) injectStep(th *thread, rr *unix.PtraceRegs) (uint64, error) {
	tid := th.tid
	for {
		if ptsys.SingleStep(tid, 0) != 0 || !t.waitOne(tid, &t.ws) {
			return 0, fmt.Errorf("ptrace: thread %d ended during an injected system call", tid)
		}
		ws := t.ws
		if ws.Exited() || ws.Signaled() {
			t.gone(th, ws)
			return 0, fmt.Errorf("ptrace: thread %d ended during an injected system call", tid)
		}
		if !ws.Stopped() || ptsys.Event(ws) != 0 {
			if ptsys.Event(ws) == unix.PTRACE_EVENT_EXEC {
				t.queue = append(t.queue, report{tid, ws})
				return 0, fmt.Errorf("ptrace: thread %d was replaced by an execve during an injected system call", tid)
			}
			th.groupStop = th.groupStop || ptsys.Event(ws) == unix.PTRACE_EVENT_STOP && isStopSignal(ws.StopSignal())
			continue // an interrupt or a group-stop: step again
		}
		if ptsys.GetSiginfo(tid, &th.si) != 0 {
			return 0, fmt.Errorf("ptrace: thread %d ended during an injected system call", tid)
		}
		if ws.StopSignal() == unix.SIGTRAP && th.si.Code() > 0 {
			if ptsys.GetRegs(tid, rr) != 0 {
				return 0, fmt.Errorf("ptrace: thread %d ended during an injected system call", tid)
			}
			if rr.Rip != th.p.sysAt {
				return rr.Rax, nil
			}
			continue
		}
		if th.si.Code() > 0 && ws.StopSignal() != unix.SIGTRAP {
			return 0, fmt.Errorf("ptrace: an injected system call faulted in thread %d (signal %v)", tid, ws.StopSignal())
		}
		th.keep(&th.si)
	}
}

// waitOne waits for the next report of tid, which the tracer has let go
// for one instruction (an injected system call, the way out of execve):
// reports of other threads that come meanwhile are queued for the loop.
// It reports false when tid can no longer report: its process is gone,
// or an execve replaced it (that report is queued).
func (t *Tracer) waitOne(tid int, ws *unix.WaitStatus) bool {
	th := t.threads[tid]
	for {
		r, e := ptsys.Wait4(-1, ws, ptsys.WALL|ptsys.WNOTHREAD)
		if e != 0 {
			return false
		}
		switch {
		case r == tid:
			return true
		case r == t.sentinel:
			t.sentinelReport(*ws)
			continue
		}
		t.queue = append(t.queue, report{r, *ws})
		if th != nil && r == th.tgid && ws.Stopped() && ptsys.Event(*ws) == unix.PTRACE_EVENT_EXEC {
			// An execve under the leader's tid: every other thread has
			// ended by now, this one too.
			return false
		}
	}
}

// findSyscall returns the address of a syscall instruction's bytes (0f 05)
// in an executable mapping of p, the vDSO first: an injected system call
// is run there, so that no byte of the program need be written and no
// other thread stopped. (The bytes need not start an instruction of the
// code around them: the CPU decodes from where rip points.)
func findSyscall(p *Process) (uint64, error) {
	ms, err := Maps(p.pid)
	if err != nil {
		return 0, err
	}
	var order []Mapping
	for _, m := range ms {
		if strings.Contains(m.Perms, "x") && m.Path == "[vdso]" {
			order = append(order, m)
		}
	}
	for _, m := range ms {
		if strings.Contains(m.Perms, "x") && m.Path != "[vdso]" && m.Path != "[vsyscall]" && !p.xol.contains(m.Start) {
			order = append(order, m)
		}
	}
	buf := make([]byte, 64<<10)
	for _, m := range order {
		for a := m.Start; a < m.End; a += uint64(len(buf)) - 1 {
			n := min(uint64(len(buf)), m.End-a)
			k, _ := p.mem.ForceReadAt(buf[:n], int64(a))
			if i := bytes.Index(buf[:k], []byte{0x0f, 0x05}); i >= 0 {
				if p.sites[a+uint64(i)] == nil && p.sites[a+uint64(i)-1] == nil {
					return a + uint64(i), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("ptrace: process %d has no syscall instruction to run an injected system call from", p.pid)
}

// injector returns a thread of p that can run an injected system call
// now: stopped at a hit, an interrupt or a signal (a thread stopped at a
// clone, fork or exec event is inside that system call, whose return
// would overwrite the registers).
func injector(p *Process) *thread {
	var guest *thread
	for _, th := range p.threads {
		if th.zombie || !th.injectable() {
			continue
		}
		if th.guest {
			// It shares the memory: a last resort (a vfork parent's
			// child, when the parent is all there is).
			guest = th
			continue
		}
		return th
	}
	return guest
}

// injectable says whether th can run an injected system call now: stopped
// by the tracer at a hit, an interrupt or a signal, not inside a system
// call's event stop.
func (th *thread) injectable() bool {
	switch th.state {
	case serving, parked, held:
		return th.stopEv == 0 || th.stopEv == unix.PTRACE_EVENT_STOP
	}
	return false
}

// ensureXOL returns an XOL area with a free slot for in, mapping one when
// none suits (see suits): the first area when the process has none,
// another near in when boost needs one within reach (if the kernel puts
// it elsewhere, it serves for stepped copies all the same), another when
// the areas are full. The mmap is injected into th, a stopped thread of
// p (see injector).
func (t *Tracer) ensureXOL(p *Process, th *thread, at uint64, in *decode.Insn, boost bool) (*xolArea, error) {
	last, n := p.xol, 0
	for x := p.xol; x != nil; x = x.also {
		if x.suits(in, boost) {
			return x, nil
		}
		last = x
		n++
	}
	if boost {
		// An area with room already near in is as near as a new one
		// would be (its rip-relative target is what is out of reach), and
		// past maxAreas (the kernel not taking the hints) any area with
		// room will do: the caller falls back to a stepped copy.
		for x := p.xol; x != nil; x = x.also {
			if x.suits(in, false) && (near(x, at) || n >= maxAreas) {
				return x, nil
			}
		}
	}
	if th == nil {
		return nil, fmt.Errorf("ptrace: no thread of process %d is stopped to map an XOL area from", p.pid)
	}
	var hint uint64
	if ms, err := Maps(p.pid); err == nil {
		hint = xolHint(ms, at)
	}
	// A hint, not MAP_FIXED: the kernel takes it when the range is free and
	// else puts the area anywhere (slots out of reach are then stepped).
	ret, err := t.inject(th, unix.SYS_MMAP, hint, xolSize, unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return nil, err
	}
	if int64(ret) < 0 && int64(ret) > -4096 {
		return nil, fmt.Errorf("ptrace: mapping an XOL area in process %d: %w", p.pid, unix.Errno(-int64(ret)))
	}
	x := &xolArea{base: ret}
	if last == nil {
		p.xol = x
	} else {
		last.also = x
	}
	return x, nil
}

// needsArea says whether placing in with boost would map a new XOL area.
func (p *Process) needsArea(in *decode.Insn, at uint64, boost bool) bool {
	n := 0
	for x := p.xol; x != nil; x = x.also {
		if x.suits(in, boost) {
			return false
		}
		n++
	}
	if boost {
		for x := p.xol; x != nil; x = x.also {
			if x.suits(in, false) && (near(x, at) || n >= maxAreas) {
				return false
			}
		}
	}
	return true
}

// unmapXOL removes the areas at detach, injecting munmap into a stopped
// thread that has no signal to pass on (stepping it would consume it).
func (t *Tracer) unmapXOL(p *Process) error {
	var th *thread
	for _, o := range p.threads {
		if o.injectable() && !o.guest && !o.zombie && !o.pending && o.passSig == 0 {
			th = o
			break
		}
	}
	if th == nil {
		return fmt.Errorf("ptrace: no thread of process %d is free to unmap the XOL area at %#x", p.pid, p.xol.base)
	}
	for x := p.xol; x != nil; x = x.also {
		ret, err := t.inject(th, unix.SYS_MUNMAP, x.base, xolSize)
		if err != nil {
			return err
		}
		if ret != 0 {
			return fmt.Errorf("ptrace: unmapping the XOL area at %#x of process %d: %w", x.base, p.pid, unix.Errno(-int64(ret)))
		}
	}
	p.xol = nil
	for _, s := range p.pads {
		s.pad.count.finish(true) // the last reading: no thread runs
	}
	if err := t.unmapRing(p, th); err != nil {
		return err
	}
	return t.unmapCounters(p, th)
}
