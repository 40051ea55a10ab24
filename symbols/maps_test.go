package symbols

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/memio"
)

func TestLibrariesOfParsedMaps(t *testing.T) {
	text := `55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234                       /tmp/dir with space/prog
7f1000000000-7f1000001000 r-xp 00002000 08:02 99                         /usr/lib/libgone.so.1 (deleted)
7f1000001000-7f1000002000 r--p 00003000 08:02 99                         /usr/lib/libgone.so.1 (deleted)
`
	maps, err := memio.ParseMaps(strings.NewReader(text))
	require.NoError(t, err)
	assert.Equal(t, []string{"/usr/lib/libgone.so.1"}, Libraries(maps, "libgone"))
	assert.Empty(t, Libraries(maps, "libc"))
}

func TestMatchLib(t *testing.T) {
	cases := []struct {
		lib, path string
		want      bool
	}{
		{"libc", "/usr/lib/x86_64-linux-gnu/libc.so.6", true},
		{"libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", true},
		{"libc", "/usr/lib/libc-2.31.so", true},
		{"libc", "/usr/lib/x86_64-linux-gnu/libcap.so.2", false},
		{"libc", "/usr/lib/x86_64-linux-gnu/libcrypt.so.1", false},
		{"/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", true},
		{"/lib/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", false},
		{"", "/usr/lib/libc.so.6", false},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, MatchLib(c.lib, c.path), "%s vs %s", c.lib, c.path)
	}
}

// TestLoadBias runs the PIE test program, finds it and libc in its maps,
// and checks that file address + bias holds the same bytes in the process
// as the function body in the file.
func TestLoadBias(t *testing.T) {
	prog := cProg(t)
	cmd := exec.Command(prog, "block")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	pid := cmd.Process.Pid

	// The loader maps libc before main runs; wait until it is there.
	var maps []Mapping
	for i := 0; i < 200; i++ {
		maps, err = memio.ReadMaps(pid)
		require.NoError(t, err)
		if len(Libraries(maps, "libc")) > 0 {
			break
		}
		sleepMs(5)
	}
	libs := Libraries(maps, "libc")
	require.Len(t, libs, 1)

	mem, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	require.NoError(t, err)
	defer mem.Close()

	check := func(path, name string) {
		f := open(t, path)
		bias, err := f.LoadBias(maps)
		require.NoError(t, err, path)
		assert.NotZero(t, bias, "%s is position-independent", path)
		assert.Zero(t, bias&0xfff, "a bias is page aligned")
		fn := one(t, f, name)
		want, err := f.Body(fn)
		require.NoError(t, err)
		got := make([]byte, len(want))
		_, err = mem.ReadAt(got, int64(fn.Addr+bias))
		require.NoError(t, err)
		assert.Equal(t, want, got, "%s in %s at %#x+%#x", name, path, fn.Addr, bias)
	}
	check(prog, "add")
	check(libs[0], "malloc")

	// A file the process has not mapped has no bias.
	_, stripped := goProgs(t)
	other := open(t, stripped)
	_, err = other.LoadBias(maps)
	if other.PIE() {
		assert.ErrorIs(t, err, ErrNotMapped)
	} else {
		assert.NoError(t, err, "a fixed-address executable needs no bias")
	}
}

func sleepMs(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }
