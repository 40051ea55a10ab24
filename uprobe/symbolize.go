package uprobe

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/symbols"
)

// Symbolizer names the code addresses of a process (stack frames, say):
// it reads the process's mappings and opens each file once, when an
// address in it is first asked about. Not safe for concurrent use.
type Symbolizer struct {
	pid   int
	maps  []memio.Mapping
	files map[string]*symFile
	buf   []byte
}

type symFile struct {
	f    *symbols.File // nil when the file could not be opened
	bias uint64
	base string
}

// NewSymbolizer returns a Symbolizer for process pid.
func NewSymbolizer(pid int) *Symbolizer {
	return &Symbolizer{pid: pid, files: map[string]*symFile{}}
}

// Reset forgets the mappings (after an exec, a dlopen), keeping the files
// already opened.
func (s *Symbolizer) Reset() { s.maps = nil }

// Close releases the files.
func (s *Symbolizer) Close() {
	for _, sf := range s.files {
		if sf.f != nil {
			sf.f.Close()
		}
	}
	s.files = map[string]*symFile{}
}

// Func returns the function holding pc and the file it is in (nil and the
// file's base name, or nil and "" when pc is in no mapped file).
func (s *Symbolizer) Func(pc uint64) (*symbols.Func, string) {
	m := s.mapping(pc)
	if m == nil {
		s.Reset() // a mapping made since the last read
		if m = s.mapping(pc); m == nil {
			return nil, ""
		}
	}
	sf := s.files[m.Path]
	if sf == nil {
		sf = &symFile{base: filepath.Base(m.Path)}
		if f, err := symbols.Open(m.Path); err == nil {
			if bias, err := f.LoadBias(s.maps); err == nil {
				sf.f, sf.bias = f, bias
			} else {
				f.Close()
			}
		}
		s.files[m.Path] = sf
	}
	if sf.f == nil {
		return nil, sf.base
	}
	return sf.f.PCToFunc(pc - sf.bias), sf.base
}

// Name returns pc as FUNC+0xOFF, FILE+0xOFF outside every known function,
// or 0xADDR.
func (s *Symbolizer) Name(pc uint64) string {
	fn, file := s.Func(pc)
	switch {
	case fn != nil:
		sf := s.files[s.mapping(pc).Path]
		if off := pc - sf.bias - fn.Addr; off != 0 {
			return fn.Name + "+0x" + strconv.FormatUint(off, 16)
		}
		return fn.Name
	case file != "":
		return fmt.Sprintf("%s+%#x", file, pc-s.mapping(pc).Start)
	}
	return fmt.Sprintf("%#x", pc)
}

// FuncName returns the name of the function holding pc, else as Name does
// without an offset inside a file.
func (s *Symbolizer) FuncName(pc uint64) string {
	fn, file := s.Func(pc)
	switch {
	case fn != nil:
		return fn.Name
	case file != "":
		return "[" + file + "]"
	}
	return "[unknown]"
}

func (s *Symbolizer) mapping(pc uint64) *memio.Mapping {
	if s.maps == nil {
		s.maps, _ = memio.ReadMaps(s.pid)
	}
	for i := range s.maps {
		if m := &s.maps[i]; m.Contains(pc) && m.Path != "" && m.Path[0] == '/' {
			return m
		}
	}
	return nil
}
