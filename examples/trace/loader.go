package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/onetrap/onetrap/examples/internal/symtab"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/regs"
)

// Library probes follow the dynamic loader the way gdb does: the loader
// calls _dl_debug_state (an empty function that exists for debuggers) each
// time its list of objects changes, with r_debug.r_state saying how:
// RT_ADD before it maps an object, RT_CONSISTENT once the list is complete
// again (the new objects mapped, their constructors not yet run), RT_DELETE
// before it unmaps one. A probe there, served on the tracer thread, places
// the pending LIB: probes while the thread that called dlopen is stopped, so
// no call into the new library is missed.
const (
	rtConsistent = 0
	rtAdd        = 1
	rtDelete     = 2

	rStateOff = 24 // offsetof(struct r_debug, r_state) on x86-64
)

// watchLoader finds the dynamic loader among the process's mappings and puts
// a probe on its _dl_debug_state. A static program has no loader, and no
// libraries to wait for.
func (s *session) watchLoader() error {
	maps, err := memio.ReadMaps(s.pid)
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
		return errors.New("no dynamic loader in the process (a static program?)")
	}
	f, err := symtab.Open(fmt.Sprintf("/proc/%d/root%s", s.pid, path))
	if err != nil {
		return err
	}
	defer f.Close()
	bias, err := f.LoadBias(maps)
	if err != nil {
		return err
	}
	fns := f.Lookup("_dl_debug_state")
	if len(fns) == 0 {
		return fmt.Errorf("%s has no _dl_debug_state", path)
	}
	// r_debug tells the kind of change; without it every call re-resolves,
	// which is slower but as correct for dlopen (not for dlclose).
	s.rDebug = 0
	if syms, err := f.ELF().DynamicSymbols(); err == nil {
		for _, sym := range syms {
			if sym.Name == "_r_debug" && elf.ST_TYPE(sym.Info) == elf.STT_OBJECT {
				s.rDebug = sym.Value + bias
			}
		}
	}
	pr, err := s.proc.Insert(fns[0].Addr+bias, ptrace.Auto, s.onLoader)
	if err != nil {
		return fmt.Errorf("probing the loader's _dl_debug_state: %w", err)
	}
	s.loader = pr
	return nil
}

// onLoader is the handler of the _dl_debug_state probe.
func (s *session) onLoader(tid int, p *ptrace.Probe, r *regs.Regs, m memio.Memory) {
	// The time resolving symbols takes is not a probe's.
	s.mu.Lock()
	s.last = nil
	s.mu.Unlock()
	state := uint64(rtConsistent)
	if s.rDebug != 0 {
		v, err := memio.ReadUint(m, s.rDebug+rStateOff, 4)
		if err == nil {
			state = v
		}
	}
	switch state {
	case rtConsistent:
		s.resolvePending()
	case rtDelete:
		s.dropLibraryProbes()
	}
}

// resolvePending places the LIB: specs whose library is now mapped.
func (s *session) resolvePending() {
	for _, sp := range s.specs {
		if !sp.pending {
			continue
		}
		err := s.place(sp)
		if errors.Is(err, symtab.ErrLibNotMapped) {
			continue
		}
		sp.pending = false
		if err != nil {
			s.note(fmt.Sprintf("-p %q: %v", sp.sp.Raw, err))
		}
	}
}

// dropLibraryProbes takes out every library probe before the loader unmaps
// an object: which one goes is not known here, and a probe left in an
// unmapped library would, on removal, write its saved byte into whatever is
// mapped there next. The probes come back at the next RT_CONSISTENT for the
// libraries still mapped, their rows keeping the hits; calls made in between
// by other threads are not counted.
func (s *session) dropLibraryProbes() {
	for _, rw := range s.snapshot() {
		s.mu.Lock()
		pr := rw.probe
		lib := rw.File != ""
		s.mu.Unlock()
		if pr == nil || !lib {
			continue
		}
		if err := s.proc.Remove(pr); err != nil {
			s.note(fmt.Sprintf("removing %s before dlclose: %v", rw.Site, err))
		}
		s.mu.Lock()
		rw.base += pr.Hits()
		rw.probe = nil
		s.mu.Unlock()
	}
	for _, sp := range s.specs {
		if sp.sp.Lib != "" {
			sp.pending = true
		}
	}
}
