// Package ptrace is the engine of onetrap: it puts probes into live
// processes and serves their hits with one trap where it can.
//
// A Tracer owns one locked OS thread; Linux ties a tracee to the thread that
// attached it, so every ptrace call is made there. Calls from other
// goroutines are handed to that thread. The hit path (wait4, the register
// read, the handlers, the strategy, the register write, PTRACE_CONT) runs
// on it from end to end, with no hand-off and no allocation.
//
// Start and Attach return a Process, traced with PTRACE_SEIZE (so group-stop
// behaves as without a tracer, through PTRACE_LISTEN) and the options
// TRACECLONE, TRACEFORK, TRACEVFORK, TRACEVFORKDONE and TRACEEXEC, waited for
// with __WALL. Insert decodes the instruction at an address once, picks a
// Strategy and writes an INT3:
//
//   - Emulate: emu.Step applies the instruction to the stopped thread's
//     registers and memory; the thread goes on at the next instruction. An
//     emulation that faults, or that the emulator declines, runs that hit on
//     the CPU (out of line, or in place) so a fault raises the genuine signal
//     at the genuine address.
//   - Boost: the thread is sent to a copy of the instruction in the XOL area
//     (mapped on demand by an mmap injected into the tracee, near the probed
//     module, readable and executable, not writable by it), followed by a
//     jump back to the next original instruction: one trap, like Emulate,
//     for whatever does not branch and is not a system call.
//   - OutOfLine: a relocated copy of the instruction in the XOL area is
//     single-stepped and the registers fixed up: rip moved back from the
//     slot except after indirect branches and returns, the return address
//     a call pushed corrected, rcx after syscall corrected, a rip-relative
//     operand given a new displacement or rewritten to a scratch register.
//   - SingleStep: the original byte is restored and stepped in place with
//     the process's other threads stopped, then the INT3 is put back.
//   - Jump: no trap per hit. The instruction (5 bytes or more), or a
//     region of several that package region proves no branch enters
//     past its first byte, is replaced by a jmp rel32 to a pad in the XOL
//     area that counts the hit (lock inc of a counter in a read-write
//     mapping of its own, the flags saved, the red zone skipped in C
//     code, 8 bytes of stack in Go code), runs the relocated instructions
//     and jumps back. Only for probes with no handler; the INT3 serves
//     until a world stop writes the jump, moving threads stopped inside
//     the region to the matching point of the pad.
//
// Process.Record puts a recording probe: where the site can take a jump,
// its pad writes each hit (the probe, the thread's key, rdtsc and the
// registers its RecordSpec names, 128 bytes) into a ring in memory the
// tracee and the tracer share (a memfd the tracee creates and maps
// through injected calls, MADV_DONTFORK, 64Ki records by default, see
// RingSize); a slot is reserved by a compare-and-swap of the ring's head,
// the record published by its sequence word written last, and a full ring
// drops the hit and counts it (Probe.Drops): the pad never waits. A
// goroutine of the tracer drains the ring every millisecond and calls the
// Observer in reservation order, so each thread's records come in its
// order, with tids from the thread keys (the thread pointer in C, the M in
// Go) and times in CLOCK_MONOTONIC. Where the site traps, the tracer
// writes the same record at the trap: one stream either way. A thread
// stopped inside the recording part (a signal, a Remove, a Detach) is
// taken out with no step: back to the probed instruction before its
// reservation, or, after it, with the record completed by the tracer.
// A fault the recording part raises itself (a thread whose FS base is 0,
// before its TLS is set up or having cleared it, has no key to read) is
// never the program's: the tracer serves the hit as a trap and sends the
// thread on to the copy of its instructions.
// If the tracer dies the pads write into the ring until it is full, then
// drop: the program runs on.
//
// If the tracer dies (SIGKILL, a crash), the kernel detaches the process
// and a Jump-patched site keeps running correctly: its pad only counts.
// (An INT3 left in place would kill the process with SIGTRAP at its next
// hit.) With no tracer left to rewrite it, a fault raised by a relocated
// instruction then shows the pad's address to the program's handler, not
// the original one. A thread running a signal handler whose interrupted
// context lies inside a region as its jump is written would return into
// the jump's tail: the window is a few instructions at a probe site, and
// no tracer can see those contexts.
//
// Auto picks, per probe, the cheapest by the system calls a hit makes
// beyond the trap (Jump first, for a probe with no handler where it can
// run): register-only emulations, then boosted copies (an
// emulation that touches memory costs a call per access more), then the
// stepped forms. The NoXOL option leaves the address space alone: Emulate
// and SingleStep only.
//
// # The cost of a hit
//
// A hit costs the trap itself (wait4 and PTRACE_CONT: the floor, what a
// tracer that does nothing pays) plus, counted with strace on BenchmarkHit:
// GETREGS; GETSIGINFO (a SIGTRAP the program sends itself can find a
// thread one byte past a probe, even inside a longer instruction whose
// bytes also decode from there: see trap in hit.go); one register write, a
// POKEUSER of rip when nothing else changed (Boost), else SETREGS; and one
// process_vm call per memory access of an emulation. In all, emulating push
// rbp makes 6 calls, sub rsp 5, cmp rsp,[r14+16] 6; boosting push rbp 5;
// stepping it out of line
// 10. Memory goes through process_vm_readv/writev even for one aligned word
// although PTRACE_PEEKDATA/POKEDATA are a little cheaper (about 1.0 µs
// against 1.3 µs here): they force their way through page protections, so
// an emulated write to a read-only or guard page would succeed instead of
// faulting. ptrace requests are made as raw system calls (they never
// block), sparing the scheduler's bookkeeping on each.
//
// Signals reach the tracee unchanged. A SIGTRAP is a hit only when rip is one
// past a probe and si_code is SI_KERNEL; any other SIGTRAP (the program's
// own int3, kill) is delivered. While a thread is stepped at a hit, its
// asynchronous signals are blocked (PTRACE_SETSIGMASK): one sent meanwhile
// stays pending with its siginfo and the kernel delivers it after the
// fixup. One that cannot be blocked is kept and delivered after the fixup
// with its own siginfo. A fault inside an XOL slot is reported at the
// original address. No signal is delivered with rip in a boosted slot: a
// thread that has not run the copy yet is stepped through it first, one
// that has is moved to the next original instruction; so no handler sees
// an XOL address. Detach moves any thread inside a slot back to the same
// point of the original code before the area is unmapped. Remove retires a
// slot; it is reused once a world stop has seen no thread in it.
//
// A fork child gets the original bytes back (and loses the XOL area) and
// runs untraced, or traced with FollowForks. A child that shares the
// memory (a vfork child, or a clone with CLONE_VM but not CLONE_THREAD, told
// apart by kcmp) is a guest: its hits are served as its parent's, and its
// exit or exec leaves the memory alone. An exec drops the probes of the
// old image and calls the OnExec function.
//
// # The event core
//
// The tracer thread waits for one thing only: the next wait4 report of any
// thread. Whatever takes longer is a state that later reports move on, so
// one thread never holds the others, the requests of other goroutines, or
// a cancellation. Each thread owns its state and the registers of its hit:
//
//	running    let go; its next report is dispatched
//	listening  in group-stop (PTRACE_LISTEN); SIGCONT lets it run
//	serving    stopped at a hit: handlers, then the strategy
//	stepping   stepped, or for a syscall instruction run to its entry
//	           (a blocking call never holds a step); its report ends it
//	held       stopped by a world stop, with any report it had kept
//	parked     started stopped, until Run
//	vforking   waiting for its vfork child: it cannot stop, and cannot
//	           run user code either
//	leaving    detached but for its next stop (a vfork parent)
//
// A hit moves running → serving → running (Emulate, Boost), or serving →
// stepping → running (OutOfLine), or serving → (world stop) → stepping →
// held → running (SingleStep). A world stop is a state of a process: jobs
// queue up (a step in place, an XOL area to map when no thread is
// stopped, a detach); the running threads are interrupted; each report
// that comes meanwhile is kept and the thread held; when every thread
// sharing the memory is still (held, serving, parked, vforking; a leader
// that exited alone is found by /proc and counts too) the jobs run in
// order, and then the kept reports go back to the loop, which dispatches
// them as if they had just come. No report of one thread is ever
// dispatched inside the handling of another's. A group-stop reported in
// the middle of a step or an injected call cannot be entered there (the
// step must finish); the thread is interrupted as it is let go, and
// stops with the group then, or runs on if SIGCONT came meanwhile.
//
// A handler runs on the tracer thread with its thread serving. It may
// read and change the registers and memory it is given, and call Insert,
// Remove and Detach on any process: an Insert that needs an XOL area maps
// it through the handler's own thread (an mmap injected at a syscall
// instruction the process already has, so no other thread is stopped);
// Remove restores the byte at once; Detach from a handler returns at once
// and takes effect when every other thread has stopped (at once in a
// single-threaded process: the probed instruction then runs untraced). A
// handler must not block waiting for another event of the tracer.
//
// # Waking the tracer
//
// The tracer thread sleeps in wait4. To wake it for a request or a cancelled
// context, each Tracer keeps a sentinel: a tiny static program (built in
// memory, run from a memfd) that is the tracer's traced child and sleeps in
// pause(). Any goroutine sends the sentinel a signal; the signal becomes a
// ptrace stop that wait4 reports at once, and the tracer swallows it. This
// needs no polling (no latency, no idle wake-ups), sends nothing to the
// tracee, and does not depend on how the Go runtime routes SIGCHLD among its
// threads or restarts interrupted system calls, which rules out signalfd
// and EINTR-based schemes. The signal goes through a pidfd, so a pid is
// never signalled once reused; a sentinel the tracee kills is replaced.
package ptrace
