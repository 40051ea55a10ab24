// Package ptsys holds what the engine (package ptrace) and the CPU oracle
// (package fuzz) both need to drive a tracee: raw ptrace calls that return
// an errno and allocate nothing, the register set of an injected system
// call, and the locked OS thread those calls are made from, with the
// hand-off of work to it from other goroutines.
package ptsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux ptrace constants x/sys/unix does not name.
const (
	WALL      = 0x40000000 // __WALL
	WNOTHREAD = 0x20000000 // __WNOTHREAD

	SIKernel = 0x80 // si_code of the SIGTRAP an int3 raises
	SITkill  = -6   // si_code of a signal sent with tkill or tgkill

	// SigSyscall is the stop signal of a system-call stop under
	// PTRACE_O_TRACESYSGOOD.
	SigSyscall = unix.SIGTRAP | 0x80
)

// Raw makes a ptrace call without telling the Go scheduler: the requests a
// tracer makes on a stopped thread never block, and the scheduler's
// bookkeeping around a system call is a measurable part of a hit that
// costs a handful of them.
func Raw(req int, tid int, addr, data uintptr) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	return e
}

// ripOffset is where rip lives in the user area PTRACE_POKEUSER writes to:
// struct user begins with struct user_regs_struct, which is PtraceRegs.
var ripOffset = unsafe.Offsetof(unix.PtraceRegs{}.Rip)

// SetRIP writes rip alone, cheaper than PTRACE_SETREGS when nothing else
// changed.
func SetRIP(tid int, rip uint64) unix.Errno {
	return Raw(unix.PTRACE_POKEUSR, tid, ripOffset, uintptr(rip))
}

// GetRegs is PTRACE_GETREGS.
func GetRegs(tid int, p *unix.PtraceRegs) unix.Errno {
	return Raw(unix.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(p)))
}

// SetRegs is PTRACE_SETREGS.
func SetRegs(tid int, p *unix.PtraceRegs) unix.Errno {
	return Raw(unix.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(p)))
}

// Siginfo is the kernel's siginfo_t, kept opaque except for the fields a
// tracer reads.
type Siginfo [128]byte

// Signo is si_signo.
func (s *Siginfo) Signo() int32 { return *(*int32)(unsafe.Pointer(&s[0])) }

// Code is si_code.
func (s *Siginfo) Code() int32 { return *(*int32)(unsafe.Pointer(&s[8])) }

// SetAddr sets si_addr, which for SIGILL, SIGFPE and SIGTRAP names the
// instruction.
func (s *Siginfo) SetAddr(a uint64) { *(*uint64)(unsafe.Pointer(&s[16])) = a }

// GetSiginfo is PTRACE_GETSIGINFO.
func GetSiginfo(tid int, s *Siginfo) unix.Errno {
	return Raw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(s)))
}

// SetSiginfo is PTRACE_SETSIGINFO.
func SetSiginfo(tid int, s *Siginfo) unix.Errno {
	return Raw(unix.PTRACE_SETSIGINFO, tid, 0, uintptr(unsafe.Pointer(s)))
}

// Cont is PTRACE_CONT with signal sig (0 for none).
func Cont(tid int, sig int) unix.Errno { return Raw(unix.PTRACE_CONT, tid, 0, uintptr(sig)) }

// SingleStep is PTRACE_SINGLESTEP with signal sig (0 for none).
func SingleStep(tid int, sig int) unix.Errno {
	return Raw(unix.PTRACE_SINGLESTEP, tid, 0, uintptr(sig))
}

// SyscallStep is PTRACE_SYSCALL: the thread runs to its next system-call
// stop.
func SyscallStep(tid int) unix.Errno { return Raw(unix.PTRACE_SYSCALL, tid, 0, 0) }

// EventMsg is PTRACE_GETEVENTMSG.
func EventMsg(tid int) (uint64, unix.Errno) {
	var m uint64
	e := Raw(unix.PTRACE_GETEVENTMSG, tid, 0, uintptr(unsafe.Pointer(&m)))
	return m, e
}

// GetSigmask is PTRACE_GETSIGMASK.
func GetSigmask(tid int, m *uint64) unix.Errno {
	return Raw(unix.PTRACE_GETSIGMASK, tid, 8, uintptr(unsafe.Pointer(m)))
}

// SetSigmask is PTRACE_SETSIGMASK.
func SetSigmask(tid int, m *uint64) unix.Errno {
	return Raw(unix.PTRACE_SETSIGMASK, tid, 8, uintptr(unsafe.Pointer(m)))
}

// RtTgsigqueueinfo queues s's signal to thread tid of tgid with s as its
// siginfo (allowed from another process for si_code below zero, other
// than tkill's).
func RtTgsigqueueinfo(tgid, tid int, s *Siginfo) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(tgid), uintptr(tid), uintptr(s.Signo()),
		uintptr(unsafe.Pointer(s)), 0, 0)
	return e
}

// Wait4 blocks (as a real system call, so the Go scheduler runs other
// goroutines meanwhile) until a child changes state.
func Wait4(pid int, status *unix.WaitStatus, options int) (int, unix.Errno) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_WAIT4, uintptr(pid), uintptr(unsafe.Pointer(status)), uintptr(options), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return int(r), e
	}
}

// Event returns the PTRACE_EVENT_* of a stop status, 0 for none.
func Event(ws unix.WaitStatus) int { return int(ws>>16) & 0xff }

// SyscallRegs makes r, a stopped thread's registers, those of system call
// nr with args, run by a syscall instruction at at. orig_rax -1 keeps the
// kernel from restarting a system call the thread was interrupted in while
// it runs this one; putting the saved registers back restores that.
func SyscallRegs(r *unix.PtraceRegs, at, nr uint64, args ...uint64) {
	var a [6]uint64
	copy(a[:], args)
	r.Rip, r.Rax, r.Orig_rax = at, nr, ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
}
