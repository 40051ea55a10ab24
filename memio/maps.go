package memio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

// Contains reports whether addr lies in the mapping.
func (m *Mapping) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Exec reports whether the mapping is executable.
func (m *Mapping) Exec() bool { return len(m.Perms) > 2 && m.Perms[2] == 'x' }

// ReadMaps reads the mappings of process pid from /proc/PID/maps. A process
// that no longer exists gives an error wrapping ErrGone.
func ReadMaps(pid int) ([]Mapping, error) {
	fh, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("memio: process %d: %w", pid, ErrGone)
		}
		return nil, fmt.Errorf("memio: %w", err)
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
