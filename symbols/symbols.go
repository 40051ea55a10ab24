// Package symbols finds the functions of an x86-64 ELF executable or shared
// library (C, C++, Rust, Go; stripped Go binaries through the pclntab,
// stripped C binaries through the .eh_frame unwind table), their source
// lines, their return instructions, and the addresses a running process
// uses for them.
//
// Names follow debug/gosym and Delve: LookupFunc, PCToFunc, PCToLine,
// LineToPC. Addresses are the file's virtual addresses (what the symbol
// table and DWARF say); add the load bias (File.LoadBias) to get the
// address in a process. Errors wrap the sentinels below, so callers test
// them with errors.Is.
package symbols

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

// Errors that the functions of this package wrap.
var (
	// ErrNotELF is returned by Open for a file that does not start with
	// the ELF magic.
	ErrNotELF = errors.New("not an ELF file")
	// ErrNotX8664 is returned by Open for an ELF file of another machine.
	ErrNotX8664 = errors.New("not an x86-64 ELF file")
	// ErrNoSymbol says that no function has the name asked for.
	ErrNoSymbol = errors.New("no such function")
	// ErrAmbiguous says that several functions have the name asked for.
	ErrAmbiguous = errors.New("ambiguous function name")
	// ErrNoLine says that no code belongs to the source line asked for,
	// or that the file knows no line for an address.
	ErrNoLine = errors.New("line not found")
	// ErrNoDebugInfo says that the file has neither DWARF line tables nor a
	// Go pclntab.
	ErrNoDebugInfo = errors.New("no DWARF line information and no Go pclntab")
	// ErrNotBoundary says that an address is not the start of an
	// instruction, or lies outside the function or the executable code.
	ErrNotBoundary = errors.New("not an instruction boundary")
	// ErrNotMapped says that a file is not mapped in a process.
	ErrNotMapped = errors.New("not mapped in the process")
	// ErrIFunc says that the implementation an IFUNC symbol stands for
	// cannot be known (yet): the loader has not run its resolver.
	ErrIFunc = errors.New("IFUNC implementation not known")
	// ErrUnknownSize says that a function's end is not known (a symbol of
	// size 0 with no unwind entry), so its body cannot be walked.
	ErrUnknownSize = errors.New("function size unknown")
)

// Func is one function of a file.
type Func struct {
	// Name is the preferred name when several symbols share the address
	// (global before weak before local, then fewer leading underscores,
	// then the shorter name): malloc rather than __libc_malloc. A symbol
	// of a non-default version keeps it (memcpy@GLIBC_2.2.5); a function
	// known by no symbol, only by its unwind entry, is sub_ADDR.
	Name string
	// Aliases holds the other names found at the same address.
	Aliases []string
	Addr    uint64 // file virtual address of the first instruction
	// Size is the body's length in bytes, always > 0. When SizeGuessed is
	// set the symbol said 0 and Size runs to the next function.
	Size        uint64
	SizeGuessed bool
	// Offset is the file offset of the function's first byte.
	Offset uint64
	// Go is set for functions known to the Go runtime's pclntab: their
	// integer arguments follow Go's register ABI rather than System V's.
	Go bool
	// IFunc is set for STT_GNU_IFUNC symbols: the code at Addr is the
	// resolver that picks an implementation, not the implementation
	// (see File.IFuncTarget).
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
	// DebugFile is the separate debug information file read with this one
	// (/usr/lib/debug/.build-id/..., or .gnu_debuglink's), or "".
	DebugFile string

	osf   *os.File
	ef    *elf.File
	dbg   *elf.File // the separate debug file, or nil
	dbgf  *os.File
	progs []*elf.Prog // PT_LOAD segments
	byNm  map[string][]int

	goTab *gosym.Table

	dwOnce sync.Once
	dw     *dwarf.Data
	dwErr  error

	sigs sigIndex // DWARF subprograms by address, for Signature
}

// Open reads the ELF file at path and lists its functions, with the
// symbols of its separate debug file when one is installed. It fails with
// an error wrapping ErrNotELF for files that are not ELF, ErrNotX8664 for
// ELF files of other machines, and debug/elf's errors for corrupt ones.
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
	ef, err := openELF(path, osf)
	if err != nil {
		return nil, err
	}
	f = &File{Path: path, Type: ef.Type, osf: osf, ef: ef}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD {
			f.progs = append(f.progs, p)
		}
	}
	f.openDebugFile()
	if err := f.load(); err != nil {
		f.closeDebug()
		return nil, err
	}
	return f, nil
}

func openELF(path string, r io.ReaderAt) (*elf.File, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return nil, fmt.Errorf("%s: %w", path, ErrNotELF)
	}
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ef.Machine != elf.EM_X86_64 || ef.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("%s: %w (machine %v, class %v)", path, ErrNotX8664, ef.Machine, ef.Class)
	}
	return ef, nil
}

// Close releases the file.
func (f *File) Close() error {
	f.closeDebug()
	return f.osf.Close()
}

// ELF returns the underlying debug/elf file.
func (f *File) ELF() *elf.File { return f.ef }

// PIE reports whether the file is loaded at a bias chosen at run time
// (shared libraries and position-independent executables).
func (f *File) PIE() bool { return f.Type == elf.ET_DYN }

// cand is one name found for an address, before names are merged.
type cand struct {
	name  string   // what the function is called when this name wins
	keys  []string // what finds it: the name, and its versioned spellings
	addr  uint64
	size  uint64
	bind  elf.SymBind
	goFn  bool
	ifunc bool
	// hidden is a non-default symbol version, found by a bare name only
	// when no default version exists.
	hidden bool
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
	if c.hidden {
		b += 4
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

// symCand makes the candidate of an ELF symbol. Versions come either from
// .gnu.version (dynamic symbols) or spelled in the name (name@@V, the
// default, and name@V in .symtab): the default version is found by the bare
// name too, as the dynamic linker binds it.
func symCand(s *elf.Symbol) cand {
	c := cand{addr: s.Value, size: s.Size, bind: elf.ST_BIND(s.Info), ifunc: elf.ST_TYPE(s.Info) == elf.STT_GNU_IFUNC}
	base, ver, def := s.Name, "", true
	if i := strings.IndexByte(s.Name, '@'); i > 0 {
		base, ver = s.Name[:i], strings.TrimLeft(s.Name[i:], "@")
		def = strings.HasPrefix(s.Name[i:], "@@")
	} else if s.HasVersion && s.Version != "" {
		ver, def = s.Version, !s.VersionIndex.IsHidden()
	}
	switch {
	case ver == "":
		c.name, c.keys = base, []string{base}
	case def:
		c.name, c.keys = base, []string{base, base + "@@" + ver, base + "@" + ver}
	default:
		c.name, c.keys, c.hidden = base+"@"+ver, []string{base + "@" + ver}, true
	}
	return c
}

func (f *File) load() error {
	var cands []cand
	execSec := func(ef *elf.File, idx elf.SectionIndex) bool {
		secs := ef.Sections
		return int(idx) > 0 && int(idx) < len(secs) && secs[idx].Flags&elf.SHF_EXECINSTR != 0
	}
	add := func(ef *elf.File, syms []elf.Symbol) {
		for i := range syms {
			s := &syms[i]
			t := elf.ST_TYPE(s.Info)
			if (t != elf.STT_FUNC && t != elf.STT_GNU_IFUNC) || s.Name == "" || !execSec(ef, s.Section) {
				continue
			}
			cands = append(cands, symCand(s))
		}
	}
	syms, err := f.ef.Symbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("%s: reading .symtab: %w", f.Path, err)
	}
	add(f.ef, syms)
	dsyms, err := f.ef.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("%s: reading .dynsym: %w", f.Path, err)
	}
	add(f.ef, dsyms)
	if f.dbg != nil {
		// A debug file's sections keep their headers (flags included)
		// with the bytes left out, so the same filter applies.
		if dbgSyms, err := f.dbg.Symbols(); err == nil {
			add(f.dbg, dbgSyms)
		}
	}

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
			cands = append(cands, cand{name: fn.Name, keys: []string{fn.Name}, addr: fn.Entry, size: fn.End - fn.Entry,
				bind: elf.STB_GLOBAL, goFn: true})
		}
	}
	if !f.IsGo {
		cands = append(cands, f.unwindCands(cands)...)
	}
	f.merge(cands)
	if f.IsGo {
		f.preferABIInternal()
	}
	return nil
}

// merge sorts the candidates and makes one Func per address.
func (f *File) merge(cands []cand) {
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].addr != cands[j].addr {
			return cands[i].addr < cands[j].addr
		}
		return better(&cands[i], &cands[j])
	})
	// A symbol of size 0 (hand-written assembly without .size) runs to the
	// next function, or is given the size an unwind entry or another
	// symbol at the same address has.
	nextAddr := func(i int) uint64 {
		for j := i + 1; j < len(cands); j++ {
			if cands[j].addr != cands[i].addr {
				return cands[j].addr
			}
		}
		return 0
	}
	f.byNm = make(map[string][]int)
	hiddenOnly := map[string][]int{}
	for i := 0; i < len(cands); {
		best := &cands[i]
		fn := Func{Name: best.name, Addr: best.addr}
		seen := map[string]bool{}
		var keys []string
		var hidden []string
		j := i
		for ; j < len(cands) && cands[j].addr == best.addr; j++ {
			c := &cands[j]
			fn.Go = fn.Go || c.goFn
			fn.IFunc = fn.IFunc || c.ifunc
			if fn.Size == 0 {
				fn.Size = c.size
			}
			if c.name != fn.Name && !seen[c.name] {
				fn.Aliases = append(fn.Aliases, c.name)
			}
			seen[c.name] = true
			keys = append(keys, c.keys...)
			if c.hidden {
				base, _, _ := strings.Cut(c.name, "@")
				hidden = append(hidden, base)
			}
		}
		if fn.Size == 0 {
			if next := nextAddr(i); next > fn.Addr {
				fn.Size, fn.SizeGuessed = next-fn.Addr, true
			} else if end, ok := f.segmentEnd(fn.Addr); ok {
				fn.Size, fn.SizeGuessed = end-fn.Addr, true
			}
		}
		i = j
		off, ok := f.fileOffset(fn.Addr, fn.Size)
		if fn.Size == 0 || !ok {
			// Not backed by file bytes (or straddles a segment's end): a
			// body we cannot read is a function we cannot probe.
			continue
		}
		fn.Offset = off
		idx := len(f.Funcs)
		f.Funcs = append(f.Funcs, fn)
		done := map[string]bool{}
		for _, k := range keys {
			if !done[k] {
				done[k] = true
				f.byNm[k] = append(f.byNm[k], idx)
			}
		}
		for _, b := range hidden {
			hiddenOnly[b] = append(hiddenOnly[b], idx)
		}
	}
	for b, idx := range hiddenOnly {
		if _, ok := f.byNm[b]; !ok {
			f.byNm[b] = idx
		}
	}
}

// segmentEnd returns the end of the file bytes of the executable segment
// holding addr.
func (f *File) segmentEnd(addr uint64) (uint64, bool) {
	for _, p := range f.progs {
		if p.Flags&elf.PF_X != 0 && addr >= p.Vaddr && addr-p.Vaddr < p.Filesz {
			return p.Vaddr + p.Filesz, true
		}
	}
	return 0, false
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
	return f.readSegment(b, addr, true)
}

// ReadData is ReadAt for any loaded segment, data too (a jump table in
// .rodata, say), as the file holds it: before the dynamic loader's
// relocations.
func (f *File) ReadData(b []byte, addr uint64) (int, error) {
	return f.readSegment(b, addr, false)
}

func (f *File) readSegment(b []byte, addr uint64, code bool) (int, error) {
	for _, p := range f.progs {
		if code && p.Flags&elf.PF_X == 0 || addr < p.Vaddr || addr-p.Vaddr >= p.Filesz {
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
	what := "an executable"
	if !code {
		what = "a loaded"
	}
	return 0, fmt.Errorf("%s: address %#x: %w: not in %s segment", f.Path, addr, ErrNotBoundary, what)
}

// Body returns the bytes of fn.
func (f *File) Body(fn *Func) ([]byte, error) {
	b := make([]byte, fn.Size)
	if _, err := f.osf.ReadAt(b, int64(fn.Offset)); err != nil {
		return nil, fmt.Errorf("%s: reading the body of %s (%d bytes at %#x): %w", f.Path, fn.Name, fn.Size, fn.Addr, err)
	}
	return b, nil
}

// Lookup returns the functions whose name or alias is exactly name. A
// versioned name (memcpy@@GLIBC_2.14, memcpy@GLIBC_2.2.5) selects that
// version; a bare name selects the default version.
func (f *File) Lookup(name string) []*Func {
	idx := f.byNm[name]
	out := make([]*Func, 0, len(idx))
	for _, i := range idx {
		out = append(out, &f.Funcs[i])
	}
	return out
}

// LookupFunc returns the one function named name (see Lookup). It fails
// with ErrNoSymbol when none is, and ErrAmbiguous when several are (two
// static functions of the same name in two units, say).
func (f *File) LookupFunc(name string) (*Func, error) {
	fns := f.Lookup(name)
	switch len(fns) {
	case 0:
		return nil, fmt.Errorf("%s in %s: %w", name, f.Path, ErrNoSymbol)
	case 1:
		return fns[0], nil
	}
	var b strings.Builder
	for i, fn := range fns {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%#x (size %d)", fn.Addr, fn.Size)
	}
	return nil, fmt.Errorf("%q in %s: %w: %d functions have that name, at %s", name, f.Path, ErrAmbiguous, len(fns), b.String())
}

// PCToFunc returns the function whose body contains the file address pc,
// or nil.
func (f *File) PCToFunc(pc uint64) *Func {
	i := sort.Search(len(f.Funcs), func(i int) bool { return f.Funcs[i].Addr > pc })
	// Symbols may overlap (a local label inside a bigger function): look back
	// for the nearest function that covers pc.
	for j := i - 1; j >= 0 && i-j <= 16; j-- {
		if f.Funcs[j].Contains(pc) {
			return &f.Funcs[j]
		}
	}
	return nil
}

// Match returns the functions a name or glob selects: exact names (and
// aliases) first; the pattern is tried only when nothing is named exactly
// so, because Go names contain '*' and '['. A pattern (* ? [...], with *
// matching '/' too) is matched against the whole name and, for names with
// a package path (net/http.Get), against the part after the last '/'.
func (f *File) Match(pattern string) []*Func {
	if fs := f.Lookup(pattern); len(fs) > 0 || !IsGlob(pattern) {
		return fs
	}
	var out []*Func
	for i := range f.Funcs {
		fn := &f.Funcs[i]
		if globName(pattern, fn.Name) {
			out = append(out, fn)
			continue
		}
		for _, a := range fn.Aliases {
			if globName(pattern, a) {
				out = append(out, fn)
				break
			}
		}
	}
	return out
}

// IsGlob reports whether s has glob metacharacters.
func IsGlob(s string) bool { return strings.ContainsAny(s, "*?[") }
