package ptrace

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw system calls for the hit path: they return the errno rather than an
// error interface and take pointers into the Tracer, which lives on the heap,
// so that nothing here allocates.

// Linux ptrace constants x/sys/unix does not name.
const (
	wall      = 0x40000000 // __WALL
	wnothread = 0x20000000 // __WNOTHREAD

	siKernel = 0x80 // si_code of the SIGTRAP an int3 raises
)

// ptraceRaw makes a ptrace call without telling the Go scheduler: the
// requests the tracer makes on a stopped thread never block, and the
// scheduler's bookkeeping around a system call is a measurable part of a
// hit that costs a handful of them.
func ptraceRaw(req int, tid int, addr, data uintptr) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	return e
}

// ripOffset is where rip lives in the user area PTRACE_POKEUSER writes to:
// struct user begins with struct user_regs_struct, which is PtraceRegs.
var ripOffset = unsafe.Offsetof(unix.PtraceRegs{}.Rip)

// setRIP writes rip alone, cheaper than PTRACE_SETREGS when nothing else
// changed.
func setRIP(tid int, rip uint64) unix.Errno {
	return ptraceRaw(unix.PTRACE_POKEUSR, tid, ripOffset, uintptr(rip))
}

func getRegs(tid int, p *unix.PtraceRegs) unix.Errno {
	return ptraceRaw(unix.PTRACE_GETREGS, tid, 0, uintptr(unsafe.Pointer(p)))
}

func setRegs(tid int, p *unix.PtraceRegs) unix.Errno {
	return ptraceRaw(unix.PTRACE_SETREGS, tid, 0, uintptr(unsafe.Pointer(p)))
}

// siginfo is the kernel's siginfo_t, kept opaque except for the fields the
// tracer reads.
type siginfo [128]byte

func (s *siginfo) signo() int32 { return *(*int32)(unsafe.Pointer(&s[0])) }
func (s *siginfo) code() int32  { return *(*int32)(unsafe.Pointer(&s[8])) }

func getSiginfo(tid int, s *siginfo) unix.Errno {
	return ptraceRaw(unix.PTRACE_GETSIGINFO, tid, 0, uintptr(unsafe.Pointer(s)))
}

// setAddr sets si_addr, which for SIGILL, SIGFPE and SIGTRAP names the
// instruction.
func (s *siginfo) setAddr(a uint64) { *(*uint64)(unsafe.Pointer(&s[16])) = a }

func setSiginfo(tid int, s *siginfo) unix.Errno {
	return ptraceRaw(unix.PTRACE_SETSIGINFO, tid, 0, uintptr(unsafe.Pointer(s)))
}

func cont(tid int, sig int) unix.Errno { return ptraceRaw(unix.PTRACE_CONT, tid, 0, uintptr(sig)) }

func singleStep(tid int, sig int) unix.Errno {
	return ptraceRaw(unix.PTRACE_SINGLESTEP, tid, 0, uintptr(sig))
}

func eventMsg(tid int) (uint64, unix.Errno) {
	var m uint64
	e := ptraceRaw(unix.PTRACE_GETEVENTMSG, tid, 0, uintptr(unsafe.Pointer(&m)))
	return m, e
}

// wait4 blocks (as a real system call, so the Go scheduler runs other
// goroutines meanwhile) until a child changes state.
func wait4(pid int, status *unix.WaitStatus, options int) (int, unix.Errno) {
	for {
		r, _, e := unix.Syscall6(unix.SYS_WAIT4, uintptr(pid), uintptr(unsafe.Pointer(status)), uintptr(options), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		return int(r), e
	}
}

// ptraceEvent returns the PTRACE_EVENT_* of a stop status, 0 for none.
func ptraceEvent(ws unix.WaitStatus) int { return int(ws>>16) & 0xff }

// siTkill is the si_code of a signal sent with tkill or tgkill.
const siTkill = -6

func getSigmask(tid int, m *uint64) unix.Errno {
	return ptraceRaw(unix.PTRACE_GETSIGMASK, tid, 8, uintptr(unsafe.Pointer(m)))
}

func setSigmask(tid int, m *uint64) unix.Errno {
	return ptraceRaw(unix.PTRACE_SETSIGMASK, tid, 8, uintptr(unsafe.Pointer(m)))
}

func rtTgsigqueueinfo(tgid, tid int, s *siginfo) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(tgid), uintptr(tid), uintptr(s.signo()),
		uintptr(unsafe.Pointer(s)), 0, 0)
	return e
}

func syscallStep(tid int) unix.Errno { return ptraceRaw(unix.PTRACE_SYSCALL, tid, 0, 0) }

// sigSyscall is the stop signal of a system-call stop under
// PTRACE_O_TRACESYSGOOD.
const sigSyscall = unix.SIGTRAP | 0x80
