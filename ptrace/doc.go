// Package ptrace is the engine of onetrap: it puts probes into live
// processes and serves their hits with one trap where it can.
//
// A Tracer owns one locked OS thread; Linux ties a tracee to the thread that
// attached it, so every ptrace call is made there. Calls from other
// goroutines are handed to that thread. The hit path (wait4, PTRACE_GETREGS,
// PTRACE_GETSIGINFO, the handlers, emu.Step, PTRACE_SETREGS, PTRACE_CONT)
// runs on it from end to end, with no hand-off and no allocation.
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
//   - OutOfLine: a relocated copy of the instruction in the XOL area (mapped
//     on demand by an mmap injected into the tracee, readable and executable,
//     not writable by it) is single-stepped and the registers fixed up:
//     rip moved back from the slot except after indirect branches and
//     returns, the return address a call pushed corrected, rcx after syscall
//     corrected, a rip-relative operand given a new displacement or
//     rewritten to a scratch register.
//   - SingleStep: the original byte is restored and stepped in place with
//     the process's other threads stopped, then the INT3 is put back.
//
// Signals reach the tracee unchanged. A SIGTRAP is a hit only when rip is one
// past a probe and si_code is SI_KERNEL; any other SIGTRAP (the program's
// own int3, kill) is delivered. A signal arriving while a thread is stepped
// is held and delivered after the fixup; a fault inside an XOL slot is
// reported at the original address.
//
// A fork child gets the original bytes back (and loses the XOL area) and
// runs untraced; a vfork child, which shares its parent's memory, stays
// traced and its hits are served until it execs or exits. An exec drops
// the probes of the old image and calls the OnExec function.
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
// and EINTR-based schemes.
package ptrace
