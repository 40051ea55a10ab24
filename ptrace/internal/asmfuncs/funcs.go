// Package asmfuncs holds functions with known first instructions, the
// probe sites of the ptrace package's tests. Each is assembly with no frame
// and no stack check, so its first instruction is exactly the one named.
package asmfuncs

import "unsafe"

// PushRBP starts with push rbp (55).
func PushRBP() uint64

// SubRSP starts with sub rsp, 0x18 (48 83 ec 18).
func SubRSP() uint64

// MovImm starts with mov eax, 42 (b8 2a 00 00 00).
func MovImm() uint64

// Lea starts with lea rax, [rsp+8] (48 8d 44 24 08) and returns that.
func Lea() uint64

// CmpStack starts with cmp rsp, [r14+0x10] (49 3b 66 10), Go's stack check.
func CmpStack() uint64

// RipLoad starts with a rip-relative load of Word.
func RipLoad() uint64

// CallLeaf starts with call rel32 to a function returning 7.
func CallLeaf() uint64

// Cpuid starts with cpuid (0f a2), which only the CPU can run.
func Cpuid() uint64

// Deref starts with mov rax, [rax]: it loads from p, and faults for a bad p.
func Deref(p uintptr) uint64

// Trap runs the program's own int3 (cc) and returns 1.
func Trap() uint64

// Ud2 starts with ud2 (0f 0b), which the decoder rejects. Never call it.
func Ud2()

// Word is what RipLoad reads.
var Word uint64 = 0x1122334455667788

// Site names a probe site.
type Site int

// The probe sites, one per function (SiteDeref is the load Deref jumps to).
const (
	SitePushRBP Site = iota
	SiteSubRSP
	SiteMovImm
	SiteLea
	SiteCmpStack
	SiteRipLoad
	SiteCallLeaf
	SiteCpuid
	SiteDeref
	SiteTrap
	SiteUd2
	NumSites
)

var siteNames = [NumSites]string{"push rbp", "sub rsp", "mov eax,imm", "lea", "cmp rsp,[r14+16]",
	"rip-relative mov", "call rel32", "cpuid", "mov rax,[rax]", "int3", "ud2"}

func (s Site) String() string { return siteNames[s] }

func sites(a *[NumSites]uintptr)

// Addr returns the address of the first instruction of site s (the
// assembly function itself, not a Go ABI wrapper).
func Addr(s Site) uint64 {
	var a [NumSites]uintptr
	sites(&a)
	return uint64(a[s])
}

// CallAll calls every function but Deref and Trap once and returns the sum of
// their results, a checksum that does not depend on being traced.
func CallAll() uint64 {
	return PushRBP() + SubRSP() + MovImm() + Lea() + CmpStack() + RipLoad() + CallLeaf() + Cpuid() + Deref(uintptr(unsafePointerOfWord()))
}

func unsafePointerOfWord() unsafe.Pointer { return unsafe.Pointer(&Word) }
