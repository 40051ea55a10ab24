package ptrace

import (
	"github.com/onetrap/onetrap/internal/ptsys"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// detach restores p as if never traced and lets it go, once every thread
// sharing its memory is still (listening ones included), and then calls
// done. Called from a handler, it completes when the handler's thread is
// the last one running, at once in a single-threaded process.
func (t *Tracer) detach(p *Process, done func(error)) {
	if p.finished {
		done(nil)
		return
	}
	t.needWorld(p, true, func() {
		if p.finished {
			done(nil)
			return
		}
		done(t.detachNow(p))
	})
}

// detachNow is the detach itself, every thread still.
func (t *Tracer) detachNow(p *Process) error {
	t.settleReports(p)
	if p.finished {
		return nil
	}
	t.collectTraps(p)
	t.leaveSlots(p)
	t.restoreText(p)
	var err error
	if p.xol != nil {
		err = t.unmapXOL(p)
	}
	t.passKeptSignals(p)
	exit, derr := t.detachThreads(p)
	if err == nil {
		err = derr
	}
	if exit != nil {
		// The process ended before it could be let go: say how.
		err = nil
	}
	p.end(exit, nil)
	return err
}

// settleReports deals with the reports the world stop kept: an INT3 hit
// is undone (the thread goes back to the probed instruction), a signal is
// passed on at detach, a new thread or child is let go too, an exec
// leaves nothing of the old image to restore.
func (t *Tracer) settleReports(p *Process) {
	for _, th := range p.threads {
		if th.sig != 0 {
			th.passSig, th.sig = th.sig, 0
		}
		if !th.pending {
			continue
		}
		th.pending, th.queued = false, false
		ws := th.ws
		switch ev := ptsys.Event(ws); {
		case ev == 0 && ws.StopSignal() == unix.SIGTRAP:
			if ptsys.GetRegs(th.tid, &th.pregs) == 0 && ptsys.GetSiginfo(th.tid, &th.si) == 0 && th.si.Code() == ptsys.SIKernel &&
				(p.sites[th.pregs.Rip-1] != nil || p.removed[th.pregs.Rip-1]) {
				th.pregs.Rip--
				ptsys.SetRegs(th.tid, &th.pregs)
			} else {
				th.passSig = int(unix.SIGTRAP)
			}
		case ev == 0:
			th.passSig = int(ws.StopSignal())
		case ev == unix.PTRACE_EVENT_CLONE:
			if m, e := ptsys.EventMsg(th.tid); e == 0 {
				t.letGo(int(m))
			}
		case ev == unix.PTRACE_EVENT_FORK || ev == unix.PTRACE_EVENT_VFORK:
			if m, e := ptsys.EventMsg(th.tid); e == 0 {
				if sharesMemory(th.tgid, int(m)) {
					t.letGo(int(m))
				} else {
					t.forked(th, int(m))
				}
			}
		}
	}
}

// letGo detaches a new thread or child at its first stop: now if it came,
// else when it comes (see leave).
func (t *Tracer) letGo(tid int) {
	if _, ok := t.orphans[tid]; ok {
		delete(t.orphans, tid)
		unix.PtraceDetach(tid)
		return
	}
	t.threads[tid] = &thread{tid: tid, state: leaving, p: &Process{threads: map[int]*thread{}}}
	t.armRecheck()
}

// collectTraps deals with threads that the interrupt caught after they ran
// an INT3 but before its SIGTRAP was reported (the interrupt is reported
// first): once detached they would get that SIGTRAP, fatal, at an address
// whose INT3 is gone. When a SIGTRAP is pending and rip is one past a
// probe, the thread is let go as far as reporting it (at once: it is
// pending), and that report settled as if the world stop had kept it.
func (t *Tracer) collectTraps(p *Process) {
	for _, th := range p.threads {
		if th.state != held || th.zombie {
			continue
		}
		if ptsys.GetRegs(th.tid, &th.pregs) != 0 || (p.sites[th.pregs.Rip-1] == nil && !p.removed[th.pregs.Rip-1]) {
			continue
		}
		if !sigPending(th.tgid, th.tid, unix.SIGTRAP) || ptsys.Cont(th.tid, 0) != 0 {
			continue
		}
		if t.waitOne(th.tid, &th.ws) && th.ws.Stopped() {
			th.pending = true
		}
	}
	t.settleReports(p)
}

// sigPending says whether sig is pending for thread tid (in its own set;
// a SIGTRAP an int3 raises is sent to the thread).
func sigPending(pid, tid int, sig unix.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigPnd:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && m&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// leaveSlots moves every thread out of the XOL areas before they go: one
// inside a boosted slot goes back to the same point of the original code
// (the instruction, or the one after it); one at a hit whose handler
// detached, or waiting to step in place, goes back to the probed
// instruction with what its handler changed.
func (t *Tracer) leaveSlots(p *Process) {
	t.leavePads(p, nil)
	for _, th := range p.threads {
		if th.state == parked && th.parked {
			// A debugger's: what it left in its registers.
			th.r.StorePtrace(&th.pregs)
			ptsys.SetRegs(th.tid, &th.pregs)
			th.hit = 0
			continue
		}
		if th.state == serving && th.hit != 0 {
			th.r.RIP = th.hit
			th.r.StorePtrace(&th.pregs)
			ptsys.SetRegs(th.tid, &th.pregs)
			th.hit = 0
			continue
		}
		if !p.xol.boosting() || th.state != held || th.zombie || ptsys.GetRegs(th.tid, &th.pregs) != 0 {
			continue
		}
		if s, off, ok := p.xol.siteOfSlot(th.pregs.Rip); ok {
			th.pregs.Rip = s.addr + off
			ptsys.SetRegs(th.tid, &th.pregs)
			t.slotExits++
		}
	}
}

// restoreText puts every probed byte back (in the memory p's guests share
// too).
func (t *Tracer) restoreText(p *Process) {
	for _, s := range p.sites {
		p.mem.ForceWriteAt(s.origBytes(), int64(s.addr))
		for _, pr := range s.probes {
			pr.s = nil
		}
	}
}

// passKeptSignals hands the signals kept while threads were stepped to the
// detach: a thread is in a signal-delivery-stop, where PTRACE_DETACH
// delivers a signal with the siginfo set; more than one are queued again
// after (see release).
func (t *Tracer) passKeptSignals(p *Process) {
	for _, th := range p.threads {
		if th.nkept == 0 || th.passSig != 0 {
			continue
		}
		if ptsys.SetSiginfo(th.tid, &th.kept[0]) == 0 {
			th.passSig = int(th.kept[0].Signo())
			copy(th.kept[:], th.kept[1:th.nkept])
			th.nkept--
		}
	}
}

// detachThreads lets every thread go, the leader last (once it has exited,
// it can be reaped only after every other thread). A vfork parent, which
// cannot be detached until its child lets it go, is left to leave. It
// returns how the process ended if it did meanwhile.
func (t *Tracer) detachThreads(p *Process) (*Exit, error) {
	// The leader first: once it is let go, the process's end is its
	// parent's to wait for, even if the program ends before the other
	// threads are detached (the tracer would reap it otherwise). A leader
	// that exited alone goes last: it can be reaped only after every
	// other thread.
	order := make([]*thread, 0, len(p.threads))
	leader := p.threads[p.pid]
	if leader != nil && !leader.zombie && !t.zombie(leader.tid) {
		order = append(order, leader)
		leader = nil
	}
	for _, th := range p.threads {
		if th.tid != p.pid {
			order = append(order, th)
		}
	}
	if leader != nil {
		order = append(order, leader)
	}
	var exit *Exit
	var err error
	for _, th := range order {
		tid := th.tid
		if th.state == vforking {
			th.state = leaving
			t.armRecheck()
			continue
		}
		if th.passSig != 0 {
			t.sigsAtDetach++
		}
		e := ptsys.Raw(unix.PTRACE_DETACH, tid, 0, uintptr(th.passSig))
		if e == unix.ESRCH {
			// A thread detached before let the process exit: this one is
			// dying (PTRACE_DETACH refuses a thread with SIGKILL pending)
			// and, still traced, would stay a zombie nobody reaps.
			var ws unix.WaitStatus
			var reaped bool
			e, reaped = t.reapOrDetach(tid, th.passSig, &ws)
			if reaped && tid == p.pid && !th.guest {
				exit = exitOf(ws)
			}
		}
		if e != 0 && e != unix.ESRCH && err == nil {
			err = errno("detach", tid, e)
		}
		for i := 0; i < th.nkept; i++ {
			requeue(th.tgid, tid, &th.kept[i])
		}
		th.nkept = 0
	}
	return exit, err
}

// reapOrDetach waits, briefly, for a thread PTRACE_DETACH refused: it
// reaps it if it ends (reaped, with its status in ws), and detaches it if
// it stops. Reports of other threads that come meanwhile are queued. A
// zombie leader is waited for only as long as its process has other
// threads that are ending.
func (t *Tracer) reapOrDetach(tid int, sig int, ws *unix.WaitStatus) (e unix.Errno, reaped bool) {
	for i := 0; i < 1000; i++ {
		r, e := ptsys.Wait4(tid, ws, ptsys.WALL|unix.WNOHANG)
		switch {
		case e != 0:
			return 0, false // already reaped: nothing is left attached
		case r == tid && (ws.Exited() || ws.Signaled()):
			return 0, true
		case r == tid && ws.Stopped():
			if e := ptsys.Raw(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); e != unix.ESRCH {
				return e, false
			}
		case i >= 20 && t.zombie(tid):
			// A leader that exited alone, its threads (detached) still
			// running: it stays attached, and is let go with the
			// tracer thread.
			return unix.ESRCH, false
		}
		time.Sleep(time.Millisecond)
	}
	return unix.ESRCH, false
}
