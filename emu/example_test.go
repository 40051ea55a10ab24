package emu_test

import (
	"fmt"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// Step applies an instruction to registers and memory, here an in-memory
// address space with one stack page: what a probe hit does to a stopped
// thread, without a thread.
func ExampleStep() {
	var m memio.Pages
	if err := m.Map(0x7000, 0x1000, memio.ProtRW); err != nil {
		panic(err)
	}
	var r regs.Regs
	r.GPR[regs.RBP] = 0x1122334455667788
	r.GPR[regs.RSP] = 0x8000
	r.RIP = 0x401000

	in, err := decode.Decode([]byte{0x55}, r.RIP) // push rbp
	if err != nil {
		panic(err)
	}
	if err := emu.Step(in, &r, &m); err != nil {
		panic(err)
	}
	top, _ := m.ReadUint(r.GPR[regs.RSP], 8)
	fmt.Printf("rip %#x rsp %#x [rsp] %#x\n", r.RIP, r.GPR[regs.RSP], top)

	// A fault changes nothing: the stack page is gone below 0x7000.
	r.GPR[regs.RSP] = 0x7000
	err = emu.Step(in, &r, &m)
	fmt.Printf("%v; rip still %#x, rsp still %#x\n", err, r.RIP, r.GPR[regs.RSP])
	// Output:
	// rip 0x401001 rsp 0x7ff8 [rsp] 0x1122334455667788
	// memio: write fault at 0x6ff8: address not mapped; rip still 0x401001, rsp still 0x7000
}
