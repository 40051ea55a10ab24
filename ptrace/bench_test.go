package ptrace

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/internal/ptsys"
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

// BenchmarkHit measures one hit per strategy, in ns, with tracer and tracee
// pinned to one CPU and the same tracee loop (one call per iteration of a
// function whose first instruction is probed) for all: floor is the loop
// calling a function that starts with the program's own int3, under a
// tracer that only waits and continues, which nothing with ptrace can beat;
// emulate-push, emulate-sub and emulate-cmp emulate push rbp, sub rsp,0x18
// and cmp rsp,[r14+16]; outofline, boost and singlestep run push rbp;
// none is the loop calling mov eax,42 with no probe, jump-count the
// same with a trapless probe on it (no trap per hit: compare with none),
// and jump-record the same with a recording probe (six argument registers
// and the time per record, drained by the tracer meanwhile).
// Each run starts a tracee; the default -benchtime keeps the whole under a
// minute.
func BenchmarkHit(b *testing.B) {
	b.Run("none", func(b *testing.B) { benchJump(b, false) })
	b.Run("jump-count", func(b *testing.B) { benchJump(b, true) })
	b.Run("jump-record", benchRecord)
	b.Run("floor", benchFloor)
	for _, c := range []struct {
		name string
		site asmfuncs.Site
		s    Strategy
	}{
		{"emulate-push", asmfuncs.SitePushRBP, Emulate},
		{"emulate-sub", asmfuncs.SiteSubRSP, Emulate},
		{"emulate-cmp", asmfuncs.SiteCmpStack, Emulate},
		{"outofline", asmfuncs.SitePushRBP, OutOfLine},
		{"boost", asmfuncs.SitePushRBP, Boost},
		{"singlestep", asmfuncs.SitePushRBP, SingleStep},
	} {
		b.Run(c.name, func(b *testing.B) {
			cmd := child("bench", "SITE="+benchSite[c.site], fmt.Sprintf("N=%d", b.N))
			cmd.Stdout = io.Discard
			p, err := Start(cmd)
			require.NoError(b, err)
			defer func() { p.Detach(); cmd.Process.Kill() }()
			pr, err := p.Insert(asmfuncs.Addr(c.site), c.s, func(int, *Probe, *regs.Regs, memio.Memory) {})
			require.NoError(b, err)
			require.Equal(b, c.s, pr.Strategy)
			runPinned(b, p)
			require.Equal(b, uint64(b.N), pr.Hits())
		})
	}
}

var benchSite = map[asmfuncs.Site]string{asmfuncs.SitePushRBP: "push", asmfuncs.SiteSubRSP: "sub", asmfuncs.SiteCmpStack: "cmp"}

// benchFloor traces the program's own int3s with the least a tracer can do.
func benchFloor(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=bench", "SITE=trap", fmt.Sprintf("N=%d", b.N))
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
		require.Zero(b, ptsys.Cont(pid, 0))
		if _, e := ptsys.Wait4(pid, &ws, ptsys.WALL); e != 0 || !ws.Stopped() {
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

// benchJump runs the benchmark loop on mov eax,42 under the tracer, with a
// Jump probe on it (probe) or none.
func benchJump(b *testing.B, probe bool) {
	cmd := child("bench", "SITE=mov", fmt.Sprintf("N=%d", b.N))
	cmd.Stdout = io.Discard
	p, err := Start(cmd)
	require.NoError(b, err)
	defer func() { p.Detach(); cmd.Process.Kill() }()
	var pr *Probe
	if probe {
		pr, err = p.Insert(asmfuncs.Addr(asmfuncs.SiteMovImm), Jump, nil)
		require.NoError(b, err)
		require.Equal(b, Jump, pr.Strategy)
	}
	runPinned(b, p)
	if probe {
		require.Equal(b, uint64(b.N), pr.Hits())
	}
}

// benchRecord runs the benchmark loop on mov eax,42 with a recording probe
// on it: six argument registers (Go's) and the time in each record, in a
// ring large enough that none is dropped while the tracer drains it.
func benchRecord(b *testing.B) {
	cmd := child("bench", "SITE=mov", fmt.Sprintf("N=%d", b.N))
	cmd.Stdout = io.Discard
	p, err := Start(cmd, RingSize(1<<20))
	require.NoError(b, err)
	defer func() { p.Detach(); cmd.Process.Kill() }()
	var seen atomic.Uint64
	pr, err := p.Record(asmfuncs.Addr(asmfuncs.SiteMovImm), RecordSpec{Regs: GoArgs[:6]}, func(Record) { seen.Add(1) })
	require.NoError(b, err)
	require.Equal(b, Jump, pr.Strategy, pr.NoJump)
	runPinned(b, p)
	require.Equal(b, uint64(b.N), pr.Hits())
	require.Equal(b, uint64(b.N), seen.Load()+pr.Drops())
	b.ReportMetric(float64(pr.Drops()), "drops")
}

// BenchmarkDrain measures the consumer alone: records per second it
// delivers to an observer that counts them, from a ring filled in this
// process (each fill untimed), keys resolved to tids as for a pad's.
func BenchmarkDrain(b *testing.B) {
	const capacity = 1 << 16
	p := &Process{}
	rg := &ring{p: p, mem: make([]byte, ringHdr+capacity*recSize), cap: capacity}
	var seen uint64
	rec := &recorder{obs: func(Record) { seen++ }, pr: &Probe{}}
	rec.pr.rec = rec
	list := []*recorder{rec}
	p.recProbes.Store(&list)
	for k := uint64(0); k < 16; k++ {
		rg.keys.set(0x7f0000000000+k<<20, int(1000+k), keyLive, 0)
	}
	tscCalibrate()
	b.ResetTimer()
	for done := 0; done < b.N; {
		b.StopTimer()
		head := rg.tail
		n := min(capacity, b.N-done)
		for i := 0; i < n; i++ {
			off := ringHdr + ((head+uint64(i))&(capacity-1))<<recShift
			r := rg.mem[off : off+recSize]
			binary.LittleEndian.PutUint64(r[recOffKey:], 0x7f0000000000+uint64(i%16)<<20)
			binary.LittleEndian.PutUint64(r[recOffTSC:], rdtsc())
			binary.LittleEndian.PutUint64(r[recOffSeq:], head+uint64(i)+1)
		}
		binary.LittleEndian.PutUint64(rg.mem[0:], head+uint64(n))
		b.StartTimer()
		rg.drain(false)
		done += n
	}
	b.StopTimer()
	require.Equal(b, uint64(b.N), seen)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds()/1e6, "Mrecords/s")
}

// runPinned runs p with the tracer thread and the tracee pinned to one
// CPU, timing the run alone, and requires that it exits with status 0.
func runPinned(b *testing.B, p *Process) {
	pin(b, p.Tracer().hand.Tid())
	pin(b, p.Pid())
	b.ReportAllocs()
	b.ResetTimer()
	exit, err := p.Run(context.Background())
	b.StopTimer()
	require.NoError(b, err)
	require.Equal(b, &Exit{}, exit)
}
