// The tracee of the recording tests. r_fn's first instruction is 5 bytes
// (a jump replaces it alone); each mode calls it with arguments the test
// can check in every record, and prints what it computed, the same traced
// or not.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <asm/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long r_fn(long tid, long i, long a, long b, long c, long d);

__asm__(
    ".text\n"
    ".globl r_fn\n.type r_fn,@function\n"
    "r_fn:\n"
    "  movl $1, %eax\n" // b8 01 00 00 00: the probe
    "  addq %rdi, %rax\n"
    "  addq %rsi, %rax\n"
    "  addq %r9, %rax\n"
    "  ret\n"
    ".size r_fn,.-r_fn\n");

static long n;
static int pace;

// call makes the i-th call of thread tid (index k): rdx, rcx and r8 are
// derived from the others, r9 is the thread's index.
static long call(long tid, long k, long i) {
	volatile long spin = 0;
	for (int j = 0; j < 50; j++)
		spin++; // some work between hits
	return r_fn(tid, i, i * 3, i ^ tid, 7, k);
}

static void *worker(void *arg) {
	long k = (long)arg, tid = syscall(SYS_gettid), sum = 0;
	for (long i = 0; i < n; i++) {
		sum += call(tid, k, i);
		if (pace && i % 200 == 199) {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, 0); // the CPU to the tracer's consumer now and then
		}
	}
	return (void *)(sum - tid * n);
}

// rawcall makes a system call without libc: a thread whose FS base is 0
// cannot touch errno or anything else in its TLS.
static long rawcall(long nr, long a, long b) {
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
	return ret;
}

static volatile int nofsDone;
static long nofsSum;

// nofsWorker clears its FS base, as code running before its TLS is set up
// has it, makes its n calls and exits by the system call: no libc after
// the arch_prctl.
static void *nofsWorker(void *arg) {
	long tid = syscall(SYS_gettid), sum = 0;
	(void)arg;
	if (rawcall(SYS_arch_prctl, ARCH_SET_FS, 0) != 0) {
		nofsSum = -1;
	} else {
		for (long i = 0; i < n; i++)
			sum += call(tid, 0, i);
		nofsSum = sum - tid * n;
	}
	__atomic_store_n(&nofsDone, 1, __ATOMIC_RELEASE);
	rawcall(SYS_exit, 0, 0);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	n = atol(argv[2]);
	const char *mode = argv[1];
	if (!strcmp(mode, "threads")) {
		int nt = 16;
		pace = argc > 3 && !strcmp(argv[3], "pace");
		pthread_t th[64];
		long sum = 0;
		for (long k = 0; k < nt; k++)
			pthread_create(&th[k], 0, worker, (void *)k);
		for (int k = 0; k < nt; k++) {
			void *r;
			pthread_join(th[k], &r);
			sum += (long)r;
		}
		printf("sum %ld\n", sum);
	} else if (!strcmp(mode, "fork")) {
		// The parent's calls have r9 = 0, the child's r9 = 1.
		long tid = syscall(SYS_gettid), sum = 0;
		for (long i = 0; i < n; i++)
			sum += call(tid, 0, i);
		fflush(stdout);
		pid_t c = fork();
		if (c == 0) {
			long ct = syscall(SYS_gettid), s = 0;
			for (long i = 0; i < n; i++)
				s += call(ct, 1, i);
			printf("child %ld\n", s - ct * n - n);
			return 0;
		}
		int st;
		waitpid(c, &st, 0);
		for (long i = n; i < 2 * n; i++)
			sum += call(tid, 0, i);
		printf("parent %ld status %d\n", sum - 2 * tid * n, st);
	} else if (!strcmp(mode, "exec")) {
		long tid = syscall(SYS_gettid), sum = 0;
		for (long i = 0; i < n; i++)
			sum += call(tid, 0, i);
		printf("sum %ld\n", sum - tid * n);
		fflush(stdout);
		execl("/bin/echo", "echo", "execed", (char *)0);
		return 3;
	} else if (!strcmp(mode, "nofs")) {
		pthread_t th;
		pthread_create(&th, 0, nofsWorker, 0);
		while (!__atomic_load_n(&nofsDone, __ATOMIC_ACQUIRE)) {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, 0);
		}
		printf("sum %ld\n", nofsSum);
	} else if (!strcmp(mode, "forever")) {
		long tid = syscall(SYS_gettid), sum = 0;
		printf("ready\n");
		fflush(stdout);
		for (long i = 0;; i++) {
			sum += call(tid, 0, i);
			if (i % 1000 == 0) {
				struct timespec ts = {0, 100000};
				nanosleep(&ts, 0);
			}
			if (n > 0 && i + 1 == n)
				break;
		}
		printf("sum %ld\n", sum - tid * n);
	}
	return 0;
}
