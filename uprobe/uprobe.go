// Package uprobe puts probes into traced processes by name: open an
// executable or library once, then probe a *ptrace.Process at a function's
// entry, at its returns, or at a source line. Probes in shared libraries go
// in when the dynamic loader maps them (dlopen included), before their
// constructors run (see Loader). ABI gives the registers of each calling
// convention's arguments and results, and ReadCString, ReadGoString and
// ReadGoSlice read what they point to.
//
//	ex, err := uprobe.OpenExecutable("/proc/1234/exe")
//	probes, err := ex.Uprobe(proc, "main.handle", onHit, nil)
package uprobe

import (
	"errors"
	"fmt"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/ptrace"
	"github.com/onetrap/onetrap/symbols"
)

// Options adjusts where and how a probe goes. The zero value (or nil)
// probes a function's entry with ptrace.Auto.
type Options struct {
	// Strategy is how the probed instruction runs on a hit.
	Strategy ptrace.Strategy
	// Offset moves an entry probe that many bytes into the function; it
	// must be an instruction boundary. A non-zero Offset also keeps a Go
	// function's stack check (see FirstByte).
	Offset uint64
	// FirstByte probes a Go function's first byte. By default an entry
	// probe goes past its stack-bound check, which runs twice on a call
	// that grows the stack (symbols.File.StackCheckSkip).
	FirstByte bool
}

func (o *Options) orDefault() *Options {
	if o == nil {
		return &Options{}
	}
	return o
}

// Site is one place to probe in a process.
type Site struct {
	// Func is the function holding the site, nil for an address outside
	// every function. For an IFUNC probed by name it is the implementation
	// the loader chose.
	Func *symbols.Func
	Addr uint64 // file virtual address
	PC   uint64 // Addr plus the load bias: where the process runs it
	// Return is set for a RET instruction of a return probe.
	Return bool
}

// ABI returns the calling convention of the site's function.
func (s *Site) ABI() ABI {
	if s.Func != nil && s.Func.Go {
		return GoRegs
	}
	return SysV
}

// String names the site as FUNC, FUNC+0xOFF (with %return for a return
// probe) or 0xADDR.
func (s *Site) String() string {
	if s.Func == nil {
		return fmt.Sprintf("%#x", s.Addr)
	}
	r := ""
	if s.Return {
		r = "%return"
	}
	if off := s.Addr - s.Func.Addr; off != 0 {
		return fmt.Sprintf("%s+%#x%s", s.Func.Name, off, r)
	}
	return s.Func.Name + r
}

// Executable is an opened executable or shared library whose functions
// can be probed in any process that maps it.
type Executable struct {
	// File holds the symbols.
	File *symbols.File
}

// OpenExecutable opens the ELF file at path (an executable, a shared
// library, or /proc/PID/exe) and reads its symbols.
func OpenExecutable(path string) (*Executable, error) {
	f, err := symbols.Open(path)
	if err != nil {
		return nil, err
	}
	return &Executable{File: f}, nil
}

// Close releases the file.
func (ex *Executable) Close() error { return ex.File.Close() }

// Path returns the name the file was opened with.
func (ex *Executable) Path() string { return ex.File.Path }

// Bias returns the file's load bias in process p, 0 when p is nil: the
// methods that take a process give file addresses then (and refuse
// IFUNCs, whose implementation only a process knows).
func (ex *Executable) Bias(p *ptrace.Process) (uint64, error) {
	if p == nil {
		return 0, nil
	}
	maps, err := ptrace.Maps(p.Pid())
	if err != nil {
		return 0, err
	}
	return ex.File.LoadBias(maps)
}

// EntrySite returns where an entry probe of fn goes in process p: fn's
// first instruction, past a Go function's stack check, opts.Offset in,
// and for an IFUNC the implementation the loader chose in p.
func (ex *Executable) EntrySite(p *ptrace.Process, fn *symbols.Func, opts *Options) (Site, error) {
	opts = opts.orDefault()
	bias, err := ex.Bias(p)
	if err != nil {
		return Site{}, err
	}
	if fn.IFunc {
		if fn, err = ex.ifuncTarget(p, fn, bias); err != nil {
			return Site{}, err
		}
	}
	off := opts.Offset
	if off > 0 {
		if err := ex.File.CheckBoundary(fn, off); err != nil {
			return Site{}, err
		}
	} else if !opts.FirstByte {
		off = ex.File.StackCheckSkip(fn)
	}
	return Site{Func: fn, Addr: fn.Addr + off, PC: fn.Addr + off + bias}, nil
}

func (ex *Executable) ifuncTarget(p *ptrace.Process, fn *symbols.Func, bias uint64) (*symbols.Func, error) {
	if p == nil {
		return nil, fmt.Errorf("%s: %w: the loader picks the implementation of %s in a process", ex.Path(), symbols.ErrIFunc, fn.Name)
	}
	mem, err := memio.OpenProcess(p.Pid())
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	return ex.File.IFuncTarget(fn, mem, bias)
}

// ReturnSites returns where a return probe of fn goes in process p: each
// of its RET instructions (for an IFUNC, the chosen implementation's). A
// function without one (it ends in a tail call) has no return sites.
func (ex *Executable) ReturnSites(p *ptrace.Process, fn *symbols.Func) ([]Site, error) {
	bias, err := ex.Bias(p)
	if err != nil {
		return nil, err
	}
	if fn.IFunc {
		if fn, err = ex.ifuncTarget(p, fn, bias); err != nil {
			return nil, err
		}
	}
	rets, err := ex.File.Returns(fn)
	if err != nil {
		return nil, err
	}
	out := make([]Site, len(rets))
	for i, a := range rets {
		out[i] = Site{Func: fn, Addr: a, PC: a + bias, Return: true}
	}
	return out, nil
}

// LineSites returns where the code of file:line begins in process p (see
// symbols.File.LineToPC).
func (ex *Executable) LineSites(p *ptrace.Process, file string, line int) ([]Site, error) {
	bias, err := ex.Bias(p)
	if err != nil {
		return nil, err
	}
	addrs, err := ex.File.LineToPC(file, line)
	if err != nil {
		return nil, err
	}
	var out []Site
	for _, a := range addrs {
		s, err := ex.addrSite(a, bias)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, line, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// AddrSite returns the site of file address addr in process p; addr must
// be an instruction boundary of executable code.
func (ex *Executable) AddrSite(p *ptrace.Process, addr uint64) (Site, error) {
	bias, err := ex.Bias(p)
	if err != nil {
		return Site{}, err
	}
	return ex.addrSite(addr, bias)
}

func (ex *Executable) addrSite(addr, bias uint64) (Site, error) {
	f := ex.File
	if !f.Executable(addr) {
		return Site{}, fmt.Errorf("%#x in %s: %w: not in an executable segment", addr, f.Path, symbols.ErrNotBoundary)
	}
	fn := f.PCToFunc(addr)
	if fn != nil {
		if err := f.CheckBoundary(fn, addr-fn.Addr); err != nil {
			return Site{}, err
		}
	}
	return Site{Func: fn, Addr: addr, PC: addr + bias}, nil
}

// Uprobe probes the entry of the function symbol (a name as
// symbols.File.LookupFunc takes it) in process p; h runs on every hit.
func (ex *Executable) Uprobe(p *ptrace.Process, symbol string, h ptrace.Handler, opts *Options) (*ptrace.Probe, error) {
	fn, err := ex.File.LookupFunc(symbol)
	if err != nil {
		return nil, err
	}
	s, err := ex.EntrySite(p, fn, opts)
	if err != nil {
		return nil, err
	}
	return Insert(p, s, h, opts)
}

// Uretprobe probes every return instruction of the function symbol in
// process p: h runs as the function returns, with its results in the
// registers (see ABI.Ret) and rsp pointing at the return address.
func (ex *Executable) Uretprobe(p *ptrace.Process, symbol string, h ptrace.Handler, opts *Options) ([]*ptrace.Probe, error) {
	fn, err := ex.File.LookupFunc(symbol)
	if err != nil {
		return nil, err
	}
	sites, err := ex.ReturnSites(p, fn)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, fmt.Errorf("%s in %s: %w: no RET instruction (it ends in tail calls or never returns)", symbol, ex.Path(), symbols.ErrNoSymbol)
	}
	return InsertAll(p, sites, h, opts)
}

// LineProbe probes where the code of file:line begins in process p.
func (ex *Executable) LineProbe(p *ptrace.Process, file string, line int, h ptrace.Handler, opts *Options) ([]*ptrace.Probe, error) {
	sites, err := ex.LineSites(p, file, line)
	if err != nil {
		return nil, err
	}
	return InsertAll(p, sites, h, opts)
}

// Insert puts a probe at s.
func Insert(p *ptrace.Process, s Site, h ptrace.Handler, opts *Options) (*ptrace.Probe, error) {
	pr, err := p.Insert(s.PC, opts.orDefault().Strategy, h)
	if err != nil {
		return nil, fmt.Errorf("probe at %s (%#x): %w", s.String(), s.PC, err)
	}
	return pr, nil
}

// InsertAll puts a probe at every site; on an error it takes out those it
// put in.
func InsertAll(p *ptrace.Process, sites []Site, h ptrace.Handler, opts *Options) ([]*ptrace.Probe, error) {
	var out []*ptrace.Probe
	for _, s := range sites {
		pr, err := Insert(p, s, h, opts)
		if err != nil {
			var errs []error
			for _, pr := range out {
				errs = append(errs, p.Remove(pr))
			}
			return nil, errors.Join(append([]error{err}, errs...)...)
		}
		out = append(out, pr)
	}
	return out, nil
}

// ProbeFunc probes the entry of the function symbol of process p's main
// executable: OpenExecutable on /proc/PID/exe and Uprobe in one call, for
// a program that probes one function once.
func ProbeFunc(p *ptrace.Process, symbol string, h ptrace.Handler, opts *Options) (*ptrace.Probe, error) {
	ex, err := OpenExecutable(fmt.Sprintf("/proc/%d/exe", p.Pid()))
	if err != nil {
		return nil, err
	}
	defer ex.Close()
	return ex.Uprobe(p, symbol, h, opts)
}
