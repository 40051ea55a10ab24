package region_test

import (
	"fmt"

	"github.com/onetrap/onetrap/region"
)

// A C function's entry: push rbp (1 byte), mov rbp,rsp (3), sub rsp,16
// (4). No instruction of the function branches past its first byte, so a
// jump may replace the first three; their copy runs from the pad.
func ExamplePlan() {
	fn := []byte{
		0x55,             // push rbp
		0x48, 0x89, 0xe5, // mov rbp,rsp
		0x48, 0x83, 0xec, 0x10, // sub rsp,0x10
		0x31, 0xc0, // xor eax,eax
		0xc9, // leave
		0xc3, // ret
	}
	r, err := region.Plan(fn, 0x401000, 0x401000)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d bytes, %d instructions, back at %#x\n", r.Len, len(r.Insns), r.End())
	code, offs, err := r.Relocate(0x7f0000000000)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("% x, instructions at %v\n", code, offs)

	// A loop back to the second instruction refuses it.
	loop := append([]byte{0x55, 0x31, 0xc0, 0xff, 0xc0, 0x83, 0xf8, 0x0a, 0x75, 0xf7}, 0xc3)
	_, err = region.Plan(loop, 0x401000, 0x401000)
	fmt.Println(err)
	// Output:
	// 8 bytes, 3 instructions, back at 0x401008
	// 55 48 89 e5 48 83 ec 10, instructions at [0 1 4 8]
	// region: the instruction at 0x401008 jumps to 0x401001, inside the 5 bytes at 0x401000
}
