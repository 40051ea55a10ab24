package symtab

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End) in the process
	Perms      string // e.g. "r-xp"
	Offset     uint64 // file offset mapped at Start
	Dev        string // major:minor, hex
	Inode      uint64
	// Path is the mapped file, a pseudo name ([heap], [stack], [vdso]), or
	// "" for anonymous memory. A " (deleted)" suffix is removed and Deleted set.
	Path    string
	Deleted bool
}

// Exec reports whether the mapping is executable.
func (m *Mapping) Exec() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// ReadMaps reads /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return ParseMaps(fh)
}

// ParseMaps parses the text of a /proc/PID/maps file.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, fmt.Errorf("maps line %d %q: %w", n, line, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	// address perms offset dev inode [path]; the path may contain spaces.
	rest := line
	field := func() string {
		rest = strings.TrimLeft(rest, " \t")
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			f := rest
			rest = ""
			return f
		}
		f := rest[:i]
		rest = rest[i:]
		return f
	}
	rng, perms, off, dev, ino := field(), field(), field(), field(), field()
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, fmt.Errorf("bad address range %q", rng)
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("bad start %q", lo)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil || m.End < m.Start {
		return m, fmt.Errorf("bad end %q", hi)
	}
	if len(perms) != 4 {
		return m, fmt.Errorf("bad permissions %q", perms)
	}
	m.Perms = perms
	if m.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return m, fmt.Errorf("bad offset %q", off)
	}
	m.Dev = dev
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("bad inode %q", ino)
	}
	m.Path = strings.TrimLeft(rest, " \t")
	if p, ok := strings.CutSuffix(m.Path, " (deleted)"); ok {
		m.Path, m.Deleted = p, true
	}
	return m, nil
}

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
	return 0, fmt.Errorf("%s is not mapped in the process", f.Path)
}
