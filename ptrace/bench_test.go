package ptrace

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

// benchCPU is the CPU tracer and tracee share: a ptrace stop and resume
// costs microseconds more when the two wake each other across CPUs.
const benchCPU = 0

func pin(b *testing.B, tid int) {
	var set unix.CPUSet
	set.Set(benchCPU)
	require.NoError(b, unix.SchedSetaffinity(tid, &set))
}

// BenchmarkHit measures one hit of a probe on push rbp, per strategy, with
// tracer and tracee pinned to one CPU; floor is the tracee's own int3 with a
// tracer that only waits and continues. Run with -benchtime=100000x or so:
// each run starts a tracee.
func BenchmarkHit(b *testing.B) {
	b.Run("floor", benchFloor)
	for _, c := range []struct {
		name string
		s    Strategy
	}{{"emulate-push", Emulate}, {"outofline", OutOfLine}, {"singlestep", SingleStep}} {
		b.Run(c.name, func(b *testing.B) {
			cmd := child("bench-push", fmt.Sprintf("N=%d", b.N))
			cmd.Stdout = io.Discard
			p, err := Start(cmd)
			require.NoError(b, err)
			pr, err := p.Insert(asmfuncs.Addr(asmfuncs.SitePushRBP), c.s, func(int, *Probe, *regs.Regs, memio.Memory) {})
			require.NoError(b, err)
			pin(b, p.Tracer().tid)
			pin(b, p.Pid())
			b.ReportAllocs()
			b.ResetTimer()
			_, err = p.Run(context.Background())
			b.StopTimer()
			require.NoError(b, err)
			require.Equal(b, uint64(b.N), pr.Hits())
		})
	}
}

// benchFloor traces the program's own int3s with the least a tracer can do.
func benchFloor(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bench-trap", fmt.Sprintf("N=%d", b.N))
	cmd.SysProcAttr = &unix.SysProcAttr{Ptrace: true}
	require.NoError(b, cmd.Start())
	pid := cmd.Process.Pid
	var ws unix.WaitStatus
	_, err := unix.Wait4(pid, &ws, 0, nil) // the exec stop
	require.NoError(b, err)
	pin(b, unix.Gettid())
	pin(b, pid)
	b.ResetTimer()
	traps := 0
	for {
		require.Zero(b, cont(pid, 0))
		if _, e := wait4(pid, &ws, wall); e != 0 || !ws.Stopped() {
			break
		}
		if ws.StopSignal() == unix.SIGTRAP {
			traps++
		}
	}
	b.StopTimer()
	require.True(b, ws.Exited())
	require.Equal(b, 0, ws.ExitStatus())
	require.Equal(b, b.N, traps)
}
