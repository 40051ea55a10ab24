package ptrace

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/onetrap/onetrap/ptrace/internal/asmfuncs"
)

// childEnv selects a child mode: the test binary re-executed as a tracee.
const childEnv = "ONETRAP_PTRACE_CHILD"

// benchFuncs are the functions the benchmark loop may call, by SITE.
var benchFuncs = map[string]func() uint64{
	"push": asmfuncs.PushRBP, "sub": asmfuncs.SubRSP, "cmp": asmfuncs.CmpStack, "trap": asmfuncs.Trap,
	"mov": asmfuncs.MovImm,
}

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "calls":
		// Calls every probe site N times and prints the checksum.
		n, _ := strconv.Atoi(os.Getenv("N"))
		var sum uint64
		for i := 0; i < n; i++ {
			sum += asmfuncs.CallAll()
		}
		fmt.Println(sum)
	case "bench":
		// The benchmark loop: one call of the function named by SITE per
		// iteration, the same loop for every strategy and the floor.
		n, _ := strconv.Atoi(os.Getenv("N"))
		f := benchFuncs[os.Getenv("SITE")]
		if f == nil {
			fmt.Fprintln(os.Stderr, "unknown SITE")
			os.Exit(2)
		}
		for i := 0; i < n; i++ {
			f()
		}
	case "fault":
		// Deref of a bad pointer must panic with the genuine fault.
		defer func() {
			fmt.Println("recovered:", recover())
		}()
		asmfuncs.Deref(8)
		fmt.Println("no fault")
	case "trap":
		// SIGTRAPs the program sends itself must reach its handler.
		c := make(chan os.Signal, 8)
		signal.Notify(c, unix.SIGTRAP)
		for i := 0; i < 2; i++ {
			unix.Kill(os.Getpid(), unix.SIGTRAP)
			<-c
			asmfuncs.PushRBP()
		}
		fmt.Println("got 2 SIGTRAP")
	case "block":
		// Calls the probed functions once, then blocks in a system call.
		asmfuncs.CallAll()
		fmt.Println("ready")
		var fds [2]int
		unix.Pipe(fds[:])
		unix.Read(fds[0], make([]byte, 1))
	case "hitexit":
		// One hit, then the whole process ends at once.
		asmfuncs.PushRBP()
		os.Exit(3)
	case "jumptracer":
		jumpTracerChild()
	case "recordtracer":
		recordTracerChild()
	case "sleep":
		fmt.Println("ready")
		for {
			asmfuncs.CallAll()
			unix.Nanosleep(&unix.Timespec{Sec: 0, Nsec: 5e6}, nil)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode")
		os.Exit(2)
	}
	os.Exit(0)
}
