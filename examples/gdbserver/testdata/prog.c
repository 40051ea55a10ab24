// The gdbserver tests' program. Modes:
//   calls N     loops N times over work(i), which calls add(i, i); prints the sum.
//   threads N   N workers count, each in its own slot, while main calls
//               tick(i) every 20 ms, 10 times; prints how far the workers got
//               while main was stopped (non-stop: they keep counting).
//   forever     prints a counter every 20 ms, 50 times.
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void sleep_ms(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

__attribute__((noinline)) long add(long a, long b) { return a + b; }

__attribute__((noinline)) long work(long i) {
	long x = i * 3;
	long y = add(x, i);
	return y - i;
}

static atomic_long counts[16];
static atomic_int stop;
static long nworkers;

static void *worker(void *arg) {
	long slot = (long)arg;
	while (!atomic_load(&stop))
		atomic_fetch_add(&counts[slot], 1);
	return NULL;
}

static long total(void) {
	long t = 0;
	for (long i = 0; i < nworkers; i++)
		t += atomic_load(&counts[i]);
	return t;
}

__attribute__((noinline)) long tick(long i) { return total() + i; }

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "calls";
	long n = argc > 2 ? atol(argv[2]) : 10;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "calls")) {
		long sum = 0;
		for (long i = 0; i < n; i++)
			sum += work(i);
		printf("sum %ld\n", sum);
		return 0;
	}
	if (!strcmp(mode, "threads")) {
		pthread_t t[16];
		nworkers = n;
		for (long i = 0; i < n; i++)
			pthread_create(&t[i], NULL, worker, (void *)i);
		long moved = 0;
		for (long i = 0; i < 10; i++) {
			long before = total();
			tick(i);
			long after = total();
			if (after - before > 1000)
				moved++;
			sleep_ms(20);
		}
		atomic_store(&stop, 1);
		for (long i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		printf("threads done, workers moved during %ld of 10 ticks\n", moved);
		return 0;
	}
	for (long i = 0; i < n; i++) {
		printf("count %ld\n", i);
		sleep_ms(20);
	}
	printf("done\n");
	return 0;
}
