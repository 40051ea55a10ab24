package uprobe_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/testprog"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		child()
		os.Exit(0)
	}
	code := m.Run()
	testprog.Cleanup()
	os.Exit(code)
}

// cIFunc calls strlen and memcpy through libc's IFUNCs n times between
// begin and end, and prints how many times it called each.
const cIFunc = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) void begin(void) { __asm__ volatile(""); }
__attribute__((noinline)) void end(void) { __asm__ volatile(""); }
int main(int argc, char **argv) {
	int n = atoi(argv[1]);
	char src[64] = "hello, world", dst[64];
	size_t total = 0;
	begin();
	for (int i = 0; i < n; i++) {
		total += strlen(src + (i % 5));
		memcpy(dst, src, 8 + i % 7);
	}
	end();
	printf("strlen %d memcpy %d total %zu %c\n", n, n, total, dst[0]);
	return 0;
}
`

func start(t *testing.T, argv ...string) *ptrace.Process {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	p, err := ptrace.Start(cmd)
	require.NoError(t, err)
	return p
}

// TestIFuncCalls probes strlen and memcpy (IFUNCs in glibc) by name in
// libc, placed when the loader maps it: every call the program makes
// between begin and end reaches the implementation the loader chose, so
// the counts equal the program's. memcpy@@GLIBC_2.14 names the same.
func TestIFuncCalls(t *testing.T) {
	bin := testprog.C(t, "ifunc", "cc", map[string]string{"p.c": cIFunc}, []string{"p.c"}, "-O1", "-fno-builtin")
	const n = 300
	p := start(t, bin, strconv.Itoa(n))
	main, err := uprobe.OpenExecutable(bin)
	require.NoError(t, err)
	defer main.Close()
	var on atomic.Bool
	_, err = main.Uprobe(p, "begin", func(int, *ptrace.Probe, *regs.Regs, memio.Memory) { on.Store(true) }, nil)
	require.NoError(t, err)
	_, err = main.Uprobe(p, "end", func(int, *ptrace.Probe, *regs.Regs, memio.Memory) { on.Store(false) }, nil)
	require.NoError(t, err)

	counts := map[string]*atomic.Int64{"strlen": {}, "memcpy": {}, "memcpy@@GLIBC_2.14": {}}
	var impl []string
	ld, err := uprobe.WatchLoader(p, func(lib string, err error) { t.Errorf("%s: %v", lib, err) })
	require.NoError(t, err)
	defer ld.Close()
	require.NoError(t, ld.Add(uprobe.Library{Name: "libc", Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
		var out []*ptrace.Probe
		for name, c := range counts {
			c := c
			fn, err := ex.File.LookupFunc(name)
			if err != nil {
				return nil, err
			}
			s, err := ex.EntrySite(p, fn, nil)
			if err != nil {
				return nil, err
			}
			impl = append(impl, s.Func.Name)
			pr, err := uprobe.Insert(p, s, func(int, *ptrace.Probe, *regs.Regs, memio.Memory) {
				if on.Load() {
					c.Add(1)
				}
			}, nil)
			if err != nil {
				return nil, err
			}
			out = append(out, pr)
		}
		return out, nil
	}}))
	exit, err := p.Run(context.Background())
	require.NoError(t, err)
	require.Equal(t, 0, exit.Code)
	for name, c := range counts {
		assert.Equal(t, int64(n), c.Load(), name)
	}
	require.Len(t, impl, 3)
	for _, name := range impl {
		assert.NotEqual(t, "strlen", name, "the implementation, not the resolver")
		assert.NotEqual(t, "memcpy", name)
	}
	t.Logf("implementations: %v", impl)
}

const cCtorLib = `#include <stdio.h>
__attribute__((noinline)) int ctor_target(int x) { __asm__ volatile(""); return x + 1; }
__attribute__((constructor)) static void init(void) { ctor_target(41); }
`

const cCtorLinked = `#include <stdio.h>
int ctor_target(int);
int main(void) { printf("%d\n", ctor_target(1) + ctor_target(2)); return 0; }
`

const cCtorDlopen = `#include <stdio.h>
#include <dlfcn.h>
int main(int argc, char **argv) {
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) { fprintf(stderr, "%s\n", dlerror()); return 1; }
	int (*f)(int) = (int (*)(int))dlsym(h, "ctor_target");
	printf("%d\n", f(1) + f(2));
	return 0;
}
`

// TestLibraryConstructor: a library probe is in before the library's
// constructor runs, for a library linked in and for one dlopened; the
// constructor's call and main's two are seen, with argument 1 (System V)
// 41 in the constructor's.
func TestLibraryConstructor(t *testing.T) {
	lib := testprog.C(t, "libctor.so", "cc", map[string]string{"l.c": cCtorLib}, []string{"l.c"}, "-O1", "-shared", "-fPIC")
	dir := testprog.Dir(lib)
	linked := testprog.C(t, "ctor-linked", "cc", map[string]string{"m.c": cCtorLinked}, []string{"m.c", lib}, "-O1", "-Wl,-rpath,"+dir)
	dlopened := testprog.C(t, "ctor-dlopen", "cc", map[string]string{"d.c": cCtorDlopen}, []string{"d.c"}, "-O1", "-ldl")
	for _, argv := range [][]string{{linked}, {dlopened, lib}} {
		p := start(t, argv...)
		var args []uint64
		ld, err := uprobe.WatchLoader(p, func(lib string, err error) { t.Errorf("%s: %v", lib, err) })
		require.NoError(t, err)
		require.NoError(t, ld.Add(uprobe.Library{Name: "libctor.so", Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
			pr, err := ex.Uprobe(p, "ctor_target", func(_ int, _ *ptrace.Probe, r *regs.Regs, _ memio.Memory) {
				v, err := uprobe.SysV.Arg(r, 1)
				assert.NoError(t, err)
				args = append(args, v)
			}, nil)
			return []*ptrace.Probe{pr}, err
		}}))
		exit, err := p.Run(context.Background())
		require.NoError(t, err)
		assert.Equal(t, 0, exit.Code)
		assert.Equal(t, []uint64{41, 1, 2}, args, "%s", argv[0])
		assert.Empty(t, ld.Unmapped())
		ld.Close()
	}
}

// TestLibraryNoSuchFunction: a library probe on a name the library lacks
// fails as soon as the library is mapped, before main runs.
func TestLibraryNoSuchFunction(t *testing.T) {
	bin := testprog.C(t, "ifunc", "cc", map[string]string{"p.c": cIFunc}, []string{"p.c"}, "-O1", "-fno-builtin")
	cmd := exec.Command(bin, "3")
	var out strings.Builder
	cmd.Stdout = &out
	p, err := ptrace.Start(cmd)
	require.NoError(t, err)
	var failed error
	ld, err := uprobe.WatchLoader(p, func(lib string, err error) {
		// On the tracer thread, with the thread that maps libc stopped.
		failed = err
		unix.Kill(p.Pid(), unix.SIGKILL)
	})
	require.NoError(t, err)
	require.NoError(t, ld.Add(uprobe.Library{Name: "libc", Place: func(ex *uprobe.Executable) ([]*ptrace.Probe, error) {
		pr, err := ex.Uprobe(p, "no_such_function", nil, nil)
		return []*ptrace.Probe{pr}, err
	}}))
	exit, err := p.Run(context.Background())
	require.NoError(t, err)
	require.Error(t, failed)
	assert.ErrorContains(t, failed, "no_such_function")
	assert.NotZero(t, exit.Signal)
	assert.Empty(t, out.String(), "main never ran")
}

// TestArgs reads a Go call's string, slice and int arguments at entry and
// its result at return, and a C call's string arguments, through the ABI
// helpers.
func TestArgs(t *testing.T) {
	p, err := startChild()
	require.NoError(t, err)
	ex, err := uprobe.OpenExecutable("/proc/" + strconv.Itoa(p.Pid()) + "/exe")
	require.NoError(t, err)
	defer ex.Close()
	const fn = "github.com/onetrap/onetrap/uprobe_test.describe"
	var name string
	var data []byte
	var n, ret uint64
	_, err = ex.Uprobe(p, fn, func(_ int, _ *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		// string: pointer, length; slice: pointer, length, capacity; int.
		ptr, _ := uprobe.GoRegs.Arg(r, 1)
		ln, _ := uprobe.GoRegs.Arg(r, 2)
		name, err = uprobe.ReadGoString(m, ptr, ln, 64)
		assert.NoError(t, err)
		ptr, _ = uprobe.GoRegs.Arg(r, 3)
		ln, _ = uprobe.GoRegs.Arg(r, 4)
		data, err = uprobe.ReadGoSlice(m, ptr, ln, 1, 64)
		assert.NoError(t, err)
		n, _ = uprobe.GoRegs.Arg(r, 6)
		_, err = uprobe.ReadGoString(m, ptr, 3, 2)
		assert.ErrorIs(t, err, uprobe.ErrTooLong)
	}, nil)
	require.NoError(t, err)
	_, err = ex.Uretprobe(p, fn, func(_ int, _ *ptrace.Probe, r *regs.Regs, _ memio.Memory) {
		ret, _ = uprobe.GoRegs.Ret(r, 1)
	}, nil)
	require.NoError(t, err)
	exit, err := p.Run(context.Background())
	require.NoError(t, err)
	require.Equal(t, 0, exit.Code)
	assert.Equal(t, "onetrap", name)
	assert.Equal(t, []byte{1, 2, 3}, data)
	assert.Equal(t, uint64(4), n)
	assert.Equal(t, uint64(14), ret)

	// C: strcmp-like call with two strings and a long, System V.
	src := `#include <stdio.h>
__attribute__((noinline)) long pair(const char *a, const char *b, long n) { __asm__ volatile(""); return n * 2; }
int main(void) { printf("%ld\n", pair("left", "right side", 21)); return 0; }
`
	bin := testprog.C(t, "args", "cc", map[string]string{"a.c": src}, []string{"a.c"}, "-O1")
	p = start(t, bin)
	c, err := uprobe.OpenExecutable(bin)
	require.NoError(t, err)
	defer c.Close()
	var a, b, cut string
	_, err = c.Uprobe(p, "pair", func(_ int, _ *ptrace.Probe, r *regs.Regs, m memio.Memory) {
		pa, _ := uprobe.SysV.Arg(r, 1)
		pb, _ := uprobe.SysV.Arg(r, 2)
		n, _ = uprobe.SysV.Arg(r, 3)
		a, _ = uprobe.ReadCString(m, pa, 64)
		b, _ = uprobe.ReadCString(m, pb, 64)
		cut, err = uprobe.ReadCString(m, pb, 5)
		assert.ErrorIs(t, err, uprobe.ErrTooLong)
	}, nil)
	require.NoError(t, err)
	_, err = c.Uretprobe(p, "pair", func(_ int, _ *ptrace.Probe, r *regs.Regs, _ memio.Memory) {
		ret, _ = uprobe.SysV.Ret(r, 1)
	}, nil)
	require.NoError(t, err)
	_, err = p.Run(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "left", a)
	assert.Equal(t, "right side", b)
	assert.Equal(t, "right", cut)
	assert.Equal(t, uint64(21), n)
	assert.Equal(t, uint64(42), ret)
	_, err = uprobe.SysV.Arg(&regs.Regs{}, 7)
	assert.ErrorIs(t, err, uprobe.ErrNotInRegister)
}
