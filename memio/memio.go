// Package memio reads and writes a target's virtual memory.
//
// A Memory is an io.ReaderAt and io.WriterAt whose offsets are virtual
// addresses. Process reaches a live process, Pages holds sparse in-memory
// pages for tests and fuzzing. Every failed or short access returns a *Fault
// that names the address and the access.
package memio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Memory is a target's address space: the offset of ReadAt and WriteAt is a
// virtual address (addresses at or above 1<<63 are passed as negative int64s
// and must be converted back with uint64).
//
// A ReadAt or WriteAt that does not move every byte returns a *Fault.
// Implementations honour page protections as the target's own code would see
// them: writing a read-only page faults rather than succeeding.
type Memory interface {
	io.ReaderAt
	io.WriterAt
}

// Uints is implemented by memories that move a 1-, 2-, 4- or 8-byte
// little-endian value without allocating. ReadUint and WriteUint (the
// functions) use it when it is there; the emulator's hit path depends on it.
type Uints interface {
	ReadUint(addr uint64, size int) (uint64, error)
	WriteUint(addr uint64, size int, v uint64) error
}

// Access says what a faulting access was doing.
type Access uint8

// Kinds of access.
const (
	Read Access = iota
	Write
)

func (a Access) String() string {
	if a == Write {
		return "write"
	}
	return "read"
}

// ErrUnmapped is the cause of a Fault at an address with no page.
var ErrUnmapped = errors.New("address not mapped")

// ErrProtected is the cause of a Fault at a page whose protection forbids the access.
var ErrProtected = errors.New("page protection forbids the access")

// Fault is the error of an access that could not move all its bytes. Addr is
// the first address that could not be accessed.
type Fault struct {
	Addr   uint64
	Access Access
	Err    error // ErrUnmapped, ErrProtected, or the OS error
}

func (f *Fault) Error() string {
	return fmt.Sprintf("memio: %s fault at %#x: %v", f.Access, f.Addr, f.Err)
}

// Unwrap returns the cause.
func (f *Fault) Unwrap() error { return f.Err }

// ReadUint reads a size-byte little-endian value at addr (size 1, 2, 4 or 8).
// It does not allocate when m implements Uints.
func ReadUint(m Memory, addr uint64, size int) (uint64, error) {
	if u, ok := m.(Uints); ok {
		return u.ReadUint(addr, size)
	}
	var b [8]byte
	if _, err := m.ReadAt(b[:size], int64(addr)); err != nil {
		return 0, asFault(err, addr, Read)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// WriteUint writes the low size bytes of v, little-endian, at addr (size 1,
// 2, 4 or 8). It does not allocate when m implements Uints.
func WriteUint(m Memory, addr uint64, size int, v uint64) error {
	if u, ok := m.(Uints); ok {
		return u.WriteUint(addr, size, v)
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	if _, err := m.WriteAt(b[:size], int64(addr)); err != nil {
		return asFault(err, addr, Write)
	}
	return nil
}

// asFault returns err when it already is a *Fault, and wraps it in one otherwise.
func asFault(err error, addr uint64, a Access) error {
	var f *Fault
	if errors.As(err, &f) {
		return err
	}
	return &Fault{Addr: addr, Access: a, Err: err}
}
