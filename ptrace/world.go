package ptrace

import (
	"github.com/onetrap/onetrap/internal/ptsys"
	"time"

	"golang.org/x/sys/unix"
)

// A world stop keeps every thread that shares a process's memory (its own,
// and its guests') from running user code while a job changes what they
// could run into: an instruction stepped in place with its INT3 lifted, a
// slot reclaimed, a detach. It is a state of the process, not a wait: the
// jobs queue up, the running threads are interrupted, and each report
// that comes meanwhile is kept for later (the thread counts as stopped);
// the loop goes on serving every other event. Once every thread is still,
// the jobs run in order; a job that steps a thread in place holds the
// world until the step is done. Then the world resumes: threads with a
// kept report are queued for the loop, the others let go.
type worldStop struct {
	jobs   []worldJob
	active bool
	all    bool    // listening threads are interrupted too (detach)
	step   *thread // stepping in place: the world waits for it
	hold   bool    // held by a parked thread (AllStop) until it goes on
	inJob  bool    // a job is running: advance leaves the next to its caller
	since  time.Time
}

// A worldJob is run, or (run nil) a step in place of th at s, which a hit
// asks for without allocating.
type worldJob struct {
	all   bool
	run   func()
	th    *thread
	s     *site
	image int
}

// needWorld runs job once every thread sharing p's memory is still
// (listening ones interrupted too when all is set), and keeps them still
// until it and the jobs queued before and after it are done. It may run
// job before it returns, when nothing is running.
func (t *Tracer) needWorld(p *Process, all bool, job func()) {
	t.queueJob(p, worldJob{all: all, run: job})
}

func (t *Tracer) queueJob(p *Process, j worldJob) {
	w := &p.world
	all := j.all
	w.jobs = append(w.jobs, j)
	if !w.active {
		w.active, w.since = true, time.Now()
	}
	w.all = w.all || all
	t.interruptAll(p)
	t.advance(p)
}

// interruptAll interrupts p's threads that a world stop waits for.
func (t *Tracer) interruptAll(p *Process) {
	waiting := false
	for _, th := range p.threads {
		if th.still(p.world.all) || th.state == stepping {
			continue
		}
		waiting = true
		if th.interrupted {
			continue
		}
		if e := ptsys.Raw(unix.PTRACE_INTERRUPT, th.tid, 0, 0); e != 0 {
			continue // dying: its end is reported
		}
		th.interrupted = true
	}
	if waiting {
		t.armRecheck()
	}
}

// advance runs p's world jobs if every thread is still, and resumes the
// world when none is left. Called whenever a thread of p stops, steps or
// ends while the world is active.
func (t *Tracer) advance(p *Process) {
	w := &p.world
	if w.inJob {
		return
	}
	for w.active && w.step == nil {
		if p.finished {
			t.abandonWorld(p)
			return
		}
		for _, th := range p.threads {
			if !th.still(w.all) {
				return
			}
		}
		if len(w.jobs) == 0 {
			if !w.hold {
				t.resumeWorld(p)
			}
			return
		}
		j := w.jobs[0]
		copy(w.jobs, w.jobs[1:])
		w.jobs[len(w.jobs)-1] = worldJob{}
		w.jobs = w.jobs[:len(w.jobs)-1]
		if j.all && !w.all {
			// Asked for while a narrower stop was held: widen it.
			w.all = true
			w.jobs = append([]worldJob{j}, w.jobs...)
			t.interruptAll(p)
			continue
		}
		t.reclaimSlots(p)
		w.inJob = true
		if j.run != nil {
			j.run()
		} else {
			t.beginInPlace(j.th, j.s, j.image)
		}
		w.inJob = false
	}
}

// abandonWorld runs the jobs of a process that ended: each sees it
// finished and only reports so.
func (t *Tracer) abandonWorld(p *Process) {
	jobs := p.world.jobs
	p.world = worldStop{}
	for _, j := range jobs {
		if j.run != nil {
			j.run()
		}
	}
}

// resumeWorld lets p's held threads go; a thread with a report kept for
// later stays stopped and is queued for the loop.
func (t *Tracer) resumeWorld(p *Process) {
	p.world.active, p.world.all = false, false
	for _, th := range p.threads {
		switch {
		case th.state != held:
		case th.pending:
			if !th.queued {
				th.queued = true
				t.queue = append(t.queue, report{th.tid, th.ws})
			}
		default:
			t.release(th)
		}
	}
}

// recheckAfter is how long a world stop waits for an interrupted thread
// before it looks whether the thread has become a zombie (a leader that
// exited alone reports nothing while its threads are stopped).
const recheckAfter = 5 * time.Millisecond

// armRecheck has the loop woken (and recheckWorlds run) after a while.
func (t *Tracer) armRecheck() {
	if t.recheck == nil {
		t.recheck = time.AfterFunc(recheckAfter, func() {
			t.recheckDue.Store(true)
			t.kick()
		})
		return
	}
	t.recheck.Reset(recheckAfter)
}

// recheckWorlds marks interrupted threads that turned zombie while a world
// stop waited for them as stopped, and lets leaving threads go (see
// leaveStopped).
func (t *Tracer) recheckWorlds() {
	again := t.leaveStopped()
	for _, p := range t.procs {
		if !p.world.active {
			continue
		}
		for _, th := range p.threads {
			if th.interrupted && !th.zombie && th.tid == th.tgid && t.zombie(th.tid) {
				th.zombie = true
			}
			if !th.still(p.world.all) {
				again = true
			}
		}
		t.advance(p)
	}
	if again {
		t.armRecheck()
	}
}
