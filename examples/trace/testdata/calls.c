/* The workload of compare.sh: N calls of a libc function through the PLT
 * (so that ltrace sees them too), and a checksum. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 10000;
	long s = 0;
	for (long i = 0; i < n; i++)
		s += atoi("42");
	printf("%ld\n", s);
	return 0;
}
