// Package testprog builds the small C and Go programs that the tests of
// onetrap's packages run and read, once per test binary.
package testprog

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string]result{}
	root  string
)

type result struct {
	path string
	err  error
}

// dir returns the directory the programs are built in, shared by the
// tests of one test binary and removed by Cleanup.
func dir() (string, error) {
	if root == "" {
		d, err := os.MkdirTemp("", "onetrap-testprog-")
		if err != nil {
			return "", err
		}
		root = d
	}
	return root, nil
}

// Cleanup removes what was built; call it from TestMain after m.Run.
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if root != "" {
		os.RemoveAll(root)
	}
}

// build runs the build command once per name and returns the output path.
func build(t testing.TB, name string, files map[string]string, env []string, cmd ...string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if r, ok := built[name]; ok {
		if r.err != nil {
			t.Fatalf("building %s: %v", name, r.err)
		}
		return r.path
	}
	r := func() result {
		d, err := dir()
		if err != nil {
			return result{err: err}
		}
		d = filepath.Join(d, name+".d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return result{err: err}
		}
		for fn, src := range files {
			if err := os.WriteFile(filepath.Join(d, fn), []byte(src), 0o644); err != nil {
				return result{err: err}
			}
		}
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Dir = d
		c.Env = append(os.Environ(), env...)
		if out, err := c.CombinedOutput(); err != nil {
			return result{err: errors.New(strings.Join(cmd, " ") + ": " + string(out))}
		}
		return result{path: filepath.Join(d, name)}
	}()
	built[name] = r
	if r.err != nil {
		t.Fatalf("building %s: %v", name, r.err)
	}
	return r.path
}

// C compiles files (name → source) with the compiler given (cc, c++) and
// flags into an executable called name, and returns its path. The sources
// are compiled in the order of srcs.
func C(t testing.TB, name, compiler string, files map[string]string, srcs []string, flags ...string) string {
	t.Helper()
	args := append([]string{compiler}, flags...)
	args = append(args, "-o", name)
	args = append(args, srcs...)
	return build(t, name, files, nil, args...)
}

// Go builds a main package (main.go holding src) into an executable called
// name with the go build flags given.
func Go(t testing.TB, name, src string, flags ...string) string {
	t.Helper()
	files := map[string]string{"main.go": src, "go.mod": "module example.com/" + name + "\n\ngo 1.22\n"}
	args := append([]string{"go", "build"}, flags...)
	args = append(args, "-o", name, ".")
	return build(t, name, files, []string{"CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}, args...)
}

// Dir returns the directory holding the built program at path (where its
// sources are too).
func Dir(path string) string { return filepath.Dir(path) }
