package ptrace

import (
	"github.com/onetrap/onetrap/internal/ptsys"
	"io"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// BenchmarkSyscall measures the single calls a hit may make on a stopped
// thread, to choose the cheapest for each need.
func BenchmarkSyscall(b *testing.B) {
	cmd := child("sleep")
	cmd.Stdout = io.Discard
	p, err := Start(cmd)
	require.NoError(b, err)
	defer func() { p.Detach(); cmd.Process.Kill() }()
	pin(b, p.Tracer().hand.Tid())
	pin(b, p.Pid())
	t, tid := p.t, p.pid
	th := p.threads[tid]
	var rsp uint64
	require.NoError(b, t.do(func() error {
		ptsys.GetRegs(tid, &th.pregs)
		rsp = th.pregs.Rsp - 64
		return nil
	}))
	run := func(name string, f func()) {
		b.Run(name, func(b *testing.B) {
			t.do(func() error {
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f()
				}
				b.StopTimer()
				return nil
			})
		})
	}
	var word uint64
	run("getregs", func() { ptsys.GetRegs(tid, &th.pregs) })
	run("setregs", func() { ptsys.SetRegs(tid, &th.pregs) })
	run("getsiginfo", func() { ptsys.GetSiginfo(tid, &th.si) })
	run("peekuser-rip", func() {
		ptsys.Raw(unix.PTRACE_PEEKUSR, tid, uintptr(unsafe.Offsetof(th.pregs.Rip)), uintptr(unsafe.Pointer(&word)))
	})
	run("pokeuser-rip", func() {
		ptsys.Raw(unix.PTRACE_POKEUSR, tid, uintptr(unsafe.Offsetof(th.pregs.Rip)), uintptr(th.pregs.Rip))
	})
	run("peekdata", func() { ptsys.Raw(unix.PTRACE_PEEKDATA, tid, uintptr(rsp), uintptr(unsafe.Pointer(&word))) })
	run("pokedata", func() { ptsys.Raw(unix.PTRACE_POKEDATA, tid, uintptr(rsp), uintptr(word)) })
	run("vm-read8", func() { p.mem.ReadUint(rsp, 8) })
	run("vm-write8", func() { p.mem.WriteUint(rsp, 8, word) })
}
