package ptrace

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/regs"
)

// ErrClosed is returned by calls on a Tracer that has been closed.
var ErrClosed = errors.New("ptrace: tracer closed")

// A Tracer owns one locked OS thread from which every ptrace call is made:
// Linux ties a tracee to the thread that attached it. Processes started or
// attached through one Tracer are served by that thread, hits included, one
// event at a time. Calls from other goroutines are handed to it.
type Tracer struct {
	reqs     chan func()
	tid      int // the locked thread
	sentinel int // see stub.go
	done     chan struct{}
	closing  bool
	owned    bool // created by the package-level Start or Attach: closes with its process

	// Everything below is touched only on the tracer thread.
	procs   map[int]*Process // by pid
	threads map[int]*thread  // by tid, every process
	orphans map[int]unix.WaitStatus

	// Scratch for the hit path: preallocated so that a hit allocates nothing.
	ws    unix.WaitStatus
	pregs unix.PtraceRegs
	orig  unix.PtraceRegs // a hit's registers as the stop left them
	r     regs.Regs
	si    siginfo
	one   [1]byte
	spare [][]*thread // thread lists for stopWorld

	// Reports wait4 returned while the tracer waited for one thread in
	// particular (see waitFor), not yet handled: the main loop takes them
	// before waiting again. Preallocated, so that the hit path allocates
	// nothing.
	stash []report
	// Scratch for zombie: a path and the start of /proc/TID/stat.
	statPath [40]byte
	statBuf  [256]byte

	slotExits    int // threads moved out of boosted slots at detach, for tests
	sigsAtDetach int // signals passed on by PTRACE_DETACH, for tests

	closeOnce sync.Once
}

// NewTracer starts a tracer thread. Close it when done.
func NewTracer() (*Tracer, error) {
	sentinel, _, err := stubPaths()
	if err != nil {
		return nil, err
	}
	t := &Tracer{
		reqs:    make(chan func(), 16),
		done:    make(chan struct{}),
		procs:   map[int]*Process{},
		threads: map[int]*thread{},
		orphans: map[int]unix.WaitStatus{},
		stash:   make([]report, 0, 64),
	}
	ready := make(chan error, 1)
	go t.loop(sentinel, ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// loop is the tracer thread: it never unlocks, so when it returns the OS
// thread exits with it and no tracee stays attached to a pooled thread.
func (t *Tracer) loop(sentinel string, ready chan<- error) {
	runtime.LockOSThread()
	t.tid = unix.Gettid()
	cmd := exec.Command(sentinel)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		ready <- fmt.Errorf("ptrace: starting the sentinel: %w", err)
		return
	}
	t.sentinel = cmd.Process.Pid
	if err := unix.PtraceSeize(t.sentinel); err != nil {
		cmd.Process.Kill()
		wait4(t.sentinel, &t.ws, wall)
		ready <- fmt.Errorf("ptrace: seizing the sentinel: %w", err)
		return
	}
	unix.PtraceSetOptions(t.sentinel, unix.PTRACE_O_EXITKILL)
	ready <- nil
	defer close(t.done)
	for {
		t.drain()
		if t.closing && len(t.procs) == 0 {
			unix.Kill(t.sentinel, unix.SIGKILL)
			for {
				pid, e := wait4(t.sentinel, &t.ws, wall)
				if e != 0 || (pid == t.sentinel && (t.ws.Exited() || t.ws.Signaled())) {
					break
				}
			}
			return
		}
		if len(t.stash) > 0 {
			r := t.stash[0]
			t.stash = append(t.stash[:0], t.stash[1:]...)
			t.event(r.tid, r.ws)
			continue
		}
		pid, e := wait4(-1, &t.ws, wall|wnothread)
		if e != 0 {
			// ECHILD cannot happen while the sentinel lives (someone
			// killed it): end every process's Run with the error rather
			// than spin or hang.
			err := fmt.Errorf("ptrace: tracer thread: wait4: %w", e)
			for _, p := range t.procs {
				p.end(nil, err)
			}
			t.closing = true
			t.drain()
			return
		}
		if pid == t.sentinel {
			if t.ws.Stopped() {
				cont(t.sentinel, 0)
			}
			continue
		}
		t.event(pid, t.ws)
	}
}

// drain runs the queued requests.
func (t *Tracer) drain() {
	for {
		select {
		case f := <-t.reqs:
			f()
		default:
			return
		}
	}
}

// do runs f on the tracer thread and waits for it: inline when called from
// that thread (from a handler, say), else handed over with a wake-up.
func (t *Tracer) do(f func() error) error {
	if unix.Gettid() == t.tid {
		return f()
	}
	errc := make(chan error, 1)
	select {
	case <-t.done:
		return ErrClosed
	case t.reqs <- func() { errc <- f() }:
	}
	t.kick()
	select {
	case err := <-errc:
		return err
	case <-t.done:
		// The loop may have run f just before ending.
		select {
		case err := <-errc:
			return err
		default:
			return ErrClosed
		}
	}
}

// kick wakes the tracer thread out of wait4.
func (t *Tracer) kick() { unix.Kill(t.sentinel, unix.SIGURG) }

// Close detaches every process still traced (leaving them running) and ends
// the tracer thread.
func (t *Tracer) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.do(func() error {
			var errs []error
			for _, p := range t.procs {
				errs = append(errs, p.detach())
			}
			t.closing = true
			return errors.Join(errs...)
		})
		if errors.Is(err, ErrClosed) {
			err = nil
		}
		<-t.done
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
		if th.p == p {
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
