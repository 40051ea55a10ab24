package memio

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A write that starts on a writable page and runs into a read-only one must
// leave both unchanged, as the CPU does: process_vm_writev alone would have
// written the first part.
func TestProcessWriteAcrossIntoReadOnlyPageChangesNothing(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	require.NoError(t, err)
	defer unix.Munmap(mem)
	for i := range mem {
		mem[i] = byte(i)
	}
	require.NoError(t, unix.Mprotect(mem[pageSize:], unix.PROT_READ))
	before := append([]byte(nil), mem...)

	p, err := OpenProcess(os.Getpid())
	require.NoError(t, err)
	defer p.Close()
	base := uint64(uintptrOf(mem))

	for _, size := range []int{2, 4, 8} {
		for back := 1; back < size; back++ {
			addr := base + pageSize - uint64(back)
			err := p.WriteUint(addr, size, 0x1122334455667788)
			var f *Fault
			require.ErrorAs(t, err, &f, "size %d at page end -%d", size, back)
			assert.Equal(t, base+pageSize, f.Addr)
			assert.Equal(t, Write, f.Access)
			assert.ErrorIs(t, err, ErrProtected)
			require.Equal(t, before, mem, "size %d at page end -%d changed memory", size, back)
		}
	}

	// A long WriteAt the same way.
	buf := make([]byte, 200)
	n, err := p.WriteAt(buf, int64(base+pageSize-100))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, ErrProtected)
	require.Equal(t, before, mem)

	// Both pages writable: the crossing write goes through whole.
	require.NoError(t, unix.Mprotect(mem[pageSize:], unix.PROT_READ|unix.PROT_WRITE))
	require.NoError(t, p.WriteUint(base+pageSize-3, 8, 0x1122334455667788))
	got, err := p.ReadUint(base+pageSize-3, 8)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x1122334455667788), got)
}
