package symbols

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/memio"
)

// Mapping is one line of /proc/PID/maps.
type Mapping = memio.Mapping

// Libraries returns the distinct file paths of the mappings that MatchLib
// says lib designates, in the order they first appear.
func Libraries(maps []Mapping, lib string) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range maps {
		if m.Path == "" || m.Path[0] != '/' || seen[m.Path] || !MatchLib(lib, m.Path) {
			continue
		}
		seen[m.Path] = true
		out = append(out, m.Path)
	}
	return out
}

// sameFile reports whether mapping m maps this file: by device and inode
// when the file can be stat'ed (paths differ through symlinks and mount
// namespaces), else by path.
func (f *File) sameFile(m *Mapping, st *unix.Stat_t) bool {
	if st != nil && m.Inode != 0 {
		dev := fmt.Sprintf("%02x:%02x", unix.Major(st.Dev), unix.Minor(st.Dev))
		return m.Inode == st.Ino && m.Dev == dev
	}
	return m.Path == f.Path
}

// LoadBias finds the file among a process's mappings and returns the
// amount to add to the file's virtual addresses to get process addresses
// (0 for ET_EXEC files). The mapping is matched by inode (else by path).
func (f *File) LoadBias(maps []Mapping) (uint64, error) {
	var st unix.Stat_t
	stp := &st
	if unix.Fstat(int(f.osf.Fd()), stp) != nil {
		stp = nil
	}
	for i := range maps {
		m := &maps[i]
		if !f.sameFile(m, stp) {
			continue
		}
		// Every PT_LOAD is mapped at bias+pagedown(Vaddr) from file offset
		// pagedown(Off), and Vaddr and Off are congruent modulo the page
		// size, so bias = Start - Offset - (Vaddr - Off) for the segment
		// whose file range holds the mapping's offset.
		for _, p := range f.progs {
			lo := p.Off &^ 0xfff
			if m.Offset < lo || m.Offset >= p.Off+p.Filesz {
				continue
			}
			bias := m.Start - m.Offset - (p.Vaddr - p.Off)
			if f.Type == elf.ET_EXEC && bias != 0 {
				return 0, fmt.Errorf("%s: fixed-address executable mapped at a bias of %#x", f.Path, bias)
			}
			return bias, nil
		}
	}
	if f.Type == elf.ET_EXEC {
		return 0, nil
	}
	return 0, fmt.Errorf("%s: %w", f.Path, ErrNotMapped)
}

// MatchLib reports whether a library named by a user (a spec's LIB part, say) designates
// the file at path: the same path, the same base name, or the base name with
// a version or suffix (libc matches libc.so.6 and libc-2.31.so, not
// libcap.so.2).
func MatchLib(lib, path string) bool {
	if lib == "" {
		return false
	}
	if strings.ContainsRune(lib, '/') {
		return filepath.Clean(lib) == filepath.Clean(path)
	}
	base := filepath.Base(path)
	if base == lib {
		return true
	}
	for _, sep := range []string{".so", "-", "."} {
		if strings.HasPrefix(base, lib+sep) {
			return true
		}
	}
	return false
}
