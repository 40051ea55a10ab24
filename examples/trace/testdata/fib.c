/* A small program for the README's examples: recursion, a string
 * argument, and malloc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile long sink;
__attribute__((noinline)) long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) int greet(const char *who) { sink++; return printf("hello, %s\n", who); }

int main(void) {
	char *volatile p = malloc(8192);
	memset(p, 1, 8192);
	sink += p[100];
	greet("world");
	printf("fib(4) = %ld\n", fib(4));
	free(p);
	return 0;
}
