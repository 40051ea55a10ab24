package uprobe

import (
	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
)

// FrameStack returns up to max program counters of the user stack of a
// stopped thread, innermost first, by following frame pointers: always
// there in Go, and in C compiled with them (-fno-omit-frame-pointer).
// atBoundary says the thread is at a function's first instruction or at a
// RET, where rbp is still the caller's and the return address is at rsp;
// elsewhere the function's own frame is walked from rbp. The walk stops at
// a zero or non-increasing frame pointer, or an unreadable frame, so a
// program without frame pointers gives a short stack, never a wrong long
// one. buf is reused when large enough.
func FrameStack(r *regs.Regs, m memio.Memory, atBoundary bool, max int, buf []uint64) []uint64 {
	out := buf[:0]
	if max <= 0 {
		return out
	}
	out = append(out, r.RIP)
	if atBoundary && len(out) < max {
		ret, err := memio.ReadUint(m, r.GPR[regs.RSP], 8)
		if err != nil || ret == 0 {
			return out
		}
		out = append(out, ret)
	}
	fp := r.GPR[regs.RBP]
	var frame [16]byte
	for len(out) < max && fp != 0 && fp%8 == 0 {
		if _, err := m.ReadAt(frame[:], int64(fp)); err != nil {
			break
		}
		next := le64(frame[:8])
		ret := le64(frame[8:])
		if ret == 0 {
			break
		}
		out = append(out, ret)
		if next <= fp {
			break
		}
		fp = next
	}
	return out
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
