package fuzz

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/regs"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCampaign runs a bounded campaign over every form: each case is checked
// on the CPU and through emu.Step; any disagreement fails with its reproducer.
// Every form of the emulated set must have been reached, and every shape the
// decoder emulates (over all one- and two-byte opcodes) must have been
// checked.
func TestCampaign(t *testing.T) {
	c, err := NewCampaign(oracle(t), 1, nil, nil)
	require.NoError(t, err)
	c.OnMismatch = func(m *Mismatch) { t.Errorf("mismatch:\n%s", m) }
	n := 20000
	if testing.Short() {
		n = 3000
	}
	require.NoError(t, c.Run(n, nil))
	assert.Equal(t, n, c.Cases)
	assert.Empty(t, c.Missing(), "forms of the emulated set that no encoding reached")
	emulated := EmulatedShapes(ShapePrefixes)
	require.NotEmpty(t, emulated)
	if !testing.Short() {
		assert.Empty(t, c.Ungenerated(emulated), "shapes the decoder emulates that no template produced")
	}
	t.Logf("%d emulated shapes, %d checked", len(emulated), len(c.Shapes))
	t.Logf("cases=%d mismatches=%d forms=%d unrunnable=%d", c.Cases, c.Mismatches, c.FormsCovered(), c.Unrunnable)
	// Prepare keeps rsp canonical but for a few cases, so that a CPU that
	// cannot be resumed with a non-canonical rsp still checks nearly all.
	assert.Less(t, c.Unrunnable, n/10)
	t.Logf("\n%s", c.Report())
}

// TestCheckerCatchesWrongEmulation feeds the checker instructions whose
// decoding was tampered with, so that emu.Step does something other than
// what the CPU runs: every kind of difference must be reported.
func TestCheckerCatchesWrongEmulation(t *testing.T) {
	ch, err := NewChecker(oracle(t))
	require.NoError(t, err)
	tests := []struct {
		name    string
		run     []byte // what the CPU runs
		decoded []byte // what emu.Step is given, decoded from these bytes
		setup   func(st *State)
		want    string
	}{
		{"48 01 d8 add rax,rbx emulated as 48 29 d8 sub", []byte{0x48, 0x01, 0xd8}, []byte{0x48, 0x29, 0xd8},
			func(st *State) { st.Regs.GPR[regs.RAX], st.Regs.GPR[regs.RBX] = 5, 3 }, "registers differ"},
		{"48 01 d8 add rax,rbx emulated as 48 11 d8 adc (flags)", []byte{0x48, 0x01, 0xd8}, []byte{0x48, 0x11, 0xd8},
			func(st *State) { st.Regs.RFLAGS |= regs.CF }, "registers differ"},
		{"48 89 18 mov [rax],rbx emulated as 48 89 19 mov [rcx],rbx", []byte{0x48, 0x89, 0x18}, []byte{0x48, 0x89, 0x19},
			func(st *State) {
				st.Regs.GPR[regs.RAX], st.Regs.GPR[regs.RCX] = DataAddr+0x100, DataAddr+0x200
				st.Regs.GPR[regs.RBX] = 0x1122334455667788
			}, "memory differs"},
		{"48 8b 00 mov rax,[rax] in the hole emulated as 48 8b 01 mov rax,[rcx]", []byte{0x48, 0x8b, 0x00}, []byte{0x48, 0x8b, 0x01},
			func(st *State) { st.Regs.GPR[regs.RAX], st.Regs.GPR[regs.RCX] = HoleAddr, DataAddr }, "the CPU faulted"},
		{"48 8b 01 mov rax,[rcx] emulated as 48 8b 00 mov rax,[rax] in the hole", []byte{0x48, 0x8b, 0x01}, []byte{0x48, 0x8b, 0x00},
			func(st *State) { st.Regs.GPR[regs.RAX], st.Regs.GPR[regs.RCX] = HoleAddr, DataAddr }, "the CPU ran the instruction"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := baseState(len(tt.run))
			tt.setup(st)
			in, err := decode.Decode(tt.decoded, st.Regs.RIP)
			require.NoError(t, err)
			ok, why := emu.Supports(in)
			require.True(t, ok, why)
			require.Equal(t, len(tt.run), in.Len)
			copy(in.Bytes[:], tt.run)
			m, err := ch.Check(in, st)
			require.NoError(t, err)
			require.NotNil(t, m, "the checker missed the difference")
			assert.Contains(t, strings.Join(m.Why, "\n"), tt.want)

			// Untampered, the same case agrees.
			in, err = decode.Decode(tt.run, st.Regs.RIP)
			require.NoError(t, err)
			m, err = ch.Check(in, st)
			require.NoError(t, err)
			assert.Nil(t, m)
		})
	}
}

// TestRegressions replays every case of testdata/regressions.txt, with the
// emulator on in-memory pages and on the sandbox's own memory through
// memio.Process: each was once a disagreement, or is an edge worth keeping;
// all must agree now.
func TestRegressions(t *testing.T) {
	f, err := os.Open("testdata/regressions.txt")
	require.NoError(t, err)
	defer f.Close()
	cases, err := ParseCases(f)
	require.NoError(t, err)
	require.NotEmpty(t, cases)
	pages, err := NewChecker(oracle(t))
	require.NoError(t, err)
	proc, err := NewProcessChecker(oracle(t))
	require.NoError(t, err)
	defer proc.Close()
	for _, c := range cases {
		for _, ch := range []*Checker{pages, proc} {
			name := "pages"
			if ch == proc {
				name = "process"
			}
			t.Run(fmt.Sprintf("line%d %s % x %s", c.Line, c.Name, c.Code, name), func(t *testing.T) {
				replay(t, ch, &c)
			})
		}
	}
}

// replay checks one regression case with ch.
func replay(t *testing.T, ch *Checker, c *Case) {
	require.NotZero(t, c.Start.Regs.RIP, "the case has no regs line")
	in, err := decode.Decode(c.Code, c.Start.Regs.RIP)
	require.NoError(t, err)
	require.Equal(t, len(c.Code), in.Len, "decoded length")
	if ok, why := emu.Supports(in); !ok {
		// Refusing to emulate is a valid fix: the CPU runs it.
		t.Logf("no longer emulated: %v: %s", in.Verdict, why)
		return
	}
	m, err := ch.Check(in, &c.Start)
	if errors.Is(err, ErrUnrunnable) {
		t.Skipf("the CPU cannot start from this state here: %v", err)
	}
	require.NoError(t, err)
	if m != nil {
		t.Errorf("still disagrees:\n%s", m)
	}
}

// TestCampaignThroughProcess runs a bounded campaign with the emulator on
// the sandbox's own memory through memio.Process, the memory of a probe hit.
func TestCampaignThroughProcess(t *testing.T) {
	ch, err := NewProcessChecker(oracle(t))
	require.NoError(t, err)
	defer ch.Close()
	c, err := NewCampaign(oracle(t), 3, nil, ch)
	require.NoError(t, err)
	c.OnMismatch = func(m *Mismatch) {
		if c.Mismatches <= 3 {
			t.Errorf("mismatch:\n%s", m)
		}
	}
	require.NoError(t, c.Run(3000, nil))
	assert.Zero(t, c.Mismatches)
}

// TestReproducerRoundTrip checks that a printed case reads back as the same case.
func TestReproducerRoundTrip(t *testing.T) {
	g := &Gen{R: rand.New(rand.NewPCG(7, 7))}
	for _, f := range Forms[:40] {
		e := g.Encode(f)
		in, err := decode.Decode(e.Code, e.RIP)
		if err != nil {
			continue
		}
		if ok, _ := emu.Supports(in); !ok {
			continue
		}
		c := Case{Name: f.Name, Code: e.Code}
		g.Prepare(in, &c.Start)
		got, err := ParseCases(strings.NewReader(FormatCase(&c)))
		require.NoError(t, err)
		require.Len(t, got, 1)
		assert.Equal(t, c.Name, got[0].Name)
		assert.Equal(t, c.Code, got[0].Code)
		assert.Equal(t, c.Start.Regs, got[0].Start.Regs)
		assert.True(t, c.Start.Mem == got[0].Start.Mem, "memory of % x", e.Code)
	}
}

// TestLengthsOfLibc walks the first function bodies of the C library and
// has the CPU check every length decode gives.
func TestLengthsOfLibc(t *testing.T) {
	const libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
	if _, err := os.Stat(libc); err != nil {
		t.Skipf("no %s here", libc)
	}
	l := &LengthChecker{O: oracle(t), Max: 4000}
	l.OnDisagree = func(d *LengthDisagreement) { t.Errorf("%s", d) }
	require.NoError(t, l.File(libc))
	t.Logf("%s", l.Stats)
	assert.Equal(t, 4000, l.Stats.Insns)
	assert.Greater(t, l.Stats.Checked, 3000)
	assert.Zero(t, l.Stats.Disagree)
}
