// Package fuzz checks the emulator and the decoder against the real CPU.
//
// An Oracle runs one instruction at a time in a sandbox process under ptrace
// and reports the registers, memory and signal it ends with; the campaign
// (Campaign, and the difftest command) generates instructions of every form
// that package emu implements, runs each on the CPU and through emu.Step from
// the same state, and compares. The CPU also referees instruction lengths.
//
// The sandbox needs no external program: it is the running binary itself,
// re-executed under PTRACE_TRACEME and stopped at its exec, before any of its
// own code runs. Its pages at fixed addresses are mapped with injected
// syscalls. Any binary that links this package can create an Oracle.
//
// Running it:
//
//	go test ./fuzz/                                  # bounded campaign, regressions, libc lengths
//	go run ./fuzz/cmd/difftest -n 10000000            # a real campaign
//	go run ./fuzz/cmd/difftest -n 0 -lengths /usr/bin/ls /usr/lib/x86_64-linux-gnu/libc.so.6
//	go test ./fuzz/ -run XXX -fuzz FuzzEmulate        # or FuzzLength
//
// A mismatch is printed as a reproducer; paste it into
// testdata/regressions.txt and go test replays it from then on.
package fuzz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/regs"
)

// The sandbox's fixed layout. Everything lies below 2 GiB so that 32-bit
// addressing (the 67 prefix) and sign-extended disp32 can reach it, and
// within ±2 GiB of the code so that rip-relative operands can too.
const (
	// PageSize is the size of the sandbox's pages.
	PageSize = 4096
	// CodePage holds the instruction under test. It is readable and
	// executable, not writable by the sandbox's own code.
	CodePage uint64 = 0x50000000
	// DataAddr starts DataPages read-write pages. The page right after the
	// code page is not executable, so an instruction placed at the end of the
	// code page cannot be fetched past its last byte without a fault: that is
	// how lengths are measured.
	DataAddr  uint64 = CodePage + PageSize
	DataPages        = 2
	// ROAddr is a read-only page: reads work, writes fault.
	ROAddr uint64 = DataAddr + DataPages*PageSize
	// HoleAddr is never mapped: every access faults.
	HoleAddr uint64 = ROAddr + PageSize
	// WindowAddr and WindowSize delimit the data pages a State fills: the
	// read-write pages then the read-only one.
	WindowAddr        = DataAddr
	WindowSize        = (DataPages + 1) * PageSize
	rwSize            = DataPages * PageSize
	codeEnd    uint64 = CodePage + PageSize
)

// sandboxEnv marks the re-executed binary: "trace" asks it to become a
// tracee and exec itself; "stopped" is what the final image sees, and it only
// ever runs if its tracer died before killing it.
const sandboxEnv = "ONETRAP_FUZZ_SANDBOX"

func init() {
	switch os.Getenv(sandboxEnv) {
	case "":
		return
	case "trace":
		// Package initialisation runs on the main thread, which is the
		// thread that exec replaces: the one PTRACE_TRACEME must mark.
		if _, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0); e != 0 {
			fmt.Fprintf(os.Stderr, "onetrap sandbox: PTRACE_TRACEME: %v\n", e)
			os.Exit(3)
		}
		env := os.Environ()
		for i, kv := range env {
			if strings.HasPrefix(kv, sandboxEnv+"=") {
				env[i] = sandboxEnv + "=stopped"
			}
		}
		err := unix.Exec("/proc/self/exe", []string{"onetrap-sandbox"}, env)
		fmt.Fprintf(os.Stderr, "onetrap sandbox: exec: %v\n", err)
		os.Exit(3)
	default:
		// The sandbox was let go without being killed: never run the
		// program (it may be a test binary) a second time.
		os.Exit(0)
	}
}

// State is what an instruction starts from: the register file and the
// contents of the data window (DataPages read-write pages, then the
// read-only page).
type State struct {
	Regs regs.Regs
	Mem  [WindowSize]byte
}

// Outcome is what the CPU did with one instruction.
type Outcome struct {
	// Regs is the register file after the instruction, or at the fault.
	Regs regs.Regs
	// Mem is the data window afterwards.
	Mem [WindowSize]byte
	// Signal is 0 when the instruction completed, or the signal it raised
	// (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP for int3...).
	Signal unix.Signal
	// Code and Addr are the signal's si_code and si_addr.
	Code int32
	Addr uint64
	// Syscall is set when the instruction entered the kernel (syscall,
	// sysenter, int 0x80): the sandbox stops it before it runs.
	Syscall bool
}

// Faulted reports whether the instruction raised a signal.
func (o *Outcome) Faulted() bool { return o.Signal != 0 || o.Syscall }

// Signal codes of SIGSEGV that carry a real address.
const (
	segvMapErr = 1
	segvAccErr = 2
)

// ErrTooShort is returned by Length when the CPU fetches past the bytes it is
// given: the instruction is longer than them.
var ErrTooShort = errors.New("fuzz: the CPU reads past the given bytes")

// ErrUnrunnable is returned by Run when the CPU cannot be started from the
// state at all, so it says nothing about the instruction: see enterable.
var ErrUnrunnable = errors.New("fuzz: the CPU cannot enter user mode with this state's rsp (non-canonical)")

// ErrIllegal is returned by Length when the CPU raises SIGILL: it does not
// execute the instruction, so it cannot measure it.
var ErrIllegal = errors.New("fuzz: the CPU refuses the instruction (SIGILL)")

// CPULength is Length for an instruction known to start code but whose end
// the CPU may place past it: when the CPU reads past code, it measures again
// with code padded with NOPs to 15 bytes, and so returns the CPU's own length
// (or ErrIllegal when the CPU, having read further, refuses it).
func (o *Oracle) CPULength(code []byte) (int, error) {
	n, err := o.Length(code)
	if !errors.Is(err, ErrTooShort) || len(code) >= 15 {
		return n, err
	}
	var pad [15]byte
	for i := copy(pad[:], code); i < len(pad); i++ {
		pad[i] = 0x90
	}
	return o.Length(pad[:])
}

// Oracle is a sandbox process that runs single instructions on the CPU. All
// its ptrace calls come from one locked OS thread, as ptrace requires; its
// methods may be called from any goroutine but not concurrently.
type Oracle struct {
	hand      *ptsys.Thread // the tracer thread and the hand-off to it
	closeOnce sync.Once
	stop      bool // set by Close: the tracer thread ends

	// Owned by the tracer thread.
	pid   int
	mem   int // /proc/PID/mem
	base  unix.PtraceRegs
	code  [PageSize]byte // shadow of the code page
	pregs unix.PtraceRegs
	dead  error
	maps  string

	lenState State
	lenOut   Outcome
}

var errClosed = errors.New("fuzz: oracle closed")

// NewOracle starts a sandbox. Close it when done.
func NewOracle() (*Oracle, error) {
	o := &Oracle{hand: ptsys.NewThread(nil, errClosed)}
	errc := make(chan error)
	go o.loop(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	return o, nil
}

// loop is the tracer thread: it starts the sandbox and then runs requests.
func (o *Oracle) loop(errc chan<- error) {
	o.hand.Lock()
	pinToOneCPU()
	if err := o.start(); err != nil {
		o.kill()
		errc <- err
		return
	}
	errc <- nil
	for !o.stop {
		(<-o.hand.Requests())()
	}
	o.kill()
	o.hand.Close()
}

// do runs f on the tracer thread: directly when called there (from within
// Do), through the tracer goroutine otherwise.
func (o *Oracle) do(f func()) {
	o.hand.Do(func() error { f(); return nil })
}

// Do runs f on the oracle's tracer thread, where Run and Length called from
// f need no hand-off between threads. A campaign runs inside Do: a hand-off
// per case costs more than the case itself.
func (o *Oracle) Do(f func()) { o.do(f) }

// Close kills the sandbox. The Oracle is not usable afterwards; closing it
// again does nothing.
func (o *Oracle) Close() error {
	o.closeOnce.Do(func() {
		o.hand.Do(func() error { o.stop = true; return nil })
		<-o.hand.Done()
	})
	return nil
}

// Pid returns the sandbox's process id.
func (o *Oracle) Pid() int { return o.pid }

// Maps returns the sandbox's /proc/PID/maps as read after its pages were
// mapped: addresses not in it fault.
func (o *Oracle) Maps() string { return o.maps }

func (o *Oracle) kill() {
	if o.pid > 0 {
		unix.Kill(o.pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(o.pid, &ws, unix.WALL, nil)
		o.pid = 0
	}
	if o.mem > 0 {
		unix.Close(o.mem)
		o.mem = 0
	}
}

func (o *Oracle) start() error {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	p, err := os.StartProcess("/proc/self/exe", []string{exe}, &os.ProcAttr{
		Env:   append(os.Environ(), sandboxEnv+"=trace"),
		Files: []*os.File{devnull, devnull, os.Stderr},
	})
	if err != nil {
		return fmt.Errorf("fuzz: starting the sandbox: %w", err)
	}
	o.pid = p.Pid
	p.Release()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(o.pid, &ws, unix.WALL, nil); err != nil {
		return fmt.Errorf("fuzz: waiting for the sandbox's exec: %w", err)
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		o.pid = 0
		return fmt.Errorf("fuzz: the sandbox did not stop at its exec (status %#x)", uint32(ws))
	}
	if err := unix.PtraceSetOptions(o.pid, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACESYSGOOD); err != nil {
		return fmt.Errorf("fuzz: PTRACE_SETOPTIONS: %w", err)
	}
	if o.mem, err = unix.Open(fmt.Sprintf("/proc/%d/mem", o.pid), unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		return fmt.Errorf("fuzz: opening the sandbox's memory: %w", err)
	}
	if err := unix.PtraceGetRegs(o.pid, &o.base); err != nil {
		return fmt.Errorf("fuzz: PTRACE_GETREGS: %w", err)
	}
	// The entry point is executable: a syscall instruction written there
	// runs the syscalls that build the sandbox's pages.
	at := o.base.Rip
	if _, err := unix.Pwrite(o.mem, []byte{0x0f, 0x05}, int64(at)); err != nil {
		return fmt.Errorf("fuzz: writing the syscall instruction: %w", err)
	}
	const fixed = unix.MAP_PRIVATE | unix.MAP_ANONYMOUS | unix.MAP_FIXED_NOREPLACE
	calls := []struct {
		nr   uintptr
		args [6]uint64
		want uint64
	}{
		{unix.SYS_MMAP, [6]uint64{CodePage, PageSize, unix.PROT_READ | unix.PROT_EXEC, fixed, ^uint64(0), 0}, CodePage},
		{unix.SYS_MMAP, [6]uint64{DataAddr, WindowSize, unix.PROT_READ | unix.PROT_WRITE, fixed, ^uint64(0), 0}, DataAddr},
		{unix.SYS_MPROTECT, [6]uint64{ROAddr, PageSize, unix.PROT_READ}, 0},
	}
	for _, c := range calls {
		got, err := o.inject(at, c.nr, c.args)
		if err != nil {
			return err
		}
		if got != c.want {
			return fmt.Errorf("fuzz: syscall %d in the sandbox returned %#x, want %#x", c.nr, got, c.want)
		}
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", o.pid))
	if err != nil {
		return err
	}
	o.maps = string(maps)
	for _, l := range strings.Split(o.maps, "\n") {
		var lo, hi uint64
		if _, err := fmt.Sscanf(l, "%x-%x", &lo, &hi); err == nil && lo < HoleAddr+PageSize && hi > HoleAddr {
			return fmt.Errorf("fuzz: the sandbox's hole page %#x is mapped: %s", HoleAddr, l)
		}
	}
	// Fill the code page with int3 so that a stray fetch traps visibly.
	for i := range o.code {
		o.code[i] = 0xcc
	}
	if _, err := unix.Pwrite(o.mem, o.code[:], int64(CodePage)); err != nil {
		return fmt.Errorf("fuzz: writing the code page: %w", err)
	}
	return nil
}

// inject runs one syscall in the stopped sandbox with a syscall instruction
// at address at, and returns its result.
func (o *Oracle) inject(at uint64, nr uintptr, a [6]uint64) (uint64, error) {
	r := o.base
	ptsys.SyscallRegs(&r, at, uint64(nr), a[:]...)
	if err := unix.PtraceSetRegs(o.pid, &r); err != nil {
		return 0, fmt.Errorf("fuzz: PTRACE_SETREGS: %w", err)
	}
	if err := unix.PtraceSingleStep(o.pid); err != nil {
		return 0, fmt.Errorf("fuzz: PTRACE_SINGLESTEP: %w", err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(o.pid, &ws, unix.WALL, nil); err != nil {
		return 0, err
	}
	if !ws.Stopped() || ws.StopSignal() != unix.SIGTRAP {
		return 0, fmt.Errorf("fuzz: injected syscall %d: sandbox status %#x", nr, uint32(ws))
	}
	if err := unix.PtraceGetRegs(o.pid, &r); err != nil {
		return 0, err
	}
	return r.Rax, nil
}

// Run executes code, placed at st.Regs.RIP (which must lie in the code page
// with the whole of code), once on the CPU from st, and fills out. It returns
// ErrUnrunnable when the CPU cannot be started from st here, so that out
// says nothing about code.
func (o *Oracle) Run(code []byte, st *State, out *Outcome) error {
	rip := st.Regs.RIP
	if rip < CodePage || rip >= codeEnd || uint64(len(code)) > codeEnd-rip {
		return fmt.Errorf("fuzz: code of %d bytes at %#x is outside the code page %#x", len(code), rip, CodePage)
	}
	var err error
	o.do(func() { err = o.run(code, st, out, true) })
	return err
}

// Poke writes code at rip in the code page and st's data window into the
// sandbox without running anything, and Peek reads the window back: with
// them a memory other than the CPU (memio.Process over Pid) can work on the
// sandbox's pages between two runs.
func (o *Oracle) Poke(code []byte, rip uint64, mem *[WindowSize]byte) error {
	if rip < CodePage || rip >= codeEnd || uint64(len(code)) > codeEnd-rip {
		return fmt.Errorf("fuzz: code of %d bytes at %#x is outside the code page %#x", len(code), rip, CodePage)
	}
	var err error
	o.do(func() {
		if err = o.placeCode(code, rip); err != nil {
			return
		}
		if _, err = unix.Pwrite(o.mem, mem[:], int64(WindowAddr)); err != nil {
			err = o.fail(fmt.Errorf("fuzz: writing the data window: %w", err))
		}
	})
	return err
}

// Peek reads the data window into mem.
func (o *Oracle) Peek(mem *[WindowSize]byte) error {
	var err error
	o.do(func() {
		if _, err = unix.Pread(o.mem, mem[:], int64(WindowAddr)); err != nil {
			err = o.fail(fmt.Errorf("fuzz: reading the data window: %w", err))
		}
	})
	return err
}

// placeCode writes code at rip unless the code page holds it already.
func (o *Oracle) placeCode(code []byte, rip uint64) error {
	off := rip - CodePage
	if string(o.code[off:off+uint64(len(code))]) != string(code) {
		copy(o.code[off:], code)
		if _, err := unix.Pwrite(o.mem, code, int64(rip)); err != nil {
			return o.fail(fmt.Errorf("fuzz: writing code at %#x: %w", rip, err))
		}
	}
	return nil
}

// sigTrapSyscall is the stop signal of a syscall stop with PTRACE_O_TRACESYSGOOD.
const sigTrapSyscall = unix.SIGTRAP | 0x80

// run is Run on the tracer thread; withMem says whether to write and read
// back the data window.
func (o *Oracle) run(code []byte, st *State, out *Outcome, withMem bool) error {
	if o.dead != nil {
		return o.dead
	}
	rip := st.Regs.RIP
	if err := o.placeCode(code, rip); err != nil {
		return err
	}
	if withMem {
		if _, err := unix.Pwrite(o.mem, st.Mem[:], int64(WindowAddr)); err != nil {
			return o.fail(fmt.Errorf("fuzz: writing the data window: %w", err))
		}
	}
	r := &o.pregs
	*r = o.base
	in := &st.Regs
	g := &in.GPR
	r.Rax, r.Rcx, r.Rdx, r.Rbx = g[regs.RAX], g[regs.RCX], g[regs.RDX], g[regs.RBX]
	r.Rsp, r.Rbp, r.Rsi, r.Rdi = g[regs.RSP], g[regs.RBP], g[regs.RSI], g[regs.RDI]
	r.R8, r.R9, r.R10, r.R11 = g[regs.R8], g[regs.R9], g[regs.R10], g[regs.R11]
	r.R12, r.R13, r.R14, r.R15 = g[regs.R12], g[regs.R13], g[regs.R14], g[regs.R15]
	r.Rip, r.Eflags, r.Orig_rax = rip, in.RFLAGS, ^uint64(0)
	r.Fs_base, r.Gs_base = in.FSBase, in.GSBase
	if err := unix.PtraceSetRegs(o.pid, r); err != nil {
		return o.fail(fmt.Errorf("fuzz: PTRACE_SETREGS: %w", err))
	}
	ws, err := o.step()
	if err != nil {
		return err
	}
	if !ws.Stopped() {
		return o.fail(fmt.Errorf("fuzz: the sandbox ended (status %#x) running % x", uint32(ws), code))
	}
	if err := unix.PtraceGetRegs(o.pid, r); err != nil {
		return o.fail(fmt.Errorf("fuzz: PTRACE_GETREGS: %w", err))
	}
	out.Regs = regs.FromPtrace(r)
	out.Signal, out.Code, out.Addr, out.Syscall = 0, 0, 0, false
	switch sig := ws.StopSignal(); sig {
	case sigTrapSyscall:
		out.Syscall = true
	case unix.SIGTRAP:
		var si [128]byte
		if err := o.siginfo(&si); err != nil {
			return err
		}
		// The single-step trap is TRAP_TRACE; an int3 or int1 raises a
		// SIGTRAP of its own.
		if code := int32(binary.LittleEndian.Uint32(si[8:])); code != 2 /* TRAP_TRACE */ {
			out.Signal, out.Code = sig, code
		}
	default:
		var si [128]byte
		if err := o.siginfo(&si); err != nil {
			return err
		}
		out.Signal = sig
		out.Code = int32(binary.LittleEndian.Uint32(si[8:]))
		out.Addr = binary.LittleEndian.Uint64(si[16:])
	}
	if withMem {
		copy(out.Mem[rwSize:], st.Mem[rwSize:])
		if _, err := unix.Pread(o.mem, out.Mem[:rwSize], int64(WindowAddr)); err != nil {
			return o.fail(fmt.Errorf("fuzz: reading the data window: %w", err))
		}
	}
	if sp := g[regs.RSP]; out.Signal == unix.SIGSEGV && out.Code == siKernel && out.Regs.RIP == rip && !canonical(sp) {
		ok, err := o.enterable(code, rip, sp)
		if err != nil {
			return err
		}
		if !ok {
			return ErrUnrunnable
		}
	}
	return nil
}

// step resumes the sandbox for one instruction and waits for it to stop.
func (o *Oracle) step() (unix.WaitStatus, error) {
	// SYSEMU_SINGLESTEP: one instruction, and a syscall stops at its entry
	// without running, so random registers can never reach the kernel.
	var ws unix.WaitStatus
	if e := ptsys.Raw(unix.PTRACE_SYSEMU_SINGLESTEP, o.pid, 0, 0); e != 0 {
		return ws, o.fail(fmt.Errorf("fuzz: PTRACE_SYSEMU_SINGLESTEP: %w", e))
	}
	for {
		_, err := unix.Wait4(o.pid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, o.fail(fmt.Errorf("fuzz: wait4: %w", err))
		}
		return ws, nil
	}
}

// siKernel is the si_code of a signal the kernel raises for a fault that
// has no address: a #GP (non-canonical address, privileged instruction...)
// is SIGSEGV with SI_KERNEL.
const siKernel = 0x80

// canonical reports whether v is a canonical 48-bit address: bits 63..47
// all equal.
func canonical(v uint64) bool { return signExtend47(v) == v }

// enterable reports whether the sandbox can be resumed at all with rsp sp,
// by single-stepping a nop from it at a byte of the code page that code (at
// rip) does not use, which is put back afterwards.
//
// Why: the kernel resumes a thread after a ptrace stop with IRETQ, and on
// some hosts (an AMD EPYC KVM guest, for one) that return faults when the
// rsp it loads is non-canonical, where elsewhere the rsp is loaded as it is.
// There it happens every time, with or without the trap flag (PTRACE_CONT
// too), wherever the instruction lies, and the kernel reports it as a #GP at
// the user rip: SIGSEGV, SI_KERNEL, no address, rip unchanged, RF set,
// nothing executed. That is also exactly what an instruction that raises #GP
// itself (a non-canonical memory operand) looks like, so the two are told
// apart here: when a nop cannot run from the same rsp either, the instruction
// never ran and the CPU has no answer for this state. User code can still
// make rsp non-canonical itself (mov rsp, rax runs there): only the return
// from the kernel cannot.
func (o *Oracle) enterable(code []byte, rip, sp uint64) (bool, error) {
	at := CodePage
	if rip == CodePage {
		at = rip + uint64(len(code))
	}
	if at >= codeEnd {
		return true, nil // no byte to spare: the fault stands
	}
	old := o.code[at-CodePage]
	if err := o.placeCode([]byte{0x90}, at); err != nil {
		return false, err
	}
	r := &o.pregs
	*r = o.base
	r.Rip, r.Rsp, r.Eflags, r.Orig_rax = at, sp, 0x202, ^uint64(0)
	if err := unix.PtraceSetRegs(o.pid, r); err != nil {
		return false, o.fail(fmt.Errorf("fuzz: PTRACE_SETREGS: %w", err))
	}
	ws, err := o.step()
	if err != nil {
		return false, err
	}
	if !ws.Stopped() {
		return false, o.fail(fmt.Errorf("fuzz: the sandbox ended (status %#x) running a nop", uint32(ws)))
	}
	if err := unix.PtraceGetRegs(o.pid, r); err != nil {
		return false, o.fail(fmt.Errorf("fuzz: PTRACE_GETREGS: %w", err))
	}
	if err := o.placeCode([]byte{old}, at); err != nil {
		return false, err
	}
	return ws.StopSignal() == unix.SIGTRAP && r.Rip == at+1, nil
}

func (o *Oracle) siginfo(si *[128]byte) error {
	if e := ptsys.Raw(unix.PTRACE_GETSIGINFO, o.pid, 0, uintptr(unsafe.Pointer(si))); e != 0 {
		return o.fail(fmt.Errorf("fuzz: PTRACE_GETSIGINFO: %w", e))
	}
	return nil
}

// fail records that the sandbox can no longer be trusted.
func (o *Oracle) fail(err error) error {
	o.dead = err
	return err
}

// lengthState is the register file of length measurements: every general
// register points into the middle of the read-write pages, so that most
// memory operands land in mapped memory and the instruction completes.
func lengthState() regs.Regs {
	var r regs.Regs
	for i := range r.GPR {
		r.GPR[i] = DataAddr + rwSize/2
	}
	r.RFLAGS = 0x202
	return r
}

// Length returns how many bytes of code the CPU takes as its first
// instruction. It places code so that it ends at the last byte of the code
// page, which is followed by a page that cannot be executed: if the CPU needs
// more bytes, the fetch faults (ErrTooShort); then it gives the CPU one byte
// fewer, and if it still decodes, the instruction is shorter than code, and
// the exact length is found by shrinking further. A branch is measured the
// same way: no instruction is trusted to fall through.
func (o *Oracle) Length(code []byte) (int, error) {
	if len(code) == 0 || len(code) > 15 {
		return 0, fmt.Errorf("fuzz: Length of %d bytes", len(code))
	}
	var (
		n   int
		err error
	)
	o.do(func() { n, err = o.length(code) })
	return n, err
}

func (o *Oracle) length(code []byte) (int, error) {
	st, out := &o.lenState, &o.lenOut
	st.Regs = lengthState()
	n := len(code)
	// fetches reports whether the CPU needs more than the first k bytes of
	// code. A fetch fault comes before anything the instruction does, so a
	// data fault or a SIGILL after all k bytes were fetched says "no more".
	fetches := func(k int) (bool, error) {
		st.Regs.RIP = codeEnd - uint64(k)
		if err := o.run(code[:k], st, out, false); err != nil {
			return false, err
		}
		if k == n && out.Signal == unix.SIGILL {
			return false, ErrIllegal
		}
		return out.Signal == unix.SIGSEGV && out.Addr == codeEnd && out.Regs.RIP == st.Regs.RIP, nil
	}
	more, err := fetches(n)
	if err != nil {
		return 0, err
	}
	if more {
		return 0, ErrTooShort
	}
	for k := n - 1; k >= 0; k-- {
		more, err := fetches(k)
		if err != nil {
			return 0, err
		}
		if more {
			return k + 1, nil
		}
	}
	return 0, errors.New("fuzz: the CPU measured an empty instruction")
}

// pinToOneCPU keeps the tracer thread, and the sandbox it starts (which
// inherits the mask), on the CPU it runs on now. Every step is a hand-off
// between the two; on one CPU it is a context switch, across two it waits for
// the other CPU to wake, which costs several times more on a virtual machine.
func pinToOneCPU() {
	var cpu, node uint32
	if _, _, e := unix.RawSyscall(unix.SYS_GETCPU, uintptr(unsafe.Pointer(&cpu)), uintptr(unsafe.Pointer(&node)), 0); e != 0 {
		return
	}
	var set unix.CPUSet
	set.Set(int(cpu))
	unix.SchedSetaffinity(0, &set)
}
