package ptrace

import (
	"bytes"
	"context"
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

func child(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	return cmd
}

func untraced(t *testing.T, mode string, env ...string) string {
	out, err := child(mode, env...).Output()
	require.NoError(t, err)
	return string(out)
}

func TestProbeEveryPrologue(t *testing.T) {
	const n = 300
	want := untraced(t, "calls", "N=300")
	for _, strat := range []Strategy{Auto, SingleStep, OutOfLine} {
		t.Run(strat.String(), func(t *testing.T) {
			cmd := child("calls", "N=300")
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Stderr = os.Stderr
			p, err := Start(cmd)
			require.NoError(t, err)
			probes := map[asmfuncs.Site]*Probe{}
			for s := asmfuncs.Site(0); s < asmfuncs.NumSites; s++ {
				if s == asmfuncs.SiteTrap {
					continue
				}
				st := strat
				if strat == OutOfLine && s == asmfuncs.SiteCallLeaf {
					st = OutOfLine
				}
				pr, err := p.Insert(asmfuncs.Addr(s), st, func(tid int, pr *Probe, r *regs.Regs, m memio.Memory) {
					if r.RIP != pr.Addr {
						panic("rip is not the probe's address")
					}
				})
				require.NoError(t, err, "site %v", s)
				t.Logf("%v at %#x: %v, %v", s, pr.Addr, pr.Insn, pr.Strategy)
				probes[s] = pr
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			exit, err := p.Run(ctx)
			require.NoError(t, err)
			assert.Equal(t, 0, exit.Code)
			assert.Equal(t, want, out.String())
			for s, pr := range probes {
				assert.Equal(t, uint64(n), pr.Hits(), "site %v", s)
			}
			assert.True(t, strings.TrimSpace(want) != "")
		})
	}
}
