package symtab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/onetrap/onetrap/memio"
)

// ErrLibNotMapped is returned by ResolvePID when a spec names a library the
// process has not (yet) mapped: a tracer may retry after the next dlopen.
var ErrLibNotMapped = errors.New("library not mapped in the process")

// ProcSite is a site in a running process.
type ProcSite struct {
	Site
	Path string // the ELF file that holds the site
	Bias uint64 // the file's load bias in the process
	PC   uint64 // Site.Addr + Bias: where the process runs the instruction
}

// ResolvePID resolves sp in the running process pid: in the library sp.Lib
// names if any, else in the main executable. The files are read through
// /proc/PID/exe and the mapped paths, and matched to their mappings by
// inode, so the process's mount namespace and symlinks do not matter.
func ResolvePID(pid int, sp *Spec) ([]ProcSite, error) {
	maps, err := memio.ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	var paths []string
	if sp.Lib == "" {
		paths = []string{fmt.Sprintf("/proc/%d/exe", pid)}
	} else {
		paths = Libraries(maps, sp.Lib)
		if len(paths) == 0 {
			return nil, fmt.Errorf("probe %q: %q in process %d: %w", sp.Raw, sp.Lib, pid, ErrLibNotMapped)
		}
		if len(paths) > 1 {
			return nil, fmt.Errorf("probe %q: %q is ambiguous in process %d: %s", sp.Raw, sp.Lib, pid, strings.Join(paths, ", "))
		}
		// Read the library through the process's root: its path is the
		// one the process sees.
		paths[0] = fmt.Sprintf("/proc/%d/root%s", pid, paths[0])
	}
	f, err := Open(paths[0])
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bias, err := f.LoadBias(maps)
	if err != nil {
		return nil, err
	}
	sites, err := f.Resolve(sp)
	if err != nil {
		return nil, err
	}
	out := make([]ProcSite, len(sites))
	for i, s := range sites {
		out[i] = ProcSite{Site: s, Path: paths[0], Bias: bias, PC: s.Addr + bias}
	}
	return out, nil
}
