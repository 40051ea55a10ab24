package decode_test

import (
	"fmt"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// Decoding the bytes under a would-be probe gives the instruction's length,
// its operands (rip-relative ones resolved to absolute addresses) and the
// decoder's verdict: a copy can run it, only an emulator can, or nothing can.
// Whether the emulator runs it is emu.Supports' answer.
func ExampleDecode() {
	for _, code := range [][]byte{
		{0x55}, // push rbp
		{0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00}, // mov rax, [rip+0x10]
		{0xf0, 0x48, 0xff, 0x00},                   // lock inc qword [rax]
		{0x0f, 0x0b},                               // ud2
		{0xe3, 0x10},                               // jrcxz: a copy would branch from the wrong place
	} {
		in, err := decode.Decode(code, 0x401000)
		if err != nil {
			fmt.Println(err)
			continue
		}
		emulated, _ := emu.Supports(in)
		fmt.Printf("%-30s len %d  %-11v emulated %-5v next %#x", in, in.Len, in.Verdict, emulated, in.Next())
		if in.RIPRel {
			fmt.Printf("  reads %#x", in.Args[1].Mem.Disp)
		}
		if in.Verdict == decode.Refused {
			fmt.Printf("  (%s)", in.Reason)
		}
		fmt.Println()
	}
	// Output:
	// push rbp                       len 1  canrun      emulated true  next 0x401001
	// mov rax, qword ptr [rip+0x10]  len 7  canrun      emulated true  next 0x401007  reads 0x401017
	// lock inc qword ptr [rax]       len 4  canrun      emulated false next 0x401004
	// ud2                            len 2  refused     emulated false next 0x401002  (ud2: undefined instruction (always faults))
	// jrcxz 0x401012                 len 2  emulateonly emulated true  next 0x401002
}
