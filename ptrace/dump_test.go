package ptrace

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var stateNames = [...]string{running: "running", listening: "listening", held: "held", serving: "serving",
	parked: "parked", stepping: "stepping", vforking: "vforking", leaving: "leaving"}

// dumpTracer describes what tr's processes and threads are doing, for a
// test that found them stuck: the engine's view, then the kernel's.
func dumpTracer(tr *Tracer) string {
	var b strings.Builder
	var pids []int
	answered := within(2*time.Second, func() {
		tr.do(func() error {
			fmt.Fprintf(&b, "queue %d later %d\n", len(tr.queue), len(tr.later))
			for pid, p := range tr.procs {
				pids = append(pids, pid)
				w := &p.world
				fmt.Fprintf(&b, "process %d finished %v world active %v all %v jobs %d step %v hold %v since %v\n",
					pid, p.finished, w.active, w.all, len(w.jobs), w.step != nil, w.hold, time.Since(w.since).Round(time.Millisecond))
				for tid, th := range p.threads {
					st := fmt.Sprint(th.state)
					if int(th.state) < len(stateNames) {
						st = stateNames[th.state]
					}
					fmt.Fprintf(&b, "  thread %d %s hit %#x pending %v (ws %#x) interrupted %v zombie %v guest %v stopEv %d step %d from %#x\n",
						tid, st, th.hit, th.pending, uint32(th.ws), th.interrupted, th.zombie, th.guest, th.stopEv, th.step, th.stepFrom)
				}
			}
			return nil
		})
	})
	if !answered {
		b.WriteString("the tracer thread does not answer\n")
	}
	sort.Ints(pids)
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, task := range tasks {
			stat, _ := os.ReadFile(task + "/stat")
			wchan, _ := os.ReadFile(task + "/wchan")
			s := string(stat)
			if i := strings.LastIndexByte(s, ')'); i > 0 && i+3 < len(s) {
				s = s[i+2 : i+3]
			}
			fmt.Fprintf(&b, "  /proc task %s state %s wchan %s\n", filepath.Base(task), s, wchan)
		}
	}
	return b.String()
}
