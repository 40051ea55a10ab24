// A function dispatching through a jump table: a region at its entry is
// proved from the table's entries. Prints what it computed, the same
// traced or not.
#include <stdio.h>
#include <stdlib.h>

volatile long g;

__attribute__((noinline)) long j_switch(long x) {
	switch (x) {
	case 0: g += 3; break;
	case 1: g *= 5; break;
	case 2: g -= 7; break;
	case 3: g ^= 11; break;
	case 4: g += 13; break;
	case 5: g *= 3; break;
	case 6: g -= 1; break;
	case 7: g ^= 0x55; break;
	default: g = 0;
	}
	return g;
}

// j_mid(x, y): y+7, or y when x is 0. Its entry is a region of three,
// with the je in the middle of it: taken from the pad, it leaves for 1f.
long j_mid(int x, long y);
__asm__(".text\n.globl j_mid\n.type j_mid,@function\nj_mid:\n"
        "  test %edi, %edi\n"
        "  je 1f\n"
        "  lea 7(%rsi), %rax\n"
        "  ret\n"
        "1: mov %rsi, %rax\n"
        "  ret\n"
        ".size j_mid,.-j_mid\n");

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 1000, s = 0;
	for (long i = 0; i < n; i++)
		s += j_switch(i % 9) + j_mid(i % 4, i);
	printf("sum %ld\n", s);
	return 0;
}
