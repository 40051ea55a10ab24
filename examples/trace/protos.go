package main

import (
	"strings"

	"github.com/onetrap/onetrap/probespec"
	"github.com/onetrap/onetrap/symbols"
	"github.com/onetrap/onetrap/uprobe"
)

// protos are the prototypes of common libc functions, as ltrace's table
// has them: each argument word's type, then the result's after "->".
var protos = map[string]string{
	"malloc":               "size=u -> x",
	"free":                 "ptr=x -> void",
	"calloc":               "n=u size=u -> x",
	"realloc":              "ptr=x size=u -> x",
	"memcpy":               "dst=x src=x n=u -> x",
	"memmove":              "dst=x src=x n=u -> x",
	"memset":               "dst=x c=i32 n=u -> x",
	"memcmp":               "a=x b=x n=u -> i32",
	"strlen":               "s=str -> u",
	"strcmp":               "a=str b=str -> i32",
	"strncmp":              "a=str b=str n=u -> i32",
	"strcpy":               "dst=x src=str -> x",
	"strdup":               "s=str -> x",
	"strchr":               "s=str c=i32 -> x",
	"open":                 "path=str flags=x -> i32",
	"open64":               "path=str flags=x -> i32",
	"openat":               "dirfd=i32 path=str flags=x -> i32",
	"close":                "fd=i32 -> i32",
	"read":                 "fd=i32 buf=x n=u -> d",
	"write":                "fd=i32 buf=x n=u -> d",
	"puts":                 "s=str -> i32",
	"printf":               "fmt=str -> i32",
	"fopen":                "path=str mode=str -> x",
	"fclose":               "f=x -> i32",
	"getenv":               "name=str -> str",
	"atoi":                 "s=str -> i32",
	"usleep":               "usec=u32 -> i32",
	"sleep":                "sec=u32 -> u32",
	"exit":                 "status=i32 -> void",
	"dlopen":               "path=str flags=x -> x",
	"dlsym":                "handle=x name=str -> x",
	"fork":                 " -> i32",
	"execve":               "path=str argv=x envp=x -> i32",
	"pthread_create":       "thread=x attr=x fn=x arg=x -> i32",
	"pthread_mutex_lock":   "m=x -> i32",
	"pthread_mutex_unlock": "m=x -> i32",
}

// defaultArgs returns what a call of site's function prints when its spec
// names no values: the prototype table's for a C function it knows, else
// the parameters DWARF (C) or the Go compiler's DWARF gives, in the
// registers of the function's calling convention; nil when nothing is
// known (the result then prints as a register).
func defaultArgs(ex *uprobe.Executable, site *probespec.Site) ([]probespec.Arg, *probespec.Arg) {
	fn, abi := site.Func, site.ABI()
	if p, ok := protos[strings.SplitN(fn.Name, "@", 2)[0]]; ok && !fn.Go {
		return protoArgs(p, abi)
	}
	sig := ex.File.Signature(fn)
	if sig == nil {
		return nil, nil
	}
	var args []probespec.Arg
	word := 0 // integer registers used so far
	for _, p := range sig.Params {
		a, words, ok := paramArg(p, word, false, abi)
		if !ok {
			break // the following parameters' registers are unknown
		}
		args = append(args, a)
		word += words
	}
	if sig.Void {
		return args, &probespec.Arg{Type: probespec.TypeVoid}
	}
	if len(sig.Results) == 1 {
		if a, _, ok := paramArg(sig.Results[0], 0, true, abi); ok {
			return args, &a
		}
	}
	return args, nil
}

// paramArg maps a DWARF parameter to its register at integer word n.
func paramArg(p symbols.Param, n int, ret bool, abi uprobe.ABI) (probespec.Arg, int, bool) {
	as := probespec.ArgSpec{Label: p.Name, N: n, Arg: !ret, Ret: ret}
	words := 1
	switch p.Kind {
	case symbols.KindSigned:
		as.Type = probespec.TypeSigned
		if p.Size == 4 {
			as.Type = probespec.TypeInt
		}
	case symbols.KindUnsigned:
		as.Type = probespec.TypeUnsigned
		if p.Size == 4 {
			as.Type = probespec.TypeUint
		}
	case symbols.KindPointer:
		as.Type = probespec.TypeHex
	case symbols.KindCString:
		as.Type = probespec.TypeCString
	case symbols.KindGoString:
		as.Type, words = probespec.TypeGoString, 2
	case symbols.KindGoSlice:
		as.Type, words = probespec.TypeHex, 3
		if p.Size == 24 {
			as.Type = probespec.TypeBytes
		}
	default:
		return probespec.Arg{}, 0, false
	}
	if ret && words > 1 && abi != uprobe.GoRegs {
		return probespec.Arg{}, 0, false
	}
	a, err := probespec.ResolveArg(as, abi)
	if err != nil {
		return probespec.Arg{}, 0, false
	}
	if as.Label == "" {
		a.Label = ""
	}
	return a, words, true
}

// protoArgs resolves a prototype of the table.
func protoArgs(p string, abi uprobe.ABI) ([]probespec.Arg, *probespec.Arg) {
	in, out, _ := strings.Cut(p, "->")
	var args []probespec.Arg
	for i, w := range strings.Fields(in) {
		name, typ, _ := strings.Cut(w, "=")
		t, _ := probespec.ParseType(typ)
		a, err := probespec.ResolveArg(probespec.ArgSpec{Label: name, N: i, Arg: true, Type: t}, abi)
		if err != nil {
			break
		}
		// ltrace style: the table's names are not printed, only values.
		a.Label = ""
		args = append(args, a)
	}
	t, _ := probespec.ParseType(strings.TrimSpace(out))
	ret, _ := probespec.ResolveArg(probespec.ArgSpec{Label: "retval", Ret: true, Type: t}, abi)
	return args, &ret
}
