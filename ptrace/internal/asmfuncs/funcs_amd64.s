#include "textflag.h"

TEXT ·PushRBP(SB), NOSPLIT|NOFRAME, $0-8
	PUSHQ BP
	MOVQ (SP), AX
	POPQ BP
	MOVQ $1, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·SubRSP(SB), NOSPLIT|NOFRAME, $0-8
	SUBQ $0x18, SP
	ADDQ $0x18, SP
	MOVQ $2, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·MovImm(SB), NOSPLIT|NOFRAME, $0-8
	MOVL $42, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·Lea(SB), NOSPLIT|NOFRAME, $0-8
	LEAQ 8(SP), AX
	SUBQ SP, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·CmpStack(SB), NOSPLIT|NOFRAME, $0-8
	CMPQ SP, 16(R14)
	// The result must not depend on the flags: a preemption request
	// changes stackguard0 at any time.
	MOVQ $3, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·RipLoad(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ ·Word(SB), AX
	MOVQ AX, ret+0(FP)
	RET

TEXT leaf<>(SB), NOSPLIT|NOFRAME, $0
	MOVQ $7, AX
	RET

TEXT ·CallLeaf(SB), NOSPLIT|NOFRAME, $0-8
	CALL leaf<>(SB)
	MOVQ AX, ret+0(FP)
	RET

TEXT ·Cpuid(SB), NOSPLIT|NOFRAME, $0-8
	CPUID
	MOVQ $4, AX
	MOVQ AX, ret+0(FP)
	RET

TEXT ·Deref(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ p+0(FP), AX
	JMP  deref<>(SB)

TEXT ·Trap(SB), NOSPLIT|NOFRAME, $0-8
	BYTE $0xcc
	MOVQ $1, AX
	MOVQ AX, ret+0(FP)
	RET

// deref's first instruction is the load; Deref puts the pointer in AX first.
TEXT deref<>(SB), NOSPLIT|NOFRAME, $0-16
	MOVQ (AX), AX
	MOVQ AX, ret+8(FP)
	RET

// sites stores the entry addresses of the probe sites, in Site order.
TEXT ·sites(SB), NOSPLIT, $0-8
	MOVQ a+0(FP), DI
	LEAQ ·PushRBP(SB), AX
	MOVQ AX, 0(DI)
	LEAQ ·SubRSP(SB), AX
	MOVQ AX, 8(DI)
	LEAQ ·MovImm(SB), AX
	MOVQ AX, 16(DI)
	LEAQ ·Lea(SB), AX
	MOVQ AX, 24(DI)
	LEAQ ·CmpStack(SB), AX
	MOVQ AX, 32(DI)
	LEAQ ·RipLoad(SB), AX
	MOVQ AX, 40(DI)
	LEAQ ·CallLeaf(SB), AX
	MOVQ AX, 48(DI)
	LEAQ ·Cpuid(SB), AX
	MOVQ AX, 56(DI)
	LEAQ deref<>(SB), AX
	MOVQ AX, 64(DI)
	LEAQ ·Trap(SB), AX
	MOVQ AX, 72(DI)
	LEAQ ·Ud2(SB), AX
	MOVQ AX, 80(DI)
	RET

TEXT ·Ud2(SB), NOSPLIT|NOFRAME, $0
	BYTE $0x0f
	BYTE $0x0b
	RET
