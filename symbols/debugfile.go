package symbols

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// DebugDir is where distributions install separate debug information
// (gdb's debug-file-directory).
var DebugDir = "/usr/lib/debug"

// openDebugFile finds the file's separate debug information the way gdb
// does: by build ID (DebugDir/.build-id/xx/rest.debug), else by the name
// and CRC in .gnu_debuglink, looked for beside the file, in its .debug
// directory and under DebugDir. A missing or mismatched debug file is not
// an error: the file's own symbols are used.
func (f *File) openDebugFile() {
	for _, p := range f.debugCandidates() {
		df, err := os.Open(p)
		if err != nil {
			continue
		}
		ef, err := openELF(p, df)
		if err != nil || ef.Section(".symtab") == nil || !f.debugMatches(df, ef) {
			df.Close()
			continue
		}
		f.dbg, f.dbgf, f.DebugFile = ef, df, p
		return
	}
}

func (f *File) closeDebug() {
	if f.dbgf != nil {
		f.dbgf.Close()
		f.dbg, f.dbgf = nil, nil
	}
}

func (f *File) debugCandidates() []string {
	var out []string
	if id := buildID(f.ef); len(id) > 1 {
		h := hex.EncodeToString(id)
		out = append(out, filepath.Join(DebugDir, ".build-id", h[:2], h[2:]+".debug"))
	}
	if name, _, ok := debugLink(f.ef); ok {
		real, err := filepath.EvalSymlinks(f.Path)
		if err != nil {
			real = f.Path
		}
		dir := filepath.Dir(real)
		out = append(out, filepath.Join(dir, name), filepath.Join(dir, ".debug", name), filepath.Join(DebugDir, dir, name))
	}
	return out
}

// debugMatches checks a candidate against the file: same build ID when the
// file has one, else the CRC .gnu_debuglink records.
func (f *File) debugMatches(df *os.File, ef *elf.File) bool {
	if id := buildID(f.ef); id != nil {
		return bytes.Equal(id, buildID(ef))
	}
	_, crc, ok := debugLink(f.ef)
	if !ok || filepath.Clean(df.Name()) == filepath.Clean(f.Path) {
		return false
	}
	h := crc32.NewIEEE()
	if _, err := io.Copy(h, io.NewSectionReader(df, 0, 1<<62)); err != nil {
		return false
	}
	return h.Sum32() == crc
}

// buildID returns the GNU build ID note's descriptor, or nil.
func buildID(ef *elf.File) []byte {
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for len(data) >= 12 {
			nsz := binary.LittleEndian.Uint32(data)
			dsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + align4(nsz)
			descEnd := nameEnd + align4(dsz)
			if uint64(descEnd) > uint64(len(data)) {
				break
			}
			if typ == 3 && nsz == 4 && string(data[12:15]) == "GNU" { // NT_GNU_BUILD_ID
				return data[nameEnd : nameEnd+dsz]
			}
			data = data[descEnd:]
		}
	}
	return nil
}

func align4(n uint32) uint32 { return (n + 3) &^ 3 }

// debugLink returns the file name and CRC32 that .gnu_debuglink records.
func debugLink(ef *elf.File) (name string, crc uint32, ok bool) {
	s := ef.Section(".gnu_debuglink")
	if s == nil {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	i := bytes.IndexByte(data, 0)
	if i <= 0 {
		return "", 0, false
	}
	off := int(align4(uint32(i + 1)))
	if off+4 > len(data) {
		return "", 0, false
	}
	return string(data[:i]), binary.LittleEndian.Uint32(data[off:]), true
}
