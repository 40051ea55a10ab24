package fuzz

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// TestSSE4aSpaceAgainstCPU walks 0f 78 and 0f 79 under every combination of
// 66, f2 and f3 (and REX placements) with register and memory ModRM bytes:
// where decode gives an error the CPU must refuse the bytes (SIGILL), where
// it gives an instruction that is not rejected the CPU must run it with the
// same length. VMREAD/VMWRITE (no prefix) are rejected and fault in user
// mode.
func TestSSE4aSpaceAgainstCPU(t *testing.T) {
	o := oracle(t)
	prefixes := []string{"", "66", "f2", "f3", "66 f2", "f2 66", "66 f3", "f3 66", "f2 f3", "f3 f2",
		"48", "66 48", "f2 48", "f3 48", "48 66", "48 f2"}
	errs, ok := 0, 0
	for _, pfx := range prefixes {
		for _, op := range []string{"78", "79"} {
			for _, modrm := range []string{"c0", "c8", "d1", "f9", "00", "05"} {
				code := hx(t, pfx+" 0f "+op+" "+modrm+" 01 02 00 00 00 00")
				t.Run(fmt.Sprintf("% x", code[:len(code)-4]), func(t *testing.T) {
					n, cerr := o.CPULength(code)
					in, derr := decode.Decode(code, CodePage)
					switch {
					case derr != nil:
						errs++
						assert.ErrorIs(t, cerr, ErrIllegal, "decode refuses what the CPU runs (%d bytes): %v", n, derr)
					case in.Verdict == decode.Refused:
						assert.Contains(t, in.Reason, "VMX")
						assert.ErrorIs(t, cerr, ErrIllegal, "VMX instructions fault in user mode")
					default:
						ok++
						require.NoError(t, cerr, "decode measures %v (%d bytes) which the CPU refuses", in, in.Len)
						assert.Equal(t, n, in.Len, "%v", in)
					}
				})
			}
		}
	}
	assert.NotZero(t, errs)
	assert.NotZero(t, ok)
}

// cornerCases are encodings at the edges of the prefix rules: ignored REX
// prefixes, REX.W over 66 on relative branches (the TLS call), and NOP with
// REX.W.
var cornerCases = []string{
	"48 66 90", "41 66 90", "48 66 b8 01 00", "4c 2e 8b 00", "41 64 8b 03", "48 66 48 8b 00",
	"4c 66 89 05 10 00 00 00", "41 66 01 c8", "49 f3 0f 1e fa", "41 66 50", "48 f3 90",
	"66 66 48 e8 00 00 00 00", "66 66 48 e8 40 ff ff ff", "66 48 e9 10 00 00 00", "66 48 0f 85 00 f0 ff ff",
	"66 48 75 f0", "f2 66 66 48 e8 00 00 00 00",
	"48 0f 1f 00", "48 0f 1f c0", "66 48 0f 1f 84 00 00 00 00 00", "4d 0f 1f 84 24 00 00 00 00",
	"66 48 0f 1f 05 00 00 00 00", "41 66 4c 0f 1f 00", "48 0f 1f 08",
}

// TestCornersAgainstCPU measures each corner case on the CPU and, when it is
// emulated, runs it from random states on the CPU and through emu.Step.
func TestCornersAgainstCPU(t *testing.T) {
	o := oracle(t)
	ch, err := NewChecker(o)
	require.NoError(t, err)
	g := &Gen{R: rand.New(rand.NewPCG(7, 11))}
	emulated := 0
	for _, c := range cornerCases {
		t.Run(c, func(t *testing.T) {
			code := hx(t, c)
			rip := codeEnd - uint64(len(code))
			in, err := decode.Decode(code, rip)
			require.NoError(t, err)
			n, err := o.Length(code)
			require.NoError(t, err)
			require.Equal(t, n, in.Len, "%v", in)
			if ok, _ := emu.Supports(in); !ok {
				return
			}
			emulated++
			var st State
			for i := 0; i < 200; i++ {
				g.Prepare(in, &st)
				m, err := ch.Check(in, &st)
				if errors.Is(err, ErrForeign) || errors.Is(err, ErrUnrunnable) {
					continue
				}
				require.NoError(t, err)
				if m != nil {
					t.Fatalf("mismatch:\n%s", m)
				}
			}
		})
	}
	assert.GreaterOrEqual(t, emulated, 15)
}

func hx(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err, "bad hex %q", s)
	return b
}
