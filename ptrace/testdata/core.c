// The C tracee of the event-core tests (core_test.go): each mode is one
// situation in which a tracer must neither corrupt the program nor freeze.
// Every mode checks its own state and prints a summary on stdout that is the
// same traced or not; stderr carries what depends on timing (per-thread call
// counts), for the test to compare with the hit counts.
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

extern char **environ;

// Probe sites with known first instructions, so that the test can ask for
// any strategy: sub rsp (emulated), push (boostable), a bare syscall, and a
// five-byte mov whose immediate is itself a jump to itself (c_mid+1 is an
// instruction boundary only for a thread that jumps there).
unsigned long c_f(unsigned long); // sub $8,%rsp
unsigned long c_g(unsigned long); // push %rbp
unsigned long c_h(unsigned long); // push %rbx
unsigned long c_p(unsigned long); // sub $8,%rsp
unsigned long c_q(unsigned long); // push %rbp
unsigned long c_b(unsigned long); // push %rbp
long c_read(long fd, void *buf, long n); // read(2) through the syscall at c_sys
unsigned long c_mid(void);               // mov $0x9090feeb,%eax; ret
void c_spin(void);                       // jumps to c_mid+1: eb fe, a loop
extern char c_sys[];

__asm__(".text\n"
        ".globl c_f\n.type c_f,@function\nc_f:\n"
        "\tsub $8,%rsp\n\tlea 1(%rdi),%rax\n\tadd $8,%rsp\n\tret\n"
        ".globl c_g\n.type c_g,@function\nc_g:\n"
        "\tpush %rbp\n\tmov %rsp,%rbp\n\tlea 2(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".globl c_h\n.type c_h,@function\nc_h:\n"
        "\tpush %rbx\n\tlea 3(%rdi),%rax\n\tpop %rbx\n\tret\n"
        ".globl c_p\n.type c_p,@function\nc_p:\n"
        "\tsub $8,%rsp\n\tlea 4(%rdi),%rax\n\tadd $8,%rsp\n\tret\n"
        ".globl c_q\n.type c_q,@function\nc_q:\n"
        "\tpush %rbp\n\tlea 5(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".globl c_b\n.type c_b,@function\nc_b:\n"
        "\tpush %rbp\n\tlea 6(%rdi),%rax\n\tpop %rbp\n\tret\n"
        ".globl c_read\n.type c_read,@function\nc_read:\n"
        "\txor %eax,%eax\n.globl c_sys\nc_sys:\n\tsyscall\n\tret\n"
        ".globl c_spin\n.type c_spin,@function\nc_spin:\n"
        "\tjmp c_mid+1\n"
        ".globl c_mid\n.type c_mid,@function\nc_mid:\n"
        "\t.byte 0xb8, 0xeb, 0xfe, 0x90, 0x90\n\tret\n");

static const char *self;

static void sleep_ms(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

static long gettid_(void) { return syscall(SYS_gettid); }

// ---- threads: workers call c_f in a loop, checking after each call that
// they still run on their own stack as themselves, while the main thread
// calls c_g three times (the test's handler on c_g inserts, removes or
// detaches); once told, the workers also call c_h.

#define CANARY 0x9e3779b97f4a7c15UL

struct worker {
	pthread_t th;
	long tid;
	long iters;
	atomic_long f, h;
	long corrupt;
};

static atomic_int h_on;

static void *threads_work(void *arg) {
	struct worker *w = arg;
	w->tid = gettid_();
	volatile unsigned long canary = (unsigned long)w->tid * CANARY;
	uintptr_t where = (uintptr_t)&canary;
	for (long i = 0; i < w->iters; i++) {
		if (c_f(i) != (unsigned long)i + 1)
			w->corrupt++;
		atomic_fetch_add(&w->f, 1);
		if (atomic_load(&h_on)) {
			if (c_h(i) != (unsigned long)i + 3)
				w->corrupt++;
			atomic_fetch_add(&w->h, 1);
		}
		// The kernel's tid, the canary on this thread's stack and the
		// stack pointer must all still be this thread's.
		if (gettid_() != w->tid || canary != (unsigned long)w->tid * CANARY ||
		    (uintptr_t)&canary != where)
			w->corrupt++;
	}
	return NULL;
}

static long threads_done(struct worker *ws, int n) {
	long min = -1;
	for (int i = 0; i < n; i++) {
		long f = atomic_load(&ws[i].f);
		if (min < 0 || f < min)
			min = f;
	}
	return min;
}

static long threads_total(struct worker *ws, int n, int h) {
	long s = 0;
	for (int i = 0; i < n; i++)
		s += h ? atomic_load(&ws[i].h) : atomic_load(&ws[i].f);
	return s;
}

static int mode_threads(int n, long iters) {
	struct worker *ws = calloc(n, sizeof *ws);
	for (int i = 0; i < n; i++) {
		ws[i].iters = iters;
		pthread_create(&ws[i].th, NULL, threads_work, &ws[i]);
	}
	long lo[3], hi[3], hlo[3], hhi[3];
	for (int k = 0; k < 3; k++) {
		// The calls to c_g happen while every worker is busy calling c_f.
		while (threads_done(ws, n) < iters * (k + 1) / 4)
			sched_yield();
		lo[k] = threads_total(ws, n, 0);
		hlo[k] = threads_total(ws, n, 1);
		if (c_g(k) != (unsigned long)k + 2)
			ws[0].corrupt++;
		hi[k] = threads_total(ws, n, 0);
		hhi[k] = threads_total(ws, n, 1);
		if (k == 0)
			atomic_store(&h_on, 1);
	}
	long corrupt = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(ws[i].th, NULL);
		corrupt += ws[i].corrupt;
		fprintf(stderr, "tid %ld f %ld h %ld\n", ws[i].tid, atomic_load(&ws[i].f), atomic_load(&ws[i].h));
	}
	for (int k = 0; k < 3; k++)
		fprintf(stderr, "g%d f %ld %ld h %ld %ld\n", k, lo[k], hi[k], hlo[k], hhi[k]);
	printf("workers %d f %ld %s\n", n, threads_total(ws, n, 0), corrupt ? "corrupt" : "ok");
	return 0;
}

// ---- dlopen: the main thread loads, calls and unloads a library N times
// while a worker calls c_f.

static atomic_int dl_done;
static atomic_long dl_f;

static void *dl_work(void *arg) {
	(void)arg;
	long bad = 0;
	for (long i = 0; !atomic_load(&dl_done); i++) {
		if (c_f(i) != (unsigned long)i + 1)
			bad++;
		atomic_fetch_add(&dl_f, 1);
	}
	return (void *)bad;
}

static int mode_dlopen(const char *lib, int n) {
	pthread_t th;
	pthread_create(&th, NULL, dl_work, NULL);
	unsigned long sum = 0;
	for (int i = 0; i < n; i++) {
		void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
		if (!h) {
			printf("dlopen: %s\n", dlerror());
			return 1;
		}
		unsigned long (*fn)(unsigned long) = (unsigned long (*)(unsigned long))dlsym(h, "lib_fn");
		sum += fn(i);
		dlclose(h);
	}
	atomic_store(&dl_done, 1);
	void *bad;
	pthread_join(th, &bad);
	fprintf(stderr, "f %ld\n", atomic_load(&dl_f));
	printf("loads %d sum %lu worker %s\n", n, sum, bad ? "corrupt" : "ok");
	return 0;
}

// ---- pipe: thread A reads one byte through c_sys, thread B calls c_b and
// then writes that byte; rounds times. With delay, B waits that long before
// its first round (so that A is blocked in its read when the test cancels).

static int pfd[2];
static long pipe_rounds, pipe_delay;

static void *pipe_reader(void *arg) {
	(void)arg;
	long got = 0;
	for (long i = 0; i < pipe_rounds; i++) {
		char c;
		if (c_read(pfd[0], &c, 1) == 1 && c == 'a' + i % 26)
			got++;
	}
	return (void *)got;
}

static void *pipe_writer(void *arg) {
	(void)arg;
	sleep_ms(pipe_delay);
	for (long i = 0; i < pipe_rounds; i++) {
		// A is (most likely) blocked in its read by now.
		sleep_ms(20);
		char c = 'a' + i % 26;
		c_b(i);
		if (write(pfd[1], &c, 1) != 1)
			return (void *)1;
	}
	return NULL;
}

static int mode_pipe(long rounds, long delay) {
	pipe_rounds = rounds;
	pipe_delay = delay;
	if (pipe(pfd) != 0)
		return 1;
	pthread_t a, b;
	pthread_create(&a, NULL, pipe_reader, NULL);
	pthread_create(&b, NULL, pipe_writer, NULL);
	void *got, *werr;
	pthread_join(a, &got);
	pthread_join(b, &werr);
	printf("read %ld of %ld%s\n", (long)got, rounds, werr ? " write failed" : "");
	return 0;
}

// ---- vfork: hits in vfork children, one that exits and one that execs.

static int mode_vfork(void) {
	unsigned long sum = c_f(0);
	pid_t pid = vfork();
	if (pid == 0)
		_exit(c_f(1) + c_f(2) == 5 ? 42 : 1);
	int st;
	waitpid(pid, &st, 0);
	printf("vfork child %d\n", WEXITSTATUS(st));
	pid = vfork();
	if (pid == 0) {
		c_f(3);
		execl(self, self, "exit", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	printf("vfork exec child %d\n", WEXITSTATUS(st));
	sum += c_f(4);
	printf("sum %lu\n", sum);
	return 0;
}

// ---- spawn: a worker calls c_f while the main thread posix_spawns.

static atomic_int spawn_done;
static atomic_long spawn_calls;

static void *spawn_work(void *arg) {
	(void)arg;
	for (long i = 0; !atomic_load(&spawn_done); i++) {
		c_f(i);
		atomic_fetch_add(&spawn_calls, 1);
	}
	return NULL;
}

static int spawn_wait(char *const argv[]) {
	pid_t pid;
	if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0)
		return -1;
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int mode_spawn(int n) {
	pthread_t th;
	pthread_create(&th, NULL, spawn_work, NULL);
	while (atomic_load(&spawn_calls) < 10)
		sched_yield();
	int bad = 0;
	char *quick[] = {(char *)self, "exit", NULL};
	char *slow[] = {(char *)self, "sleep", "300", NULL};
	for (int i = 0; i < n; i++)
		bad += spawn_wait(quick) != 0;
	bad += spawn_wait(slow) != 0;
	atomic_store(&spawn_done, 1);
	pthread_join(th, NULL);
	fprintf(stderr, "f %ld\n", atomic_load(&spawn_calls));
	printf("spawned %d failed %d\n", n + 1, bad);
	return 0;
}

// ---- vforksleep: a vfork child that sleeps before its exec; afterwards
// the parent calls c_f (which must no longer trap once detached).

static int mode_vforksleep(long ms) {
	c_f(0);
	pid_t pid = vfork();
	if (pid == 0) {
		sleep_ms(ms);
		execl(self, self, "exit", (char *)NULL);
		_exit(127);
	}
	int st;
	waitpid(pid, &st, 0);
	unsigned long sum = 0;
	for (long i = 0; i < 1000; i++)
		sum += c_f(i);
	printf("child %d sum %lu\n", WEXITSTATUS(st), sum);
	return 0;
}

// ---- clonevm: a child made with clone(CLONE_VM|SIGCHLD), sharing the
// memory but not a thread of the process, calls c_q n times (and then
// execs, with exec) while the parent calls c_p; the parent calls c_p again
// after the child ended, and c_q once.

static long clone_n;
static int clone_exec;
static unsigned long clone_q;

static int clone_child(void *arg) {
	(void)arg;
	unsigned long q = 0;
	for (long i = 0; i < clone_n; i++)
		q += c_q(i);
	clone_q = q;
	if (clone_exec) {
		execl(self, self, "exit", (char *)NULL);
		return 127;
	}
	return 0;
}

static int mode_clonevm(long n, int exec) {
	clone_n = n;
	clone_exec = exec;
	size_t size = 1 << 20;
	char *stack = malloc(size);
	pid_t pid = clone(clone_child, stack + size, CLONE_VM | SIGCHLD, NULL);
	if (pid < 0) {
		perror("clone");
		return 1;
	}
	unsigned long p = 0;
	for (long i = 0; i < n / 2; i++)
		p += c_p(i);
	int st;
	waitpid(pid, &st, 0);
	for (long i = n / 2; i < n; i++)
		p += c_p(i);
	unsigned long q = clone_q + c_q(n);
	printf("p %lu q %lu child %d\n", p, q, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	return 0;
}

// ---- killsibs: kills every process that shares its parent, then sleeps.

static int mode_killsibs(long ms) {
	c_f(0);
	pid_t me = getpid(), parent = getppid();
	int killed = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0 || pid == me)
			continue;
		char path[64], line[256];
		snprintf(path, sizeof path, "/proc/%ld/status", pid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		long ppid = -1;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "PPid: %ld", &ppid) == 1)
				break;
		fclose(f);
		if (ppid == parent && kill(pid, SIGKILL) == 0)
			killed++;
	}
	if (d)
		closedir(d);
	printf("killed %s\n", killed ? "some" : "none");
	fflush(stdout);
	sleep_ms(ms);
	c_f(1);
	printf("woke\n");
	return 0;
}

// ---- loop: calls c_f and c_h every ms milliseconds (or without a pause),
// forever.

_Noreturn static void mode_loop(long ms) {
	for (unsigned long i = 0;; i++) {
		c_f(i);
		c_h(i);
		if (ms)
			sleep_ms(ms);
	}
}

// ---- sigq: thread T calls c_h n times; the test's handler on c_h queues a
// SIGUSR2 with a value to T at every hit (so that it arrives while T is
// stepped), and thread S queues 200 SIGUSR1s with pthread_sigqueue. (Two
// signals, because a standard signal sent while the same one is pending is
// dropped by the kernel.) T's handler checks each one's siginfo: SI_QUEUE,
// this process as sender, the value.

#define OTHER_BASE 1000000
static volatile long sq_calls;
static atomic_long sq_tracer, sq_other, sq_bad;

static void sq_handler(int sig, siginfo_t *si, void *uc) {
	(void)uc;
	if (si->si_code != SI_QUEUE || si->si_pid != getpid() || si->si_uid != getuid()) {
		atomic_fetch_add(&sq_bad, 1);
		return;
	}
	int v = si->si_value.sival_int;
	if (sig == SIGUSR1) {
		if (v != OTHER_BASE + atomic_load(&sq_other))
			atomic_fetch_add(&sq_bad, 1);
		atomic_fetch_add(&sq_other, 1);
		return;
	}
	// Sent during hit number v, delivered before that call returned.
	if (v != sq_calls + 1)
		atomic_fetch_add(&sq_bad, 1);
	atomic_fetch_add(&sq_tracer, 1);
}

static void *sq_sender(void *arg) {
	pthread_t t = *(pthread_t *)arg;
	for (int i = 0; i < 200; i++) {
		union sigval v = {.sival_int = OTHER_BASE + i};
		if (pthread_sigqueue(t, SIGUSR1, v) != 0)
			return (void *)1;
		for (int w = 0; atomic_load(&sq_other) <= i; w++) {
			if (w > 3000)
				return (void *)2; // lost
			sleep_ms(1);
		}
	}
	return NULL;
}

static int mode_sigq(long n) {
	struct sigaction sa = {0};
	sa.sa_sigaction = sq_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	pthread_t t = pthread_self(), s;
	pthread_create(&s, NULL, sq_sender, &t);
	for (long i = 0; i < n; i++) {
		c_h(i);
		sq_calls = i + 1;
	}
	void *serr;
	pthread_join(s, &serr);
	printf("calls %ld tracer %ld other %ld bad %ld%s\n", sq_calls, atomic_load(&sq_tracer),
	       atomic_load(&sq_other), atomic_load(&sq_bad), serr ? " sender failed" : "");
	return 0;
}

// ---- trapmid: thread T spins at c_mid+1 (one byte into the probed mov)
// while thread S sends it n SIGTRAPs with tgkill, one at a time; the
// handler counts them and where they found T, and lets T return after the
// last. The main thread calls c_mid k times afterwards.

static atomic_long tm_traps, tm_at_mid, tm_bad;
static atomic_long tm_tid;
static long tm_last;

static void tm_handler(int sig, siginfo_t *si, void *ucv) {
	(void)sig;
	ucontext_t *uc = ucv;
	if (si->si_code != SI_TKILL || si->si_pid != getpid())
		atomic_fetch_add(&tm_bad, 1);
	if (uc->uc_mcontext.gregs[REG_RIP] == (greg_t)((char *)c_mid + 1))
		atomic_fetch_add(&tm_at_mid, 1);
	if (atomic_fetch_add(&tm_traps, 1) + 1 == tm_last)
		uc->uc_mcontext.gregs[REG_RIP] = (greg_t)((char *)c_mid + 5); // the ret
}

static void *tm_spinner(void *arg) {
	(void)arg;
	atomic_store(&tm_tid, gettid_());
	c_spin();
	return NULL;
}

static int mode_trapmid(long n, long k) {
	tm_last = n;
	struct sigaction sa = {0};
	sa.sa_sigaction = tm_handler;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGTRAP, &sa, NULL);
	pthread_t t;
	pthread_create(&t, NULL, tm_spinner, NULL);
	while (!atomic_load(&tm_tid))
		sched_yield();
	int lost = 0;
	for (long i = 0; i < n && !lost; i++) {
		// Let T get (back) into its loop at c_mid+1.
		sleep_ms(2);
		syscall(SYS_tgkill, getpid(), (int)atomic_load(&tm_tid), SIGTRAP);
		for (int w = 0; atomic_load(&tm_traps) <= i; w++) {
			if (w > 3000) {
				lost = 1; // T left its loop without the signal
				break;
			}
			sleep_ms(1);
		}
	}
	if (lost) {
		printf("sigtrap %ld at mid %ld bad %ld lost\n", atomic_load(&tm_traps), atomic_load(&tm_at_mid),
		       atomic_load(&tm_bad));
		return 1;
	}
	pthread_join(t, NULL);
	unsigned long sum = 0;
	for (long i = 0; i < k; i++)
		sum += c_mid();
	printf("sigtrap %ld at mid %ld bad %ld direct %ld sum %#lx\n", atomic_load(&tm_traps),
	       atomic_load(&tm_at_mid), atomic_load(&tm_bad), k, sum);
	return 0;
}

// ---- execrace: the main thread (the leader) calls c_f once, after a
// second thread has started an execve of this program in mode "exit7";
// the probe's handler is slow, so the execve replaces the leader while its
// hit is being served. The new image must start intact and exit 7.

static void *execrace_exec(void *arg) {
	(void)arg;
	sleep_ms(20);
	char *argv[] = {(char *)self, "exit7", NULL};
	execv(self, argv);
	return NULL;
}

static int mode_execrace(void) {
	pthread_t th;
	pthread_create(&th, NULL, execrace_exec, NULL);
	c_f(0);
	pthread_join(th, NULL);
	return 1; // the execve failed
}

int main(int argc, char **argv) {
	self = argv[0];
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *mode = argc > 1 ? argv[1] : "";
	long a = argc > 2 ? atol(argv[2]) : 0, b = argc > 3 ? atol(argv[3]) : 0;
	if (!strcmp(mode, "exit"))
		return 0;
	if (!strcmp(mode, "exit7")) {
		printf("new image\n");
		return 7;
	}
	if (!strcmp(mode, "execrace"))
		return mode_execrace();
	if (!strcmp(mode, "sleep")) {
		sleep_ms(a);
		return 0;
	}
	if (!strcmp(mode, "sleepexit")) {
		c_f(0);
		sleep_ms(a);
		return (int)b;
	}
	if (!strcmp(mode, "threads"))
		return mode_threads((int)a, b);
	if (!strcmp(mode, "dlopen"))
		return mode_dlopen(argv[2], (int)b);
	if (!strcmp(mode, "pipe"))
		return mode_pipe(a, b);
	if (!strcmp(mode, "vfork"))
		return mode_vfork();
	if (!strcmp(mode, "spawn"))
		return mode_spawn((int)a);
	if (!strcmp(mode, "vforksleep"))
		return mode_vforksleep(a);
	if (!strcmp(mode, "clonevm"))
		return mode_clonevm(a, 0);
	if (!strcmp(mode, "clonevmexec"))
		return mode_clonevm(a, 1);
	if (!strcmp(mode, "killsibs"))
		return mode_killsibs(a);
	if (!strcmp(mode, "loop"))
		mode_loop(a);
	if (!strcmp(mode, "sigq"))
		return mode_sigq(a);
	if (!strcmp(mode, "trapmid"))
		return mode_trapmid(a, b);
	fprintf(stderr, "unknown mode %s\n", mode);
	return 2;
}
