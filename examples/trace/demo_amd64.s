#include "textflag.h"

// Each function has no frame and no stack check, so its first instruction
// is exactly the one its name promises: the demo probes that instruction.

// push rbp (55): emulated.
TEXT ·demoPush(SB), NOSPLIT|NOFRAME, $0-8
	PUSHQ BP
	POPQ  BP
	MOVQ  $1, ret+0(FP)
	RET

// sub rsp, 0x28 (48 83 ec 28): emulated.
TEXT ·demoSub(SB), NOSPLIT|NOFRAME, $0-8
	SUBQ $0x28, SP
	ADDQ $0x28, SP
	MOVQ $2, ret+0(FP)
	RET

// cmp rsp, [r14+0x10] (49 3b 66 10), Go's stack-bound check: emulated.
TEXT ·demoStackCheck(SB), NOSPLIT|NOFRAME, $0-8
	CMPQ SP, 16(R14)
	MOVQ $3, ret+0(FP)
	RET

// mov rax, [rip+disp32]: a rip-relative load, emulated.
TEXT ·demoRipLoad(SB), NOSPLIT|NOFRAME, $0-8
	MOVQ ·demoWord(SB), AX
	MOVQ AX, ret+0(FP)
	RET

// lock inc qword [rip+disp32]: atomic, so never emulated (other threads run
// meanwhile); it runs out of line with its displacement relocated.
TEXT ·demoLockInc(SB), NOSPLIT|NOFRAME, $0-8
	LOCK
	INCQ ·demoCounter(SB)
	MOVQ $4, ret+0(FP)
	RET

// cpuid (0f a2): only the CPU can run it; out of line.
TEXT ·demoCpuid(SB), NOSPLIT|NOFRAME, $0-8
	CPUID
	MOVQ $5, ret+0(FP)
	RET

// pxor xmm0, xmm0 (66 0f ef c0): SSE, out of line.
TEXT ·demoSSE(SB), NOSPLIT|NOFRAME, $0-8
	PXOR X0, X0
	MOVQ X0, AX
	ADDQ $6, AX
	MOVQ AX, ret+0(FP)
	RET
