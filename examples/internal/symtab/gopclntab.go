package symtab

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"fmt"
)

// Go pclntab magics (little-endian), newest first: Go 1.20, 1.18, 1.16, 1.2.
var goMagics = [][]byte{
	{0xf1, 0xff, 0xff, 0xff},
	{0xf0, 0xff, 0xff, 0xff},
	{0xfa, 0xff, 0xff, 0xff},
	{0xfb, 0xff, 0xff, 0xff},
}

// loadGo finds the Go pclntab: the .gopclntab section, else the
// runtime.pclntab symbols, else a scan for the table's header in the
// read-only data of a binary whose section names were lost. It returns nil
// without an error when the file is not a Go binary.
func (f *File) loadGo(syms []elf.Symbol) (*gosym.Table, error) {
	ef := f.ef
	var textAddr uint64
	if s := ef.Section(".text"); s != nil {
		textAddr = s.Addr
	}
	var pclnStart, pclnEnd uint64
	for _, s := range syms {
		switch s.Name {
		case "runtime.text":
			textAddr = s.Value
		case "runtime.pclntab":
			pclnStart = s.Value
		case "runtime.epclntab":
			pclnEnd = s.Value
		}
	}

	if s := ef.Section(".gopclntab"); s != nil && s.Type != elf.SHT_NOBITS {
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("%s: reading .gopclntab: %w", f.Path, err)
		}
		return f.goTable(data, textAddr, true)
	}
	if pclnStart != 0 && pclnEnd > pclnStart {
		for _, s := range ef.Sections {
			if s.Type == elf.SHT_NOBITS || pclnStart < s.Addr || pclnEnd > s.Addr+s.Size {
				continue
			}
			data := make([]byte, pclnEnd-pclnStart)
			if _, err := s.ReadAt(data, int64(pclnStart-s.Addr)); err != nil {
				return nil, fmt.Errorf("%s: reading runtime.pclntab: %w", f.Path, err)
			}
			return f.goTable(data, textAddr, true)
		}
	}
	if ef.Section(".go.buildinfo") == nil && ef.Section(".note.go.buildid") == nil {
		return nil, nil
	}
	for _, name := range []string{".data.rel.ro", ".rodata", ".noptrdata"} {
		s := ef.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for _, m := range goMagics {
			for off := 0; ; {
				i := bytes.Index(data[off:], m)
				if i < 0 {
					break
				}
				off += i
				h := data[off:]
				if len(h) >= 16 && h[4] == 0 && h[5] == 0 && h[6] == 1 && h[7] == 8 {
					if tab, err := f.goTable(h, textAddr, false); err == nil && tab != nil {
						return tab, nil
					}
				}
				off += 4
			}
		}
	}
	return nil, nil
}

// goTable builds the symbol table from pclntab data. Since Go 1.18 the table
// records text addresses relative to runtime.text; the header holds that
// address unless it is left for a dynamic relocation (PIE), in which case
// the caller's guess (runtime.text, else .text) stands.
func (f *File) goTable(data []byte, textAddr uint64, must bool) (*gosym.Table, error) {
	if len(data) >= 32 && (data[0] == 0xf1 || data[0] == 0xf0) {
		if ts := binary.LittleEndian.Uint64(data[24:]); ts != 0 {
			textAddr = ts
		}
	}
	lt := gosym.NewLineTable(data, textAddr)
	tab, err := gosym.NewTable(nil, lt)
	if err == nil && len(tab.Funcs) == 0 {
		err = fmt.Errorf("no functions")
	}
	if err == nil && !f.Executable(tab.Funcs[0].Entry) {
		err = fmt.Errorf("first function %s at %#x is outside the executable segments", tab.Funcs[0].Name, tab.Funcs[0].Entry)
	}
	if err != nil {
		if must {
			return nil, fmt.Errorf("%s: Go pclntab: %w", f.Path, err)
		}
		return nil, err
	}
	return tab, nil
}
