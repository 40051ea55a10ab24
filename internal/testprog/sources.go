package testprog

import "testing"

// CMain is compiled with `cc -g -O0`. Line numbers matter: the tests look
// for lines by the markers in comments.
const CMain = `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int helper_a(int);
int helper_b(int);

__attribute__((noinline)) int add(int a, int b)
{
	return a + b; /* LINE_ADD */
}

/* Hand-written bodies with exactly known bytes and returns:
   two_rets: 85 ff | 74 06 | b8 01 00 00 00 | c3 | 31 c0 | f3 c3 | f2 c3 | c2 00 00
   no_ret:   31 c0 | e9 rel32 (a tail call to add) */
__asm__(
	".text\n"
	".globl two_rets\n"
	".type two_rets,@function\n"
	"two_rets:\n"
	"	test %edi,%edi\n"
	"	.byte 0x74, 0x06\n"
	"	mov $1,%eax\n"
	"	ret\n"
	"	xor %eax,%eax\n"
	"	.byte 0xf3, 0xc3\n"
	"	.byte 0xf2, 0xc3\n"
	"	ret $0\n"
	".size two_rets, .-two_rets\n"
	".globl no_ret\n"
	".type no_ret,@function\n"
	"no_ret:\n"
	"	xor %eax,%eax\n"
	"	jmp add\n"
	".size no_ret, .-no_ret\n"
	".globl bad_body\n"
	".type bad_body,@function\n"
	"bad_body:\n"
	"	nop\n"
	"	.byte 0x0f, 0x0b, 0x48\n"
	".size bad_body, .-bad_body\n"
);

int main(int argc, char **argv)
{
	int s = add(argc, 2) + helper_a(argc) + helper_b(argc);
	if (argc > 1) {
		char buf[1];
		/* Block until the test closes our stdin, so it can read our maps. */
		while (read(0, buf, 1) > 0) {
		}
	}
	printf("%d\n", s);
	return 0;
}
`

// CHelperA and CHelperB are two units each with a static function named "helper": an ambiguous name.
const CHelperA = `__attribute__((noinline)) static int helper(int x) { return x * 3; }
int helper_a(int x) { return helper(x) + 1; }

/* A function symbol of size 0 and no unwind entry, as hand-written
   assembly without .size gives. */
__asm__(".text\n.globl nosize\n.type nosize,@function\nnosize:\n\tmov $7,%eax\n\tret\n");
`

const CHelperB = `__attribute__((noinline)) static int helper(int x) { return x * 5; }
int helper_b(int x) { return helper(x) + 2; }
`

const GoMain = `package main

import (
	"fmt"
	"os"
)

type T struct{ n int }

//go:noinline
func (t *T) M(x int) int { return t.n + x }

//go:noinline
func hot(a, b int) int {
	return a*b + 1 // LINE_HOT
}

func main() {
	t := &T{n: len(os.Args)}
	fmt.Println(hot(t.M(1), 2))
}
`

// CSources are the C test program's files.
var CSources = map[string]string{"prog.c": CMain, "helper_a.c": CHelperA, "helper_b.c": CHelperB}

// CFiles are the C test program's files in compilation order.
var CFiles = []string{"prog.c", "helper_a.c", "helper_b.c"}

// CProg builds the C test program once (PIE, -g -O0) and returns its path.
func CProg(t testing.TB) string {
	t.Helper()
	return C(t, "prog", "cc", CSources, CFiles, "-g", "-O0", "-fPIE", "-pie")
}

// GoProgs builds GoMain twice: with symbols and DWARF, and stripped
// (-s -w).
func GoProgs(t testing.TB) (full, stripped string) {
	t.Helper()
	return Go(t, "full", GoMain), Go(t, "stripped", GoMain, "-ldflags=-s -w")
}
