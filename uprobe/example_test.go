package uprobe_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
)

// childEnv makes the test binary the program the examples trace.
const childEnv = "UPROBE_EXAMPLE_CHILD"

//go:noinline
func square(x int) int { return x * x }

//go:noinline
func describe(name string, data []byte, n int) int { return len(name) + len(data) + n }

func child() {
	s := 0
	for i := 1; i <= 3; i++ {
		s += square(i)
	}
	s += describe("onetrap", []byte{1, 2, 3}, 4)
	fmt.Fprintln(os.Stderr, "child:", s)
}

// startChild starts the test binary in child mode, stopped before its
// first instruction.
func startChild() (*ptrace.Process, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return ptrace.Start(cmd)
}

// openChild starts the child and opens its executable.
func openChild() (*ptrace.Process, *uprobe.Executable, error) {
	p, err := startChild()
	if err != nil {
		return nil, nil, err
	}
	ex, err := uprobe.OpenExecutable(fmt.Sprintf("/proc/%d/exe", p.Pid()))
	if err != nil {
		p.Detach()
		return nil, nil, err
	}
	return p, ex, nil
}

// Opening an executable reads its symbols once; here the test binary,
// a Go program, asks for a Go runtime function.
func ExampleOpenExecutable() {
	exe, _ := os.Executable()
	ex, err := uprobe.OpenExecutable(exe)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Close()
	fn, err := ex.File.LookupFunc("runtime.newproc")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(fn.Name, "is a Go function:", fn.Go)
	// Output: runtime.newproc is a Go function: true
}

// Probing a function by name: every call of square, with its argument
// (Go's register ABI).
func ExampleExecutable_Uprobe() {
	p, ex, err := openChild()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Close()
	_, err = ex.Uprobe(p, "github.com/onetrap/onetrap/uprobe_test.square", func(tid int, pr *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		x, _ := uprobe.GoRegs.Arg(r, 1)
		fmt.Println("square", x)
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Run(context.Background())
	// Output:
	// square 1
	// square 2
	// square 3
}

// Probing a function's returns: the result is in the first result register.
func ExampleExecutable_Uretprobe() {
	p, ex, err := openChild()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ex.Close()
	_, err = ex.Uretprobe(p, "github.com/onetrap/onetrap/uprobe_test.square", func(tid int, pr *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		v, _ := uprobe.GoRegs.Ret(r, 1)
		fmt.Println("returns", v)
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	p.Run(context.Background())
	// Output:
	// returns 1
	// returns 4
	// returns 9
}

// A library probe placed when the program dlopens the library: the calls
// of cbrt in libm, counted.
func ExampleLoader() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "p.c")
	os.WriteFile(src, []byte(`#include <dlfcn.h>
int main(void) {
	void *h = dlopen("libm.so.6", RTLD_NOW);
	double (*f)(double) = (double (*)(double))dlsym(h, "cbrt");
	double s = 0;
	for (int i = 0; i < 5; i++) s += f(i);
	return s > 0 ? 0 : 1;
}
`), 0o644)
	bin := filepath.Join(dir, "p")
	if out, err := exec.Command("cc", "-o", bin, src, "-ldl").CombinedOutput(); err != nil {
		fmt.Println(string(out))
		return
	}
	p, err := ptrace.Start(exec.Command(bin))
	if err != nil {
		fmt.Println(err)
		return
	}
	ld, err := uprobe.WatchLoader(p, func(lib string, err error) { fmt.Println(lib, err) })
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ld.Close()
	calls := 0
	ld.Add(uprobe.Library{Name: "libm", Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
		fmt.Println("libm mapped")
		pr, err := ex.Uprobe(p, "cbrt", func(int, *ptrace.Probe, *regs.Regs, memio.Memory) { calls++ }, nil)
		return []*ptrace.Probe{pr}, err
	}})
	exit, _ := p.Run(context.Background())
	fmt.Println("exit", exit.Code, "calls", calls)
	// Output:
	// libm mapped
	// exit 0 calls 5
}
