package region

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tableImage holds a function's code at base and a jump table at table:
// int32 entries relative to the table (the PIC form), or absolute 8-byte
// ones, then a word that names no code.
type tableImage struct {
	code  []byte
	table uint64
	data  []byte
}

func (m *tableImage) ReadAt(b []byte, addr uint64) (int, error) {
	if addr >= m.table && addr-m.table < uint64(len(m.data)) {
		return copy(b, m.data[addr-m.table:]), nil
	}
	return 0, nil
}

func (m *tableImage) Executable(addr uint64) bool {
	return addr >= base && addr < base+uint64(len(m.code))
}

// picSwitch is a function whose entry (push rbp; push rbx; sub rsp,8: 6
// bytes) is followed by a switch on edi dispatched through a PIC jump
// table at table, and a few case bodies.
//
//	0x401000 push rbp; push rbx; sub rsp,8
//	0x401006 lea rdx,[rip+T]; movsxd rax,dword [rdx+rdi*4]; add rax,rdx; jmp rax
//	0x401015 cases: xor eax,eax; ret ...
func picSwitch(table uint64) []byte {
	lea := rel32op([]byte{0x48, 0x8d, 0x15}, int32(int64(table)-int64(base+6+7)))
	return cat(pushRBP, pushRBX, subRSP8, lea,
		[]byte{0x48, 0x63, 0x04, 0xba}, // movsxd rax,dword [rdx+rdi*4]
		[]byte{0x48, 0x01, 0xd0},       // add rax,rdx
		jmpRAX,
		xorEAX, ret, xorEAX, ret, xorEAX, ret)
}

func relTable(table uint64, targets ...uint64) []byte {
	var b []byte
	for _, t := range targets {
		b = binary.LittleEndian.AppendUint32(b, uint32(int32(int64(t)-int64(table))))
	}
	return binary.LittleEndian.AppendUint32(b, 0x7fffffff) // names no code: the end
}

func TestPlanJumpTable(t *testing.T) {
	const table = 0x500000
	fn := picSwitch(table)
	cases := base + 6 + 7 + 4 + 3 + 2

	// Without the image, the indirect jump refuses the region.
	_, err := Plan(fn, base, base)
	var ref *Refusal
	require.ErrorAs(t, err, &ref)
	assert.Equal(t, RuleIndirectJump, ref.Rule)

	// With it, the table's entries are read: all land on the cases.
	img := &tableImage{code: fn, table: table, data: relTable(table, uint64(cases), uint64(cases+3), uint64(cases+6))}
	r, err := PlanIn(img, fn, base, base)
	require.NoError(t, err)
	assert.Equal(t, 6, r.Len)

	// An entry on byte 2 of the region refuses it.
	img.data = relTable(table, uint64(cases), base+2, uint64(cases+6))
	_, err = PlanIn(img, fn, base, base)
	require.ErrorAs(t, err, &ref)
	assert.Equal(t, RuleBranchInto, ref.Rule)
	assert.Contains(t, ref.Reason, "0x401002")

	// A table whose first entry names no code is no table it knows.
	img.data = relTable(table)
	_, err = PlanIn(img, fn, base, base)
	require.ErrorAs(t, err, &ref)
	assert.Equal(t, RuleIndirectJump, ref.Rule)

	// A jmp rax with no table before it (a tail call through a pointer)
	// still refuses.
	plain := cat(pushRBP, pushRBX, subRSP8, []byte{0x48, 0x8b, 0x07}, jmpRAX) // mov rax,[rdi]; jmp rax
	_, err = PlanIn(img, plain, base, base)
	require.ErrorAs(t, err, &ref)
	assert.Equal(t, RuleIndirectJump, ref.Rule)

	// The non-PIC form: jmp [T+rdi*8] with absolute entries.
	abs := cat(pushRBP, pushRBX, subRSP8, []byte{0xff, 0x24, 0xfd}, binary.LittleEndian.AppendUint32(nil, table), xorEAX, ret)
	absCase := uint64(base + 6 + 7)
	data := binary.LittleEndian.AppendUint64(nil, absCase)
	data = binary.LittleEndian.AppendUint64(data, 0)
	_, err = PlanIn(&tableImage{code: abs, table: table, data: data}, abs, base, base)
	require.NoError(t, err)
	data = binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, base+1), 0)
	_, err = PlanIn(&tableImage{code: abs, table: table, data: data}, abs, base, base)
	require.ErrorAs(t, err, &ref)
	assert.Equal(t, RuleBranchInto, ref.Rule)
}
