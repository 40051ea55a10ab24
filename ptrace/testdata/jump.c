// The tracee of the Jump (trapless probe) tests. Every probe site is an
// instruction of 5 bytes or more at a global label, so the test finds it
// in the symbol table. Each mode prints what it computed, the same traced
// or not.
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

long j_mov(void);
long j_flags(long a, long b);
long j_red(long a, long b);
long j_load(long *p);
long j_push(long a);
long j_into(long n);
extern char j_flags_probe[];

__asm__(
    ".text\n"
    ".globl j_mov\n.type j_mov,@function\n"
    "j_mov:\n"
    "  movl $42, %eax\n" // b8 2a 00 00 00: the probe
    "  ret\n"
    // cmp; probed 6-byte insn; setl: the flags must cross the pad, and
    // xmm2, set before, must be intact after.
    ".globl j_flags\n.type j_flags,@function\n"
    "j_flags:\n"
    "  movq %rdi, %xmm2\n"
    "  cmp %rsi, %rdi\n"
    ".globl j_flags_probe\n"
    "j_flags_probe:\n"
    "  movl $7, %r8d\n" // 41 b8 07 00 00 00
    "  setl %al\n"
    "  movzbl %al, %eax\n"
    "  movq %xmm2, %rcx\n"
    "  cmp %rcx, %rdi\n"
    "  je 1f\n"
    "  movl $99, %eax\n"
    "1: ret\n"
    // A leaf keeping data in its red zone across the probe.
    ".globl j_red\n.type j_red,@function\n"
    "j_red:\n"
    "  movq %rdi, -8(%rsp)\n"
    "  movq %rsi, -128(%rsp)\n"
    ".globl j_red_probe\n"
    "j_red_probe:\n"
    "  movl $5, %eax\n"
    "  addq -8(%rsp), %rax\n"
    "  addq -128(%rsp), %rax\n"
    "  ret\n"
    // A load the pad relocates, which faults for a bad pointer.
    ".globl j_load\n.type j_load,@function\n"
    "j_load:\n"
    "  movq 0x100(%rdi), %rax\n" // 48 8b 87 00 01 00 00
    "  ret\n"
    // A C entry: push rbp (1 byte), mov rbp,rsp (3), lea (4): a jump
    // replaces a proved region of three, with interior boundaries at +1
    // and +4.
    ".globl j_push\n.type j_push,@function\n"
    "j_push:\n"
    "  push %rbp\n"
    "  mov %rsp, %rbp\n"
    "  lea 1(%rdi), %rax\n"
    "  pop %rbp\n"
    "  ret\n"
    ".size j_push,.-j_push\n"
    // A loop that branches to byte 2 of the region a jump at j_into would
    // replace (xor 2 bytes + add 4): refused, it stays an INT3 probe.
    ".globl j_into\n.type j_into,@function\n"
    "j_into:\n"
    "  xorl %eax, %eax\n"
    "1: addq $3, %rax\n"
    "  decq %rdi\n"
    "  jnz 1b\n"
    "  ret\n"
    ".size j_into,.-j_into\n");

static long count(long n) {
	long s = 0;
	for (long i = 0; i < n; i++)
		s += j_mov();
	return s;
}

static long per_thread;
static void *worker(void *arg) {
	(void)arg;
	return (void *)count(per_thread);
}

static volatile long prof_calls;
static void on_prof(int sig) {
	(void)sig;
	prof_calls += j_push(prof_calls) - prof_calls;
}

static void *push_worker(void *arg) {
	(void)arg;
	long s = 0;
	for (long i = 0; i < per_thread; i++)
		s += j_push(i) - i;
	return (void *)s;
}

static sigjmp_buf env;
static volatile uintptr_t fault_rip, fault_addr;
static void on_segv(int sig, siginfo_t *si, void *ctx) {
	(void)sig;
	fault_rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
	fault_addr = (uintptr_t)si->si_addr;
	siglongjmp(env, 1);
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: jump MODE N\n");
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "loop")) {
		printf("sum %ld\n", count(n));
	} else if (!strcmp(mode, "threads")) {
		// threads N: 16 threads of N calls each.
		pthread_t th[16];
		per_thread = n;
		long sum = 0;
		for (int i = 0; i < 16; i++)
			pthread_create(&th[i], NULL, worker, NULL);
		for (int i = 0; i < 16; i++) {
			void *r;
			pthread_join(th[i], &r);
			sum += (long)r;
		}
		printf("sum %ld\n", sum);
	} else if (!strcmp(mode, "push")) {
		// push N: 16 threads of N calls of j_push each, after "ready".
		pthread_t th[16];
		per_thread = n;
		long sum = 0;
		printf("ready\n");
		for (int i = 0; i < 16; i++)
			pthread_create(&th[i], NULL, push_worker, NULL);
		for (int i = 0; i < 16; i++) {
			void *r;
			pthread_join(th[i], &r);
			sum += (long)r;
		}
		printf("sum %ld\n", sum);
	} else if (!strcmp(mode, "prof")) {
		// prof N: N calls of j_push while ITIMER_PROF fires at 10 kHz,
		// its handler calling j_push too; prints the calls made.
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_prof;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGPROF, &sa, NULL);
		struct itimerval it = {{0, 100}, {0, 100}};
		setitimer(ITIMER_PROF, &it, NULL);
		long s = 0;
		for (long i = 0; i < n; i++)
			s += j_push(i) - i;
		struct itimerval off = {{0, 0}, {0, 0}};
		setitimer(ITIMER_PROF, &off, NULL);
		printf("ok %d calls %ld\n", s == n, n + prof_calls);
	} else if (!strcmp(mode, "into")) {
		long s = 0;
		for (long i = 1; i <= n; i++)
			s += j_into(i % 7 + 1);
		printf("sum %ld\n", s);
	} else if (!strcmp(mode, "flags")) {
		long bad = 0;
		for (long i = 0; i < n; i++) {
			if (j_flags(i, i + 1) != 1 || j_flags(i + 1, i) != 0)
				bad++;
			if (j_red(i, 3 * i) != 5 + 4 * i)
				bad++;
		}
		printf("bad %ld\n", bad);
	} else if (!strcmp(mode, "fault")) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_segv;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSEGV, &sa, NULL);
		long x[64] = {0};
		x[32] = 9;
		long ok = 0;
		for (long i = 0; i < n; i++)
			ok += j_load(x) == 9;
		if (sigsetjmp(env, 1) == 0) {
			j_load(NULL);
			printf("no fault\n");
		} else {
			printf("ok %ld fault rip %s addr %#lx\n", ok,
			    fault_rip == (uintptr_t)j_load ? "at j_load" : "elsewhere", (unsigned long)fault_addr);
		}
	} else if (!strcmp(mode, "timed")) {
		// timed N: calls for N ms, printing "ready" first.
		printf("ready\n");
		double end = now() + n / 1000.0;
		long calls = 0, sum = 0;
		while (now() < end) {
			sum += count(1000);
			calls += 1000;
		}
		printf("ok %d\n", sum == 42 * calls);
	} else if (!strcmp(mode, "fork")) {
		long s = count(n);
		fflush(stdout);
		pid_t c = fork();
		if (c == 0) {
			unsigned char b = *(volatile unsigned char *)j_mov;
			printf("child sum %ld byte %02x\n", count(n), b);
			fflush(stdout);
			_exit(0);
		}
		int st;
		waitpid(c, &st, 0);
		s += count(n);
		printf("parent sum %ld child %d\n", s, WEXITSTATUS(st));
	} else if (!strcmp(mode, "vfork")) {
		long s = count(n);
		pid_t c = vfork();
		if (c == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		int st;
		waitpid(c, &st, 0);
		s += count(n);
		printf("sum %ld true %d\n", s, WEXITSTATUS(st));
	} else {
		fprintf(stderr, "unknown mode\n");
		return 2;
	}
	return 0;
}
