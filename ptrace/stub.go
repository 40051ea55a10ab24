package ptrace

import (
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Two tiny static executables, built here so that the library needs no file
// on disk and no helper binary:
//
// The sentinel sleeps in pause() forever. Each Tracer keeps one as a traced
// child so that another goroutine can wake the tracer's blocking wait4 by
// sending the sentinel a signal (through a pidfd: a sentinel the tracee
// kills is replaced, and its pid is never signalled once reused): the signal turns into a ptrace stop reported
// to wait4, which the tracer swallows. This is the wake-up for context
// cancellation and for API calls from other goroutines. It needs no polling,
// sends nothing to the tracee, and does not depend on how the Go runtime
// routes SIGCHLD or restarts interrupted system calls.
var sentinelCode = []byte{
	0xb8, 0x22, 0x00, 0x00, 0x00, // mov eax, SYS_pause
	0x0f, 0x05, // syscall
	0xeb, 0xf7, // jmp back to the mov
}

// The launcher stops itself with SIGSTOP, so the tracer can seize it before
// it runs anything of the program, then execs argv[1] with argv[2:] as its
// argument vector and the same environment; if the execve fails, it exits
// with its errno as status. The program thus starts under
// PTRACE_SEIZE (not PTRACE_TRACEME), stopped at its exec event, before its
// first instruction.
var launcherCode = []byte{
	0xb8, 0x27, 0x00, 0x00, 0x00, // mov eax, SYS_getpid
	0x0f, 0x05, // syscall
	0x89, 0xc7, // mov edi, eax
	0xbe, 0x13, 0x00, 0x00, 0x00, // mov esi, SIGSTOP
	0xb8, 0x3e, 0x00, 0x00, 0x00, // mov eax, SYS_kill
	0x0f, 0x05, // syscall
	0x48, 0x8b, 0x7c, 0x24, 0x10, // mov rdi, [rsp+16]       argv[1]
	0x48, 0x8d, 0x74, 0x24, 0x18, // lea rsi, [rsp+24]       &argv[2]
	0x48, 0x8b, 0x04, 0x24, // mov rax, [rsp]                argc
	0x48, 0x8d, 0x54, 0xc4, 0x10, // lea rdx, [rsp+rax*8+16] envp
	0xb8, 0x3b, 0x00, 0x00, 0x00, // mov eax, SYS_execve
	0x0f, 0x05, // syscall
	0x89, 0xc7, // mov edi, eax                  -errno
	0xf7, 0xdf, // neg edi                         exit status: the errno
	0xb8, 0xe7, 0x00, 0x00, 0x00, // mov eax, SYS_exit_group
	0x0f, 0x05, // syscall
}

// elfImage wraps code in a minimal static x86-64 executable loaded at 0x400000.
func elfImage(code []byte) []byte {
	const base, hdr = 0x400000, 64 + 56
	b := make([]byte, hdr+len(code))
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le := binary.LittleEndian
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 0x3e) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+hdr) // entry
	le.PutUint64(b[32:], 64)       // phoff
	le.PutUint16(b[52:], 64)       // ehsize
	le.PutUint16(b[54:], 56)       // phentsize
	le.PutUint16(b[56:], 1)        // phnum
	p := b[64:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], 5) // R+X
	le.PutUint64(p[16:], base)
	le.PutUint64(p[24:], base)
	le.PutUint64(p[32:], uint64(len(b)))
	le.PutUint64(p[40:], uint64(len(b)))
	le.PutUint64(p[48:], 0x1000)
	copy(b[hdr:], code)
	return b
}

var stubs struct {
	once               sync.Once
	sentinel, launcher string // paths under /proc/self/fd
	err                error
}

// stubPaths returns paths of the sentinel and launcher executables, held in
// memfds for the life of the process.
func stubPaths() (sentinel, launcher string, err error) {
	stubs.once.Do(func() {
		mk := func(name string, code []byte) string {
			if stubs.err != nil {
				return ""
			}
			// Not close-on-exec: the path must resolve in the forked child
			// right up to its execve.
			fd, err := unix.MemfdCreate(name, 0)
			if err != nil {
				stubs.err = fmt.Errorf("ptrace: memfd_create: %w", err)
				return ""
			}
			b := elfImage(code)
			if n, err := unix.Write(fd, b); err != nil || n != len(b) {
				stubs.err = fmt.Errorf("ptrace: writing %s: %v", name, err)
				return ""
			}
			unix.CloseOnExec(fd)
			return fmt.Sprintf("/proc/self/fd/%d", fd)
		}
		stubs.sentinel = mk("onetrap-sentinel", sentinelCode)
		stubs.launcher = mk("onetrap-launcher", launcherCode)
	})
	return stubs.sentinel, stubs.launcher, stubs.err
}
