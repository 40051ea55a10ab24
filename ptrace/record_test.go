package ptrace

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The tests of recording probes: testdata/record.c, whose r_fn takes
// (tid, i, 3i, i^tid, 7, k) from thread k's i-th call.

func buildRecord(t testing.TB) string {
	return buildC(t, "record", "-O1", "-pthread", "-no-pie", "testdata/record.c")
}

// recLog checks records as an observer, as they come: each one the
// program made (the tid its first argument, the others derived from it),
// each thread's in order (all: every i from 0), times of the tracer's
// clock.
type recLog struct {
	mu    sync.Mutex
	pr    *Probe
	all   bool
	n     int
	next  map[int]int // tid → the next i expected
	child int         // records of a fork child (r9 = 1)
	start int64       // CLOCK_MONOTONIC before the program ran
	last  int64
	err   error
}

func (l *recLog) observe(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.n++
	tid, i := int(r.Regs[0]), int(r.Regs[1])
	if r.Regs[5] == 1 {
		l.child++
	}
	switch {
	case r.Probe != l.pr:
		l.err = fmt.Errorf("record %d: probe %p, not %p", l.n, r.Probe, l.pr)
	case r.Tid != tid:
		l.err = fmt.Errorf("record %d: tid %d, the thread's is %d", l.n, r.Tid, tid)
	case l.all && i != l.next[tid] || i < l.next[tid]:
		l.err = fmt.Errorf("record %d: thread %d's i %d after %d", l.n, tid, i, l.next[tid]-1)
	case r.Regs[2] != uint64(3*i) || r.Regs[3] != uint64(i^tid) || r.Regs[4] != 7:
		l.err = fmt.Errorf("record %d: registers %v", l.n, r.Regs)
	case r.Time < l.start:
		l.err = fmt.Errorf("record %d: time %d, before the start %d", l.n, r.Time, l.start)
	}
	l.next[tid] = i + 1
	l.last = max(l.last, r.Time)
}

// check asserts what the records said, and that each thread made n (all).
func (l *recLog) check(t *testing.T, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	require.NoError(t, l.err)
	require.LessOrEqual(t, l.last, monoNow()+int64(50*time.Microsecond), "times are of the tracer's monotonic clock")
	if l.all {
		for tid, c := range l.next {
			require.Equal(t, n, c, "thread %d's records", tid)
		}
	}
}

func (l *recLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// recordRun starts the record program with args and a recording probe on
// r_fn, recording the six argument registers; all says every record is
// to come.
func recordRun(t *testing.T, all bool, args []string, opts ...Option) (*coreRun, *Probe, *recLog) {
	bin := buildRecord(t)
	r := startProgram(t, coreTracer(t), bin, args, opts...)
	addr := symbols(t, bin, "r_fn")["r_fn"]
	l := &recLog{all: all, next: map[int]int{}, start: monoNow()}
	pr, err := r.p.Record(addr, RecordSpec{Regs: CArgs}, l.observe)
	require.NoError(t, err)
	require.Equal(t, Jump, pr.Strategy, pr.NoJump)
	l.mu.Lock()
	l.pr = pr
	l.mu.Unlock()
	return r, pr, l
}

func TestRecordThreads(t *testing.T) {
	const n = 200000
	r, pr, l := recordRun(t, true, []string{"threads", strconv.Itoa(n), "pace"}, RingSize(1<<22))
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", threadsSum(n)), r.out.String())
	t.Logf("%d records, %d dropped", l.count(), pr.Drops())
	l.check(t, n)
	require.Zero(t, pr.Drops())
	require.Equal(t, 16*n, l.count())
	assert.Equal(t, uint64(16*n), pr.Hits())
	assert.Len(t, l.next, 16)
}

// threadsSum is what the threads mode prints: the sum over threads k of
// the sums over i of 1 + i + k.
func threadsSum(n int) int { return 16*(n+n*(n-1)/2) + 120*n }

// A ring of 64 records drops most of 16 × 50k hits: what it keeps is
// exact and in order, and kept plus dropped is every hit.
func TestRecordTinyRingDrops(t *testing.T) {
	const n = 50000
	r, pr, l := recordRun(t, false, []string{"threads", strconv.Itoa(n)}, RingSize(64))
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", threadsSum(n)), r.out.String())
	require.NotZero(t, pr.Drops())
	assert.Equal(t, uint64(16*n), uint64(l.count())+pr.Drops())
	assert.Equal(t, uint64(16*n), pr.Hits())
	l.check(t, n)
	t.Logf("%d records, %d dropped", l.count(), pr.Drops())
}

// The child's records are none: not in the parent's stream, with or
// without FollowForks.
func TestRecordFork(t *testing.T) {
	const n = 20000
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprint("follow=", follow), func(t *testing.T) {
			var opts []Option
			children := make(chan *Process, 1)
			if follow {
				opts = append(opts, FollowForks(func(c *Process) { children <- c }))
			}
			r, pr, l := recordRun(t, true, []string{"fork", strconv.Itoa(n)}, opts...)
			res := runAsync(r.p, context.Background())
			if follow {
				c := <-children
				exit, err := c.Run(context.Background())
				require.NoError(t, err)
				require.Equal(t, &Exit{}, exit)
			}
			r.exited(t, <-res)
			assert.Equal(t, fmt.Sprintf("child %d\nparent %d status 0\n", n+n*(n-1)/2, 2*n+n*(2*n-1)), r.out.String())
			l.check(t, 2*n)
			require.Zero(t, l.child, "a child's records in the parent's stream")
			require.Equal(t, []int{r.p.Pid()}, keys(l.next))
			require.Equal(t, 2*n, l.count())
			assert.Equal(t, uint64(2*n), pr.Hits())
		})
	}
}

func TestRecordExec(t *testing.T) {
	const n = 30000
	r, pr, l := recordRun(t, true, []string{"exec", strconv.Itoa(n)})
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\nexeced\n", n+n*(n-1)/2), r.out.String())
	require.Equal(t, n, l.count())
	assert.Equal(t, uint64(n), pr.Hits())
	l.check(t, n)
}

// Detached mid-run: the ring is gone from the process's maps, which runs
// on with its own bytes.
func TestRecordDetach(t *testing.T) {
	r, pr, l := recordRun(t, false, []string{"forever", "0"})
	res := runAsync(r.p, context.Background())
	waitFor(t, 20*time.Second, "records", func() bool { return l.count() > 5000 })
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", r.p.Pid()))
	require.NoError(t, err)
	require.Contains(t, string(maps), "onetrap-ring")
	require.NoError(t, r.p.Detach())
	<-res
	maps, err = os.ReadFile(fmt.Sprintf("/proc/%d/maps", r.p.Pid()))
	require.NoError(t, err)
	assert.NotContains(t, string(maps), "onetrap-ring")
	assert.Equal(t, uint64(l.count())+pr.Drops(), pr.Hits())
	l.check(t, 0)
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, unix.Kill(r.p.Pid(), 0), "the program runs on")
	unix.Kill(r.p.Pid(), unix.SIGKILL)
}

func TestRecordTracerKilled(t *testing.T) {
	bin := buildRecord(t)
	out := killTracerMidRun(t, child("recordtracer", "RECORD_BIN="+bin), "RECORD_OUT")
	assert.Equal(t, fmt.Sprintf("sum %d\n", threadsSum(1000000)), out)
}

// recordTracerChild is the tracer TestRecordTracerKilled kills: 16
// threads of 1M calls with a recording probe on r_fn and a ring of 4096
// (soon full once nobody drains it).
func recordTracerChild() {
	bin := os.Getenv("RECORD_BIN")
	f, err := os.Create(os.Getenv("RECORD_OUT"))
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(bin, "threads", "1000000")
	cmd.Stdout = f
	p, err := Start(cmd, RingSize(4096))
	if err != nil {
		panic(err)
	}
	addr := symbolValue(bin, "r_fn")
	var mu sync.Mutex
	seen := 0
	pr, err := p.Record(addr, RecordSpec{Regs: CArgs}, func(Record) { mu.Lock(); seen++; mu.Unlock() })
	if err != nil {
		panic(err)
	}
	go p.Run(context.Background())
	for {
		mu.Lock()
		s := seen
		mu.Unlock()
		if s > 1000 && pr.Strategy == Jump {
			break
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("patched %d\n", p.Pid())
	select {}
}

func keys(m map[int]int) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// A Go program (goroutines, GOGC=1, async preemption, deep recursion, a
// recovered nil dereference) records every call of main.probed: its
// depth argument (rbx) in range, its tid one of the process's threads.
func TestRecordGo(t *testing.T) {
	bin, want, addr := goJumpTarget(t)

	r := startProgram(t, coreTracer(t), bin, []string{"1500"})
	var mu sync.Mutex
	n, bad := 0, 0
	tids := map[int]bool{}
	pr, err := r.p.Record(addr, RecordSpec{Regs: GoArgs}, func(rec Record) {
		mu.Lock()
		n++
		tids[rec.Tid] = true
		if rec.Regs[1] >= 300 || rec.Tid == 0 {
			bad++
		}
		mu.Unlock()
	})
	require.NoError(t, err)
	require.Equal(t, Jump, pr.Strategy, pr.NoJump)
	pid := r.p.Pid()
	r.exited(t, waitRun(t, runAsync(r.p, context.Background())))
	assert.Equal(t, string(want), r.out.String())
	var sum, calls int64
	var rec bool
	_, err = fmt.Sscanf(r.out.String(), "sum %d recovered %v calls %d", &sum, &rec, &calls)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Zero(t, bad)
	assert.Equal(t, uint64(calls), pr.Hits())
	assert.Equal(t, uint64(calls), uint64(n)+pr.Drops())
	for tid := range tids {
		// Its threads were made after it: tids after its pid.
		assert.True(t, tid >= pid && tid < pid+1<<16, "tid %d of process %d", tid, pid)
	}
	t.Logf("%d records, %d dropped, %d threads", n, pr.Drops(), len(tids))
}

// Where a site takes a trap (here, with NoXOL, every site), the same
// records come to the observer from the trap path: all of them, tids
// exact, each thread's in order.
func TestRecordTrapPath(t *testing.T) {
	const n = 2000
	bin := buildRecord(t)
	r := startProgram(t, coreTracer(t), bin, []string{"threads", strconv.Itoa(n)}, NoXOL())
	addr := symbols(t, bin, "r_fn")["r_fn"]
	l := &recLog{all: true, next: map[int]int{}, start: monoNow()}
	pr, err := r.p.Record(addr, RecordSpec{Regs: CArgs}, l.observe)
	require.NoError(t, err)
	l.mu.Lock()
	l.pr = pr
	l.mu.Unlock()
	require.NotEqual(t, Jump, pr.Strategy)
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", threadsSum(n)), r.out.String())
	l.check(t, n)
	assert.Equal(t, 16*n, l.count())
	assert.Len(t, l.next, 16)
	assert.Equal(t, uint64(16*n), pr.Hits())
	assert.Zero(t, pr.Drops())
}

// A thread whose FS base is 0 (as before its TLS is set up, in ld.so or
// an IFUNC resolver) faults in the pad where it reads its key: the tracer
// serves each such hit as a trap, the record its, with its tid, and the
// program never sees the fault.
func TestRecordNoFS(t *testing.T) {
	const n = 2000
	r, pr, l := recordRun(t, true, []string{"nofs", strconv.Itoa(n)})
	r.exited(t, <-runAsync(r.p, context.Background()))
	assert.Equal(t, fmt.Sprintf("sum %d\n", n+n*(n-1)/2), r.out.String())
	l.check(t, n)
	assert.Equal(t, n, l.count())
	assert.Len(t, l.next, 1)
	assert.Equal(t, uint64(n), pr.Hits())
	assert.Zero(t, pr.Drops())
}
