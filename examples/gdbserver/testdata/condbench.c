// condbench.sh's program: calls f(i) N times and prints the microseconds
// one call took on average, the loop timed by the program itself.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) long f(long i) { return i * 2; }

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 10000, s = 0;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		s += f(i);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3;
	printf("calls %ld sum %ld us_per_call %.2f\n", n, s, us / n);
	return 0;
}
