package symbols

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// unwindCands returns a candidate for every .eh_frame FDE that starts where
// no symbol does, so a stripped C binary still lists its functions (every
// function the compiler emitted has an FDE, for exceptions and unwinders),
// and gives symbols of size 0 the FDE's size.
func (f *File) unwindCands(have []cand) []cand {
	fdes := f.fdes()
	if len(fdes) == 0 {
		return nil
	}
	at := map[uint64]int{}
	for i := range have {
		if _, ok := at[have[i].addr]; !ok || have[i].size != 0 {
			at[have[i].addr] = i
		}
	}
	var out []cand
	for _, r := range fdes {
		if i, ok := at[r.start]; ok {
			if have[i].size == 0 {
				have[i].size = r.size
			}
			continue
		}
		if !f.Executable(r.start) {
			continue
		}
		name := fmt.Sprintf("sub_%x", r.start)
		out = append(out, cand{name: name, keys: []string{name}, addr: r.start, size: r.size, bind: elf.STB_LOCAL + 1})
	}
	return out
}

type fdeRange struct{ start, size uint64 }

// DWARF exception-header pointer encodings (the low nibble is the format,
// the high one what it is relative to).
const (
	peAbsptr = 0x00
	peUdata2 = 0x02
	peUdata4 = 0x03
	peUdata8 = 0x04
	peSdata2 = 0x0a
	peSdata4 = 0x0b
	peSdata8 = 0x0c
	pePcrel  = 0x10
	peOmit   = 0xff
)

// fdes parses .eh_frame: a sequence of CIEs (which say how the FDEs that
// follow encode their addresses, in the 'R' augmentation) and FDEs (each
// with the start and length of the code it describes). Anything malformed
// ends the parse with what was read so far.
func (f *File) fdes() (out []fdeRange) {
	s := f.ef.Section(".eh_frame")
	if s == nil || s.Type == elf.SHT_NOBITS {
		return nil
	}
	data, err := s.Data()
	if err != nil {
		return nil
	}
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	le := binary.LittleEndian
	encs := map[int]byte{} // CIE offset -> FDE pointer encoding
	for off := 0; off+4 <= len(data); {
		length := uint64(le.Uint32(data[off:]))
		hdr := 4
		if length == 0 {
			break // terminator
		}
		if length == 0xffffffff {
			length = le.Uint64(data[off+4:])
			hdr = 12
		}
		body := off + hdr
		end := body + int(length)
		if end > len(data) || length < 4 {
			break
		}
		id := le.Uint32(data[body:])
		if id == 0 {
			encs[off] = cieEncoding(data[body+4 : end])
		} else {
			cie := body - int(id)
			enc, ok := encs[cie]
			if ok {
				p := body + 4
				start, n := readEncoded(data[p:end], enc, s.Addr+uint64(p))
				size, _ := readEncoded(data[p+n:end], enc&0x0f, 0)
				if n > 0 && size > 0 && start != 0 {
					out = append(out, fdeRange{start, size})
				}
			}
		}
		off = end
	}
	return out
}

// cieEncoding reads a CIE body after its id and returns the FDE pointer
// encoding its augmentation gives ('R'), absptr when it gives none.
func cieEncoding(b []byte) byte {
	if len(b) < 1 || b[0] != 1 && b[0] != 3 && b[0] != 4 {
		return peAbsptr
	}
	version := b[0]
	p := 1
	aug := p
	for p < len(b) && b[p] != 0 {
		p++
	}
	augStr := string(b[aug:p])
	p++
	if version == 4 {
		p += 2 // address_size, segment_size
	}
	_, n := uleb(b[p:]) // code alignment
	p += n
	_, n = uleb(b[p:]) // data alignment (sleb, same length)
	p += n
	if version == 1 {
		p++ // return address register
	} else {
		_, n = uleb(b[p:])
		p += n
	}
	if len(augStr) == 0 || augStr[0] != 'z' {
		return peAbsptr
	}
	_, n = uleb(b[p:]) // augmentation data length
	p += n
	for _, c := range augStr[1:] {
		switch c {
		case 'R':
			return b[p]
		case 'L':
			p++
		case 'P':
			enc := b[p]
			_, n := readEncoded(b[p+1:], enc&0x7f, 0)
			p += 1 + n
		case 'S', 'B':
		default:
			return peAbsptr
		}
	}
	return peAbsptr
}

// readEncoded reads one pointer of encoding enc at b, whose address is pc
// (for pc-relative encodings), and returns it with its length in bytes.
func readEncoded(b []byte, enc byte, pc uint64) (uint64, int) {
	if enc == peOmit {
		return 0, 0
	}
	le := binary.LittleEndian
	var v uint64
	var n int
	switch enc & 0x0f {
	case peAbsptr, peUdata8, peSdata8:
		v, n = le.Uint64(b), 8
	case peUdata4:
		v, n = uint64(le.Uint32(b)), 4
	case peSdata4:
		v, n = uint64(int64(int32(le.Uint32(b)))), 4
	case peUdata2:
		v, n = uint64(le.Uint16(b)), 2
	case peSdata2:
		v, n = uint64(int64(int16(le.Uint16(b)))), 2
	default:
		return 0, 0
	}
	switch enc & 0x70 {
	case 0:
	case pePcrel:
		v += pc
	default:
		return 0, 0 // datarel and the rest do not occur in x86-64 .eh_frame
	}
	return v, n
}

func uleb(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	return v, len(b)
}
