package symbols

import (
	"debug/dwarf"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// dwarf returns the DWARF of the separate debug file when there is one
// (the file itself then has none, or only what survived stripping), else
// the file's own.
func (f *File) dwarf() (*dwarf.Data, error) {
	f.dwOnce.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				f.dwErr = fmt.Errorf("corrupt DWARF: %v", r)
			}
		}()
		if f.dbg != nil {
			if f.dw, f.dwErr = f.dbg.DWARF(); f.dwErr == nil {
				return
			}
		}
		f.dw, f.dwErr = f.ef.DWARF()
	})
	return f.dw, f.dwErr
}

// fileMatches reports whether the source path name is what the user meant
// by file: the same path, or a path ending in "/"+file.
func fileMatches(name, file string) bool {
	return name == file || strings.HasSuffix(name, "/"+file)
}

// LineToPC returns the addresses where code for file:line begins: with
// DWARF, every statement boundary where the line table enters that line
// (a line can start in several places, after inlining or loop rotation);
// with only a Go pclntab, the lowest address of the line. file matches a
// source path equal to it or ending in "/"+file.
func (f *File) LineToPC(file string, line int) (addrs []uint64, err error) {
	defer func() {
		if r := recover(); r != nil {
			addrs, err = nil, fmt.Errorf("%s: corrupt line information: %v", f.Path, r)
		}
	}()
	if line <= 0 {
		return nil, fmt.Errorf("%s:%d: %w: line numbers start at 1", file, line, ErrNoLine)
	}
	dw, dwErr := f.dwarf()
	if dwErr == nil && dw != nil {
		addrs, known, err := dwarfLineAddrs(dw, file, line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		if len(addrs) > 0 {
			return addrs, nil
		}
		if known {
			return nil, fmt.Errorf("%s: no code at %s:%d (the line has no statement, or it was optimised away): %w", f.Path, file, line, ErrNoLine)
		}
		if f.goTab == nil {
			return nil, fmt.Errorf("%s: %w: no source file matching %q in the DWARF line tables", f.Path, ErrNoLine, file)
		}
	}
	if f.goTab == nil {
		return nil, fmt.Errorf("%s: %w", f.Path, ErrNoDebugInfo)
	}
	var names []string
	for name := range f.goTab.Files {
		if fileMatches(name, file) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: %w: no source file matching %q in the Go pclntab", f.Path, ErrNoLine, file)
	}
	sort.Strings(names)
	for _, name := range names {
		if pc, _, err := f.goTab.LineToPC(name, line); err == nil {
			addrs = append(addrs, pc)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: no code at %s:%d in the Go pclntab: %w", f.Path, file, line, ErrNoLine)
	}
	return dedup(addrs), nil
}

// dwarfLineAddrs scans every compilation unit's line table. known reports
// whether some unit mentions a matching file at all.
func dwarfLineAddrs(dw *dwarf.Data, file string, line int) (addrs []uint64, known bool, err error) {
	r := dw.Reader()
	for {
		e, err := r.Next()
		if err != nil {
			return nil, false, fmt.Errorf("reading DWARF: %w", err)
		}
		if e == nil {
			break
		}
		if e.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		r.SkipChildren()
		lr, err := dw.LineReader(e)
		if err != nil {
			return nil, false, fmt.Errorf("reading DWARF line table: %w", err)
		}
		if lr == nil {
			continue
		}
		mentions := false
		for _, lf := range lr.Files() {
			if lf != nil && fileMatches(lf.Name, file) {
				mentions = true
				break
			}
		}
		if !mentions {
			continue
		}
		known = true
		var le dwarf.LineEntry
		var prevFile *dwarf.LineFile
		prevLine := -1
		for {
			if err := lr.Next(&le); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, known, fmt.Errorf("reading DWARF line table: %w", err)
			}
			if le.EndSequence {
				prevFile, prevLine = nil, -1
				continue
			}
			enters := le.File != prevFile || le.Line != prevLine
			if le.IsStmt {
				prevFile, prevLine = le.File, le.Line
			}
			if le.Line == line && le.IsStmt && enters && le.File != nil && fileMatches(le.File.Name, file) {
				addrs = append(addrs, le.Address)
			}
		}
	}
	return dedup(addrs), known, nil
}

func dedup(a []uint64) []uint64 {
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	out := a[:0]
	for i, v := range a {
		if i == 0 || v != a[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// PCToLine returns the source file and line of the file address pc, from
// the Go pclntab or else DWARF, and the function holding pc (nil when no
// function does); line is 0 when neither table knows pc.
func (f *File) PCToLine(pc uint64) (file string, line int, fn *Func) {
	fn = f.PCToFunc(pc)
	file, line = f.sourceLine(pc)
	return file, line, fn
}

func (f *File) sourceLine(addr uint64) (file string, line int) {
	defer func() {
		if r := recover(); r != nil {
			file, line = "", 0
		}
	}()
	if f.goTab != nil {
		if file, line, fn := f.goTab.PCToLine(addr); fn != nil && line > 0 {
			return file, line
		}
	}
	dw, err := f.dwarf()
	if err != nil || dw == nil {
		return "", 0
	}
	r := dw.Reader()
	cu, err := r.SeekPC(addr)
	if err != nil || cu == nil {
		return "", 0
	}
	lr, err := dw.LineReader(cu)
	if err != nil || lr == nil {
		return "", 0
	}
	var le dwarf.LineEntry
	if err := lr.SeekPC(addr, &le); err != nil || le.File == nil {
		return "", 0
	}
	return le.File.Name, le.Line
}
