package ptrace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
	"github.com/onetrap/onetrap/regs"
)

// Every site that can be boosted runs boosted with the program's results
// unchanged; its slot holds the copy and a jmp rel32 back to the next
// original instruction (the XOL area lies near the module, so the
// rip-relative load keeps a disp32 too); a call is refused.
func TestBoostEverySite(t *testing.T) {
	const n = 300
	want := untraced(t, "calls", "N=300")
	cmd := child("calls", "N=300")
	var out bytes.Buffer
	cmd.Stdout = &out
	p := start(t, cmd)
	_, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteCallLeaf), Boost, nil)
	assert.ErrorContains(t, err, "never boosted", "call rel32 (e8)")
	probes := map[asmfuncs.Site]*Probe{}
	for s := asmfuncs.Site(0); s < asmfuncs.NumSites; s++ {
		if s == asmfuncs.SiteTrap || s == asmfuncs.SiteUd2 || s == asmfuncs.SiteCallLeaf {
			continue
		}
		pr, err := p.Insert(asmfuncs.Addr(s), Boost, func(tid int, pr *Probe, r *regs.Regs, m memio.Memory) {
			if r.RIP != pr.Addr {
				panic("rip is not the probe's address")
			}
		})
		require.NoError(t, err, "site %v", s)
		assert.Equal(t, Boost, pr.Strategy, "site %v (%v)", s, pr.Insn)
		probes[s] = pr
		// The slot, read back here only to check it (the engine never does).
		in := pr.Insn
		slot := make([]byte, in.Len+5)
		_, err = p.mem.ForceReadAt(slot, int64(pr.s.slot))
		require.NoError(t, err)
		if !in.RIPRel {
			assert.Equal(t, in.Code(), slot[:in.Len], "site %v: the copy", s)
		}
		assert.Equal(t, byte(0xe9), slot[in.Len], "site %v: jmp rel32", s)
		rel := int32(binary.LittleEndian.Uint32(slot[in.Len+1:]))
		assert.Equal(t, in.Next(), pr.s.slot+uint64(in.Len)+5+uint64(int64(rel)), "site %v: back to the next instruction", s)
	}
	exit, err := p.Run(runCtx(t))
	require.NoError(t, err)
	assert.Equal(t, &Exit{}, exit)
	assert.Equal(t, want, out.String())
	for s, pr := range probes {
		assert.Equal(t, uint64(n), pr.Hits(), "site %v", s)
	}
}

// How Auto chooses: with no handler, a jump wherever one can replace the
// instruction or a proved region from it (not a call); with a handler,
// register-only emulations stay emulated, emulations that touch memory
// are boosted, what the emulator lacks is boosted, a call is emulated.
// With NoXOL nothing is mapped: Emulate or SingleStep only.
func TestAutoAndNoXOL(t *testing.T) {
	want := map[asmfuncs.Site]Strategy{
		asmfuncs.SitePushRBP: Jump, asmfuncs.SiteSubRSP: Jump, asmfuncs.SiteMovImm: Jump,
		asmfuncs.SiteLea: Jump, asmfuncs.SiteCmpStack: Jump, asmfuncs.SiteRipLoad: Jump,
		asmfuncs.SiteCallLeaf: Emulate, asmfuncs.SiteCpuid: Jump, asmfuncs.SiteDeref: Jump,
	}
	wantHandler := map[asmfuncs.Site]Strategy{
		asmfuncs.SitePushRBP: Boost, asmfuncs.SiteSubRSP: Emulate, asmfuncs.SiteCmpStack: Boost,
		asmfuncs.SiteCallLeaf: Emulate, asmfuncs.SiteCpuid: Boost, asmfuncs.SiteDeref: Boost,
	}
	wantNoXOL := map[asmfuncs.Site]Strategy{
		asmfuncs.SitePushRBP: Emulate, asmfuncs.SiteSubRSP: Emulate, asmfuncs.SiteMovImm: Emulate,
		asmfuncs.SiteLea: Emulate, asmfuncs.SiteCmpStack: Emulate, asmfuncs.SiteRipLoad: Emulate,
		asmfuncs.SiteCallLeaf: Emulate, asmfuncs.SiteCpuid: SingleStep, asmfuncs.SiteDeref: Emulate,
	}
	out := untraced(t, "calls", "N=50")
	for _, c := range []string{"nil handler", "handler", "NoXOL"} {
		t.Run(c, func(t *testing.T) {
			cmd := child("calls", "N=50")
			var buf bytes.Buffer
			cmd.Stdout = &buf
			var opts []Option
			expect, noXOL := want, c == "NoXOL"
			var h Handler
			switch c {
			case "handler":
				expect, h = wantHandler, func(int, *Probe, *regs.Regs, memio.Memory) {}
			case "NoXOL":
				opts, expect = append(opts, NoXOL()), wantNoXOL
			}
			p, err := Start(cmd, opts...)
			require.NoError(t, err)
			t.Cleanup(func() { p.Detach(); cmd.Process.Kill() })
			var probes []*Probe
			for s, strat := range expect {
				pr, err := p.Insert(asmfuncs.Addr(s), Auto, h)
				require.NoError(t, err, "site %v", s)
				assert.Equal(t, strat, pr.Strategy, "site %v (%v): %s", s, pr.Insn, pr.NoJump)
				probes = append(probes, pr)
			}
			base, _ := p.XOL()
			if noXOL {
				assert.Zero(t, base, "no XOL area with NoXOL")
				_, err := p.Insert(asmfuncs.Addr(asmfuncs.SiteLea)+5, Boost, nil)
				assert.ErrorContains(t, err, "NoXOL")
			} else {
				assert.NotZero(t, base)
			}
			exit, err := p.Run(runCtx(t))
			require.NoError(t, err)
			assert.Equal(t, &Exit{}, exit)
			assert.Equal(t, out, buf.String())
			for _, pr := range probes {
				assert.Equal(t, uint64(50), pr.Hits(), "%v", pr.Insn)
			}
		})
	}
}

// The XOL area's place: just below the probed module when there is room,
// within ±2GB of all of it; above it otherwise; nowhere when nothing fits.
func TestXOLHint(t *testing.T) {
	const gb = 1 << 30
	exe := func(lo, hi uint64) Mapping { return Mapping{Start: lo, End: hi, Perms: "r-xp", Path: "/bin/x"} }
	cases := []struct {
		name string
		ms   []Mapping
		addr uint64
		want uint64
	}{
		{"non-PIE at 0x400000: below it", []Mapping{exe(0x400000, 0x500000), {Start: 0x600000, End: 0x700000, Path: "[heap]"}}, 0x401000, 0x400000 - xolSize},
		{"PIE with a library below: just below the module",
			[]Mapping{{Start: 0x7f0000, End: 0x800000}, exe(0x555555554000, 0x555555600000)}, 0x555555560000, 0x555555554000 - xolSize},
		{"no gap below: just above",
			[]Mapping{{Start: 0x10000, End: 0x400000}, exe(0x400000, 0x500000)}, 0x401000, 0x500000},
		{"the whole module too big", []Mapping{exe(0x400000, 0x400000+3*gb)}, 0x401000, 0},
		{"not mapped", []Mapping{exe(0x400000, 0x500000)}, 0x10, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, fmt.Sprintf("%#x", c.want), fmt.Sprintf("%#x", xolHint(c.ms, c.addr)))
		})
	}
}

// Threads race through boosted slots while a tracer attaches, probes,
// removes a probe (threads may be in its slot: slots stay) and detaches
// (threads in slots are moved back to the original code before the area
// goes), over and over: the program's results never change and no area is
// left behind.
func TestBoostDetachRemoveWithThreadsInSlots(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_push", "f_sub", "f_riprel")
	want, err := exec.Command(path, "spin", "4", "50000000").Output()
	require.NoError(t, err)
	cmd := exec.Command(path, "spin", "4", "50000000")
	outf, err := os.CreateTemp(t.TempDir(), "out")
	require.NoError(t, err)
	cmd.Stdout = outf
	// The tracer thread first: the program must not be its child, or the
	// tracer would reap it when it ends untraced between two cycles.
	tr, err := NewTracer()
	require.NoError(t, err)
	defer tr.Close()
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill() })
	// Attached before its execve, the probes would go into the image the
	// execve drops.
	waitFor(t, 5*time.Second, "the program's threads", func() bool {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", cmd.Process.Pid))
		return len(ents) > 1
	})
	tr.do(func() error { tr.slotExits = 0; return nil })
	var exit *Exit // set when the program ended while traced
	cycles, hits := 0, uint64(0)
	for ; cycles < 40 && exit == nil; cycles++ {
		p, err := tr.Attach(cmd.Process.Pid)
		if err != nil {
			t.Logf("cycle %d: %v", cycles, err)
			break // it ended untraced, a zombie to wait for
		}
		push, err1 := p.Insert(sym["f_push"], Boost, nil)
		rip, err2 := p.Insert(sym["f_riprel"], Boost, nil)
		sub, err3 := p.Insert(sym["f_sub"], Emulate, nil)
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Logf("cycle %d: %v", cycles, err)
			exit, err = p.Run(runCtx(t))
			require.NoError(t, err, "only the program's end may fail an insertion")
			break
		}
		assert.Equal(t, Boost, rip.Strategy, "f_riprel: the area is within reach")
		time.Sleep(3 * time.Millisecond)
		if err := p.Remove(push); err != nil {
			exit, err = p.Run(runCtx(t))
			require.NoError(t, err)
			break
		}
		time.Sleep(time.Millisecond)
		base, size := p.XOL()
		require.NoError(t, p.Detach())
		hits += push.Hits() + rip.Hits() + sub.Hits()
		select {
		case <-p.Done():
			if e, err := p.Run(runCtx(t)); err == nil {
				exit = e
			}
		default:
		}
		if exit == nil {
			ms, _ := Maps(cmd.Process.Pid) // none when it has just ended
			for _, m := range ms {
				assert.False(t, m.Start < base+size && m.End > base, "the XOL area is gone after detach")
			}
		}
	}
	if exit == nil {
		require.NoError(t, cmd.Wait())
	} else {
		assert.Equal(t, &Exit{}, exit)
	}
	got, err := os.ReadFile(outf.Name())
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
	assert.True(t, strings.HasPrefix(string(got), "sum "))
	assert.Greater(t, cycles, 5)
	assert.NotZero(t, hits)
	var moved int
	tr.do(func() error { moved = tr.slotExits; return nil })
	t.Logf("%d cycles, %d hits, %d threads moved out of slots at detach", cycles, hits, moved)
}

// A division by zero in a boosted copy raises SIGFPE at the original
// address: the program's SA_SIGINFO handler finds the div there, in
// si_addr and in the context's rip, as untraced (it then longjmps away).
func TestBoostFaultAtOriginalAddress(t *testing.T) {
	path := buildWorkload(t)
	sym := symbols(t, path, "f_div_insn")
	want, err := exec.Command(path, "divzero").Output()
	require.NoError(t, err)
	require.Equal(t, "quotients 8, 3 faults at the div\n", string(want))
	for _, strat := range []Strategy{Boost, OutOfLine, SingleStep} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := exec.Command(path, "divzero")
			var out bytes.Buffer
			cmd.Stdout = &out
			p, err := Start(cmd)
			require.NoError(t, err)
			t.Cleanup(func() { p.Detach(); cmd.Process.Kill() })
			pr, err := p.Insert(sym["f_div_insn"], strat, nil)
			require.NoError(t, err)
			require.Equal(t, strat, pr.Strategy, "div rsi (48 f7 f6)")
			exit, err := p.Run(runCtx(t))
			require.NoError(t, err)
			assert.Equal(t, &Exit{}, exit)
			assert.Equal(t, string(want), out.String())
			assert.Equal(t, uint64(5), pr.Hits())
		})
	}
}

// Probes in code more than 2GB apart get an XOL area near each: a
// rip-relative load in a page far from the program's text is boosted
// from a second area mapped near it, while the first stays near the text.
func TestBoostAreaPerModule(t *testing.T) {
	const far = 0x600000000000
	path := buildWorkload(t)
	sym := symbols(t, path, "ready", "f_riprel")
	want, err := exec.Command(path, "far", "200").Output()
	require.NoError(t, err)
	cmd := exec.Command(path, "far", "200")
	var out bytes.Buffer
	cmd.Stdout = &out
	p, err := Start(cmd)
	require.NoError(t, err)
	t.Cleanup(func() { p.Detach(); cmd.Process.Kill() })
	near, err := p.Insert(sym["f_riprel"], Boost, nil)
	require.NoError(t, err)
	var farProbe *Probe
	var farErr error
	_, err = p.Insert(sym["ready"], Emulate, func(int, *Probe, *regs.Regs, memio.Memory) {
		// The far code exists now: probe it from the handler.
		// A handler keeps it a trap probe (Auto would make a counting
		// one trapless).
		farProbe, farErr = p.Insert(far, Auto, func(int, *Probe, *regs.Regs, memio.Memory) {})
	})
	require.NoError(t, err)
	exit, err := p.Run(runCtx(t))
	require.NoError(t, err)
	assert.Equal(t, &Exit{}, exit)
	assert.Equal(t, string(want), out.String())
	require.NoError(t, farErr)
	require.NotNil(t, farProbe)
	assert.Equal(t, Boost, near.Strategy, "mov rax,[rip+base] (48 8b 05) in the text")
	assert.Equal(t, Boost, farProbe.Strategy, "mov rax,[rip+0xf9] (48 8b 05 f9 00 00 00) far away")
	assert.Equal(t, uint64(200), near.Hits())
	assert.Equal(t, uint64(200), farProbe.Hits())
	dist := func(a, b uint64) uint64 {
		if a > b {
			return a - b
		}
		return b - a
	}
	assert.Less(t, dist(near.s.slot, sym["f_riprel"]), uint64(1<<31))
	assert.Less(t, dist(farProbe.s.slot, far), uint64(1<<31))
}
