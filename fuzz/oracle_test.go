package fuzz

import (
	"encoding/binary"
	"os"
	"sync"
	"testing"

	"github.com/onetrap/onetrap/regs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

var (
	sharedOnce   sync.Once
	sharedOracle *Oracle
	sharedErr    error
)

// oracle returns the sandbox shared by the package's tests.
func oracle(t testing.TB) *Oracle {
	t.Helper()
	sharedOnce.Do(func() { sharedOracle, sharedErr = NewOracle() })
	require.NoError(t, sharedErr, "starting the sandbox")
	return sharedOracle
}

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedOracle != nil {
		sharedOracle.Close()
	}
	os.Exit(code)
}

// baseState is a state at the end of the code page with rsp in the data pages.
func baseState(codeLen int) *State {
	st := &State{}
	st.Regs.RIP = codeEnd - uint64(codeLen)
	st.Regs.RFLAGS = 0x202
	st.Regs.GPR[regs.RSP] = DataAddr + PageSize
	return st
}

func TestOracleRunsOneInstruction(t *testing.T) {
	o := oracle(t)
	code := []byte{0x48, 0x01, 0xd8} // add rax, rbx
	st := baseState(len(code))
	st.Regs.GPR[regs.RAX] = 0x7fffffffffffffff
	st.Regs.GPR[regs.RBX] = 1
	var out Outcome
	require.NoError(t, o.Run(code, st, &out))
	assert.Zero(t, out.Signal)
	assert.Equal(t, uint64(0x8000000000000000), out.Regs.GPR[regs.RAX])
	assert.Equal(t, st.Regs.RIP+3, out.Regs.RIP)
	assert.True(t, out.Regs.Flag(regs.OF), "signed overflow sets OF")
	assert.True(t, out.Regs.Flag(regs.SF))
	assert.False(t, out.Regs.Flag(regs.CF))
	assert.Equal(t, st.Mem, out.Mem, "add between registers leaves memory alone")
}

func TestOracleMemoryAndSegmentBase(t *testing.T) {
	o := oracle(t)
	// mov qword fs:[rax+8], rbx
	code := []byte{0x64, 0x48, 0x89, 0x58, 0x08}
	st := baseState(len(code))
	st.Regs.FSBase = 0x40000000
	st.Regs.GPR[regs.RAX] = DataAddr + 0x100 - 0x40000000
	st.Regs.GPR[regs.RBX] = 0x1122334455667788
	var out Outcome
	require.NoError(t, o.Run(code, st, &out))
	require.Zero(t, out.Signal)
	assert.Equal(t, uint64(0x1122334455667788), binary.LittleEndian.Uint64(out.Mem[0x108:]))
	assert.Equal(t, uint64(0x40000000), out.Regs.FSBase)

	// push rbx: the stack is just a data page.
	code = []byte{0x53}
	st = baseState(len(code))
	st.Regs.GPR[regs.RBX] = 0xdeadbeef
	require.NoError(t, o.Run(code, st, &out))
	require.Zero(t, out.Signal)
	assert.Equal(t, DataAddr+PageSize-8, out.Regs.GPR[regs.RSP])
	assert.Equal(t, uint64(0xdeadbeef), binary.LittleEndian.Uint64(out.Mem[PageSize-8:]))
}

func TestOracleSurvivesFaults(t *testing.T) {
	o := oracle(t)
	tests := []struct {
		name string
		code []byte
		addr uint64
		sig  unix.Signal
		si   int32
	}{
		{"48 8b 00 mov rax,[rax] in the hole", []byte{0x48, 0x8b, 0x00}, HoleAddr + 16, unix.SIGSEGV, segvMapErr},
		{"48 89 00 mov [rax],rax in the read-only page", []byte{0x48, 0x89, 0x00}, ROAddr + 8, unix.SIGSEGV, segvAccErr},
		{"48 8b 00 mov rax,[rax] across into the hole", []byte{0x48, 0x8b, 0x00}, HoleAddr - 4, unix.SIGSEGV, segvMapErr},
		{"0f 0b ud2", []byte{0x0f, 0x0b}, 0, unix.SIGILL, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := baseState(len(tt.code))
			st.Regs.GPR[regs.RAX] = tt.addr
			var out Outcome
			require.NoError(t, o.Run(tt.code, st, &out))
			assert.Equal(t, tt.sig, out.Signal)
			assert.Equal(t, st.Regs.RIP, out.Regs.RIP, "a faulting instruction does not advance")
			if tt.sig == unix.SIGSEGV {
				assert.Equal(t, tt.si, out.Code)
				assert.Equal(t, max(tt.addr, HoleAddr*boolU(tt.si == segvMapErr)), out.Addr)
			}
			// The sandbox goes on.
			code := []byte{0x90}
			st = baseState(1)
			require.NoError(t, o.Run(code, st, &out))
			assert.Zero(t, out.Signal)
			assert.Equal(t, st.Regs.RIP+1, out.Regs.RIP)
		})
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

func TestOracleStopsSyscalls(t *testing.T) {
	o := oracle(t)
	code := []byte{0x0f, 0x05} // syscall: exit_group(7) if it ever ran
	st := baseState(len(code))
	st.Regs.GPR[regs.RAX] = unix.SYS_EXIT_GROUP
	st.Regs.GPR[regs.RDI] = 7
	var out Outcome
	require.NoError(t, o.Run(code, st, &out))
	assert.True(t, out.Syscall)
	for i := 0; i < 3; i++ {
		st := baseState(1)
		require.NoError(t, o.Run([]byte{0x90}, st, &out), "the sandbox is still alive")
		assert.False(t, out.Faulted())
		assert.Equal(t, st.Regs.RIP+1, out.Regs.RIP, "the nop after the syscall ran, once")
	}
}

func TestOracleLength(t *testing.T) {
	o := oracle(t)
	tests := []struct {
		name string
		code []byte
		want int
		err  error
	}{
		{"90 nop", []byte{0x90}, 1, nil},
		{"90 90 two nops", []byte{0x90, 0x90}, 1, nil},
		{"48 01 d8 add rax,rbx", []byte{0x48, 0x01, 0xd8}, 3, nil},
		{"e8 rel32 call", []byte{0xe8, 0, 0, 0, 0}, 5, nil},
		{"eb fe jmp to itself", []byte{0xeb, 0xfe}, 2, nil},
		{"48 8b 04 25 disp32 mov rax,[abs] faulting", []byte{0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0}, 8, nil},
		{"66 2e 0f 1f 84 00 00 00 00 00 long nop", []byte{0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0}, 10, nil},
		{"48 c7 c0 00 00 00 mov rax,imm32 cut short", []byte{0x48, 0xc7, 0xc0, 0, 0, 0}, 0, ErrTooShort},
		{"0f 0b ud2", []byte{0x0f, 0x0b}, 0, ErrIllegal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := o.Length(tt.code)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, n)
		})
	}
}

func BenchmarkOracleRun(b *testing.B) {
	o := oracle(b)
	code := []byte{0x48, 0x01, 0x18} // add [rax], rbx
	st := baseState(len(code))
	st.Regs.GPR[regs.RAX] = DataAddr + 64
	var out Outcome
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := o.Run(code, st, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOracleLength(b *testing.B) {
	o := oracle(b)
	code := []byte{0x48, 0x01, 0x18} // add [rax], rbx
	for i := 0; i < b.N; i++ {
		if _, err := o.Length(code); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOracleCPULength(t *testing.T) {
	o := oracle(t)
	n, err := o.CPULength([]byte{0x48, 0xc7, 0xc0, 0, 0, 0}) // mov rax, imm32 missing a byte
	require.NoError(t, err)
	assert.Equal(t, 7, n, "the CPU's own length, reading into the padding")
	// f3 0f 78 is undefined: the CPU fetches two immediate bytes (the
	// EXTRQ/INSERTQ layout) and then refuses it.
	_, err = o.CPULength([]byte{0xf3, 0x0f, 0x78, 0x30})
	assert.ErrorIs(t, err, ErrIllegal)
	n, err = o.CPULength([]byte{0x90, 0x90})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// TestOracleNoncanonicalRSP checks that a state the CPU cannot be resumed
// with (a non-canonical rsp, on CPUs whose IRETQ refuses it) is reported as
// ErrUnrunnable, and that an instruction's own #GP, which raises the same
// signal, is still reported as a fault.
func TestOracleNoncanonicalRSP(t *testing.T) {
	o := oracle(t)
	const wild = 0x0000800000000000
	nop := []byte{0x90}
	st := baseState(1)
	st.Regs.GPR[regs.RSP] = wild
	var out Outcome
	err := o.Run(nop, st, &out)
	enters := err == nil
	if enters {
		assert.Zero(t, out.Signal)
		assert.Equal(t, uint64(wild), out.Regs.GPR[regs.RSP])
	} else {
		require.ErrorIs(t, err, ErrUnrunnable)
	}
	t.Logf("the CPU can be resumed with a non-canonical rsp: %v", enters)

	// mov rax, [rbx] with a non-canonical rbx raises #GP itself.
	gp := []byte{0x48, 0x8b, 0x03}
	for _, rip := range []uint64{codeEnd - uint64(len(gp)), CodePage, CodePage + 0x100} {
		st := baseState(len(gp))
		st.Regs.RIP = rip
		st.Regs.GPR[regs.RBX] = 0x8000000000000000
		require.NoError(t, o.Run(gp, st, &out), "canonical rsp")
		assert.Equal(t, unix.SIGSEGV, out.Signal)
		assert.Equal(t, int32(siKernel), out.Code)
		assert.Equal(t, rip, out.Regs.RIP)

		var before, after [PageSize]byte
		_, err := unix.Pread(o.mem, before[:], int64(CodePage))
		require.NoError(t, err)
		st.Regs.GPR[regs.RSP] = wild
		err = o.Run(gp, st, &out)
		if enters {
			require.NoError(t, err)
			assert.Equal(t, unix.SIGSEGV, out.Signal)
		} else {
			require.ErrorIs(t, err, ErrUnrunnable)
		}
		// The byte the check borrows is put back, in the sandbox and
		// in the shadow the emulator's code page is copied from.
		_, err = unix.Pread(o.mem, after[:], int64(CodePage))
		require.NoError(t, err)
		assert.Equal(t, before, after)
		assert.Equal(t, o.code, after)
	}
}
