// Command gdbserver is a gdb remote serial protocol server built on
// onetrap, started as gdbserver is:
//
//	gdbserver [--attach PID] COMM [PROGRAM ARGS...]
//
// COMM is host:port (it listens on 127.0.0.1 only) or "-" to speak on
// stdin and stdout, so that gdb can start it itself:
//
//	(gdb) target remote | go run ./examples/gdbserver - ./prog
//
// Breakpoints are onetrap probes: a thread that hits one is stopped once,
// its breakpoint's conditions (gdb's agent expressions, sent with `set
// breakpoint condition-evaluation target`) are evaluated in the probe's
// handler, and only when one holds is the thread parked and gdb told; a
// false condition costs one trap and no other thread ever stops. gdb's
// non-stop mode (`set non-stop on`) parks only the thread that stopped.
// Steps are emulated where the library emulates the instruction.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
)

func main() {
	attach := flag.Int("attach", 0, "attach to the running process `PID` instead of starting PROGRAM")
	debug := flag.Bool("debug", false, "log every packet on stderr")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: gdbserver [--attach PID] COMM [PROGRAM ARGS...]\n  COMM: host:port, or - for stdin/stdout")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 1 || (*attach == 0) == (len(args) < 2) {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(args[0], args[1:], *attach, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "gdbserver:", err)
		os.Exit(1)
	}
}

func run(comm string, argv []string, pid int, debug bool) error {
	stdio, attached := comm == "-", pid != 0
	quietWaits()
	var ln net.Listener
	if !stdio {
		// Anyone who can connect controls the process: local only.
		_, port, err := net.SplitHostPort(comm)
		if err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", port)); err != nil {
			return err
		}
		defer ln.Close()
	}
	var p *ptrace.Process
	var first ptrace.Stop
	var err error
	if pid != 0 {
		p, err = ptrace.Attach(pid, ptrace.ParkOnSignal())
		if err != nil {
			return err
		}
		first = ptrace.Stop{Tid: pid, Reason: ptrace.StopInterrupt}
		if err := p.Interrupt(pid); err != nil {
			return err
		}
		go p.Run(context.Background())
	} else {
		cmd := exec.Command(argv[0], argv[1:]...)
		// On stdio the protocol owns stdout: the program writes to stderr,
		// as under gdbserver.
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		// A process group of its own, as under gdbserver: gdb ends a server
		// it started through a pipe by signalling the server's group, and
		// a program detached from must not go with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if stdio {
			cmd.Stdout = os.Stderr
		}
		if p, err = ptrace.Start(cmd, ptrace.ParkOnSignal()); err != nil {
			return err
		}
		if err := stopAtFirst(p); err != nil {
			p.Detach()
			cmd.Process.Kill()
			return err
		}
		go p.Run(context.Background())
	}
	stops := stopStream(p)
	first = <-stops
	if attached {
		fmt.Fprintf(os.Stderr, "Attached; pid = %d\n", pid)
	} else {
		if first.Reason != ptrace.StopBreakpoint {
			return fmt.Errorf("process %d did not start: %v", p.Pid(), first.Reason)
		}
		fmt.Fprintf(os.Stderr, "Process %s created; pid = %d\n", argv[0], p.Pid())
	}

	var rw io.ReadWriter
	if stdio {
		rw = struct {
			io.Reader
			io.Writer
		}{os.Stdin, os.Stdout}
	} else {
		fmt.Fprintf(os.Stderr, "Listening on port %d\n", ln.Addr().(*net.TCPAddr).Port)
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		defer c.Close()
		rw = c
	}
	logw := &syncWriter{w: os.Stderr}
	c := &conn{r: bufio.NewReaderSize(rw, 1<<16), w: rw}
	if debug {
		c.debug = logw
	}
	s := newServer(c, p, attached, logw)
	s.stopAll(stops, first)
	pkts := make(chan incoming, 16)
	go c.read(pkts)
	s.serve(pkts, stops)
	if st := s.stats(); st != "" {
		fmt.Fprint(os.Stderr, "gdbserver: "+strings.ReplaceAll(strings.TrimSuffix(st, "\n"), "\n", "\ngdbserver: ")+"\n")
	}
	return nil
}

// stopAtFirst parks a process started stopped at its first instruction
// (the dynamic loader's entry), through a probe that goes with its hit,
// so that gdb finds it stopped there as under gdbserver, and every
// debugger call works on the thread from the start.
func stopAtFirst(p *ptrace.Process) error {
	at, err := firstInsn(p.Pid(), p.Memory())
	if err != nil {
		return fmt.Errorf("finding the first instruction: %w", err)
	}
	_, err = p.Insert(at, ptrace.Auto, func(tid int, pr *ptrace.Probe, _ *regs.Regs, _ memio.Memory) {
		p.Remove(pr)
		p.Park(tid)
	})
	if err != nil {
		return fmt.Errorf("stopping at %#x: %w", at, err)
	}
	return nil
}

// quietWaits spares the tracer thread two costs that every hit pays
// otherwise, however little the hit itself does:
//
//   - A SIGCHLD at each ptrace stop, which the Go runtime's handler takes
//     for nothing (a signal frame, the handler, sigreturn): the tracer
//     learns of stops from wait4. SA_NOCLDSTOP added to the runtime's own
//     handler stops these notices; wait4 is woken all the same, and exits
//     are still signalled. About 4 µs a hit.
//   - The runtime's monitor thread waking on the tracee's CPU. Under a
//     one-CPU affinity (condbench.sh's taskset) GOMAXPROCS is 1: while the
//     tracer sleeps in wait4 no P is idle, so the monitor takes Ps back
//     from system calls and keeps polling every 20 µs. A second P, idle,
//     halves its wake-ups (counted with perf: 4,588 against 2,457 in
//     20,000 hits) and saves about 5 µs a hit.
func quietWaits() {
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	// The kernel's struct sigaction on amd64, read and written back with
	// one flag more: the handler stays the runtime's.
	var sa struct{ handler, flags, restorer, mask uint64 }
	const saNoCldStop = 1
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD),
		0, uintptr(unsafe.Pointer(&sa)), 8, 0, 0); e != 0 {
		return
	}
	sa.flags |= saNoCldStop
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD),
		uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
}
