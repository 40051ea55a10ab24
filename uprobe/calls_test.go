package uprobe

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func funcs[T any](fs []Frame[T]) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, f.Func)
	}
	return out
}

func TestCallsRecursionAndLongjmp(t *testing.T) {
	var c Calls[int]
	// f calls f calls f (deeper is a larger position).
	for i := 0; i < 3; i++ {
		assert.Empty(t, c.Enter(1, uint64(10+i), 0x100, 0xf, i))
	}
	done, gone := c.Return(1, 12, 0xf)
	require.Len(t, done, 1)
	assert.Equal(t, 2, done[0].Value)
	assert.Empty(t, gone)
	assert.Equal(t, 2, c.Depth(1))

	// A longjmp from depth 3 back to the outermost f's caller: the next
	// call at position 10 finds both fs gone.
	gone = c.Enter(1, 10, 0x100, 0xf, 9)
	assert.Equal(t, []uint64{0xf, 0xf}, funcs(gone))
	done, gone = c.Return(1, 10, 0xf)
	assert.Empty(t, gone)
	require.Len(t, done, 1)
	assert.Equal(t, 9, done[0].Value)
	assert.Zero(t, c.Depth(1))
}

func TestCallsTailCall(t *testing.T) {
	var c Calls[int]
	c.Enter(1, 10, 0x100, 0xa, 1)
	// a jumps to b: same position, another function, same return address.
	assert.Empty(t, c.Enter(1, 10, 0x100, 0xb, 2))
	done, gone := c.Return(1, 10, 0xb)
	assert.Empty(t, gone)
	assert.Equal(t, []uint64{0xb, 0xa}, funcs(done), "b's RET ends a's call too")

	// Another stack is not disturbed, and a RET whose entry was not seen
	// ends nothing.
	c.Enter(2, 5, 0x100, 0xa, 3)
	done, _ = c.Return(1, 7, 0xa)
	assert.Empty(t, done)
	assert.Equal(t, 1, c.Depth(2))
}

// After a longjmp out of a, a call of b from the same position but another
// call site finds a gone.
func TestCallsSamePositionOtherSite(t *testing.T) {
	var c Calls[int]
	c.Enter(1, 10, 0x100, 0xa, 1)
	assert.Equal(t, []uint64{0xa}, funcs(c.Enter(1, 10, 0x108, 0xb, 2)))
	done, _ := c.Return(1, 10, 0xb)
	assert.Equal(t, []uint64{0xb}, funcs(done))
}
