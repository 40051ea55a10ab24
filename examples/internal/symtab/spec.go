package symtab

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Spec is a parsed probe specification, in the spirit of `perf probe`:
//
//	FUNC                 the function's first instruction
//	FUNC+OFFSET          OFFSET bytes in (decimal or 0x hex); must be an instruction boundary
//	FUNC%return          every RET instruction of the function
//	0xADDR               a file virtual address
//	FILE:LINE            where the line's code begins (DWARF, or the Go pclntab)
//	'http.*'             a glob over function names (* ? [...]; * also matches '/')
//	LIB:FUNC             any of the above in a shared library (libc:malloc, libc.so.6:malloc, /path/libx.so:f)
//	FUNC arg1 rdi x=arg2 argument words: registers or argN, optionally labelled
//
// A prefix before ':' is a library unless what follows is a line number
// (FILE:LINE) or the prefix is one of Go's symbol prefixes (type:, go:).
type Spec struct {
	Raw string // the text parsed
	// Lib is the library part of LIB:..., or "" for the main program.
	Lib string
	// Func is the function name or glob pattern, or "" for 0xADDR and FILE:LINE.
	Func string
	// Glob is set when Func has glob metacharacters; an exact name still
	// wins over the pattern (Go names contain '*' and '[').
	Glob bool
	// Offset is the byte offset of FUNC+OFFSET.
	Offset uint64
	// Addr is the address of 0xADDR (HasAddr set).
	Addr    uint64
	HasAddr bool
	// File and Line are FILE:LINE.
	File string
	Line int
	// Return is FUNC%return.
	Return bool
	// Args are the trailing argument words.
	Args []ArgSpec
}

// ArgSpec is one argument word: a register name (rdi, esi, r8, ...), or argN
// (1-based) mapped to the function's calling convention, with an optional
// label (name=rdi).
type ArgSpec struct {
	Label string // what to print; the word itself when not labelled
	Reg   x86asm.Reg
	N     int // argN, or 0 for a register
}

// ParseSpec parses a probe spec. It checks syntax only; File.Resolve finds
// the addresses.
func ParseSpec(s string) (*Spec, error) {
	words := strings.Fields(s)
	if len(words) == 0 {
		return nil, errors.New("empty probe spec")
	}
	sp := &Spec{Raw: s}
	loc := words[0]
	for _, w := range words[1:] {
		a, err := parseArg(w)
		if err != nil {
			return nil, fmt.Errorf("probe spec %q: %w", s, err)
		}
		sp.Args = append(sp.Args, a)
	}
	bad := func(format string, args ...any) (*Spec, error) {
		return nil, fmt.Errorf("probe spec %q: %s", s, fmt.Sprintf(format, args...))
	}

	if rest, ok := strings.CutSuffix(loc, "%return"); ok {
		sp.Return = true
		loc = rest
	} else if i := strings.LastIndexByte(loc, '%'); i >= 0 {
		return bad("unknown suffix %q (only %%return is known)", loc[i:])
	}

	// FILE:LINE or LIB:FILE:LINE.
	if i := strings.LastIndexByte(loc, ':'); i >= 0 {
		if line, err := strconv.Atoi(loc[i+1:]); err == nil {
			sp.File = loc[:i]
			sp.Line = line
			if j := strings.IndexByte(sp.File, ':'); j >= 0 {
				sp.Lib, sp.File = sp.File[:j], sp.File[j+1:]
			}
			if sp.File == "" || line <= 0 {
				return bad("FILE:LINE needs a file name and a line number >= 1")
			}
			if sp.Return {
				return bad("%%return applies to functions, not to FILE:LINE")
			}
			return sp, nil
		}
		if j := strings.IndexByte(loc, ':'); j > 0 && loc[:j] != "type" && loc[:j] != "go" {
			sp.Lib, loc = loc[:j], loc[j+1:]
		}
	}
	if sp.Lib == "" && strings.HasPrefix(loc, ":") {
		return bad("empty library name before ':'")
	}
	if loc == "" {
		return bad("no function or address")
	}

	if strings.HasPrefix(loc, "0x") || strings.HasPrefix(loc, "0X") {
		a, err := strconv.ParseUint(loc[2:], 16, 64)
		if err != nil {
			return bad("bad address %q", loc)
		}
		if sp.Return {
			return bad("%%return applies to functions, not to an address")
		}
		sp.Addr, sp.HasAddr = a, true
		return sp, nil
	}

	if i := strings.LastIndexByte(loc, '+'); i > 0 {
		off, err := strconv.ParseUint(loc[i+1:], 0, 64)
		if err != nil {
			return bad("bad offset %q (decimal or 0x hex)", loc[i+1:])
		}
		if sp.Return {
			return bad("%%return and +OFFSET do not combine")
		}
		sp.Offset = off
		loc = loc[:i]
	}
	sp.Func = loc
	sp.Glob = strings.ContainsAny(loc, "*?[")
	if sp.Glob {
		if err := checkGlob(loc); err != nil {
			return bad("%v", err)
		}
	}
	return sp, nil
}

func parseArg(w string) (ArgSpec, error) {
	a := ArgSpec{Label: w}
	val := w
	if i := strings.IndexByte(w, '='); i >= 0 {
		a.Label, val = w[:i], w[i+1:]
		if a.Label == "" || val == "" {
			return a, fmt.Errorf("bad argument %q (want NAME=REG or NAME=argN)", w)
		}
	}
	if n, ok := strings.CutPrefix(val, "arg"); ok {
		if k, err := strconv.Atoi(n); err == nil {
			if k < 1 {
				return a, fmt.Errorf("bad argument %q: arguments count from arg1", w)
			}
			a.N = k
			return a, nil
		}
	}
	if r, ok := gprByName[strings.ToLower(val)]; ok {
		a.Reg = r
		return a, nil
	}
	return a, fmt.Errorf("bad argument %q: not a general register name nor argN", w)
}

var gprByName = func() map[string]x86asm.Reg {
	m := map[string]x86asm.Reg{}
	for r := x86asm.AL; r <= x86asm.R15; r++ {
		m[strings.ToLower(r.String())] = r
	}
	m["rip"] = x86asm.RIP
	return m
}()

// SysVArgs are the integer argument registers of the System V AMD64 ABI (C).
var SysVArgs = []x86asm.Reg{x86asm.RDI, x86asm.RSI, x86asm.RDX, x86asm.RCX, x86asm.R8, x86asm.R9}

// GoArgs are the integer argument registers of Go's internal register ABI.
var GoArgs = []x86asm.Reg{x86asm.RAX, x86asm.RBX, x86asm.RCX, x86asm.RDI, x86asm.RSI, x86asm.R8, x86asm.R9, x86asm.R10, x86asm.R11}

// Site is one resolved probe location.
type Site struct {
	Addr   uint64 // file virtual address; add the load bias for the process address
	Func   string // the containing function, or "" for an address outside every function
	Offset uint64 // Addr minus the function's start
	Return bool   // a RET instruction of a FUNC%return probe
	Go     bool   // the function follows Go's register ABI
	Args   []Arg  // the arguments to print, registers resolved
}

// Arg is an argument to print at a site.
type Arg struct {
	Label string
	Reg   x86asm.Reg // a general register (any width) or RIP
}

// String names the site as FUNC+0xOFF or 0xADDR.
func (s *Site) String() string {
	if s.Func == "" {
		return fmt.Sprintf("%#x", s.Addr)
	}
	r := ""
	if s.Return {
		r = "%return"
	}
	if s.Offset == 0 {
		return s.Func + r
	}
	return fmt.Sprintf("%s+%#x%s", s.Func, s.Offset, r)
}

// Resolve turns a spec into sites of this file (the spec's Lib part is the
// caller's business: it picked this file). Sites are ordered by address.
func (f *File) Resolve(sp *Spec) (sites []Site, err error) {
	// DWARF and pclntab readers index into file data: a corrupt file must
	// give an error, not a panic.
	defer func() {
		if r := recover(); r != nil {
			sites, err = nil, fmt.Errorf("probe %q: corrupt debug information in %s: %v", sp.Raw, f.Path, r)
		}
	}()
	switch {
	case sp.HasAddr:
		sites, err = f.resolveAddr(sp.Addr)
	case sp.File != "":
		sites, err = f.resolveLine(sp.File, sp.Line)
	default:
		sites, err = f.resolveFunc(sp)
	}
	if err != nil {
		return nil, fmt.Errorf("probe %q: %w", sp.Raw, err)
	}
	for i := range sites {
		if sites[i].Args, err = resolveArgs(sp.Args, sites[i].Go); err != nil {
			return nil, fmt.Errorf("probe %q at %s: %w", sp.Raw, sites[i].String(), err)
		}
	}
	return sites, nil
}

func resolveArgs(args []ArgSpec, goABI bool) ([]Arg, error) {
	if len(args) == 0 {
		return nil, nil
	}
	abi, abiName := SysVArgs, "System V"
	if goABI {
		abi, abiName = GoArgs, "Go register"
	}
	out := make([]Arg, 0, len(args))
	for _, a := range args {
		r := a.Reg
		if a.N > 0 {
			if a.N > len(abi) {
				return nil, fmt.Errorf("%s: the %s ABI passes only %d integer arguments in registers", a.Label, abiName, len(abi))
			}
			r = abi[a.N-1]
		}
		out = append(out, Arg{Label: a.Label, Reg: r})
	}
	return out, nil
}

func (f *File) site(fn *Func, addr uint64) Site {
	if fn == nil {
		return Site{Addr: addr}
	}
	return Site{Addr: addr, Func: fn.Name, Offset: addr - fn.Addr, Go: fn.Go}
}

func (f *File) resolveAddr(addr uint64) ([]Site, error) {
	if !f.Executable(addr) {
		return nil, fmt.Errorf("%#x is not in an executable segment of %s", addr, f.Path)
	}
	fn := f.FuncAt(addr)
	if fn != nil {
		if err := f.CheckBoundary(fn, addr-fn.Addr); err != nil {
			return nil, err
		}
	}
	return []Site{f.site(fn, addr)}, nil
}

func (f *File) resolveLine(file string, line int) ([]Site, error) {
	addrs, err := f.LineAddrs(file, line)
	if err != nil {
		return nil, err
	}
	sites := make([]Site, 0, len(addrs))
	for _, a := range addrs {
		if !f.Executable(a) {
			return nil, fmt.Errorf("%s:%d maps to %#x, outside the executable segments", file, line, a)
		}
		fn := f.FuncAt(a)
		if fn != nil {
			if err := f.CheckBoundary(fn, a-fn.Addr); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", file, line, err)
			}
		}
		sites = append(sites, f.site(fn, a))
	}
	return sites, nil
}

// MatchFuncs returns the functions a name or glob selects: exact names
// (and aliases) first; a pattern is tried only when nothing is named
// exactly so. A pattern is matched against the whole name and, for names
// with a package path (net/http.Get), against the part after the last '/'.
func (f *File) MatchFuncs(pattern string) []*Func {
	if fs := f.Lookup(pattern); len(fs) > 0 || !strings.ContainsAny(pattern, "*?[") {
		return fs
	}
	var out []*Func
	for i := range f.Funcs {
		fn := &f.Funcs[i]
		if globName(pattern, fn.Name) {
			out = append(out, fn)
			continue
		}
		for _, a := range fn.Aliases {
			if globName(pattern, a) {
				out = append(out, fn)
				break
			}
		}
	}
	return out
}

func globName(pattern, name string) bool {
	if ok, _ := globMatch(pattern, name); ok {
		return true
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 && !strings.Contains(pattern, "/") {
		ok, _ := globMatch(pattern, name[i+1:])
		return ok
	}
	return false
}

func (f *File) resolveFunc(sp *Spec) ([]Site, error) {
	fns := f.MatchFuncs(sp.Func)
	if len(fns) == 0 {
		return nil, fmt.Errorf("no function matches %q in %s", sp.Func, f.Path)
	}
	exact := len(f.Lookup(sp.Func)) > 0
	if exact && len(fns) > 1 {
		var b strings.Builder
		for i, fn := range fns {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%#x (size %d)", fn.Addr, fn.Size)
		}
		return nil, fmt.Errorf("%q is ambiguous in %s: %d functions have that name, at %s; probe one by address", sp.Func, f.Path, len(fns), b.String())
	}
	var sites []Site
	for _, fn := range fns {
		if sp.Return {
			exits, err := f.Exits(fn)
			if err != nil {
				if exact {
					return nil, err
				}
				continue // a glob skips functions it cannot read
			}
			for _, a := range exits {
				s := f.site(fn, a)
				s.Return = true
				sites = append(sites, s)
			}
			continue
		}
		if sp.Offset >= fn.Size {
			if exact {
				return nil, fmt.Errorf("offset %#x is past the end of %s (%d bytes)", sp.Offset, fn.Name, fn.Size)
			}
			continue
		}
		if sp.Offset > 0 {
			if err := f.CheckBoundary(fn, sp.Offset); err != nil {
				if exact {
					return nil, err
				}
				continue
			}
		}
		sites = append(sites, f.site(fn, fn.Addr+sp.Offset))
	}
	if len(sites) == 0 {
		if sp.Return {
			return nil, fmt.Errorf("no RET instruction in the %d function(s) matching %q (they may end in tail calls or never return)", len(fns), sp.Func)
		}
		return nil, fmt.Errorf("offset %#x is not an instruction boundary inside any of the %d function(s) matching %q", sp.Offset, len(fns), sp.Func)
	}
	return sites, nil
}

// MatchLib reports whether a library named by a spec's LIB part designates
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

// checkGlob reports a malformed pattern: an unterminated class or a
// trailing backslash.
func checkGlob(p string) error {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i+1 == len(p) {
				return fmt.Errorf("trailing \\ in pattern %q", p)
			}
			i++
		case '[':
			j := i + 1
			if j < len(p) && (p[j] == '!' || p[j] == '^') {
				j++
			}
			if j < len(p) && p[j] == ']' {
				j++
			}
			k := strings.IndexByte(p[j:], ']')
			if k < 0 {
				return fmt.Errorf("unterminated [ in pattern %q", p)
			}
			i = j + k
		}
	}
	return nil
}

// globMatch is path.Match without the special meaning of '/': '*' matches
// any run of characters, '?' any one, [...] a class ([!...] or [^...]
// negated, a-z ranges), '\' escapes. It backtracks only to the last '*',
// so its time is at most proportional to len(pattern)*len(name).
func globMatch(pattern, name string) (bool, error) {
	px, nx := 0, 0
	starP, starN := -1, -1
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			if pattern[px] == '*' {
				starP, starN = px, nx
				px++
				continue
			}
			if nx < len(name) {
				ok, w, err := matchOne(pattern[px:], name[nx])
				if err != nil {
					return false, err
				}
				if ok {
					px += w
					nx++
					continue
				}
			}
		}
		if starP >= 0 && starN < len(name) {
			starN++
			px, nx = starP+1, starN
			continue
		}
		return false, checkGlob(pattern)
	}
	return true, nil
}

// matchOne matches the single-character element at the start of pattern
// (a literal, '?', an escape or a class) against c, and returns the
// element's width in the pattern.
func matchOne(pattern string, c byte) (ok bool, width int, err error) {
	switch pattern[0] {
	case '?':
		return true, 1, nil
	case '\\':
		if len(pattern) < 2 {
			return false, 0, fmt.Errorf("trailing \\ in pattern")
		}
		return pattern[1] == c, 2, nil
	case '[':
		// The class runs to the first ']' after an optional negation and
		// an optional leading ']' (which is then a member).
		j := 1
		neg := false
		if j < len(pattern) && (pattern[j] == '!' || pattern[j] == '^') {
			neg = true
			j++
		}
		start := j
		if j < len(pattern) && pattern[j] == ']' {
			j++
		}
		k := strings.IndexByte(pattern[j:], ']')
		if k < 0 {
			return false, 0, fmt.Errorf("unterminated [ in pattern %q", pattern)
		}
		class := pattern[start : j+k]
		in := false
		for i := 0; i < len(class); i++ {
			if i+2 < len(class) && class[i+1] == '-' {
				if class[i] <= c && c <= class[i+2] {
					in = true
				}
				i += 2
			} else if class[i] == c {
				in = true
			}
		}
		return in != neg, j + k + 1, nil
	}
	return pattern[0] == c, 1, nil
}
