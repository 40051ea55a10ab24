package memio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrGone is the cause of an access to a process that no longer exists.
var ErrGone = errors.New("process is gone")

// Process is the memory of a live process, reached with process_vm_readv and
// process_vm_writev. Those calls honour the target's page protections exactly
// as its own code sees them, which is what the emulator needs: a write to a
// read-only page is a *Fault, not a silent success.
//
// Text pages, which the target itself cannot write, are changed with
// ForceWriteAt (through /proc/PID/mem), the path for inserting and removing
// breakpoints.
//
// A Process is not safe for concurrent use: its single-word transfers reuse
// buffers held in the value so that they do not allocate. After the target
// calls execve, /proc/PID/mem still names the old address space: open a new
// Process.
type Process struct {
	pid    int
	local  [1]unix.Iovec
	remote [1]unix.RemoteIovec
	word   [8]byte
	undo   [64]byte // a crossing write's old bytes, so a short one can be taken back
	mem    *os.File // /proc/PID/mem, opened on first use
	closed bool
}

var (
	_ Memory = (*Process)(nil)
	_ Uints  = (*Process)(nil)
)

// OpenProcess returns the memory of process pid. It fails when pid does not
// exist or its memory cannot be reached.
func OpenProcess(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("memio: invalid pid %d", pid)
	}
	p := &Process{pid: pid}
	// Signal 0 checks existence and permission without touching the process,
	// so failures surface here with a clear message rather than as a fault on
	// the first access.
	if err := unix.Kill(pid, 0); err != nil {
		if err == unix.ESRCH {
			return nil, fmt.Errorf("memio: process %d: %w", pid, ErrGone)
		}
		return nil, fmt.Errorf("memio: process %d: %w", pid, err)
	}
	return p, nil
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.pid }

// ReadAt reads len(b) bytes at virtual address off. A short read returns the
// bytes read and a *Fault at the first address that could not be read.
func (p *Process) ReadAt(b []byte, off int64) (int, error) {
	return p.transfer(b, uint64(off), Read)
}

// WriteAt writes b at virtual address off, as the target's own code could: a
// page the target may not write gives a *Fault at its first address.
func (p *Process) WriteAt(b []byte, off int64) (int, error) {
	return p.transfer(b, uint64(off), Write)
}

// ReadUint reads a size-byte little-endian value at addr without allocating
// (unless it fails).
func (p *Process) ReadUint(addr uint64, size int) (uint64, error) {
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return 0, fmt.Errorf("memio: ReadUint of %d bytes at %#x: size must be 1, 2, 4 or 8", size, addr)
	}
	p.word = [8]byte{}
	if _, err := p.transfer(p.word[:size], addr, Read); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(p.word[:]), nil
}

// WriteUint writes the low size bytes of v, little-endian, at addr without
// allocating (unless it fails).
func (p *Process) WriteUint(addr uint64, size int, v uint64) error {
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return fmt.Errorf("memio: WriteUint of %d bytes at %#x: size must be 1, 2, 4 or 8", size, addr)
	}
	binary.LittleEndian.PutUint64(p.word[:], v)
	_, err := p.transfer(p.word[:size], addr, Write)
	return err
}

// transfer moves b to or from addr with one process_vm call, and turns any
// shortfall into a *Fault at the first byte not moved.
func (p *Process) transfer(b []byte, addr uint64, a Access) (int, error) {
	if p.closed {
		return 0, &Fault{Addr: addr, Access: a, Err: os.ErrClosed}
	}
	if len(b) == 0 {
		return 0, nil
	}
	if addr+uint64(len(b)) < addr {
		return 0, &Fault{Addr: addr, Access: a, Err: ErrUnmapped}
	}
	if a == Write && crossesPage(addr, len(b)) {
		return p.writeAcross(b, addr)
	}
	n, e := p.vm(b, addr, a)
	if e == 0 && n == len(b) {
		return n, nil
	}
	return n, p.fault(addr+uint64(n), a, e)
}

// vm moves b to or from addr with one process_vm call.
func (p *Process) vm(b []byte, addr uint64, a Access) (int, unix.Errno) {
	p.local[0].Base = &b[0]
	p.local[0].SetLen(len(b))
	p.remote[0].Base = uintptr(addr)
	p.remote[0].Len = len(b)
	nr := unix.SYS_PROCESS_VM_READV
	if a == Write {
		nr = unix.SYS_PROCESS_VM_WRITEV
	}
	// The raw call (rather than unix.ProcessVMReadv) keeps the iovecs, which
	// live in p, from being copied and the error from being boxed.
	r, _, e := unix.Syscall6(uintptr(nr), uintptr(p.pid),
		uintptr(unsafe.Pointer(&p.local[0])), 1,
		uintptr(unsafe.Pointer(&p.remote[0])), 1, 0)
	p.local[0].Base = nil // do not keep b alive
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// pageSize is the granule of protection: a write within one page either
// goes through whole or not at all.
const pageSize = 4096

func crossesPage(addr uint64, n int) bool {
	return addr/pageSize != (addr+uint64(n)-1)/pageSize
}

// writeAcross writes b where it spans pages of possibly different
// protections. process_vm_writev stops at the first page it may not write,
// leaving the earlier pages written; the CPU writes nothing in that case, and
// the emulator's atomicity depends on the same. So the old bytes are read
// first and put back when the write comes up short. Another thread of the
// target could store to those bytes in between; the window is two syscalls
// long and only for a write that faults anyway.
func (p *Process) writeAcross(b []byte, addr uint64) (int, error) {
	var old []byte
	if len(b) <= len(p.undo) {
		old = p.undo[:len(b)]
	} else {
		old = make([]byte, len(b))
	}
	saved, _ := p.vm(old, addr, Read)
	n, e := p.vm(b, addr, Write)
	if e == 0 && n == len(b) {
		return n, nil
	}
	if n > 0 {
		// Bytes past what could be read were not writable either, so n <= saved
		// except for write-only pages, which x86 Linux does not really have.
		if back, _ := p.vm(old[:min(n, saved)], addr, Write); back != min(n, saved) {
			return n, &Fault{Addr: addr, Access: Write,
				Err: fmt.Errorf("a short write across pages could not be undone: %w", ErrProtected)}
		}
	}
	return 0, p.fault(addr+uint64(n), Write, e)
}

// fault builds the error of an access that stopped at addr, naming why.
func (p *Process) fault(addr uint64, a Access, e unix.Errno) error {
	switch e {
	case unix.ESRCH:
		return &Fault{Addr: addr, Access: a, Err: fmt.Errorf("process %d: %w", p.pid, ErrGone)}
	case 0, unix.EFAULT, unix.EIO:
	default:
		return &Fault{Addr: addr, Access: a, Err: e}
	}
	_, ok, err := p.protection(addr)
	switch {
	case err != nil:
		return &Fault{Addr: addr, Access: a, Err: err}
	case !ok:
		return &Fault{Addr: addr, Access: a, Err: ErrUnmapped}
	default:
		return &Fault{Addr: addr, Access: a, Err: ErrProtected}
	}
}

// protection returns the permission string ("r-xp") of the mapping holding
// addr, and whether there is one. It runs only on the error path.
func (p *Process) protection(addr uint64) (string, bool, error) {
	maps, err := ReadMaps(p.pid)
	if err != nil {
		return "", false, err
	}
	for i := range maps {
		if maps[i].Contains(addr) {
			return maps[i].Perms, true, nil
		}
	}
	return "", false, nil
}

// ForceReadAt reads like ReadAt but through /proc/PID/mem, which can read
// pages the target itself may not (execute-only or PROT_NONE mappings).
func (p *Process) ForceReadAt(b []byte, off int64) (int, error) {
	return p.force(b, uint64(off), Read)
}

// ForceWriteAt writes b at off through /proc/PID/mem, which writes pages the
// target itself may not, such as its text: this is how breakpoints are
// inserted and removed, and how a tracer fills an area the tracee can only
// execute. Copy-on-write keeps the change private to this process.
func (p *Process) ForceWriteAt(b []byte, off int64) (int, error) {
	return p.force(b, uint64(off), Write)
}

func (p *Process) force(b []byte, addr uint64, a Access) (int, error) {
	if p.closed {
		return 0, &Fault{Addr: addr, Access: a, Err: os.ErrClosed}
	}
	if len(b) == 0 {
		return 0, nil
	}
	if addr >= 1<<63 || addr+uint64(len(b)) < addr {
		return 0, &Fault{Addr: addr, Access: a, Err: ErrUnmapped}
	}
	if p.mem == nil {
		f, err := os.OpenFile("/proc/"+strconv.Itoa(p.pid)+"/mem", os.O_RDWR, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("process %d: %w", p.pid, ErrGone)
			}
			return 0, &Fault{Addr: addr, Access: a, Err: err}
		}
		p.mem = f
	}
	done := 0
	for done < len(b) {
		var n int
		var err error
		if a == Write {
			n, err = unix.Pwrite(int(p.mem.Fd()), b[done:], int64(addr)+int64(done))
		} else {
			n, err = unix.Pread(int(p.mem.Fd()), b[done:], int64(addr)+int64(done))
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			at := addr + uint64(done)
			if err == nil && !p.alive() {
				// A process whose address space is gone reads as end of file.
				err = unix.ESRCH
			}
			e, _ := err.(unix.Errno)
			if err != nil && e == 0 {
				return done, &Fault{Addr: at, Access: a, Err: err}
			}
			if e == 0 || e == unix.EIO || e == unix.EFAULT {
				// Forced access ignores protections, so only a hole stops it.
				if _, ok, perr := p.protection(at); perr != nil {
					return done, &Fault{Addr: at, Access: a, Err: perr}
				} else if ok {
					return done, &Fault{Addr: at, Access: a, Err: unix.EIO}
				}
				return done, &Fault{Addr: at, Access: a, Err: ErrUnmapped}
			}
			return done, p.fault(at, a, e)
		}
		done += n
	}
	return done, nil
}

// alive reports whether the process still exists (a zombie does not count).
func (p *Process) alive() bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// Close releases /proc/PID/mem. Later accesses fail with os.ErrClosed.
func (p *Process) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.mem != nil {
		err := p.mem.Close()
		p.mem = nil
		return err
	}
	return nil
}
