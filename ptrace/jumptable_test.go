package ptrace

import (
	"context"
	"fmt"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A jump replaces the entry of a function that dispatches through a jump
// table (cmp; ja: the region's proof reads the table's entries from the
// process and finds none inside it), and of one whose region has a je in
// its middle, taken one call in four: counted exactly, result unchanged.
func TestJumpTableFunction(t *testing.T) {
	const n = 90000
	bin := buildC(t, "jumptable", "-O2", "-no-pie", "testdata/jumptable.c")
	want, err := exec.Command(bin, fmt.Sprint(n)).Output()
	require.NoError(t, err)
	r := startProgram(t, coreTracer(t), bin, []string{fmt.Sprint(n)})
	addrs := symbols(t, bin, "j_switch", "j_mid")
	var prs []*Probe
	for _, name := range []string{"j_switch", "j_mid"} {
		pr, err := r.p.Insert(addrs[name], Auto, nil)
		require.NoError(t, err)
		require.Equal(t, Jump, pr.Strategy, "%s: %s", name, pr.NoJump)
		prs = append(prs, pr)
	}
	r.exited(t, waitRun(t, runAsync(r.p, context.Background())))
	assert.Equal(t, string(want), r.out.String())
	for _, pr := range prs {
		assert.Equal(t, uint64(n), pr.Hits())
	}
}
