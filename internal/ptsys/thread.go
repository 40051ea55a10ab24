package ptsys

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// A Thread is the OS thread a tracer makes every ptrace call from (Linux
// ties a tracee to the thread that attached it), and the hand-off of work
// to it. Its owner's goroutine calls Lock first and never unlocks, so the
// OS thread ends with it and no tracee stays attached to a pooled thread;
// it runs the requests other goroutines hand over (Drain, or Requests in a
// loop of its own), and calls Close when it ends.
type Thread struct {
	reqs   chan func()
	tid    int
	closed chan struct{}
	wake   func()
	err    error
}

// NewThread returns a hand-off whose calls wake the owner with wake (nil
// when the owner blocks on Requests) and fail with errClosed once it is
// closed.
func NewThread(wake func(), errClosed error) *Thread {
	return &Thread{reqs: make(chan func(), 16), closed: make(chan struct{}), wake: wake, err: errClosed}
}

// Lock locks the calling goroutine to its OS thread for good and records
// the thread.
func (t *Thread) Lock() {
	runtime.LockOSThread()
	t.tid = unix.Gettid()
}

// Tid returns the locked thread's id.
func (t *Thread) Tid() int { return t.tid }

// On says whether the caller runs on the locked thread.
func (t *Thread) On() bool { return unix.Gettid() == t.tid }

// Requests is where the owner receives the work handed over.
func (t *Thread) Requests() <-chan func() { return t.reqs }

// Drain runs the work handed over so far.
func (t *Thread) Drain() {
	for {
		select {
		case f := <-t.reqs:
			f()
		default:
			return
		}
	}
}

// Close says the owner has stopped taking work.
func (t *Thread) Close() { close(t.closed) }

// Done is closed by Close.
func (t *Thread) Done() <-chan struct{} { return t.closed }

// Call runs f on the locked thread and waits until f, or the owner later,
// calls done. On the locked thread itself it runs f inline and returns
// when f does: with done's error if done came by then, else nil.
func (t *Thread) Call(f func(done func(error))) error {
	if t.On() {
		var err error
		f(func(e error) { err = e })
		return err
	}
	errc := make(chan error, 1)
	once := func(e error) {
		select {
		case errc <- e:
		default:
		}
	}
	select {
	case <-t.closed:
		return t.err
	case t.reqs <- func() { f(once) }:
	}
	if t.wake != nil {
		t.wake()
	}
	select {
	case err := <-errc:
		return err
	case <-t.closed:
		// The owner may have finished f just before ending.
		select {
		case err := <-errc:
			return err
		default:
			return t.err
		}
	}
}

// Do runs f on the locked thread and waits for it.
func (t *Thread) Do(f func() error) error {
	return t.Call(func(done func(error)) { done(f()) })
}
