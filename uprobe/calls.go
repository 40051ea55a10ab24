package uprobe

import (
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// Calls pairs function entries with their returns, for probes at a
// function's entry and at its RET instructions (no return address is
// rewritten, so Go's moving stacks are safe). Calls are kept per stack: a
// thread's for C, a goroutine's for Go (see StackOf), and matched by the
// stack pointer, which points at the return address both at the entry and
// at the RET. A frame that a later event shows to be gone (longjmp, a
// panic, an exit from the middle) is handed back as abandoned, so recursion
// and non-local exits never leave the pairing wrong for later calls.
//
// T is what the caller keeps per call (its start time, its arguments). A
// Calls is not safe for concurrent use; a tracer uses it from its handlers,
// which run on one thread.
type Calls[T any] struct {
	stacks map[uint64][]Frame[T]
	out    []Frame[T]
}

// Frame is a call in progress.
type Frame[T any] struct {
	// Func identifies the function (its entry address, say).
	Func uint64
	// Pos is the call's position on its stack (see StackOf): larger is
	// deeper.
	Pos uint64
	// Ret is the call's return address: a call at the same position with
	// the same return address was reached by a tail call; with another,
	// the frame there is gone (longjmp out of it, say).
	Ret   uint64
	Value T
}

// maxTailFrames bounds the frames kept at one stack position: functions
// that tail-call each other share the position of the first, and one that
// ends in a tail call to an unprobed function never shows its return.
const maxTailFrames = 8

// Enter records a call of fn at position pos of stack, returning to ret.
// It returns the frames found gone (at or below pos: a call there has
// returned unseen), deepest first; the slice is valid until the next call.
func (c *Calls[T]) Enter(stack, pos, ret, fn uint64, v T) (abandoned []Frame[T]) {
	if c.stacks == nil {
		c.stacks = map[uint64][]Frame[T]{}
	}
	st := c.stacks[stack]
	c.out = c.out[:0]
	same := 0
	for len(st) > 0 {
		top := st[len(st)-1]
		// A frame at the same position survives only as the caller of a
		// tail call: fn is another function, returning where it would.
		if top.Pos < pos || (top.Pos == pos && top.Func != fn && top.Ret == ret) {
			break
		}
		c.out = append(c.out, top)
		st = st[:len(st)-1]
	}
	for i := len(st) - 1; i >= 0 && st[i].Pos == pos; i-- {
		same++
	}
	if same >= maxTailFrames {
		c.out = append(c.out, st[len(st)-same])
		st = append(st[:len(st)-same], st[len(st)-same+1:]...)
	}
	c.stacks[stack] = append(st, Frame[T]{Func: fn, Pos: pos, Ret: ret, Value: v})
	return c.out
}

// Return records a return at position pos of stack (a RET of fn about to
// run). It returns the calls that end there, innermost first (more than one
// when fn was reached by tail calls), and the frames found gone below them,
// deepest first. done is empty when the call's entry was not seen (the
// tracer attached in its middle). Both slices are valid until the next
// call.
func (c *Calls[T]) Return(stack, pos, fn uint64) (done, abandoned []Frame[T]) {
	st := c.stacks[stack]
	c.out = c.out[:0]
	for len(st) > 0 && st[len(st)-1].Pos > pos {
		c.out = append(c.out, st[len(st)-1])
		st = st[:len(st)-1]
	}
	n := len(c.out)
	// Frames at pos are fn's call and those that share its position: the
	// calls that tail-called fn, or that fn tail-called, or other probes'
	// calls of the same function. fn's RET ends them all.
	i := len(st)
	match := false
	for i > 0 && st[i-1].Pos == pos {
		i--
		match = match || st[i].Func == fn
	}
	if match {
		for j := len(st) - 1; j >= i; j-- {
			c.out = append(c.out, st[j])
		}
		st = st[:i]
	}
	if len(st) == 0 {
		delete(c.stacks, stack)
	} else {
		c.stacks[stack] = st
	}
	return c.out[n:], c.out[:n]
}

// Depth returns the number of calls in progress on stack.
func (c *Calls[T]) Depth(stack uint64) int { return len(c.stacks[stack]) }

// Pending calls f with every call still in progress, per stack, outermost
// first (at the end of a trace, to report them unfinished).
func (c *Calls[T]) Pending(f func(stack uint64, fr *Frame[T])) {
	for k, st := range c.stacks {
		for i := range st {
			f(k, &st[i])
		}
	}
}

// Reset forgets every call in progress (after an exec).
func (c *Calls[T]) Reset() { clear(c.stacks) }

// gStackHi is the offset of stack.hi in the Go runtime's g: g.stack is its
// first field, a struct { lo, hi uintptr }.
const gStackHi = 8

// StackOf returns the stack a thread stopped at a function's entry or RET
// runs on, the call's position on it (larger is deeper), and the return
// address at rsp, for Calls.
// For C (goFunc false) the stack is the thread's and the position is
// derived from rsp. A Go function runs on its goroutine's stack, which
// moves when it grows: the stack is the goroutine (its g, in r14 under
// Go's register ABI) and the position is rsp's distance from the stack's
// top, which a move keeps. When g cannot be read (an assembly function
// whose r14 is not g), the thread's stack and rsp are used.
func StackOf(tid int, r *regs.Regs, m memio.Memory, goFunc bool) (stack, pos, ret uint64) {
	sp := r.GPR[regs.RSP]
	ret, _ = memio.ReadUint(m, sp, 8)
	if goFunc {
		g := r.GPR[regs.R14]
		if hi, err := memio.ReadUint(m, g+gStackHi, 8); err == nil && hi > sp && hi-sp < 1<<32 {
			return g, hi - sp, ret
		}
	}
	return uint64(tid), ^sp, ret
}
