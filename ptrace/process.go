package ptrace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/internal/ptsys"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/region"
	"github.com/onetrap/onetrap/regs"
)

// Strategy is how a probe's instruction runs on a hit.
type Strategy uint8

// Strategies.
const (
	// Auto lets Insert choose the cheapest correct strategy per probe, by
	// the system calls a hit costs beyond the trap itself: an emulation
	// that only changes registers costs none, and is chosen; one that reads
	// or writes memory costs a call per access, so a Boost (none) is chosen
	// instead when the instruction can be boosted; an instruction the
	// emulator does not implement is boosted, or else runs OutOfLine. With
	// the NoXOL option, the choice is Emulate or SingleStep.
	Auto Strategy = iota
	// Emulate applies the instruction to the stopped thread's registers and
	// memory: one trap, no other thread disturbed.
	Emulate
	// OutOfLine single-steps a copy of the instruction in the tracee's XOL
	// area and fixes up the result: two traps, no other thread disturbed.
	OutOfLine
	// SingleStep restores the original byte and steps it in place with the
	// process's other threads stopped, then re-inserts the INT3: what
	// debuggers do, the baseline and the last resort.
	SingleStep
	// Boost runs a copy of the instruction in an XOL slot followed by a jump
	// back to the next original instruction, as the kernel's kprobe booster
	// does: the thread leaves the slot by itself, so a hit costs one trap
	// and a write of rip. Only for instructions that do not branch, are not
	// system calls and, when rip-relative, whose slot is within ±2GB of
	// their target (else Insert falls back to OutOfLine). A signal is
	// never delivered inside a slot: a thread that has not run the copy
	// yet is stepped through it first, one past it is moved to the next
	// original instruction, and a fault the copy raises is reported at the
	// original address; so no handler (nor SA_SIGINFO context) sees an
	// address in the XOL area. Detach and Remove leave no thread there.
	Boost
	// Jump takes no trap per hit: the instruction is replaced by a jmp
	// rel32 to a pad in an XOL area that counts the hit in the tracee's
	// memory (a lock inc, the flags saved, the red zone skipped in C code),
	// runs the relocated instruction and jumps back. The probe is an INT3
	// first, served like Boost, until a world stop writes the jump. Only
	// for probes with no Handler (nothing runs in the tracer on a hit),
	// on one instruction of 5 bytes or more (no instruction boundary
	// inside the jump) that Boost could run, or on a region of several
	// that package region proves from the function's code (found by the
	// file's symbols, pclntab or unwind table), within ±2GB of a pad; Auto
	// picks it there for a nil Handler. Hits adds the counter, read from
	// the tracee's memory. No signal is delivered with rip in a pad, and
	// Remove and Detach move threads out of pads and restore every byte;
	// a pad is never reused. If the tracer dies, the process runs on:
	// pads only count (see the package documentation).
	Jump
)

func (s Strategy) String() string {
	switch s {
	case Auto:
		return "auto"
	case Emulate:
		return "emulate"
	case OutOfLine:
		return "outofline"
	case SingleStep:
		return "singlestep"
	case Boost:
		return "boost"
	case Jump:
		return "jump"
	}
	return fmt.Sprintf("Strategy(%d)", uint8(s))
}

// Handler is called on every hit of a probe, on the tracer thread, before the
// probed instruction runs: tid is the thread, r its registers (RIP is the
// probe's address) and m the process's memory. Changes to r are applied;
// moving r.RIP elsewhere skips the instruction. The handler must not keep r
// or m beyond the call, and should be quick: the thread waits, and so does
// every other event of the tracer.
type Handler func(tid int, p *Probe, r *regs.Regs, m memio.Memory)

// Probe is a breakpoint at one address of one process.
type Probe struct {
	// Addr is the probed instruction's address.
	Addr uint64
	// Insn is the instruction, decoded once at insertion.
	Insn *decode.Insn
	// Strategy is how the instruction runs on a hit.
	Strategy Strategy
	// NoJump says why a probe that could have run trapless (no handler,
	// inserted with Auto) takes a trap per hit instead; "" for the others.
	NoJump string

	handler Handler
	hits    atomic.Uint64
	s       *site
	// jump is the counter of a Jump probe's pad, which counted jumpBase
	// before the probe came.
	jump     *padCount
	jumpBase uint64
	// A recording probe's recorder, the records its pad wrote that were
	// delivered, and the records its trapped hits could not write.
	rec       *recorder
	recs      atomic.Uint64
	trapDrops atomic.Uint64
}

// Hits returns how many times a thread has hit the probe. It may be called
// from any goroutine. A Jump probe's count is read from the tracee's
// memory while it runs, and kept once it is removed, detached or exits.
// A recording probe's hits recorded by its pad are counted as their
// records are delivered (all of them once Run has returned).
func (pr *Probe) Hits() uint64 { return pr.hits.Load() + pr.recs.Load() + pr.jumpHits() }

// site is one INT3 in the text, shared by the probes at its address.
type site struct {
	addr     uint64
	orig     byte
	insn     *decode.Insn
	strategy Strategy
	probes   []*Probe
	slot     uint64    // XOL slot address, 0 without one
	scratch  int       // register loaded for a rip-relative rewrite, -1 for none
	boosted  bool      // the slot's copy is followed by a jump back
	pad      *pad      // a Jump site's pad (slot is its copy), nil for others
	noJump   string    // why Auto did not make it a Jump site, when it was asked to try
	rec      *recorder // a recording probe's, nil for others
	// region is what a Jump site's jump replaces (its instruction, or a
	// proved run of several); nil for other sites.
	region *region.Region
}

// Exit is how a traced process ended.
type Exit struct {
	Code   int         // exit status, when Signal is 0
	Signal unix.Signal // the signal that killed it, or 0
}

func (e *Exit) String() string {
	if e.Signal != 0 {
		return "killed by " + e.Signal.String()
	}
	return "exit status " + strconv.Itoa(e.Code)
}

// Option configures a process at Start or Attach.
type Option func(*config)

type config struct {
	onExec      func(p *Process)
	onFork      func(child *Process)
	noXOL       bool
	parkSignals bool
	allStop     bool
	ringSize    int
}

// NoXOL keeps the tracee's address space as it is but for the INT3s: no XOL
// area is ever mapped, so probes run as Emulate or SingleStep only (Auto
// picks between them; OutOfLine and Boost are refused), and an emulation
// that faults or is declined is stepped in place.
func NoXOL() Option { return func(c *config) { c.noXOL = true } }

// FollowForks makes the children a process forks traced too, instead of
// letting them run free: each starts with copies of its parent's probes
// (same handlers, hit counts from zero) and is handed to f, on the tracer
// thread, before it runs; call its Run to wait for it. Options are
// inherited. vfork children are served as part of their parent either way.
func FollowForks(f func(child *Process)) Option { return func(c *config) { c.onFork = f } }

// OnExec sets a function called (on the tracer thread) when the process
// calls execve: its probes were dropped with the old image, and new ones may
// be inserted from f.
func OnExec(f func(p *Process)) Option { return func(c *config) { c.onExec = f } }

// Process is a traced process.
type Process struct {
	t   *Tracer
	pid int
	cmd *exec.Cmd
	cfg config

	// Touched only on the tracer thread.
	mem      *memio.Process
	sites    map[uint64]*site
	removed  map[uint64]bool // addresses whose INT3 a thread may still be reporting
	threads  map[int]*thread // its own and its guests' (see thread.guest)
	xol      *xolArea
	sysAt    uint64 // a syscall instruction's bytes, where calls are injected (see findSyscall)
	world    worldStop
	image    int  // counts execs: a job queued for an old image does nothing
	stopped  bool // started stopped, awaiting Run
	finished bool
	stopq    stops
	// Jump sites (removed ones too: their pads stay), their counters, and
	// the reader Hits uses; exitStops says threads stop at their exit.
	pads        []*site
	counters    *counterArea
	counterRead *counterReader
	exitStops   bool
	// The record ring (nil until a recording probe needs one, and once the
	// process leaves it), the last one's consumer's end, and the recording
	// probes by id.
	ring      *ring
	ringDone  atomic.Pointer[chan struct{}]
	recProbes atomic.Pointer[[]*recorder]

	done    chan struct{}
	exit    *Exit
	endErr  error
	failErr error // why the tracer let the process go, for Run
	once    sync.Once
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.pid }

// Tracer returns the tracer serving the process.
func (p *Process) Tracer() *Tracer { return p.t }

// Done is closed when the process has exited or been detached.
func (p *Process) Done() <-chan struct{} { return p.done }

func (t *Tracer) newProcess(pid int, cfg config) (*Process, error) {
	m, err := memio.OpenProcess(pid)
	if err != nil {
		return nil, err
	}
	p := &Process{
		t: t, pid: pid, cfg: cfg, mem: m,
		sites:   map[uint64]*site{},
		removed: map[uint64]bool{},
		threads: map[int]*thread{},
		done:    make(chan struct{}),
		stopq:   stops{ready: make(chan struct{}, 1)},
	}
	return p, nil
}

func (p *Process) addThread(tid int, state threadState) *thread {
	th := &thread{tid: tid, tgid: p.pid, p: p, state: state}
	p.threads[tid] = th
	p.t.threads[tid] = th
	return th
}

// end records how the process finished and releases it.
func (p *Process) end(exit *Exit, err error) {
	if p.finished {
		return
	}
	p.finished = true
	if err == nil {
		err = p.failErr
	}
	p.exit, p.endErr = exit, err
	if exit != nil {
		p.emit(Stop{Reason: StopExited, Exit: exit})
	}
	p.t.releaseGuests(p)
	p.finishPads(false)
	p.finishRing()
	p.mem.Close()
	p.t.forget(p)
	p.t.abandonWorld(p)
	close(p.done)
}

const traceOptions = unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
	unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACEVFORKDONE | unix.PTRACE_O_TRACESYSGOOD

// Start runs cmd under the tracer, stopped before its first instruction:
// probes can be inserted before Run lets it go. cmd must not have been
// started. The tracer reaps the process: use Run, not cmd.Wait (Run flushes
// cmd's I/O copying itself).
func (t *Tracer) Start(cmd *exec.Cmd, opts ...Option) (*Process, error) {
	_, launcher, err := stubPaths()
	if err != nil {
		return nil, err
	}
	path, err := startable(cmd)
	if err != nil {
		return nil, err
	}
	cfg := configure(opts)
	// Started here, not on the tracer thread: a child of that thread would
	// be reaped by its wait4 once detached, and the caller's cmd.Wait
	// would find nothing (the loop waits for its own thread's children).
	pid, err := launch(cmd, launcher)
	if err != nil {
		return nil, err
	}
	var p *Process
	err = t.do(func() error {
		if err := t.runToExec(pid, path); err != nil {
			t.abort(cmd, pid)
			return err
		}
		if p, err = t.newProcess(pid, cfg); err != nil {
			t.abort(cmd, pid)
			return err
		}
		p.cmd, p.stopped = cmd, true
		p.addThread(pid, parked)
		t.procs[pid] = p
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrClosed) {
			unix.Kill(pid, unix.SIGKILL)
			cmd.Wait()
		}
		return nil, err
	}
	return p, nil
}

// startable checks cmd before anything is started, and returns the path
// of its program as the launcher, started in cmd.Dir, will see it.
func startable(cmd *exec.Cmd) (string, error) {
	if cmd.Process != nil {
		return "", errors.New("ptrace: Start: cmd already started")
	}
	if cmd.Err != nil {
		return "", fmt.Errorf("ptrace: Start: %w", cmd.Err)
	}
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Ptrace {
		return "", errors.New("ptrace: Start: cmd.SysProcAttr.Ptrace must be false: the tracer seizes the process itself")
	}
	path := cmd.Path
	if cmd.Dir != "" && !filepath.IsAbs(path) {
		path = filepath.Join(cmd.Dir, path)
	}
	if fi, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("ptrace: Start: %w", err)
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("ptrace: Start: %s is not an executable file", cmd.Path)
	}
	return path, nil
}

func configure(opts []Option) config {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// launch starts cmd's program through the launcher (see stub.go), which
// stops itself before its execve, and returns its pid.
func launch(cmd *exec.Cmd, launcher string) (int, error) {
	path, args := cmd.Path, cmd.Args
	if len(args) == 0 {
		args = []string{path}
	}
	cmd.Path = launcher
	cmd.Args = append([]string{"onetrap-launcher", path}, args...)
	err := cmd.Start()
	cmd.Path, cmd.Args = path, args
	if err != nil {
		return 0, fmt.Errorf("ptrace: Start: %w", err)
	}
	return cmd.Process.Pid, nil
}

// runToExec seizes the stopped launcher and lets it run to the return of
// its execve to user mode, before the program's first instruction (the
// exec stop itself is inside execve, whose return would overwrite rax
// after any register change, an injected system call say). It waits for
// the launcher alone: until the exec, nothing of the tracee can hit.
func (t *Tracer) runToExec(pid int, path string) error {
	if _, e := ptsys.Wait4(pid, &t.ws, ptsys.WALL|unix.WUNTRACED); e != 0 {
		return errno("wait for", pid, e)
	}
	if !t.ws.Stopped() {
		return fmt.Errorf("ptrace: Start: launcher ended early (%v)", t.ws)
	}
	if e := ptsys.Raw(unix.PTRACE_SEIZE, pid, 0, traceOptions); e != 0 {
		return fmt.Errorf("ptrace: seize %d: %w", pid, e)
	}
	unix.Kill(pid, unix.SIGCONT)
	// Serve the launcher until the exec event: group-stop notifications
	// and the SIGCONT itself (which has no handler there).
	for {
		if _, e := ptsys.Wait4(pid, &t.ws, ptsys.WALL); e != 0 {
			return errno("wait for", pid, e)
		}
		ws := t.ws
		switch {
		case ws.Exited():
			// The launcher exits with the errno its execve failed with.
			return fmt.Errorf("ptrace: Start: exec %s: %w", path, unix.Errno(ws.ExitStatus()))
		case ws.Signaled():
			return fmt.Errorf("ptrace: Start: launcher ended (%v)", ws)
		case ptsys.Event(ws) == unix.PTRACE_EVENT_EXEC:
			if e := ptsys.Raw(unix.PTRACE_INTERRUPT, pid, 0, 0); e != 0 {
				return errno("interrupt", pid, e)
			}
			ptsys.Cont(pid, 0)
			if _, e := ptsys.Wait4(pid, &t.ws, ptsys.WALL); e != 0 || ptsys.Event(t.ws) != unix.PTRACE_EVENT_STOP {
				return fmt.Errorf("ptrace: Start: no stop after exec (%v)", t.ws)
			}
			return nil
		case ptsys.Event(ws) == unix.PTRACE_EVENT_STOP:
			ptsys.Cont(pid, 0)
		default:
			ptsys.Cont(pid, int(ws.StopSignal()))
		}
	}
}

// abort kills a launched process that Start refuses, while it is still
// stopped, and reaps it.
func (t *Tracer) abort(cmd *exec.Cmd, pid int) {
	unix.Kill(pid, unix.SIGKILL)
	for {
		if _, e := ptsys.Wait4(pid, &t.ws, ptsys.WALL); e != 0 || t.ws.Exited() || t.ws.Signaled() {
			break
		}
	}
	go cmd.Wait()
}

// Attach seizes the running process pid and all its threads. They keep
// running; new threads are traced as they appear.
func (t *Tracer) Attach(pid int, opts ...Option) (*Process, error) {
	cfg := configure(opts)
	var p *Process
	err := t.do(func() error {
		if _, ok := t.procs[pid]; ok {
			return fmt.Errorf("ptrace: process %d is already traced", pid)
		}
		if err := attachable(pid); err != nil {
			return err
		}
		np, err := t.newProcess(pid, cfg)
		if err != nil {
			return fmt.Errorf("ptrace: attach %d: %w", pid, err)
		}
		if err := np.seizeAll(); err != nil {
			np.detachAll()
			np.mem.Close()
			return err
		}
		t.procs[pid] = np
		p = np
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// attachable says why pid cannot be attached, if it can be told before
// trying: a zombie, or a process another tracer holds.
func attachable(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return fmt.Errorf("ptrace: attach %d: %w", pid, memio.ErrGone)
	}
	for _, l := range strings.Split(string(b), "\n") {
		switch k, v, _ := strings.Cut(l, ":"); k {
		case "State":
			if strings.HasPrefix(strings.TrimSpace(v), "Z") {
				return fmt.Errorf("ptrace: attach %d: the process is a zombie (it has exited and waits for its parent to reap it)", pid)
			}
		case "TracerPid":
			if tp := strings.TrimSpace(v); tp != "0" {
				return fmt.Errorf("ptrace: attach %d: already traced by process %s (TracerPid in /proc/%d/status): %w", pid, tp, pid, unix.EPERM)
			}
		}
	}
	return nil
}

// seizeAll seizes every thread of p. Threads created by a thread not yet
// seized do not inherit the tracer, so it lists them again until a pass
// finds nothing new.
func (p *Process) seizeAll() error {
	pid := p.pid
	for {
		ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			return fmt.Errorf("ptrace: attach %d: %w", pid, err)
		}
		added := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || p.threads[tid] != nil {
				continue
			}
			// The options go with the seize: set after it, a clone the
			// thread makes in between would give an untraced thread.
			if e := ptsys.Raw(unix.PTRACE_SEIZE, tid, 0, traceOptions); e != 0 {
				if e == unix.ESRCH {
					continue // exited meanwhile
				}
				if e == unix.EPERM {
					if err := attachable(pid); err != nil {
						return err
					}
				}
				return fmt.Errorf("ptrace: seize thread %d of %d: %w", tid, pid, e)
			}
			p.addThread(tid, running)
			added = true
		}
		if !added {
			break
		}
	}
	if len(p.threads) == 0 {
		return fmt.Errorf("ptrace: attach %d: %w", pid, memio.ErrGone)
	}
	return nil
}

// detachAll detaches threads seized by a failed Attach.
func (p *Process) detachAll() {
	for tid := range p.threads {
		unix.PtraceDetach(tid)
		delete(p.t.threads, tid)
	}
}

// Run lets a process started stopped go, and waits until it exits (the
// Exit says how) or ctx ends: then the process is detached, left running as
// if never traced, and Run returns ctx's error.
func (p *Process) Run(ctx context.Context) (*Exit, error) {
	err := p.t.do(func() error {
		if p.finished || !p.stopped {
			return nil
		}
		p.stopped = false
		for _, th := range p.threads {
			if th.state == parked {
				p.t.release(th)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		if err := p.Detach(); err != nil {
			select {
			case <-p.done:
			default:
				return nil, errors.Join(ctx.Err(), err)
			}
		}
		<-p.done
		if p.exit == nil {
			p.awaitLeavers()
			return nil, ctx.Err()
		}
	}
	p.waitRecords()
	if p.cmd != nil && p.exit != nil {
		// The tracer reaped the process; Wait now only finishes the I/O
		// copying goroutines and closes the pipes.
		p.cmd.Wait()
	}
	if p.exit == nil {
		p.awaitLeavers()
		if p.endErr != nil {
			return nil, p.endErr
		}
		return nil, errors.New("ptrace: process detached")
	}
	return p.exit, p.endErr
}

// awaitLeavers returns once no thread of the detached process p is still
// traced. A vfork parent cannot be detached while it waits for its child
// (see leaving): until it is, the caller must not wait for the process
// (cmd.Wait), since the kernel would hand it the parent's ptrace stop.
// The thread of a tracer that served only p ends now, and the kernel lets
// the parent go with it; a shared tracer lets it go when the vfork ends.
func (p *Process) awaitLeavers() {
	if p.t.hand.On() {
		return
	}
	if p.t.owned {
		<-p.t.hand.Done()
		// The thread's end, not the loop's, detaches what is left.
		task := "/proc/self/task/" + strconv.Itoa(p.t.hand.Tid())
		for i := 0; i < 1000; i++ {
			if _, err := os.Stat(task); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		return
	}
	for {
		left := false
		err := p.t.do(func() error {
			for _, th := range p.t.threads {
				if th.state == leaving && th.tgid == p.pid {
					left = true
				}
			}
			return nil
		})
		if err != nil || !left {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// Detach removes every probe, restoring the original bytes, unmaps the XOL
// area and lets every thread go with its pending signals, as if the process
// had never been traced.
//
// The other threads are stopped first, wherever they are. A thread waiting
// for its vfork child cannot be stopped, nor detached, until the child
// execs or exits: Detach returns once it is let go, which for a process
// started or attached with the package-level Start or Attach is at once
// (the tracer's thread ends, and the kernel lets it go), and for a shared
// Tracer when its vfork ends. Called from a handler, Detach returns at
// once and the process is detached when every other thread has stopped.
func (p *Process) Detach() error {
	err := p.t.call(func(done func(error)) { p.t.detach(p, done) })
	p.awaitLeavers()
	return err
}

// Insert puts a probe at addr and returns it. The instruction there is read
// and decoded once; addr must be mapped and executable, must not hold an
// INT3 of the program's own, and its instruction must not be rejected by the
// decoder. A second probe at the same address shares the INT3 (and its
// strategy), and both handlers run on each hit. strategy Auto picks the
// cheapest correct one (see Auto); Probe.Strategy tells which. Boost falls
// back to OutOfLine where the copy cannot reach a rip-relative target.
func (p *Process) Insert(addr uint64, strategy Strategy, h Handler) (*Probe, error) {
	select {
	case <-p.done:
		return nil, fmt.Errorf("ptrace: process %d is no longer traced", p.pid)
	default:
	}
	var pr *Probe
	onTracer := p.t.hand.On()
	err := p.t.call(func(done func(error)) {
		p.insertRec(addr, strategy, h, nil, onTracer, func(q *Probe, err error) {
			pr = q
			done(err)
		})
	})
	return pr, err
}

// Remove takes a probe out. The INT3 goes when the last probe at its address
// does.
func (p *Process) Remove(pr *Probe) error {
	return p.t.call(func(done func(error)) { p.removeThen(pr, done) })
}

// Probes returns the probes in place.
func (p *Process) Probes() []*Probe {
	var out []*Probe
	p.t.do(func() error {
		for _, s := range p.sites {
			out = append(out, s.probes...)
		}
		return nil
	})
	return out
}

// XOL returns the address and size of the process's first XOL area, or
// 0, 0 when none is mapped. (Probes more than 2GB away from it that need a
// slot within reach get areas of their own, up to 16.)
func (p *Process) XOL() (base, size uint64) {
	p.t.do(func() error {
		if p.xol != nil {
			base, size = p.xol.base, xolSize
		}
		return nil
	})
	return base, size
}
