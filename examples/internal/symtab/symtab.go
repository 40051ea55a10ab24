// Package symtab finds the functions of an ELF file (executable or shared
// library, C or Go, stripped Go binaries included), resolves probe specs in
// the spirit of `perf probe` to addresses, and maps file addresses to the
// addresses a running process uses.
//
// Addresses are the file's virtual addresses (what the symbol table and DWARF
// say) unless a name says otherwise; add the load bias (see File.LoadBias) to
// get the address in a running process.
package symtab

import (
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
)

// Func is one function of a file.
type Func struct {
	// Name is the preferred name when several symbols share the address
	// (global before weak before local, then fewer leading underscores, then
	// the shorter name): malloc rather than __libc_malloc.
	Name string
	// Aliases holds the other names found at the same address.
	Aliases []string
	Addr    uint64 // file virtual address of the first instruction
	Size    uint64 // bytes; always > 0
	// Offset is the file offset of the function's first byte.
	Offset uint64
	// Go is set for functions known to the Go runtime's pclntab: their
	// integer arguments follow Go's register ABI rather than the System V one.
	Go bool
	// IFunc is set for STT_GNU_IFUNC symbols: the code at Addr is the
	// resolver that picks an implementation, not the implementation itself.
	IFunc bool
}

// End returns the address just past the function.
func (fn *Func) End() uint64 { return fn.Addr + fn.Size }

// Contains reports whether addr is inside the function's body.
func (fn *Func) Contains(addr uint64) bool { return addr >= fn.Addr && addr < fn.End() }

// HasName reports whether name is the function's name or one of its aliases.
func (fn *Func) HasName(name string) bool {
	if fn.Name == name {
		return true
	}
	for _, a := range fn.Aliases {
		if a == name {
			return true
		}
	}
	return false
}

// File is an opened ELF file with its functions.
type File struct {
	// Path is the name the file was opened with.
	Path string
	// Type is elf.ET_EXEC (fixed addresses) or elf.ET_DYN (PIE executables
	// and shared libraries, loaded at a bias).
	Type elf.Type
	// Funcs holds the functions sorted by address, one per address.
	Funcs []Func
	// IsGo is set when the file carries a Go pclntab.
	IsGo bool

	osf   *os.File
	ef    *elf.File
	progs []*elf.Prog // PT_LOAD segments
	byNm  map[string][]int

	goTab *gosym.Table

	dwOnce sync.Once
	dw     *dwarf.Data
	dwErr  error
}

// ErrNotELF is returned by Open for a file that does not start with the ELF
// magic.
var ErrNotELF = errors.New("not an ELF file")

// ErrNotX8664 is returned by Open for an ELF file of another architecture.
var ErrNotX8664 = errors.New("not an x86-64 ELF file")

// Open reads the ELF file at path and lists its functions. It fails with an
// error wrapping ErrNotELF for files that are not ELF, ErrNotX8664 for ELF
// files of other machines, and debug/elf's errors for corrupt ones.
func Open(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	f, err := newFile(path, osf)
	if err != nil {
		osf.Close()
		return nil, err
	}
	return f, nil
}

func newFile(path string, osf *os.File) (f *File, err error) {
	// debug/elf has panicked on corrupt files before; no panic leaves here.
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("%s: corrupt ELF file: %v", path, r)
		}
	}()
	var magic [4]byte
	if _, err := osf.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, fmt.Errorf("%s: %w", path, ErrNotELF)
	}
	ef, err := elf.NewFile(osf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%s: %w (machine %v, class %v)", path, ErrNotX8664, ef.Machine, ef.Class)
	}
	f = &File{Path: path, Type: ef.Type, osf: osf, ef: ef}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			f.progs = append(f.progs, p)
		}
	}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// Close releases the file.
func (f *File) Close() error {
	return f.osf.Close()
}

// ELF returns the underlying debug/elf file.
func (f *File) ELF() *elf.File { return f.ef }

type cand struct {
	name  string
	addr  uint64
	size  uint64
	bind  elf.SymBind
	goFn  bool
	ifunc bool
}

// rank orders candidate names for one address: lower is better.
func (c *cand) rank() (int, int, int) {
	b := 3
	switch c.bind {
	case elf.STB_GLOBAL:
		b = 0
	case elf.STB_WEAK:
		b = 1
	case elf.STB_LOCAL:
		b = 2
	}
	return b, len(c.name) - len(strings.TrimLeft(c.name, "_")), len(c.name)
}

func better(a, b *cand) bool {
	a1, a2, a3 := a.rank()
	b1, b2, b3 := b.rank()
	if a1 != b1 {
		return a1 < b1
	}
	if a2 != b2 {
		return a2 < b2
	}
	if a3 != b3 {
		return a3 < b3
	}
	return a.name < b.name
}

func (f *File) load() error {
	var cands []cand
	secs := f.ef.Sections
	execSec := func(idx elf.SectionIndex) bool {
		return int(idx) > 0 && int(idx) < len(secs) && secs[idx].Flags&elf.SHF_EXECINSTR != 0
	}
	add := func(syms []elf.Symbol) {
		for _, s := range syms {
			t := elf.ST_TYPE(s.Info)
			if (t != elf.STT_FUNC && t != elf.STT_GNU_IFUNC) || s.Size == 0 || s.Name == "" || !execSec(s.Section) {
				continue
			}
			cands = append(cands, cand{name: s.Name, addr: s.Value, size: s.Size,
				bind: elf.ST_BIND(s.Info), ifunc: t == elf.STT_GNU_IFUNC})
		}
	}
	syms, err := f.ef.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("%s: reading .symtab: %w", f.Path, err)
	}
	add(syms)
	dsyms, err := f.ef.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("%s: reading .dynsym: %w", f.Path, err)
	}
	add(dsyms)

	if tab, err := f.loadGo(syms); err != nil {
		return err
	} else if tab != nil {
		f.IsGo = true
		f.goTab = tab
		for i := range tab.Funcs {
			fn := &tab.Funcs[i]
			if fn.End <= fn.Entry || fn.Sym == nil || fn.Name == "" {
				continue
			}
			cands = append(cands, cand{name: fn.Name, addr: fn.Entry, size: fn.End - fn.Entry,
				bind: elf.STB_GLOBAL, goFn: true})
		}
	}

	sort.Slice(cands, func(i, j int) bool {
		if cands[i].addr != cands[j].addr {
			return cands[i].addr < cands[j].addr
		}
		return better(&cands[i], &cands[j])
	})
	f.byNm = make(map[string][]int)
	for i := 0; i < len(cands); {
		j := i
		best := &cands[i]
		fn := Func{Name: best.name, Addr: best.addr, Size: best.size}
		seen := map[string]bool{best.name: true}
		for ; j < len(cands) && cands[j].addr == best.addr; j++ {
			c := &cands[j]
			fn.Go = fn.Go || c.goFn
			fn.IFunc = fn.IFunc || c.ifunc
			if !seen[c.name] {
				seen[c.name] = true
				fn.Aliases = append(fn.Aliases, c.name)
			}
		}
		i = j
		off, ok := f.fileOffset(fn.Addr, fn.Size)
		if !ok {
			// Not backed by file bytes (or straddles a segment's end): a
			// body we cannot read is a function we cannot probe.
			continue
		}
		fn.Offset = off
		idx := len(f.Funcs)
		f.Funcs = append(f.Funcs, fn)
		f.byNm[fn.Name] = append(f.byNm[fn.Name], idx)
		for _, a := range fn.Aliases {
			f.byNm[a] = append(f.byNm[a], idx)
		}
	}
	return nil
}

// fileOffset maps [addr, addr+size) to a file offset through the executable
// PT_LOAD segment that holds it entirely in file bytes.
func (f *File) fileOffset(addr, size uint64) (uint64, bool) {
	for _, p := range f.progs {
		if p.Flags&elf.PF_X == 0 {
			continue
		}
		if addr >= p.Vaddr && addr-p.Vaddr < p.Filesz && size <= p.Filesz-(addr-p.Vaddr) {
			return p.Off + (addr - p.Vaddr), true
		}
	}
	return 0, false
}

// Executable reports whether addr lies in file-backed bytes of an executable
// segment.
func (f *File) Executable(addr uint64) bool {
	_, ok := f.fileOffset(addr, 1)
	return ok
}

// ReadAt reads len(b) bytes of executable code at file virtual address addr.
// Reading past the end of the segment returns the bytes that exist and
// io.EOF; an address outside executable segments is an error.
func (f *File) ReadAt(b []byte, addr uint64) (int, error) {
	for _, p := range f.progs {
		if p.Flags&elf.PF_X == 0 || addr < p.Vaddr || addr-p.Vaddr >= p.Filesz {
			continue
		}
		rel := addr - p.Vaddr
		n := uint64(len(b))
		var err error
		if n > p.Filesz-rel {
			n = p.Filesz - rel
			err = io.EOF
		}
		m, rerr := f.osf.ReadAt(b[:n], int64(p.Off+rel))
		if rerr != nil {
			return m, fmt.Errorf("%s: reading %d bytes at %#x: %w", f.Path, n, addr, rerr)
		}
		return m, err
	}
	return 0, fmt.Errorf("%s: address %#x is not in an executable segment", f.Path, addr)
}

// Body returns the bytes of fn.
func (f *File) Body(fn *Func) ([]byte, error) {
	b := make([]byte, fn.Size)
	if _, err := f.osf.ReadAt(b, int64(fn.Offset)); err != nil {
		return nil, fmt.Errorf("%s: reading the body of %s (%d bytes at %#x): %w", f.Path, fn.Name, fn.Size, fn.Addr, err)
	}
	return b, nil
}

// Lookup returns the functions whose name or alias is exactly name.
func (f *File) Lookup(name string) []*Func {
	idx := f.byNm[name]
	out := make([]*Func, 0, len(idx))
	for _, i := range idx {
		out = append(out, &f.Funcs[i])
	}
	return out
}

// FuncAt returns the function whose body contains the file address addr, or
// nil.
func (f *File) FuncAt(addr uint64) *Func {
	i := sort.Search(len(f.Funcs), func(i int) bool { return f.Funcs[i].Addr > addr })
	// Symbols may overlap (a local label inside a bigger function): look back
	// for the nearest function that covers addr.
	for j := i - 1; j >= 0 && i-j <= 16; j-- {
		if f.Funcs[j].Contains(addr) {
			return &f.Funcs[j]
		}
	}
	return nil
}

// PIE reports whether the file is loaded at a bias chosen at run time
// (shared libraries and position-independent executables).
func (f *File) PIE() bool { return f.Type == elf.ET_DYN }
