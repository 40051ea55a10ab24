package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStepOver builds the command and runs it on its built-in program: two
// stops at main.target, whose first instruction (cmp rsp, [r14+0x10], 49 3b
// 66 10) is stepped over by emulation, then a detach, and the program's
// result unchanged.
func TestStepOver(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stepover")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	out, err = exec.Command(bin, "-n", "2").CombinedOutput()
	require.NoError(t, err, "%s", out)
	s := string(out)
	assert.Len(t, regexp.MustCompile(`(?m)^stop \d: thread \d+ at main.target \(0x[0-9a-f]+\): cmp rsp, qword ptr \[r14\+0x10\]$`).FindAllString(s, -1), 2, s)
	// cmp is 4 bytes: rip moves by 4, rsp stays.
	m := regexp.MustCompile(`stepped over: rip 0x([0-9a-f]+) -> 0x([0-9a-f]+), rsp (0x[0-9a-f]+) -> (0x[0-9a-f]+)`).FindAllStringSubmatch(s, -1)
	require.Len(t, m, 2, s)
	for _, g := range m {
		from, err1 := strconv.ParseUint(g[1], 16, 64)
		to, err2 := strconv.ParseUint(g[2], 16, 64)
		require.NoError(t, errors.Join(err1, err2))
		assert.Equal(t, from+4, to)
		assert.Equal(t, g[3], g[4])
	}
	assert.Contains(t, s, "stepover: detached after 2 stops")
	assert.Contains(t, s, "child: sum 35")
	assert.NotContains(t, s, "stop 3")
}
