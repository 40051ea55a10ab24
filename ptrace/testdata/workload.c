// The C tracee of the ptrace tests: threads calling probed functions while
// signals arrive, its own int3 and SIGTRAP, a fork, a vfork, an exec.
// Everything it prints on stdout is the same traced or not; stderr names
// the threads and how many calls each made.
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 8
#define NSIGNALS 200

unsigned long f_push(unsigned long);   // push rbp
unsigned long f_sub(unsigned long);    // sub rsp, 24
unsigned long f_riprel(unsigned long); // mov rax, [rip+base]
unsigned long g_sig(unsigned long);    // push rbx (called from the signal handler)
void own_trap(void);                   // int3
unsigned long f_div(unsigned long, unsigned long); // div rsi at f_div_insn
extern char f_div_insn[];
void ready(void); // push rbp: called when the far code is in place

unsigned long base = 1000;

__asm__(".text\n"
        ".globl f_push\n.type f_push,@function\nf_push:\n"
        "\tpush %rbp\n\tmov %rsp,%rbp\n\tlea 1(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".globl f_sub\n.type f_sub,@function\nf_sub:\n"
        "\tsub $24,%rsp\n\tlea 2(%rdi),%rax\n\tadd $24,%rsp\n\tret\n"
        ".globl f_riprel\n.type f_riprel,@function\nf_riprel:\n"
        "\tmov base(%rip),%rax\n\tadd %rdi,%rax\n\tret\n"
        ".globl g_sig\n.type g_sig,@function\ng_sig:\n"
        "\tpush %rbx\n\tlea 3(%rdi),%rax\n\tpop %rbx\n\tret\n"
        ".globl f_div\n.type f_div,@function\nf_div:\n"
        "\tmov %rdi,%rax\n\txor %edx,%edx\n.globl f_div_insn\nf_div_insn:\n\tdiv %rsi\n\tret\n"
        ".globl ready\n.type ready,@function\nready:\n\tpush %rbp\n\tpop %rbp\n\tret\n"
        ".globl own_trap\n.type own_trap,@function\nown_trap:\n"
        "\tint3\n\tret\n");

static long iters;
static atomic_ulong sig_handled, sig_sum, traps;
static atomic_int signals_done;
static volatile unsigned long sig_arg;

static void on_usr1(int sig) {
	(void)sig;
	atomic_fetch_add(&sig_sum, g_sig(sig_arg));
	atomic_fetch_add(&sig_handled, 1);
}

static void on_trap(int sig) {
	(void)sig;
	atomic_fetch_add(&traps, 1);
}

struct worker {
	pthread_t th;
	long tid;
	unsigned long sum, push, sub, rip;
};

static void *work(void *arg) {
	struct worker *w = arg;
	w->tid = syscall(SYS_gettid);
	for (long i = 0; i < iters; i++) {
		if (i % 2 == 0) {
			w->sum += f_push(i);
			w->push++;
		} else {
			w->sum += f_sub(i);
			w->sub++;
		}
		if (i % 10 == 0) {
			w->sum += f_riprel(i);
			w->rip++;
		}
	}
	while (!atomic_load(&signals_done))
		sched_yield();
	return NULL;
}

extern char __executable_start[], etext[];
static atomic_ulong usr2, usr2_bad;

// Where a signal finds the thread: it must be in the program's text, never
// in the tracer's XOL area.
static void on_usr2(int sig, siginfo_t *si, void *ctx) {
	(void)sig;
	(void)si;
	unsigned long rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
	if (rip < (unsigned long)__executable_start || rip >= (unsigned long)etext)
		atomic_fetch_add(&usr2_bad, 1);
	atomic_fetch_add(&usr2, 1);
}

static sigjmp_buf fpe_jmp;
static volatile unsigned long fpe_addr, fpe_rip;

static void on_fpe(int sig, siginfo_t *si, void *ctx) {
	(void)sig;
	fpe_addr = (unsigned long)si->si_addr;
	fpe_rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
	siglongjmp(fpe_jmp, 1);
}

static void *exec_from_thread(void *argv0) {
	for (int i = 0; i < 200; i++)
		f_push(i);
	execl("/proc/self/exe", (char *)argv0, "after-exec", (char *)NULL);
	_exit(4);
}

int main(int argc, char **argv) {
	if (argc > 2 && strcmp(argv[1], "far") == 0) {
		// Code far (more than 2GB) from the program's text, loading a word
		// rip-relative from its own page: mov rax,[rip+0xf9]; add rax,rdi;
		// ret.
		static const unsigned char code[] = {0x48, 0x8b, 0x05, 0xf9, 0, 0, 0, 0x48, 0x01, 0xf8, 0xc3};
		unsigned char *pg = mmap((void *)0x600000000000UL, 4096, PROT_READ | PROT_WRITE,
		                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (pg != (void *)0x600000000000UL)
			return 3;
		memcpy(pg, code, sizeof code);
		*(unsigned long *)(pg + 0x100) = 1000;
		mprotect(pg, 4096, PROT_READ | PROT_EXEC);
		ready();
		unsigned long (*fn)(unsigned long) = (unsigned long (*)(unsigned long))pg;
		long n = atol(argv[2]);
		unsigned long s = 0;
		for (long i = 0; i < n; i++)
			s += fn(i) + f_riprel(i);
		printf("far sum %lu\n", s);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "divzero") == 0) {
		// A division by zero: the SIGFPE names the div instruction, in
		// si_addr and in the context's rip, wherever a tracer ran it.
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_fpe;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGFPE, &sa, NULL);
		unsigned long q = f_div(10, 2) + f_div(9, 3);
		int faults = 0;
		for (int i = 0; i < 3; i++)
			if (sigsetjmp(fpe_jmp, 1) == 0)
				q += f_div(1, 0);
			else
				faults += fpe_addr == (unsigned long)f_div_insn && fpe_rip == (unsigned long)f_div_insn;
		printf("quotients %lu, %d faults at the div\n", q, faults);
		return 0;
	}
	if (argc > 2 && strcmp(argv[1], "sigstep") == 0) {
		// Each call is hit by a probe whose handler signals this thread.
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_usr2;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigaction(SIGUSR2, &sa, NULL);
		long n = atol(argv[2]);
		unsigned long s = 0;
		for (long i = 0; i < n; i++) {
			s += f_riprel(i) + f_sub(i) + f_push(i);
			while (atomic_load(&usr2) < (unsigned long)(i + 1) * 3)
				sched_yield();
		}
		printf("sum %lu usr2 %lu outside text %lu\n", s, (unsigned long)usr2, (unsigned long)usr2_bad);
		return 0;
	}
	if (argc > 3 && strcmp(argv[1], "spin") == 0) {
		// Threads racing through the probed functions while a tracer
		// comes and goes.
		int nt = atoi(argv[2]);
		iters = atol(argv[3]);
		struct worker w[NTHREADS];
		memset(w, 0, sizeof w);
		atomic_store(&signals_done, 1);
		for (int i = 0; i < nt && i < NTHREADS; i++)
			pthread_create(&w[i].th, NULL, work, &w[i]);
		unsigned long sum = 0;
		for (int i = 0; i < nt && i < NTHREADS; i++) {
			pthread_join(w[i].th, NULL);
			sum += w[i].sum;
		}
		printf("sum %lu\n", sum);
		return 0;
	}
	if (argc > 2 && strcmp(argv[1], "sigcount") == 0) {
		// Counts the SIGUSR2s it gets (a tracer's handlers send them)
		// while calling the probed functions, and where they arrived.
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = on_usr2;
		sa.sa_flags = SA_SIGINFO | SA_RESTART;
		sigaction(SIGUSR2, &sa, NULL);
		long n = atol(argv[2]);
		unsigned long s = 0;
		for (long i = 0; i < n; i++)
			s += f_riprel(i) + f_sub(i) + f_push(i);
		printf("sum %lu usr2 %lu outside text %lu\n", s, (unsigned long)usr2, (unsigned long)usr2_bad);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "threadexec") == 0) {
		// A thread other than the main one calls execve while the main
		// thread runs through the probed functions.
		pthread_t th;
		pthread_create(&th, NULL, exec_from_thread, argv[0]);
		for (unsigned long i = 0;; i++)
			f_sub(i);
	}
	if (argc > 2 && strcmp(argv[1], "leaderexit") == 0) {
		// The main thread ends alone (a zombie until the others end)
		// while threads call the probed functions.
		static struct worker w[NTHREADS];
		iters = atol(argv[2]);
		atomic_store(&signals_done, 1);
		for (int i = 0; i < 4; i++)
			pthread_create(&w[i].th, NULL, work, &w[i]);
		pthread_exit(NULL);
	}
	if (argc > 2 && strcmp(argv[1], "tkill") == 0) {
		// Each call is hit by a probe whose handler sends this thread a
		// SIGTRAP: all must arrive.
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_trap;
		sigaction(SIGTRAP, &sa, NULL);
		long n = atol(argv[2]);
		for (long i = 0; i < n; i++) {
			f_push(i);
			while (atomic_load(&traps) < (unsigned long)i + 1)
				sched_yield();
		}
		printf("SIGTRAPs: %lu\n", (unsigned long)traps);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "after-exec") == 0) {
		unsigned long s = 0;
		for (int i = 0; i < 5; i++)
			s += f_push(i);
		printf("after exec %lu\n", s);
		return 0;
	}
	iters = argc > 1 ? atol(argv[1]) : 100000;
	setvbuf(stdout, NULL, _IONBF, 0);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_trap;
	sigaction(SIGTRAP, &sa, NULL);

	// The program's own breakpoint and a SIGTRAP it sends itself.
	own_trap();
	kill(getpid(), SIGTRAP);

	struct worker w[NTHREADS];
	memset(w, 0, sizeof w);
	for (int i = 0; i < NTHREADS; i++)
		pthread_create(&w[i].th, NULL, work, &w[i]);
	// One signal at a time, each waited for, so none can merge with another.
	for (unsigned long k = 0; k < NSIGNALS; k++) {
		sig_arg = k;
		pthread_kill(w[k % NTHREADS].th, SIGUSR1);
		while (atomic_load(&sig_handled) != k + 1)
			sched_yield();
	}
	atomic_store(&signals_done, 1);
	unsigned long sum = 0;
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(w[i].th, NULL);
		sum += w[i].sum;
		fprintf(stderr, "tid %ld push %lu sub %lu rip %lu\n", w[i].tid, w[i].push, w[i].sub, w[i].rip);
	}
	printf("sum %lu signals %lu sigsum %lu traps %lu\n", sum, (unsigned long)sig_handled,
	       (unsigned long)sig_sum, (unsigned long)traps);

	// A fork child runs the probed functions free of the tracer.
	pid_t c = fork();
	if (c == 0) {
		// No executable anonymous 64 KiB mapping (a tracer's XOL area) may
		// follow a child that runs untraced.
		FILE *maps = fopen("/proc/self/maps", "r");
		FILE *status = fopen("/proc/self/status", "r");
		char line[512];
		unsigned long lo, hi;
		char perms[8];
		int traced = 0;
		while (status && fgets(line, sizeof line, status))
			if (strncmp(line, "TracerPid:", 10) == 0 && atoi(line + 10) != 0)
				traced = 1;
		while (!traced && maps && fgets(line, sizeof line, maps))
			if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && strcmp(perms, "r-xp") == 0 &&
			    hi - lo == 0x10000 && !strchr(line, '/'))
				_exit(2);
		unsigned long s = 0;
		for (int i = 0; i < 1000; i++)
			s += f_push(i) + f_sub(i) + f_riprel(i);
		_exit(s == 1000 * 999 / 2 * 3 + 1000 * 3 + 1000 * 1000 ? 0 : 1);
	}
	int st;
	waitpid(c, &st, 0);
	printf("fork child %s %d\n", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));

	// A vfork child shares the parent's memory, INT3s included.
	c = vfork();
	if (c == 0) {
		f_sub(1);
		f_sub(2);
		_exit(0);
	}
	waitpid(c, &st, 0);
	printf("vfork child %s %d\n", WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
	fprintf(stderr, "vfork %d\n", c);

	execl("/proc/self/exe", argv[0], "after-exec", (char *)NULL);
	perror("execl");
	return 1;
}
