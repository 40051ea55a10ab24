// The Go tracee of the Jump tests: goroutines call probed, recursively
// (the stacks grow and move), with GOGC=1 garbage and async preemption
// at work, and one call dereferences nil and is recovered. It prints the
// number of calls of probed, which the probe's count must equal.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
)

type node struct{ v int }

var calls atomic.Int64

//go:noinline
func probed(n *node, depth int) int {
	calls.Add(1)
	if depth == 0 {
		return n.v // a faulting load when n is nil
	}
	var pad [64]byte // stack use, so that deep recursion grows the stack
	pad[depth%64] = byte(depth)
	return probed(n, depth-1) + int(pad[depth%64]&1)
}

func main() {
	debug.SetGCPercent(1)
	n, _ := strconv.Atoi(os.Args[1])
	var wg sync.WaitGroup
	var sum atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var keep [][]byte
			for i := 0; i < n; i++ {
				keep = append(keep, make([]byte, 512)) // garbage for the GC
				if len(keep) > 64 {
					keep = keep[:0]
				}
				sum.Add(int64(probed(&node{v: i}, (i*7+g)%300)))
			}
		}(g)
	}
	wg.Wait()
	recovered := func() (ok bool) {
		defer func() { ok = recover() != nil }()
		probed(nil, 0)
		return false
	}()
	fmt.Printf("sum %d recovered %v calls %d\n", sum.Load(), recovered, calls.Load())
	if len(os.Args) > 2 {
		fmt.Fprintln(os.Stderr, "done")
	}
	_ = os.Stdout.Sync()
}
