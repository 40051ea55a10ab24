package memio

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseMaps(t *testing.T) {
	text := `55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234                       /tmp/dir with space/prog
55d0c0a01000-55d0c0a02000 r-xp 00001000 fd:01 1234                       /tmp/dir with space/prog
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
7f1000000000-7f1000001000 r-xp 00002000 08:02 99                         /usr/lib/libgone.so.1 (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
`
	maps, err := ParseMaps(strings.NewReader(text))
	require.NoError(t, err)
	require.Len(t, maps, 5)
	assert.Equal(t, Mapping{Start: 0x55d0c0a01000, End: 0x55d0c0a02000, Perms: "r-xp", Offset: 0x1000, Dev: "fd:01", Inode: 1234, Path: "/tmp/dir with space/prog"}, maps[1])
	assert.True(t, maps[1].Exec())
	assert.False(t, maps[0].Exec())
	assert.True(t, maps[1].Contains(0x55d0c0a01fff))
	assert.False(t, maps[1].Contains(0x55d0c0a02000))
	assert.Equal(t, "", maps[2].Path)
	assert.Equal(t, "/usr/lib/libgone.so.1", maps[3].Path)
	assert.True(t, maps[3].Deleted)
	assert.Equal(t, "[stack]", maps[4].Path)

	for _, bad := range []string{
		"zz-10 r-xp 0 fd:01 1 /x",
		"10-5 r-xp 0 fd:01 1 /x",
		"10-20 r-x 0 fd:01 1 /x",
		"10-20 r-xp 0 fd:01 inode /x",
	} {
		_, err := ParseMaps(strings.NewReader(bad + "\n"))
		assert.Error(t, err, bad)
	}
}

func TestReadMapsOfThisProcessAndOfNone(t *testing.T) {
	maps, err := ReadMaps(os.Getpid())
	require.NoError(t, err)
	here := uint64(uintptrOf(make([]byte, 1)))
	found := false
	for i := range maps {
		found = found || maps[i].Contains(here)
	}
	assert.True(t, found, "a heap address of this process is in its maps")

	_, err = ReadMaps(1 << 30)
	assert.ErrorIs(t, err, ErrGone)
}
