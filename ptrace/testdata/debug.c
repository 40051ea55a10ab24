// The debugger API's test program. Modes:
//   park N      N workers count in a loop while main calls target(20) once;
//               prints the result and how far the workers got.
//   recurse N   prints fact(N), computed recursively.
//   seq         calls seq(5) (a run of instructions to step) and prints it.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

unsigned long seq(unsigned long); // hand-written: see below

__asm__(".text\n"
        ".globl seq\n.type seq,@function\nseq:\n"
        "push %rbp\n"
        "mov %rsp,%rbp\n"
        "sub $0x20,%rsp\n"
        "mov %rdi,-0x8(%rbp)\n"
        "lea (%rdi,%rdi,2),%rax\n"
        "add $7,%rax\n"
        "cmp $100,%rax\n"
        "setb %cl\n"
        "movzbl %cl,%ecx\n"
        "shl $3,%rax\n"
        "xor %edx,%edx\n"
        "mov -0x8(%rbp),%rsi\n"
        "sub %rsi,%rax\n"
        "imul %rsi,%rax\n"
        "add %rcx,%rax\n"
        "mov %rbp,%rsp\n"
        "pop %rbp\n"
        "ret\n"
        ".size seq,.-seq\n");

static atomic_long spins;
static atomic_int stop;

__attribute__((noinline)) long target(long x) { return 2 * x + 1; }

__attribute__((noinline)) long fact(long n) { return n <= 1 ? 1 : n * fact(n - 1); }

static void *worker(void *arg) {
	(void)arg;
	while (!atomic_load(&stop))
		atomic_fetch_add(&spins, 1);
	return NULL;
}

static void sleep_ms(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "";
	long n = argc > 2 ? atol(argv[2]) : 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "park")) {
		pthread_t t[16];
		for (long i = 0; i < n; i++)
			pthread_create(&t[i], NULL, worker, NULL);
		sleep_ms(50);
		long r = target(20);
		long before = atomic_load(&spins);
		sleep_ms(50);
		atomic_store(&stop, 1);
		for (long i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		printf("target %ld workers %s\n", r, atomic_load(&spins) > before ? "ran" : "stuck");
		return 0;
	}
	if (!strcmp(mode, "recurse")) {
		printf("fact %ld\n", fact(n));
		return 0;
	}
	if (!strcmp(mode, "seq")) {
		printf("seq %lu\n", seq(5));
		return 0;
	}
	return 2;
}
