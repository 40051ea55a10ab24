package ptrace_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

// The whole flow: start a program stopped before its first instruction, put
// probes in, let it run, count. The program is this test binary re-executed
// in its "calls" child mode (see TestMain: ONETRAP_PTRACE_CHILD), which calls
// every function of package asmfuncs N times; the test binary is not
// position-independent, so the functions are at the same addresses there.
func ExampleStart() {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "ONETRAP_PTRACE_CHILD=calls", "N=5")
	p, err := ptrace.Start(cmd)
	if err != nil {
		fmt.Println(err)
		return
	}
	var rsp []uint64
	// Handlers run on the tracer thread while the hitting thread is stopped,
	// before the probed instruction runs.
	// push rbp is emulated: one trap per hit, nothing mapped in the tracee.
	push, err := p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), ptrace.Emulate,
		func(tid int, pr *ptrace.Probe, r *regs.Regs, m memio.Memory) { rsp = append(rsp, r.SP()) })
	if err != nil {
		fmt.Println(err)
		return
	}
	// cpuid only the CPU can run: a copy is stepped in the XOL area. (Auto
	// would pick the cheapest correct strategy for each.)
	cpuid, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCpuid), ptrace.OutOfLine, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	exit, err := p.Run(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, pr := range []*ptrace.Probe{push, cpuid} {
		fmt.Printf("%-8v %-9v %d hits\n", pr.Insn, pr.Strategy, pr.Hits())
	}
	fmt.Println("handler calls:", len(rsp), "exit:", exit)
	// Output:
	// push rbp emulate   5 hits
	// cpuid    outofline 5 hits
	// handler calls: 5 exit: exit status 0
}

// Probes with no handler only count, and take no trap where a jump to a
// counting pad can replace their instruction; a recording probe's pad
// writes each hit into a ring the tracer drains, with no trap either.
func ExampleProcess_Record() {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "ONETRAP_PTRACE_CHILD=calls", "N=5")
	p, err := ptrace.Start(cmd)
	if err != nil {
		fmt.Println(err)
		return
	}
	// mov eax,42: five bytes, so a jump replaces it alone.
	count, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteMovImm), ptrace.Auto, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	// lea: a recording probe, the thread and rsp of each hit.
	tids := map[int]int{}
	rec, err := p.Record(asmfuncs.Addr(asmfuncs.SiteLea), ptrace.RecordSpec{Regs: []ptrace.Reg{regs.RSP}},
		func(r ptrace.Record) { tids[r.Tid]++ })
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(count.Strategy, count.Hits(), "hits")
	fmt.Println(rec.Strategy, rec.Hits(), "records from", len(tids), "thread")
	// Output:
	// jump 5 hits
	// jump 5 records from 1 thread
}
