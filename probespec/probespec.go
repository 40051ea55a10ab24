// Package probespec parses and resolves the probe specifications the
// onetrap tracer takes, in the spirit of `perf probe`, with the symbols and
// uprobe packages.
package probespec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/symbols"
	"github.com/onetrap/onetrap/uprobe"
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
//	FUNC arg0 rdi x=arg1 argument words: registers, argN (from arg0, as in
//	                     bpftrace) or retval, optionally labelled and typed
//	                     (arg0:str, n=arg1:d, retval:x; see Type)
//	FUNC ... if COND     a filter: only hits (and calls) where COND holds
//	                     count (see Cond)
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
	// Cond is the filter after "if", or nil.
	Cond *CondSpec
}

// ArgSpec is one argument word: a register name (rdi, esi, r8, ...), argN
// (counted from arg0, as in bpftrace) mapped to the function's calling
// convention, or retval (the first integer result, read at a return), with
// an optional label (name=rdi) and type (arg0:str).
type ArgSpec struct {
	Label string // what to print; the word itself (without its type) when not labelled
	Reg   x86asm.Reg
	N     int  // argN's N, when Arg is set
	Arg   bool // argN rather than a register
	Ret   bool // retval
	Type  Type // how the value prints; TypeDefault when not given
}

// Parse parses a probe spec. It checks syntax only; Spec.Resolve finds the
// sites.
func Parse(s string) (*Spec, error) {
	words := strings.Fields(s)
	if len(words) == 0 {
		return nil, errors.New("empty probe spec")
	}
	sp := &Spec{Raw: s}
	loc := words[0]
	if i := indexWord(words, "if"); i >= 0 {
		c, err := parseCond(strings.Join(words[i+1:], " "))
		if err != nil {
			return nil, fmt.Errorf("probe spec %q: %w", s, err)
		}
		sp.Cond, words = c, words[:i]
	}
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
	sp.Glob = symbols.IsGlob(loc)
	if sp.Glob {
		if err := symbols.CheckGlob(loc); err != nil {
			return bad("%v", err)
		}
	}
	return sp, nil
}

func parseArg(w string) (ArgSpec, error) {
	val := w
	label := ""
	if i := strings.IndexByte(w, '='); i >= 0 {
		label, val = w[:i], w[i+1:]
		if label == "" || val == "" {
			return ArgSpec{}, fmt.Errorf("bad argument %q (want NAME=REG, NAME=argN or NAME=retval)", w)
		}
	}
	a, err := parseOperand(val)
	if err != nil {
		return a, fmt.Errorf("bad argument %q: %w", w, err)
	}
	if label != "" {
		a.Label = label
	}
	return a, nil
}

// parseOperand parses argN, retval or a register, each with an optional
// :TYPE.
func parseOperand(w string) (ArgSpec, error) {
	val, typ, hasType := strings.Cut(w, ":")
	a := ArgSpec{Label: val}
	if hasType {
		t, err := ParseType(typ)
		if err != nil {
			return a, err
		}
		a.Type = t
	}
	if val == "retval" {
		a.Ret = true
		return a, nil
	}
	if n, ok := strings.CutPrefix(val, "arg"); ok {
		if k, err := strconv.Atoi(n); err == nil {
			if k < 0 {
				return a, errors.New("arguments count from arg0")
			}
			a.N, a.Arg = k, true
			return a, nil
		}
	}
	if r, ok := gprByName[strings.ToLower(val)]; ok {
		a.Reg = r
		return a, nil
	}
	return a, errors.New("not a general register name, argN nor retval")
}

func indexWord(words []string, w string) int {
	for i, x := range words {
		if x == w {
			return i
		}
	}
	return -1
}

var gprByName = func() map[string]x86asm.Reg {
	m := map[string]x86asm.Reg{}
	for r := x86asm.AL; r <= x86asm.R15; r++ {
		m[strings.ToLower(r.String())] = r
	}
	m["rip"] = x86asm.RIP
	return m
}()

// Arg is a value to print at a site, or to test in a filter.
type Arg struct {
	Label string
	Reg   x86asm.Reg // a general register (any width) or RIP
	// Len is the register holding a Go string's or slice's length
	// (TypeGoString, TypeBytes), 0 otherwise.
	Len  x86asm.Reg
	Type Type
	// Ret is set for retval: the register is read at the function's
	// return, not at its entry.
	Ret bool
}

// Site is one resolved probe location, with the values to print there and
// the filter.
type Site struct {
	uprobe.Site
	Args []Arg
	Cond *Cond
}

// Resolve turns a spec into the sites of ex in process p (nil: file
// addresses, and IFUNCs refused); the spec's Lib part is the caller's
// business: it picked ex. Sites are ordered by address. A function spec
// on a Go function goes past its stack check unless the spec spells an
// offset (FUNC+0 is the first byte).
func (sp *Spec) Resolve(ex *uprobe.Executable, p *ptrace.Process) (sites []Site, err error) {
	// DWARF and pclntab readers index into file data: a corrupt file must
	// give an error, not a panic.
	defer func() {
		if r := recover(); r != nil {
			sites, err = nil, fmt.Errorf("probe %q: corrupt debug information in %s: %v", sp.Raw, ex.Path(), r)
		}
	}()
	var us []uprobe.Site
	switch {
	case sp.HasAddr:
		var s uprobe.Site
		s, err = ex.AddrSite(p, sp.Addr)
		us = []uprobe.Site{s}
	case sp.File != "":
		us, err = ex.LineSites(p, sp.File, sp.Line)
	default:
		us, err = sp.resolveFunc(ex, p)
	}
	if err != nil {
		return nil, fmt.Errorf("probe %q: %w", sp.Raw, err)
	}
	for _, u := range us {
		s := Site{Site: u}
		if s.Args, err = resolveArgs(sp.Args, u.ABI()); err != nil {
			return nil, fmt.Errorf("probe %q at %s: %w", sp.Raw, u.String(), err)
		}
		if s.Cond, err = sp.Cond.resolve(u.ABI()); err != nil {
			return nil, fmt.Errorf("probe %q at %s: %w", sp.Raw, u.String(), err)
		}
		sites = append(sites, s)
	}
	return sites, nil
}

func resolveArgs(args []ArgSpec, abi uprobe.ABI) ([]Arg, error) {
	out := make([]Arg, 0, len(args))
	for _, a := range args {
		r, err := ResolveArg(a, abi)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// ResolveArg maps an argument word to the registers of the calling
// convention abi: argN to the N+1th integer argument register (a Go string
// or slice takes that one and the next for its length), retval to the
// first result register, and a 32-bit type to the register's low half.
func ResolveArg(a ArgSpec, abi uprobe.ABI) (Arg, error) {
	out := Arg{Label: a.Label, Reg: a.Reg, Type: a.Type, Ret: a.Ret}
	var err error
	switch {
	case a.Ret:
		out.Reg, err = abi.RetReg(1)
		if err == nil && (a.Type == TypeGoString || a.Type == TypeBytes) {
			out.Len, err = abi.RetReg(2)
		}
	case a.Arg:
		out.Reg, err = abi.ArgReg(a.N + 1)
		if err == nil && (a.Type == TypeGoString || a.Type == TypeBytes) {
			out.Len, err = abi.ArgReg(a.N + 2)
		}
	}
	if err != nil {
		return out, fmt.Errorf("%s: %w", a.Label, err)
	}
	if a.Type.Size() == 4 && out.Reg >= x86asm.RAX && out.Reg <= x86asm.R15 {
		out.Reg = out.Reg - x86asm.RAX + x86asm.EAX
	}
	return out, nil
}

func (sp *Spec) resolveFunc(ex *uprobe.Executable, p *ptrace.Process) ([]uprobe.Site, error) {
	f := ex.File
	fns := f.Match(sp.Func)
	if len(fns) == 0 {
		return nil, fmt.Errorf("%w: no function matches %q in %s", symbols.ErrNoSymbol, sp.Func, f.Path)
	}
	exact := len(f.Lookup(sp.Func)) > 0
	if exact && len(fns) > 1 {
		_, err := f.LookupFunc(sp.Func)
		return nil, fmt.Errorf("%w; probe one by address", err)
	}
	opts := &uprobe.Options{Offset: sp.Offset, FirstByte: sp.ExplicitOffset()}
	var sites []uprobe.Site
	for _, fn := range fns {
		if sp.Return {
			rets, err := ex.ReturnSites(p, fn)
			if err != nil {
				if exact {
					return nil, err
				}
				continue // a glob skips functions it cannot read
			}
			sites = append(sites, rets...)
			continue
		}
		s, err := ex.EntrySite(p, fn, opts)
		if err != nil {
			if exact {
				return nil, err
			}
			continue
		}
		sites = append(sites, s)
	}
	if len(sites) == 0 {
		if sp.Return {
			return nil, fmt.Errorf("no RET instruction in the %d function(s) matching %q (they may end in tail calls or never return)", len(fns), sp.Func)
		}
		return nil, fmt.Errorf("%w: offset %#x is not an instruction boundary inside any of the %d function(s) matching %q", symbols.ErrNotBoundary, sp.Offset, len(fns), sp.Func)
	}
	return sites, nil
}

// ExplicitOffset reports whether the spec spells an offset (FUNC+0
// included).
func (sp *Spec) ExplicitOffset() bool {
	name, _, _ := strings.Cut(sp.Raw, " ")
	return strings.Contains(name, "+")
}
