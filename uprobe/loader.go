package uprobe

import (
	"debug/elf"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/symbols"
)

// Library probes follow the dynamic loader the way gdb does: the loader
// calls _dl_debug_state (an empty function that exists for debuggers) each
// time its list of objects changes, with r_debug.r_state saying how:
// RT_ADD before it maps objects, RT_CONSISTENT once they are mapped (at
// start-up after they are relocated, in dlopen before; their constructors
// run later either way), RT_DELETE before it unmaps one. A probe there,
// served on the tracer thread, places the pending library probes while the
// thread that maps them is stopped, so no call into a new library is
// missed, constructors' included.
const (
	rtConsistent = 0
	rtAdd        = 1
	rtDelete     = 2

	rStateOff = 24 // offsetof(struct r_debug, r_state) on x86-64
)

// ErrNoLoader says that a process has no dynamic loader (a static
// program): its libraries, if any, are all there from the start.
var ErrNoLoader = errors.New("no dynamic loader in the process")

// Library asks for probes in a shared library, put in when the loader maps
// it.
type Library struct {
	// Name designates the library as symbols.MatchLib takes it: libc,
	// libc.so.6 or /usr/lib/x86_64-linux-gnu/libc.so.6.
	Name string
	// Place puts the probes. It runs as soon as the library is mapped, on
	// the tracer thread, while the thread that mapped it is stopped and
	// before the library's constructors run; Place must not wait for the
	// process. It returns the probes it put in: the Loader takes them out
	// before the loader unmaps a library (dlclose) and calls Place again
	// when the library is back. An error (a name the library does not
	// have, say) goes to the Loader's error function.
	Place func(ex *Executable) ([]*ptrace.Probe, error)
	// Removed, when set, is called with each probe taken out before an
	// unmap (to keep its hits, say).
	Removed func(pr *ptrace.Probe)
}

type library struct {
	Library
	placed  bool            // probes are in
	mapped  bool            // it has been mapped at least once
	probes  []*ptrace.Probe // what Place put in
	failure error           // Place's last error
	path    string          // the file it was found in
	exe     *Executable     // opened once
	proc    *ptrace.Process // the process it belongs to
	onError func(lib string, err error)
}

// Loader watches a process's dynamic loader and places library probes.
// Its methods other than the placing it does on its own must be called
// with the process stopped (before Run, or from a handler or OnExec).
type Loader struct {
	proc    *ptrace.Process
	onError func(lib string, err error)
	libs    []*library
	watch   *ptrace.Probe
	rDebug  uint64 // the loader's r_debug in the process, or 0
	opened  map[string]*Executable
}

// WatchLoader puts a probe on the dynamic loader of process p (which must
// be stopped: just started or attached). onError, called on the tracer
// thread, receives the errors of Library.Place; nil ignores them. The
// error is ErrNoLoader for a static program, whose Loader still places
// libraries that are mapped when they are added.
func WatchLoader(p *ptrace.Process, onError func(lib string, err error)) (*Loader, error) {
	l := &Loader{proc: p, onError: onError, opened: map[string]*Executable{}}
	return l, l.arm()
}

// arm finds the loader among the process's mappings and probes its
// _dl_debug_state.
func (l *Loader) arm() error {
	l.watch, l.rDebug = nil, 0
	pid := l.proc.Pid()
	maps, err := ptrace.Maps(pid)
	if err != nil {
		return err
	}
	path := ""
	for _, m := range maps {
		b := filepath.Base(m.Path)
		if m.Exec() && strings.HasPrefix(b, "ld-") && strings.Contains(b, ".so") {
			path = m.Path
			break
		}
	}
	if path == "" {
		return fmt.Errorf("process %d: %w (a static program?)", pid, ErrNoLoader)
	}
	ex, err := l.open(path)
	if err != nil {
		return err
	}
	bias, err := ex.File.LoadBias(maps)
	if err != nil {
		return err
	}
	fn, err := ex.File.LookupFunc("_dl_debug_state")
	if err != nil {
		return err
	}
	// r_debug tells the kind of change; without it every call places,
	// which is as correct for dlopen (not for dlclose).
	if syms, err := ex.File.ELF().DynamicSymbols(); err == nil {
		for _, sym := range syms {
			if sym.Name == "_r_debug" && elf.ST_TYPE(sym.Info) == elf.STT_OBJECT {
				l.rDebug = sym.Value + bias
			}
		}
	}
	pr, err := l.proc.Insert(fn.Addr+bias, ptrace.Auto, l.onLoader)
	if err != nil {
		return fmt.Errorf("probing the loader's _dl_debug_state: %w", err)
	}
	l.watch = pr
	return nil
}

// open opens a file the process maps, once, through the process's root
// (its path is the one the process sees).
func (l *Loader) open(path string) (*Executable, error) {
	if ex := l.opened[path]; ex != nil {
		return ex, nil
	}
	ex, err := OpenExecutable(fmt.Sprintf("/proc/%d/root%s", l.proc.Pid(), path))
	if err != nil {
		return nil, err
	}
	l.opened[path] = ex
	return ex, nil
}

// Add asks for lib's probes. When the library is already mapped they go
// in now and Place's error is returned; else they wait for the loader.
func (l *Loader) Add(lib Library) error {
	lb := &library{Library: lib}
	l.libs = append(l.libs, lb)
	return l.place(lb)
}

// place puts lb's probes in if its library is mapped and they are not in.
func (l *Loader) place(lb *library) error {
	if lb.placed {
		return nil
	}
	maps, err := ptrace.Maps(l.proc.Pid())
	if err != nil {
		return err
	}
	paths := symbols.Libraries(maps, lb.Name)
	switch {
	case len(paths) == 0:
		return nil
	case len(paths) > 1:
		return l.fail(lb, fmt.Errorf("library %q is ambiguous in process %d: %s", lb.Name, l.proc.Pid(), strings.Join(paths, ", ")))
	}
	ex, err := l.open(paths[0])
	if err != nil {
		return l.fail(lb, err)
	}
	lb.mapped, lb.placed = true, true
	probes, err := lb.Place(ex)
	lb.probes = probes
	if err != nil {
		return l.fail(lb, err)
	}
	return nil
}

func (l *Loader) fail(lb *library, err error) error {
	if l.onError != nil {
		l.onError(lb.Name, err)
	}
	return err
}

// onLoader is the handler of the _dl_debug_state probe.
func (l *Loader) onLoader(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
	state := uint64(rtConsistent)
	if l.rDebug != 0 {
		if v, err := memio.ReadUint(m, l.rDebug+rStateOff, 4); err == nil {
			state = v
		}
	}
	switch state {
	case rtDelete:
		l.dropAll()
	default:
		// RT_ADD too: a library mapped by an earlier step is placed at
		// the first notification after it appears.
		for _, lb := range l.libs {
			l.place(lb)
		}
	}
}

// dropAll takes out every library probe before the loader unmaps an
// object: which one goes is not known here, and a probe left in an
// unmapped library would, on removal, write its saved byte into whatever
// is mapped there next. The probes come back at the next notification for
// the libraries still mapped; calls made in between by other threads are
// not seen.
func (l *Loader) dropAll() {
	for _, lb := range l.libs {
		for _, pr := range lb.probes {
			l.proc.Remove(pr)
			if lb.Removed != nil {
				lb.Removed(pr)
			}
		}
		lb.probes, lb.placed = nil, false
	}
}

// Exec re-arms the Loader after the process called execve (call it from
// the ptrace.OnExec function): the old image's probes are gone, and every
// library waits to be mapped again.
func (l *Loader) Exec() error {
	for _, ex := range l.opened {
		ex.Close()
	}
	l.opened = map[string]*Executable{}
	for _, lb := range l.libs {
		lb.probes, lb.placed = nil, false
	}
	err := l.arm()
	for _, lb := range l.libs {
		l.place(lb)
	}
	return err
}

// Unmapped returns the names of the libraries that have never been mapped.
func (l *Loader) Unmapped() []string {
	var out []string
	for _, lb := range l.libs {
		if !lb.mapped {
			out = append(out, lb.Name)
		}
	}
	return out
}

// Close releases the files the Loader opened. The probes stay.
func (l *Loader) Close() error {
	for _, ex := range l.opened {
		ex.Close()
	}
	l.opened = nil
	return nil
}
