package memio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

const childEnv = "MEMIO_PROCESS_TEST_CHILD"

// TestMain turns the test binary into a target process when childEnv is set:
// it maps a writable page followed by a read-only page, each filled with a
// known pattern, with an unmapped page after them, prints the first address
// and waits to be killed.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ps := os.Getpagesize()
		b, err := unix.Mmap(-1, 0, 3*ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			panic(err)
		}
		for i := 0; i < 2*ps; i++ {
			b[i] = byte(i * 7)
		}
		must(unix.Mprotect(b[ps:2*ps], unix.PROT_READ))
		// unix.Munmap only takes whole mappings it made; cut the hole directly.
		if _, _, e := unix.Syscall(unix.SYS_MUNMAP, uintptr(uintptrOf(b))+uintptr(2*ps), uintptr(ps), 0); e != 0 {
			panic(e)
		}
		fmt.Printf("%d\n", uintptrOf(b))
		os.Stdout.Sync()
		select {}
	}
	os.Exit(m.Run())
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// target starts the child and returns its pid and the address of its writable page.
func target(t *testing.T) (*exec.Cmd, uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	var addr uint64
	_, err = fmt.Fscan(bufio.NewReader(out), &addr)
	require.NoError(t, err)
	return cmd, addr
}

func pattern(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((from + i) * 7)
	}
	return b
}

func TestProcessReadWrite(t *testing.T) {
	cmd, base := target(t)
	ps := uint64(os.Getpagesize())
	p, err := OpenProcess(cmd.Process.Pid)
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, cmd.Process.Pid, p.Pid())

	// Whole pattern across the writable and read-only pages.
	b := make([]byte, 2*ps)
	n, err := p.ReadAt(b, int64(base))
	require.NoError(t, err)
	assert.Equal(t, int(2*ps), n)
	assert.Equal(t, pattern(0, int(2*ps)), b)

	// Words.
	v, err := p.ReadUint(base+8, 8)
	require.NoError(t, err)
	assert.Equal(t, binary.LittleEndian.Uint64(pattern(8, 8)), v)
	require.NoError(t, p.WriteUint(base+16, 4, 0xdeadbeef))
	v, err = p.ReadUint(base+16, 4)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xdeadbeef), v)
	v, err = p.ReadUint(base+20, 1)
	require.NoError(t, err)
	assert.Equal(t, uint64(byte(20*7)), v, "a 4-byte write leaves the next byte alone")
	_, err = p.ReadUint(base, 3)
	assert.Error(t, err)
	assert.Error(t, p.WriteUint(base, 16, 0))

	// Writing into the read-only page faults at its first address and moves
	// nothing, not even the part that fits in the writable page: the CPU's
	// store is all or nothing, and the emulator relies on the same.
	w := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	n, err = p.WriteAt(w, int64(base+ps-4))
	var f *Fault
	require.ErrorAs(t, err, &f)
	assert.Equal(t, base+ps, f.Addr)
	assert.Equal(t, Write, f.Access)
	assert.ErrorIs(t, err, ErrProtected)
	assert.Equal(t, 0, n)
	got := make([]byte, 8)
	_, err = p.ReadAt(got, int64(base+ps-4))
	require.NoError(t, err)
	assert.Equal(t, append(pattern(int(ps-4), 4), pattern(int(ps), 4)...), got, "neither page is changed")

	err = p.WriteUint(base+ps+8, 8, 1)
	require.ErrorAs(t, err, &f)
	assert.Equal(t, base+ps+8, f.Addr)
	assert.ErrorIs(t, err, ErrProtected)

	// Reading into the hole after the read-only page: a partial read.
	b = make([]byte, 16)
	n, err = p.ReadAt(b, int64(base+2*ps-8))
	require.ErrorAs(t, err, &f)
	assert.Equal(t, 8, n)
	assert.Equal(t, base+2*ps, f.Addr)
	assert.Equal(t, Read, f.Access)
	assert.ErrorIs(t, err, ErrUnmapped)
	assert.Equal(t, pattern(int(2*ps-8), 8), b[:8])

	_, err = p.ReadUint(base+2*ps, 8)
	require.ErrorAs(t, err, &f)
	assert.ErrorIs(t, err, ErrUnmapped)
	assert.Equal(t, base+2*ps, f.Addr)

	// The generic helpers take the allocation-free path.
	v, err = ReadUint(p, base+16, 2)
	require.NoError(t, err)
	assert.Equal(t, uint64(0xbeef), v)
}

func TestProcessForceWrite(t *testing.T) {
	cmd, base := target(t)
	ps := uint64(os.Getpagesize())
	p, err := OpenProcess(cmd.Process.Pid)
	require.NoError(t, err)
	defer p.Close()

	// The read-only page takes a forced write, as text takes an INT3.
	n, err := p.ForceWriteAt([]byte{0xcc}, int64(base+ps+1))
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	v, err := p.ReadUint(base+ps, 4)
	require.NoError(t, err)
	want := pattern(int(ps), 4)
	want[1] = 0xcc
	assert.Equal(t, uint64(want[0])|uint64(want[1])<<8|uint64(want[2])<<16|uint64(want[3])<<24, v)

	b := make([]byte, 4)
	_, err = p.ForceReadAt(b, int64(base+ps))
	require.NoError(t, err)
	assert.Equal(t, want, b)

	// A forced write into the hole is still a fault.
	_, err = p.ForceWriteAt([]byte{1}, int64(base+2*ps))
	var f *Fault
	require.ErrorAs(t, err, &f)
	assert.Equal(t, base+2*ps, f.Addr)
	assert.ErrorIs(t, err, ErrUnmapped)

	require.NoError(t, p.Close())
	_, err = p.ReadAt(b, int64(base))
	assert.ErrorIs(t, err, os.ErrClosed)
	_, err = p.ForceWriteAt(b, int64(base))
	assert.ErrorIs(t, err, os.ErrClosed)
}

func TestProcessGone(t *testing.T) {
	cmd, base := target(t)
	p, err := OpenProcess(cmd.Process.Pid)
	require.NoError(t, err)
	defer p.Close()
	// Open /proc/PID/mem while the process lives.
	_, err = p.ForceReadAt(make([]byte, 1), int64(base))
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()

	_, err = p.ReadUint(base, 8)
	assert.ErrorIs(t, err, ErrGone)
	_, err = p.WriteAt([]byte{1}, int64(base))
	assert.ErrorIs(t, err, ErrGone)
	_, err = p.ForceWriteAt([]byte{1}, int64(base))
	assert.ErrorIs(t, err, ErrGone)

	_, err = OpenProcess(cmd.Process.Pid)
	assert.ErrorIs(t, err, ErrGone)
	_, err = OpenProcess(0)
	assert.Error(t, err)
}

func TestProcessUintsDoNotAllocate(t *testing.T) {
	cmd, base := target(t)
	p, err := OpenProcess(cmd.Process.Pid)
	require.NoError(t, err)
	defer p.Close()
	var m Memory = p
	allocs := testing.AllocsPerRun(200, func() {
		v, err := ReadUint(m, base+32, 8)
		if err != nil {
			panic(err)
		}
		if err := WriteUint(m, base+40, 8, v+1); err != nil {
			panic(err)
		}
	})
	assert.Zero(t, allocs)
	_, err = ReadUint(m, base+1<<40, 8)
	assert.True(t, errors.As(err, new(*Fault)))
}

func uintptrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
