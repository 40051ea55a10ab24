package symbols

import (
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/onetrap/onetrap/memio"
)

// IFuncSlots returns the file addresses of the slots into which the
// loader writes the implementation fn's resolver picks: the targets of
// R_X86_64_IRELATIVE relocations whose addend is fn's resolver (a library
// calling its own IFUNC goes through such a slot). It is empty for a
// function that is not an IFUNC or that the file never calls itself.
func (f *File) IFuncSlots(fn *Func) []uint64 {
	if !fn.IFunc {
		return nil
	}
	var out []uint64
	for _, s := range f.ef.Sections {
		if s.Type != elf.SHT_RELA || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for i := 0; i+24 <= len(data); i += 24 {
			off := binary.LittleEndian.Uint64(data[i:])
			info := binary.LittleEndian.Uint64(data[i+8:])
			addend := binary.LittleEndian.Uint64(data[i+16:])
			if elf.R_X86_64(info&0xffffffff) == elf.R_X86_64_IRELATIVE && addend == fn.Addr {
				out = append(out, off)
			}
		}
	}
	return out
}

// IFuncTarget returns the implementation that the loader chose for the
// IFUNC fn in a process whose memory is m and which loaded the file at
// bias, as gdb finds it: in the slot the loader filled with the resolver's
// answer (see IFuncSlots). It fails with ErrIFunc when the file has no
// such slot, or when the loader has not relocated the file yet; the caller
// may then wait for the resolver to return (its RET sites) and read rax.
func (f *File) IFuncTarget(fn *Func, m memio.Memory, bias uint64) (*Func, error) {
	if !fn.IFunc {
		return fn, nil
	}
	slots := f.IFuncSlots(fn)
	if len(slots) == 0 {
		return nil, fmt.Errorf("%s: %w: %s is an IFUNC the file never calls itself, so no slot of the file records the implementation", f.Path, ErrIFunc, fn.Name)
	}
	for _, s := range slots {
		v, err := memio.ReadUint(m, s+bias, 8)
		if err != nil {
			return nil, fmt.Errorf("%s: reading the IFUNC slot of %s: %w", f.Path, fn.Name, err)
		}
		if v < bias || v == fn.Addr+bias || !f.Executable(v-bias) {
			continue
		}
		if impl := f.PCToFunc(v - bias); impl != nil && impl.Addr == v-bias {
			return impl, nil
		}
		return nil, fmt.Errorf("%s: %w: the loader chose %#x for %s, which starts no known function", f.Path, ErrIFunc, v-bias, fn.Name)
	}
	return nil, fmt.Errorf("%s: %w: the loader has not yet run the resolver of %s", f.Path, ErrIFunc, fn.Name)
}
