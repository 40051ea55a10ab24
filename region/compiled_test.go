package region

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/symbols"
)

// Real compiled code: Plan at every function entry of programs built
// during the test run, with what compilers really emit at entries.

const cSource = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; long key; char name[16]; };

__attribute__((noinline)) long sum(const long *a, int n) { long s = 0; for (int i = 0; i < n; i++) s += a[i]; return s; }
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) struct node *push(struct node *h, long k) {
	struct node *n = malloc(sizeof *n); n->next = h; n->key = k; snprintf(n->name, sizeof n->name, "k%ld", k); return n;
}
__attribute__((noinline)) long walk(struct node *h) { long s = 0; for (; h; h = h->next) s += h->key * (long)strlen(h->name); return s; }
__attribute__((noinline)) void release(struct node *h) { while (h) { struct node *n = h->next; free(h); h = n; } }
__attribute__((noinline)) const char *kind(int c) {
	switch (c) { case 0: return "zero"; case 1: return "one"; case 2: return "two"; case 3: return "three";
	case 4: return "four"; case 5: return "five"; case 6: return "six"; default: return "many"; }
}
__attribute__((noinline)) int classify(int c) { if (c < 0) return -1; if (c > 100) return 1; return 0; }
__attribute__((noinline)) double mean(const double *a, int n) { double s = 0; for (int i = 0; i < n; i++) s += a[i]; return n ? s / n : 0; }
__attribute__((noinline)) void reverse(char *s) { size_t n = strlen(s); for (size_t i = 0; i < n / 2; i++) { char c = s[i]; s[i] = s[n-1-i]; s[n-1-i] = c; } }
__attribute__((noinline)) int count(const char *s, char c) { int k = 0; while (*s) k += *s++ == c; return k; }
static long counter;
__attribute__((noinline)) void bump(void) { counter++; }
__attribute__((noinline)) long get(void) { return counter; }
__attribute__((noinline)) int max3(int a, int b, int c) { int m = a > b ? a : b; return m > c ? m : c; }
__attribute__((noinline)) void fill(int *a, int n, int v) { for (int i = 0; i < n; i++) a[i] = v + i; }
__attribute__((noinline)) unsigned hash(const char *s) { unsigned h = 5381; while (*s) h = h * 33 + (unsigned char)*s++; return h; }

int main(int argc, char **argv) {
	long a[8] = {1, 2, 3, 4, 5, 6, 7, 8}; double d[3] = {1, 2, 3}; char buf[32]; int v[4];
	struct node *h = 0;
	for (int i = 0; i < argc + 3; i++) h = push(h, i);
	strcpy(buf, argv[0]); reverse(buf); fill(v, 4, argc); bump();
	printf("%ld %d %ld %s %d %f %d %ld %d %u %d\n", sum(a, 8), fib(argc + 5), walk(h), kind(argc), classify(argc),
		mean(d, 3), count(buf, '/'), get(), max3(v[0], v[1], v[3]), hash(buf), v[2]);
	release(h);
	return 0;
}
`

const goSource = `package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

type shape interface{ area() float64 }
type rect struct{ w, h float64 }
type circle struct{ r float64 }

func (r rect) area() float64   { return r.w * r.h }
func (c circle) area() float64 { return 3.14159 * c.r * c.r }

//go:noinline
func kind(n int) string {
	switch n {
	case 0: return "zero"
	case 1: return "one"
	case 2: return "two"
	case 3: return "three"
	case 4: return "four"
	case 5: return "five"
	case 6: return "six"
	case 7: return "seven"
	}
	return "many"
}

func main() {
	shapes := []shape{rect{2, 3}, circle{1}}
	sort.Slice(shapes, func(i, j int) bool { return shapes[i].area() < shapes[j].area() })
	m := map[string]int{}
	for _, a := range os.Args { m[strings.ToUpper(a)]++ }
	fmt.Println(kind(len(os.Args)), shapes, m)
}
`

// build compiles the C source with gcc and the given flags, or the Go
// source, into dir, and returns the executable's path.
func build(t *testing.T, dir, name string, cmd ...string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	c := exec.Command(cmd[0], append(cmd[1:], "-o", out)...)
	c.Dir = dir
	b, err := c.CombinedOutput()
	require.NoError(t, err, "%v: %s", cmd, b)
	return out
}

// planAll runs Plan at every function entry of path and returns the
// share accepted (of entries whose body reads) and counts by rule.
func planAll(t *testing.T, path string, onlyGo bool) (accepted, total int, rules map[Rule]int) {
	t.Helper()
	f, err := symbols.Open(path)
	require.NoError(t, err)
	defer f.Close()
	rules = map[Rule]int{}
	examples := map[Rule][]string{}
	for i := range f.Funcs {
		fn := &f.Funcs[i]
		if onlyGo && !fn.Go {
			continue
		}
		body, err := f.Body(fn)
		if err != nil {
			continue
		}
		total++
		r, err := Plan(body, fn.Addr, fn.Addr)
		if err != nil {
			var ref *Refusal
			require.True(t, errors.As(err, &ref), "%s: %v", fn.Name, err)
			rules[ref.Rule]++
			if len(examples[ref.Rule]) < 4 {
				examples[ref.Rule] = append(examples[ref.Rule], fmt.Sprintf("%s: %v", fn.Name, err))
			}
			continue
		}
		accepted++
		// Every accepted region relocates, from near and from 1 GB away,
		// to the same operations and targets.
		for _, pad := range []uint64{fn.Addr + 0x1000, fn.Addr + 1<<30} {
			code, offs, err := r.Relocate(pad)
			require.NoError(t, err, fn.Name)
			checkRelocated(t, r, pad, code, offs)
		}
	}
	keys := make([]string, 0, len(rules))
	for k := range rules {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	t.Logf("%s: %d of %d entries (%.1f%%) have a region", filepath.Base(path), accepted, total, 100*float64(accepted)/float64(total))
	for _, k := range keys {
		t.Logf("  %-16s %4d  e.g. %s", k, rules[Rule(k)], strings.Join(examples[Rule(k)], " | "))
	}
	return accepted, total, rules
}

func TestCompiledC(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prog.c"), []byte(cSource), 0o644))
	variants := []struct {
		name  string
		flags []string
		min   float64 // the share of entries with a region, at least
	}{
		// At -O2 a loop's entry tests its count first (test; jle), a
		// jcc in mid-region, and small functions call early: lower.
		{"O2", []string{"-O2"}, 0.7},
		{"O0", []string{"-O0"}, 0.8},
		{"O2-cet", []string{"-O2", "-fcf-protection"}, 0.8},
		{"O2-nopie", []string{"-O2", "-fno-pie", "-no-pie", "-fno-omit-frame-pointer"}, 0.8},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			exe := build(t, dir, "prog-"+v.name, append(append([]string{"gcc"}, v.flags...), "prog.c")...)
			ok, n, _ := planAll(t, exe, false)
			require.Greater(t, n, 15)
			assert.GreaterOrEqual(t, float64(ok)/float64(n), v.min, "%d of %d", ok, n)
		})
	}
}

func TestCompiledGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(goSource), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prog\n\ngo 1.21\n"), 0o644))
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	exe := build(t, dir, "prog", goCmd, "build")
	ok, n, _ := planAll(t, exe, true)
	require.Greater(t, n, 500)
	assert.GreaterOrEqual(t, float64(ok)/float64(n), 0.8, "%d of %d", ok, n)
}
