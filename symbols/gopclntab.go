package symbols

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
// runtime.pclntab symbols, else a scan for the table's header in the data
// sections of a binary whose section names were changed. It returns nil
// without an error when the file is not a Go binary.
func (f *File) loadGo(syms []elf.Symbol) (*gosym.Table, error) {
	ef := f.ef
	var textAddr uint64
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
		return f.goTable(data, s.Addr, textAddr, true)
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
			return f.goTable(data, pclnStart, textAddr, true)
		}
	}
	if ef.Section(".go.buildinfo") == nil && ef.Section(".note.go.buildid") == nil {
		return nil, nil
	}
	// The usual homes first, then any other allocated data section.
	var secs []*elf.Section
	for _, name := range []string{".data.rel.ro", ".rodata", ".noptrdata"} {
		if s := ef.Section(name); s != nil {
			secs = append(secs, s)
		}
	}
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Flags&elf.SHF_EXECINSTR == 0 &&
			s.Name != ".data.rel.ro" && s.Name != ".rodata" && s.Name != ".noptrdata" {
			secs = append(secs, s)
		}
	}
	for _, s := range secs {
		if s.Type != elf.SHT_PROGBITS {
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
					if tab, err := f.goTable(h, s.Addr+uint64(off), textAddr, false); err == nil && tab != nil {
						return tab, nil
					}
				}
				off += 4
			}
		}
	}
	return nil, nil
}

// goTable builds the symbol table from pclntab data found at address
// pcln. Since Go 1.18 the table records code addresses relative to
// runtime.text, which is not always where .text starts (external linking
// puts C start-up code first). Its address is taken from, in order: the
// table's header (left 0 when a relocation fills it in), the runtime.text
// symbol (textAddr, 0 when stripped), the runtime's moduledata (which
// points at the table and records text), and last the start of .text.
func (f *File) goTable(data []byte, pcln, textAddr uint64, must bool) (*gosym.Table, error) {
	if len(data) >= 32 && (data[0] == 0xf1 || data[0] == 0xf0) {
		if ts := binary.LittleEndian.Uint64(data[24:]); ts != 0 {
			textAddr = ts
		}
		if textAddr == 0 {
			textAddr = f.moduledataText(pcln)
		}
	}
	if textAddr == 0 {
		if s := f.ef.Section(".text"); s != nil {
			textAddr = s.Addr
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

// Offsets in runtime.moduledata (Go 1.18 and later): pcHeader is its first
// word, then six slices (funcnametab, cutab, filetab, pctab, pclntable,
// ftab), findfunctab, minpc, maxpc, text and etext.
const (
	mdText  = 8 + 6*24 + 3*8
	mdEText = mdText + 8
)

// moduledataText finds the runtime's moduledata by its pointer to the
// pclntab and returns the text address it records, or 0. In a
// position-independent binary those pointers are left to R_X86_64_RELATIVE
// relocations, so the relocation addends are searched too.
func (f *File) moduledataText(pcln uint64) uint64 {
	text := f.ef.Section(".text")
	valid := func(t, e uint64) bool {
		return text != nil && t >= text.Addr && t < e && e <= text.Addr+text.Size
	}
	for _, s := range f.ef.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&elf.SHF_WRITE == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for off := 0; off+mdEText+8 <= len(data); off += 8 {
			if binary.LittleEndian.Uint64(data[off:]) != pcln {
				continue
			}
			t := binary.LittleEndian.Uint64(data[off+mdText:])
			e := binary.LittleEndian.Uint64(data[off+mdEText:])
			if valid(t, e) {
				return t
			}
		}
	}
	rela := f.ef.Section(".rela.dyn")
	if rela == nil {
		return 0
	}
	data, err := rela.Data()
	if err != nil {
		return 0
	}
	const relative = 8 // R_X86_64_RELATIVE
	addend := map[uint64]uint64{}
	var mds []uint64
	for i := 0; i+24 <= len(data); i += 24 {
		off := binary.LittleEndian.Uint64(data[i:])
		info := binary.LittleEndian.Uint64(data[i+8:])
		add := binary.LittleEndian.Uint64(data[i+16:])
		if info&0xffffffff != relative {
			continue
		}
		addend[off] = add
		if add == pcln {
			mds = append(mds, off)
		}
	}
	for _, md := range mds {
		t, ok1 := addend[md+mdText]
		e, ok2 := addend[md+mdEText]
		if ok1 && ok2 && valid(t, e) {
			return t
		}
	}
	return 0
}
