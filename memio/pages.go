package memio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// PageSize is the size of one page of Pages.
const PageSize = 4096

// Prot is the protection of a page of Pages.
type Prot uint8

// Protection bits. A mapped page with neither is like PROT_NONE: every access
// to it faults with ErrProtected, while an absent page faults with ErrUnmapped.
const (
	ProtRead  Prot = 1 << 0
	ProtWrite Prot = 1 << 1

	ProtRW = ProtRead | ProtWrite
)

func (p Prot) String() string {
	b := []byte("--")
	if p&ProtRead != 0 {
		b[0] = 'r'
	}
	if p&ProtWrite != 0 {
		b[1] = 'w'
	}
	return string(b)
}

type page struct {
	data [PageSize]byte
	prot Prot
}

// maxMapPages bounds one Map call (1 GiB), so that a fuzzer's wild range is
// an error rather than an exhausted machine.
const maxMapPages = 1 << 18

// cacheSize is the number of pages remembered in front of the map. The
// emulator touches at most two pages per step (a data operand and the stack),
// and a probe hits the same pages again and again, so a small direct-mapped
// cache keyed by page number serves almost every access without a map lookup.
const cacheSize = 4

// Pages is a sparse address space of 4 KiB pages held in memory, each with
// its own protection, for tests and fuzzing. It implements Memory and Uints.
//
// Every access is all-or-nothing: when any byte of it would fault, nothing is
// moved and the *Fault names the first such byte. Successful ReadUint,
// WriteUint, ReadAt and WriteAt calls do not allocate.
//
// The zero Pages is an empty address space ready to use. A Pages is not safe
// for concurrent use.
type Pages struct {
	pages map[uint64]*page // by page number (address / PageSize)
	tag   [cacheSize]uint64
	hit   [cacheSize]*page // nil when the slot is empty
}

// NewPages returns an empty address space.
func NewPages() *Pages { return &Pages{} }

// span returns the page numbers of the first and last pages of the size
// bytes at addr, rounding outward, and an error for an empty or wrapping range.
func span(addr, size uint64) (first, last uint64, err error) {
	if size == 0 {
		return 0, 0, errors.New("memio: empty range")
	}
	end := addr + size - 1
	if end < addr {
		return 0, 0, fmt.Errorf("memio: range %#x+%#x wraps around the address space", addr, size)
	}
	return addr / PageSize, end / PageSize, nil
}

// Map maps fresh zeroed pages with protection prot over every page that the
// size bytes at addr touch (addr and size need not be page-aligned). Pages
// already mapped there are replaced, as with mmap's MAP_FIXED.
func (p *Pages) Map(addr, size uint64, prot Prot) error {
	first, last, err := span(addr, size)
	if err != nil {
		return err
	}
	if last-first >= maxMapPages {
		return fmt.Errorf("memio: Map of %#x bytes at %#x: Pages holds at most %d pages at once", size, addr, maxMapPages)
	}
	if p.pages == nil {
		p.pages = make(map[uint64]*page)
	}
	for n := first; ; n++ {
		p.forget(n)
		p.pages[n] = &page{prot: prot}
		if n == last {
			break
		}
	}
	return nil
}

// Unmap removes every page that the size bytes at addr touch. Pages that are
// not mapped are ignored.
func (p *Pages) Unmap(addr, size uint64) error {
	first, last, err := span(addr, size)
	if err != nil {
		return err
	}
	if last-first >= uint64(len(p.pages)) {
		// A range wider than what is mapped: visit the pages, not the range.
		for n := range p.pages {
			if n >= first && n <= last {
				p.forget(n)
				delete(p.pages, n)
			}
		}
		return nil
	}
	for n := first; ; n++ {
		p.forget(n)
		delete(p.pages, n)
		if n == last {
			break
		}
	}
	return nil
}

// Protect sets the protection of every page that the size bytes at addr
// touch. It fails, changing nothing, when one of them is not mapped.
func (p *Pages) Protect(addr, size uint64, prot Prot) error {
	first, last, err := span(addr, size)
	if err != nil {
		return err
	}
	for n := first; ; n++ {
		if p.pages[n] == nil {
			return &Fault{Addr: max(n*PageSize, addr), Access: Write, Err: ErrUnmapped}
		}
		if n == last {
			break
		}
	}
	for n := first; ; n++ {
		p.pages[n].prot = prot
		if n == last {
			break
		}
	}
	return nil
}

// Prot returns the protection of the page holding addr and whether it is mapped.
func (p *Pages) Prot(addr uint64) (Prot, bool) {
	pg := p.lookup(addr / PageSize)
	if pg == nil {
		return 0, false
	}
	return pg.prot, true
}

// Poke writes b at addr whatever the pages' protection, the way a debugger
// writes a target's text: it fills memory for tests. It fails, writing
// nothing, when a page is not mapped.
func (p *Pages) Poke(addr uint64, b []byte) error {
	if err := p.check(addr, len(b), Write, 0); err != nil {
		return err
	}
	p.copyOut(addr, b)
	return nil
}

// Peek reads len(b) bytes at addr whatever the pages' protection. It fails,
// reading nothing, when a page is not mapped.
func (p *Pages) Peek(addr uint64, b []byte) error {
	if err := p.check(addr, len(b), Read, 0); err != nil {
		return err
	}
	p.copyIn(addr, b)
	return nil
}

// Clone returns a deep copy of p: contents and protections.
func (p *Pages) Clone() *Pages {
	q := &Pages{pages: make(map[uint64]*page, len(p.pages))}
	for n, pg := range p.pages {
		c := *pg
		q.pages[n] = &c
	}
	return q
}

// Each calls f for every mapped page in increasing address order with the
// page's address, protection and contents (which f may read but must not
// keep), until f returns false.
func (p *Pages) Each(f func(addr uint64, prot Prot, data []byte) bool) {
	ns := make([]uint64, 0, len(p.pages))
	for n := range p.pages {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	for _, n := range ns {
		pg := p.pages[n]
		if !f(n*PageSize, pg.prot, pg.data[:]) {
			return
		}
	}
}

// forget drops page number n from the cache.
func (p *Pages) forget(n uint64) {
	i := n % cacheSize
	if p.hit[i] != nil && p.tag[i] == n {
		p.hit[i] = nil
	}
}

// lookup returns page number n, or nil when it is not mapped.
func (p *Pages) lookup(n uint64) *page {
	i := n % cacheSize
	if pg := p.hit[i]; pg != nil && p.tag[i] == n {
		return pg
	}
	pg := p.pages[n]
	if pg != nil {
		p.tag[i], p.hit[i] = n, pg
	}
	return pg
}

// check reports the fault, if any, of an access of size bytes at addr that
// needs protection need (0 for none). Addresses wrap modulo 2^64.
func (p *Pages) check(addr uint64, size int, a Access, need Prot) error {
	for off := 0; off < size; {
		at := addr + uint64(off)
		pg := p.lookup(at / PageSize)
		if pg == nil {
			return &Fault{Addr: at, Access: a, Err: ErrUnmapped}
		}
		if pg.prot&need != need {
			return &Fault{Addr: at, Access: a, Err: ErrProtected}
		}
		off += PageSize - int(at%PageSize)
	}
	return nil
}

// copyIn copies memory at addr into b; every page is known to be mapped.
func (p *Pages) copyIn(addr uint64, b []byte) {
	for len(b) > 0 {
		pg := p.lookup(addr / PageSize)
		n := copy(b, pg.data[addr%PageSize:])
		b, addr = b[n:], addr+uint64(n)
	}
}

// copyOut copies b into memory at addr; every page is known to be mapped.
func (p *Pages) copyOut(addr uint64, b []byte) {
	for len(b) > 0 {
		pg := p.lookup(addr / PageSize)
		n := copy(pg.data[addr%PageSize:], b)
		b, addr = b[n:], addr+uint64(n)
	}
}

// ReadAt reads len(b) bytes at the virtual address uint64(off). It reads all
// of them or, when any is unmapped or unreadable, none and returns a *Fault.
func (p *Pages) ReadAt(b []byte, off int64) (int, error) {
	addr := uint64(off)
	if err := p.check(addr, len(b), Read, ProtRead); err != nil {
		return 0, err
	}
	p.copyIn(addr, b)
	return len(b), nil
}

// WriteAt writes b at the virtual address uint64(off). It writes all of it
// or, when any byte is unmapped or not writable, nothing and returns a *Fault.
func (p *Pages) WriteAt(b []byte, off int64) (int, error) {
	addr := uint64(off)
	if err := p.check(addr, len(b), Write, ProtWrite); err != nil {
		return 0, err
	}
	p.copyOut(addr, b)
	return len(b), nil
}

// ReadUint reads a size-byte little-endian value at addr (size 1, 2, 4 or 8).
func (p *Pages) ReadUint(addr uint64, size int) (uint64, error) {
	if !validSize(size) {
		return 0, fmt.Errorf("memio: ReadUint of %d bytes", size)
	}
	off := addr % PageSize
	if off <= PageSize-uint64(size) {
		pg := p.lookup(addr / PageSize)
		if pg != nil && pg.prot&ProtRead != 0 {
			d := pg.data[off:]
			switch size {
			case 8:
				return binary.LittleEndian.Uint64(d), nil
			case 4:
				return uint64(binary.LittleEndian.Uint32(d)), nil
			case 2:
				return uint64(binary.LittleEndian.Uint16(d)), nil
			}
			return uint64(d[0]), nil
		}
	}
	var b [8]byte
	if _, err := p.ReadAt(b[:size], int64(addr)); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// WriteUint writes the low size bytes of v, little-endian, at addr (size 1,
// 2, 4 or 8).
func (p *Pages) WriteUint(addr uint64, size int, v uint64) error {
	if !validSize(size) {
		return fmt.Errorf("memio: WriteUint of %d bytes", size)
	}
	off := addr % PageSize
	if off <= PageSize-uint64(size) {
		pg := p.lookup(addr / PageSize)
		if pg != nil && pg.prot&ProtWrite != 0 {
			d := pg.data[off:]
			switch size {
			case 8:
				binary.LittleEndian.PutUint64(d, v)
			case 4:
				binary.LittleEndian.PutUint32(d, uint32(v))
			case 2:
				binary.LittleEndian.PutUint16(d, uint16(v))
			default:
				d[0] = byte(v)
			}
			return nil
		}
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, err := p.WriteAt(b[:size], int64(addr))
	return err
}

func validSize(size int) bool {
	return size == 1 || size == 2 || size == 4 || size == 8
}
