package ptrace

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/onetrap/onetrap/internal/ptsys"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by calls on a Tracer that has been closed.
var ErrClosed = errors.New("ptrace: tracer closed")

// A Tracer owns one locked OS thread from which every ptrace call is made:
// Linux ties a tracee to the thread that attached it. Processes started or
// attached through one Tracer are served by that thread, hits included, one
// event at a time. Calls from other goroutines are handed to it.
type Tracer struct {
	hand    *ptsys.Thread // the locked thread and the hand-off to it
	closing bool
	owned   bool // created by the package-level Start or Attach: closes with its process

	// wake is the sentinel's pidfd (see stub.go), replaced with the
	// sentinel when it dies; kick signals through it, never by pid.
	wake struct {
		sync.Mutex
		fd int
	}
	recheck    *time.Timer
	recheckDue atomic.Bool

	// Everything below is touched only on the tracer thread.
	sentinel     int // its pid
	sentinelPath string
	procs        map[int]*Process // by pid
	threads      map[int]*thread  // by tid, every process
	orphans      map[int]unix.WaitStatus
	newborns     map[int]*newborn // fork children awaiting their first stop
	// queue holds reports to handle before waiting again: reports kept by
	// a world stop, and reports that came while one thread was waited for
	// (an injected system call). Preallocated: the hit path allocates
	// nothing.
	queue []report

	ws  unix.WaitStatus
	one [1]byte
	// Scratch for zombie: a path and the start of /proc/TID/stat.
	statPath [40]byte
	statBuf  [256]byte

	slotExits  int // threads moved out of boosted slots at detach, for tests
	padEntries int // threads moved into pads as their jump was written, for tests
	// later holds work to run once the reports queued now are dispatched.
	later        []func()
	sigsAtDetach int // signals passed on by PTRACE_DETACH, for tests

	closeOnce sync.Once
}

// report is a wait4 report kept for later.
type report struct {
	tid int
	ws  unix.WaitStatus
}

// NewTracer starts a tracer thread. Close it when done.
func NewTracer() (*Tracer, error) {
	sentinel, _, err := stubPaths()
	if err != nil {
		return nil, err
	}
	t := &Tracer{
		sentinelPath: sentinel,
		procs:        map[int]*Process{},
		threads:      map[int]*thread{},
		orphans:      map[int]unix.WaitStatus{},
		newborns:     map[int]*newborn{},
		queue:        make([]report, 0, 64),
	}
	t.wake.fd = -1
	t.hand = ptsys.NewThread(t.kick, ErrClosed)
	ready := make(chan error, 1)
	go t.loop(ready, 0)
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// loop is the tracer thread: it never unlocks, so when it returns the OS
// thread exits with it and no tracee stays attached to a pooled thread. It
// waits for one thing only: the next report of any child. Everything that
// takes longer than one report (a step, a world stop, a vfork) is a state
// that a later report moves on.
func (t *Tracer) loop(ready chan<- error, try int) {
	t.hand.Lock()
	if try < 16 && (hasChildren(t.hand.Tid()) || t.hand.Tid() == os.Getpid()) {
		// The loop's wait4 would reap this thread's children, started
		// before it became the tracer's (cmd.Start elsewhere in the
		// program): their owner's Wait would find nothing. And the
		// thread must end with the tracer (the kernel then lets go of
		// anything still traced), which the main thread never does.
		// Returning locked ends the thread (its children go to
		// another), or parks the main thread for good.
		go t.loop(ready, try+1)
		return
	}
	if err := t.startSentinel(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	defer t.hand.Close()
	for {
		t.hand.Drain()
		if t.recheckDue.Swap(false) {
			t.recheckWorlds()
		}
		if t.closing && len(t.procs) == 0 {
			t.stopSentinel()
			return
		}
		if len(t.queue) > 0 {
			r := t.queue[0]
			copy(t.queue, t.queue[1:])
			t.queue = t.queue[:len(t.queue)-1]
			t.event(r.tid, r.ws)
			continue
		}
		if len(t.later) > 0 {
			f := t.later[0]
			t.later = t.later[1:]
			f()
			continue
		}
		pid, e := ptsys.Wait4(-1, &t.ws, ptsys.WALL|ptsys.WNOTHREAD)
		if e != 0 {
			// No child at all: the sentinel was killed and reaped, and
			// no tracee is left. Another one keeps the wake-up working.
			if err := t.startSentinel(); err != nil {
				t.fail(err)
				return
			}
			continue
		}
		if pid == t.sentinel {
			t.sentinelReport(t.ws)
			continue
		}
		t.event(pid, t.ws)
	}
}

// hasChildren says whether thread tid has child processes.
func hasChildren(tid int) bool {
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/children")
	return err == nil && len(bytes.TrimSpace(b)) > 0
}

// fail ends every process's Run with err and the tracer with them.
func (t *Tracer) fail(err error) {
	for _, p := range t.procs {
		p.end(nil, err)
	}
	t.closing = true
	t.hand.Drain()
}

// startSentinel starts a sentinel and publishes its pidfd for kick.
func (t *Tracer) startSentinel() error {
	cmd := exec.Command(t.sentinelPath)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("ptrace: starting the sentinel: %w", err)
	}
	pid := cmd.Process.Pid
	// Not reaped before the pidfd is open: the pid cannot be recycled.
	fd, err := unix.PidfdOpen(pid, 0)
	if err == nil {
		err = unix.PtraceSeize(pid)
	}
	if err != nil {
		cmd.Process.Kill()
		ptsys.Wait4(pid, &t.ws, ptsys.WALL)
		if fd >= 0 {
			unix.Close(fd)
		}
		return fmt.Errorf("ptrace: starting the sentinel: %w", err)
	}
	unix.PtraceSetOptions(pid, unix.PTRACE_O_EXITKILL)
	t.sentinel = pid
	t.wake.Lock()
	old := t.wake.fd
	t.wake.fd = fd
	t.wake.Unlock()
	if old >= 0 {
		unix.Close(old)
	}
	return nil
}

// sentinelReport swallows a report of the sentinel: a kick, or its end
// (a tracee may kill it), which gets it replaced.
func (t *Tracer) sentinelReport(ws unix.WaitStatus) {
	if ws.Stopped() {
		ptsys.Cont(t.sentinel, 0)
		return
	}
	if ws.Exited() || ws.Signaled() {
		t.sentinel = 0
		if err := t.startSentinel(); err != nil {
			t.fail(err)
		}
	}
}

// stopSentinel ends the sentinel as the tracer ends.
func (t *Tracer) stopSentinel() {
	t.wake.Lock()
	fd := t.wake.fd
	t.wake.fd = -1
	t.wake.Unlock()
	if fd >= 0 {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		unix.Close(fd)
	}
	if t.recheck != nil {
		t.recheck.Stop()
	}
	for t.sentinel != 0 {
		pid, e := ptsys.Wait4(t.sentinel, &t.ws, ptsys.WALL)
		if e != 0 || (pid == t.sentinel && (t.ws.Exited() || t.ws.Signaled())) {
			break
		}
	}
}

// do runs f on the tracer thread and waits for it: inline when called from
// that thread (from a handler, say), else handed over with a wake-up.
func (t *Tracer) do(f func() error) error { return t.hand.Do(f) }

// call runs f on the tracer thread and waits until f, or the event loop
// later (once a world stop is held, say), calls done. Called on the tracer
// thread (from a handler), it returns when f does: with done's error if
// done came by then, else nil while the work completes after the handler.
func (t *Tracer) call(f func(done func(error))) error { return t.hand.Call(f) }

// kick wakes the tracer thread out of wait4 by signalling the sentinel. A
// kick that finds the sentinel dead is not lost: its end wakes the loop,
// which starts another before it looks at the requests again.
func (t *Tracer) kick() {
	t.wake.Lock()
	if t.wake.fd >= 0 {
		unix.PidfdSendSignal(t.wake.fd, unix.SIGURG, nil, 0)
	}
	t.wake.Unlock()
}

// Close detaches every process still traced (leaving them running) and ends
// the tracer thread.
func (t *Tracer) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.call(func(done func(error)) {
			t.closing = true
			n := len(t.procs)
			if n == 0 {
				done(nil)
				return
			}
			var errs []error
			for _, p := range t.procs {
				t.detach(p, func(e error) {
					errs = append(errs, e)
					if n--; n == 0 {
						done(errors.Join(errs...))
					}
				})
			}
		})
		if errors.Is(err, ErrClosed) {
			err = nil
		}
		<-t.hand.Done()
	})
	return err
}

// Start runs cmd under a new Tracer that closes when the process ends or is
// detached. See Tracer.Start.
func Start(cmd *exec.Cmd, opts ...Option) (*Process, error) {
	t, err := NewTracer()
	if err != nil {
		return nil, err
	}
	t.owned = true
	p, err := t.Start(cmd, opts...)
	if err != nil {
		t.Close()
		return nil, err
	}
	return p, nil
}

// Attach seizes process pid under a new Tracer that closes when the process
// ends or is detached. See Tracer.Attach.
func Attach(pid int, opts ...Option) (*Process, error) {
	t, err := NewTracer()
	if err != nil {
		return nil, err
	}
	t.owned = true
	p, err := t.Attach(pid, opts...)
	if err != nil {
		t.Close()
		return nil, err
	}
	return p, nil
}

// forget drops a process that exited or was detached, and ends an owned
// tracer with its last process.
func (t *Tracer) forget(p *Process) {
	delete(t.procs, p.pid)
	for tid, th := range t.threads {
		if th.p == p && th.state != leaving {
			delete(t.threads, tid)
		}
	}
	if t.owned && len(t.procs) == 0 {
		t.closing = true
	}
}

func errno(op string, tid int, e unix.Errno) error {
	if e == unix.ESRCH {
		return fmt.Errorf("ptrace: %s thread %d: %w", op, tid, os.ErrProcessDone)
	}
	return fmt.Errorf("ptrace: %s thread %d: %w", op, tid, e)
}
