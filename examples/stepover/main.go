// Command stepover is the smallest debugger loop built on onetrap: start a
// program, stop at a function, print the registers, step over the
// breakpoint by emulating the instruction under it, continue, and detach.
//
//	go run ./examples/stepover                         (a built-in program)
//	go run ./examples/stepover -f FUNC PROGRAM [ARGS...]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
)

// childEnv makes this program the one debugged when no program is given.
const childEnv = "ONETRAP_STEPOVER_CHILD"

// target calls square, so Go gives it a stack-bound check: its first
// instruction is cmp rsp, [r14+0x10], which the emulator implements.
//
//go:noinline
func target(x int) int { return square(x) + 1 }

//go:noinline
func square(x int) int { return x * x }

func child() {
	s := 0
	for i := 0; i < 5; i++ {
		s += target(i)
		time.Sleep(20 * time.Millisecond) // a program that does something between calls
	}
	fmt.Println("child: sum", s) // 35 whether traced or not
}

func main() {
	if os.Getenv(childEnv) != "" {
		child()
		return
	}
	fn := flag.String("f", "main.target", "the function to stop at, in the program itself (not a library)")
	stops := flag.Int("n", 2, "how many stops before detaching")
	flag.Parse()
	if err := debug(*fn, *stops, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "stepover:", err)
		os.Exit(1)
	}
}

func debug(fn string, stops int, argv []string) error {
	var cmd *exec.Cmd
	if len(argv) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cmd = exec.Command(exe)
		cmd.Env = append(os.Environ(), childEnv+"=1")
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr

	// Start leaves the program stopped before its first instruction, so the
	// breakpoint is in place before any code runs.
	p, err := ptrace.Start(cmd)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	n := 0
	// The handler runs on the tracer thread while the thread that hit the
	// breakpoint is stopped; the process's other threads keep running.
	onHit := func(tid int, pr *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		n++
		fmt.Printf("stop %d: thread %d at %s (%#x): %v\n%v\n", n, tid, fn, r.RIP, pr.Insn, r)
		// Stepping over the breakpoint: a debugger would put the original
		// byte back, single-step and re-insert the INT3, with every thread
		// stopped. Here the instruction, decoded once by Insert, is applied
		// to the registers and memory instead. Because the handler moves
		// RIP itself, the library will not run the instruction again.
		before := *r
		if err := emu.Step(pr.Insn, r, m); err != nil {
			// Nothing changed (ErrNotEmulated, or a fault): the library
			// runs the instruction on the CPU instead.
			fmt.Println("  not emulated here:", err)
			return
		}
		fmt.Printf("  stepped over: rip %#x -> %#x, rsp %#x -> %#x, rflags %#x -> %#x\n",
			before.RIP, r.RIP, before.SP(), r.SP(), before.RFLAGS, r.RFLAGS)
		if n == stops {
			// Removed here, on the tracer thread, so no thread stops again
			// while Run detaches; the program then goes on untraced.
			p.Remove(pr)
			stop()
		}
	}
	// The function is found in the file the process runs, at the address
	// it was loaded at (PIE programs move); FirstByte stops at a Go
	// function's first instruction, its stack check. Auto emulates what the
	// emulator implements and runs the rest out of line; what cannot run
	// safely is refused, with the reason.
	if _, err := uprobe.ProbeFunc(p, fn, onHit, &uprobe.Options{FirstByte: true}); err != nil {
		abandon(p, cmd)
		return err
	}
	exit, err := p.Run(ctx)
	if exit != nil {
		fmt.Printf("stepover: program exited (%v) after %d stops\n", exit, n)
		return nil
	}
	if ctx.Err() == nil {
		return err
	}
	// Detached: the program is still this process's child, so wait for it.
	fmt.Printf("stepover: detached after %d stops; the program runs on\n", n)
	return cmd.Wait()
}

// abandon ends a program that never ran its first instruction.
func abandon(p *ptrace.Process, cmd *exec.Cmd) {
	p.Detach()
	cmd.Process.Kill()
	cmd.Wait()
}
