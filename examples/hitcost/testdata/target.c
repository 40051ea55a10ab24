// The target of compare.sh: calls f (or, for the floor, g) N times and
// prints a checksum. f's first instruction is push rbp; g is f with the
// program's own int3 in front, which only a tracer that swallows SIGTRAPs
// survives.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long f(unsigned long);
unsigned long g(unsigned long);

__asm__(".text\n"
        ".globl f\n.type f,@function\nf:\n"
        "\tpush %rbp\n\tmov %rsp,%rbp\n\tlea 1(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".size f,.-f\n"
        ".globl g\n.type g,@function\ng:\n"
        "\tint3\n\tpush %rbp\n\tmov %rsp,%rbp\n\tlea 1(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".size g,.-g\n");

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 1000;
	unsigned long (*fn)(unsigned long) = argc > 2 && strcmp(argv[2], "floor") == 0 ? g : f;
	unsigned long s = 0;
	for (long i = 0; i < n; i++)
		s += fn(i);
	printf("%lu\n", s);
	return 0;
}
