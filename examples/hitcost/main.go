// Command hitcost runs a program under onetrap with one probe, for
// compare.sh: the cost of a hit per strategy, measured from outside.
//
//	hitcost -strategy emulate -sym f ./target 100000
//
// The strategy floor does not use onetrap: the program runs under a tracer
// that only waits for its stops and continues it (the target's own int3,
// with the argument floor), the least any ptrace-based tool can do per hit.
package main

import (
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/ptrace"
)

func main() {
	strategy := flag.String("strategy", "emulate", "floor, emulate, boost, outofline, singlestep, jump or auto")
	sym := flag.String("sym", "f", "the function whose first instruction is probed")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: hitcost [-strategy s] [-sym name] program [args]")
		os.Exit(2)
	}
	if err := run(*strategy, *sym, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "hitcost:", err)
		os.Exit(1)
	}
}

func run(strategy, sym string, args []string) error {
	if strategy == "floor" {
		return floor(args)
	}
	strategies := map[string]ptrace.Strategy{"auto": ptrace.Auto, "emulate": ptrace.Emulate, "boost": ptrace.Boost,
		"outofline": ptrace.OutOfLine, "singlestep": ptrace.SingleStep, "jump": ptrace.Jump}
	s, ok := strategies[strategy]
	if !ok {
		return fmt.Errorf("unknown strategy %q", strategy)
	}
	addr, err := symbol(args[0], sym)
	if err != nil {
		return err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	p, err := ptrace.Start(cmd)
	if err != nil {
		return err
	}
	pr, err := p.Insert(addr, s, nil)
	if err != nil {
		p.Detach()
		cmd.Process.Kill()
		return err
	}
	exit, err := p.Run(context.Background())
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "hitcost: %d hits on %v (%v), %v\n", pr.Hits(), pr.Insn, pr.Strategy, exit)
	if exit.Code != 0 || exit.Signal != 0 {
		return errors.New(exit.String())
	}
	return nil
}

// floor runs the program under the least tracer there is: every stop is
// continued, SIGTRAPs swallowed, other signals passed on.
func floor(args []string) error {
	runtime.LockOSThread() // the tracee is tied to the thread that started it
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &unix.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil { // the exec stop
		return err
	}
	traps := 0
	sig := 0
	for {
		if err := unix.PtraceCont(pid, sig); err != nil {
			return err
		}
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			return err
		}
		if !ws.Stopped() {
			break
		}
		sig = 0
		if ws.StopSignal() == unix.SIGTRAP {
			traps++
		} else {
			sig = int(ws.StopSignal())
		}
	}
	fmt.Fprintf(os.Stderr, "hitcost: %d traps, %v\n", traps, ws)
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("the program ended with %v", ws)
	}
	return nil
}

// symbol returns the address of name in the executable at path, which must
// not be position-independent (the address is used as is).
func symbol(path, name string) (uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		return 0, fmt.Errorf("%s: build it with -no-pie: symbol addresses are used as they are", path)
	}
	syms, err := f.Symbols()
	if err != nil {
		return 0, err
	}
	for _, s := range syms {
		if s.Name == name {
			return s.Value, nil
		}
	}
	return 0, fmt.Errorf("%s: no symbol %s", path, name)
}
