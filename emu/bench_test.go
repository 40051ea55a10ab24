package emu_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/arch/x86/x86asm"

	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/regs"
)

// hot are the families of real probe sites, one typical instruction each.
var hot = []struct {
	family string
	code   string
}{
	{"push", "55"},                            // push rbp
	{"mov", "48 89 e5"},                       // mov rbp, rsp
	{"mov_load", "48 8b 45 f8"},               // mov rax, [rbp-8]
	{"mov_store", "48 89 45 f8"},              // mov [rbp-8], rax
	{"sub", "48 83 ec 18"},                    // sub rsp, 0x18
	{"lea", "4c 8d 64 24 f0"},                 // lea r12, [rsp-0x10]
	{"cmp", "49 3b 66 10"},                    // cmp rsp, [r14+0x10]
	{"test", "48 85 c0"},                      // test rax, rax
	{"endbr", "f3 0f 1e fa"},                  // endbr64
	{"jmp_plt", "ff 25 0a 08 00 00"},          // jmp [rip+...]
	{"call", "e8 00 10 00 00"},                // call rel32
	{"ret", "c3"},                             // ret
	{"pop", "5d"},                             // pop rbp
	{"shl", "48 c1 e0 03"},                    // shl rax, 3
	{"fs_load", "64 48 8b 04 25 28 00 00 00"}, // mov rax, fs:[0x28]
}

// hotState is a state in which every hot instruction succeeds.
func hotState() *tcase {
	return &tcase{
		regs: kv{x86asm.R14: data, x86asm.RAX: 5},
		fs:   data,
		mem:  []memw{{data + 0x10, 8, stackTop - 0x800}, {stackTop, 8, codeAt}, {d, 8, codeAt}},
	}
}

// Step allocates nothing on the hit path.
func TestStepAllocatesNothing(t *testing.T) {
	for _, h := range hot {
		t.Run(h.family, func(t *testing.T) {
			in := decodeHex(t, h.code, codeAt)
			c := hotState()
			r0, p := c.setup(t)
			var r regs.Regs
			allocs := testing.AllocsPerRun(200, func() {
				r = r0
				if err := emu.Step(in, &r, p); err != nil {
					panic(err)
				}
			})
			assert.Zero(t, allocs, "%s allocates", h.code)
		})
	}
}

func BenchmarkStep(b *testing.B) {
	for _, h := range hot {
		b.Run(h.family, func(b *testing.B) {
			in := decodeHex(b, h.code, codeAt)
			c := hotState()
			r0, p := c.setup(b)
			r := r0
			require.NoError(b, emu.Step(in, &r, p))
			b.ReportAllocs()
			for b.Loop() {
				r = r0
				if err := emu.Step(in, &r, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
