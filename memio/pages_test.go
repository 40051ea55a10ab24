package memio

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// layout: rw page at 0x10000, ro page at 0x11000, hole at 0x12000, rw page at
// 0x13000, none page at 0x14000, rw page at the very top of the address space.
func testPages(t *testing.T) *Pages {
	t.Helper()
	p := NewPages()
	require.NoError(t, p.Map(0x10000, PageSize, ProtRW))
	require.NoError(t, p.Map(0x11000, PageSize, ProtRead))
	require.NoError(t, p.Map(0x13000, PageSize, ProtRW))
	require.NoError(t, p.Map(0x14000, 1, 0))
	require.NoError(t, p.Map(0xfffffffffffff000, PageSize, ProtRW))
	require.NoError(t, p.Map(0, PageSize, ProtRW))
	return p
}

func requireFault(t *testing.T, err error, addr uint64, a Access, cause error) {
	t.Helper()
	var f *Fault
	require.ErrorAs(t, err, &f)
	assert.Equal(t, addr, f.Addr, "fault address")
	assert.Equal(t, a, f.Access)
	assert.ErrorIs(t, err, cause)
}

func TestPagesReadWrite(t *testing.T) {
	p := testPages(t)
	// Crossing from the rw page into the ro page: readable both sides.
	require.NoError(t, p.Poke(0x10ffc, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	v, err := p.ReadUint(0x10ffc, 8)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x0807060504030201), v)
	b := make([]byte, 8)
	n, err := p.ReadAt(b, 0x10ffc)
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	assert.Equal(t, []byte{1, 2, 3, 4, 5, 6, 7, 8}, b)

	for _, size := range []int{1, 2, 4, 8} {
		require.NoError(t, p.WriteUint(0x10100, size, 0x1122334455667788))
		v, err := p.ReadUint(0x10100, size)
		require.NoError(t, err)
		want := map[int]uint64{1: 0x88, 2: 0x7788, 4: 0x55667788, 8: 0x1122334455667788}[size]
		assert.Equal(t, want, v, "size %d", size)
	}

	// A write that crosses between two rw pages separated by nothing.
	require.NoError(t, p.Map(0x20000, 2*PageSize, ProtRW))
	require.NoError(t, p.WriteUint(0x20ffd, 8, 0xa1a2a3a4a5a6a7a8))
	v, err = p.ReadUint(0x20ffd, 8)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xa1a2a3a4a5a6a7a8), v)
	var one [1]byte
	require.NoError(t, p.Peek(0x21004, one[:]))
	assert.Equal(t, byte(0xa1), one[0])

	// The top page wraps into page 0.
	require.NoError(t, p.WriteUint(0xfffffffffffffffe, 4, 0xdeadbeef))
	v, err = p.ReadUint(0, 2)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xdead), v)
	v, err = p.ReadUint(0xfffffffffffffffe, 4)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xdeadbeef), v)
}

func TestPagesFaults(t *testing.T) {
	p := testPages(t)
	require.NoError(t, p.Poke(0x10ff8, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	require.NoError(t, p.Poke(0x11ffc, []byte{9, 9, 9, 9}))

	// Write crossing rw -> ro: faults at the first ro byte, writes nothing.
	err := p.WriteUint(0x10ffc, 8, 0xffffffffffffffff)
	requireFault(t, err, 0x11000, Write, ErrProtected)
	n, err := p.WriteAt([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0x10ffc)
	assert.Equal(t, 0, n)
	requireFault(t, err, 0x11000, Write, ErrProtected)
	v, err := p.ReadUint(0x10ff8, 8)
	require.NoError(t, err)
	assert.Equal(t, uint64(0x0807060504030201), v, "nothing written")

	// Read and write crossing ro -> hole.
	_, err = p.ReadUint(0x11ffe, 4)
	requireFault(t, err, 0x12000, Read, ErrUnmapped)
	b := []byte{7, 7, 7, 7}
	n, err = p.ReadAt(b, 0x11ffe)
	assert.Equal(t, 0, n)
	requireFault(t, err, 0x12000, Read, ErrUnmapped)
	assert.Equal(t, []byte{7, 7, 7, 7}, b, "nothing read")
	err = p.WriteUint(0x11ffe, 2, 0)
	requireFault(t, err, 0x11ffe, Write, ErrProtected)

	// Hole -> rw: the first byte faults.
	_, err = p.ReadUint(0x12fff, 2)
	requireFault(t, err, 0x12fff, Read, ErrUnmapped)
	err = p.WriteUint(0x12fff, 2, 0)
	requireFault(t, err, 0x12fff, Write, ErrUnmapped)

	// A PROT_NONE page.
	_, err = p.ReadUint(0x14000, 1)
	requireFault(t, err, 0x14000, Read, ErrProtected)
	err = p.WriteUint(0x14800, 8, 1)
	requireFault(t, err, 0x14800, Write, ErrProtected)

	// rw -> hole through the last byte of 0x13000.
	err = p.WriteUint(0x13fff, 8, 1)
	requireFault(t, err, 0x14000, Write, ErrProtected)

	// Bad sizes are errors, not faults and not panics.
	_, err = p.ReadUint(0x10000, 3)
	require.Error(t, err)
	assert.False(t, errors.As(err, new(*Fault)))
	require.Error(t, p.WriteUint(0x10000, 16, 0))

	// Poke and Peek ignore protection but not holes.
	require.NoError(t, p.Poke(0x14000, []byte{5}))
	var one [1]byte
	require.NoError(t, p.Peek(0x14000, one[:]))
	assert.Equal(t, byte(5), one[0])
	requireFault(t, p.Poke(0x11fff, []byte{1, 2}), 0x12000, Write, ErrUnmapped)
}

func TestPagesMapUnmapProtect(t *testing.T) {
	p := NewPages()
	// Unaligned range rounds outward.
	require.NoError(t, p.Map(0x5ff0, 0x20, ProtRead))
	prot, ok := p.Prot(0x5000)
	assert.True(t, ok)
	assert.Equal(t, ProtRead, prot)
	_, ok = p.Prot(0x6fff)
	assert.True(t, ok)
	_, ok = p.Prot(0x7000)
	assert.False(t, ok)

	// The cache must not keep an unmapped or remapped page alive.
	require.NoError(t, p.Poke(0x5000, []byte{42}))
	v, err := p.ReadUint(0x5000, 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(42), v)
	require.NoError(t, p.Map(0x5000, 1, ProtRW))
	v, err = p.ReadUint(0x5000, 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), v, "Map gives fresh zeroed pages")
	require.NoError(t, p.Unmap(0x5000, 1))
	_, err = p.ReadUint(0x5000, 1)
	requireFault(t, err, 0x5000, Read, ErrUnmapped)

	// Protect takes effect for cached pages, and fails whole on a hole.
	requireFault(t, p.WriteUint(0x6000, 8, 1), 0x6000, Write, ErrProtected)
	require.NoError(t, p.Protect(0x6000, 1, ProtRW))
	require.NoError(t, p.WriteUint(0x6000, 8, 1))
	require.NoError(t, p.Protect(0x6000, 1, ProtRead))
	requireFault(t, p.WriteUint(0x6000, 8, 2), 0x6000, Write, ErrProtected)
	requireFault(t, p.Protect(0x5000, 2*PageSize, ProtRW), 0x5000, Write, ErrUnmapped)
	prot, _ = p.Prot(0x6000)
	assert.Equal(t, ProtRead, prot, "failed Protect changed nothing")

	// Huge ranges: Map refuses them, Unmap and Protect stay quick.
	require.Error(t, p.Map(0, 1<<47, ProtRW))
	require.NoError(t, p.Map(0x40000000, 3*PageSize, ProtRW))
	requireFault(t, p.Protect(0x40000000, 1<<46, ProtRead), 0x40003000, Write, ErrUnmapped)
	require.NoError(t, p.Unmap(0x3fff0000, 1<<46))
	_, ok = p.Prot(0x40001000)
	assert.False(t, ok)
	_, ok = p.Prot(0x6000)
	assert.True(t, ok, "pages outside the range stay")

	require.Error(t, p.Map(0x1000, 0, ProtRW))
	require.Error(t, p.Map(0xfffffffffffff000, 0x2000, ProtRW))
	assert.Equal(t, "r-", ProtRead.String())
	assert.Equal(t, "rw", ProtRW.String())
}

func TestPagesCloneEach(t *testing.T) {
	p := testPages(t)
	require.NoError(t, p.WriteUint(0x10000, 8, 0x1234))
	q := p.Clone()
	require.NoError(t, q.WriteUint(0x10000, 8, 0x5678))
	v, _ := p.ReadUint(0x10000, 8)
	assert.Equal(t, uint64(0x1234), v, "clone is deep")
	var addrs []uint64
	q.Each(func(addr uint64, prot Prot, data []byte) bool {
		addrs = append(addrs, addr)
		if addr == 0x10000 {
			assert.Equal(t, byte(0x78), data[0])
		}
		return true
	})
	assert.Equal(t, []uint64{0, 0x10000, 0x11000, 0x13000, 0x14000, 0xfffffffffffff000}, addrs)
}

// The interface helpers go through Uints and so do not allocate.
func TestPagesNoAllocs(t *testing.T) {
	p := testPages(t)
	var m Memory = p
	b := make([]byte, 16)
	allocs := testing.AllocsPerRun(100, func() {
		_ = WriteUint(m, 0x10ff8, 8, 1)
		_, _ = ReadUint(m, 0x13ffc, 8) // crossing into the none page faults: not counted below
		_, _ = ReadUint(m, 0x10ffc, 8)
		_ = WriteUint(m, 0x13000, 4, 1)
		_, _ = p.ReadAt(b, 0x10ff8)
		_, _ = p.WriteAt(b, 0x10ff0)
	})
	// The one faulting read allocates its *Fault; everything else must not.
	assert.LessOrEqual(t, allocs, 1.0)
	allocs = testing.AllocsPerRun(100, func() {
		_ = WriteUint(m, 0x10ff8, 8, 1)
		_, _ = ReadUint(m, 0x10ffc, 8)
		_ = WriteUint(m, 0x13000, 4, 1)
		_, _ = p.ReadAt(b, 0x10ff8)
		_, _ = p.WriteAt(b, 0x10ff0)
	})
	assert.Zero(t, allocs)
}

func BenchmarkPagesUint(b *testing.B) {
	p := NewPages()
	require.NoError(b, p.Map(0x7ff000, PageSize, ProtRW))
	require.NoError(b, p.Map(0x400000, PageSize, ProtRW))
	b.ReportAllocs()
	for b.Loop() {
		_ = p.WriteUint(0x7ffff8, 8, 1)
		_, _ = p.ReadUint(0x400010, 8)
	}
}
