package decode

import (
	"errors"
	"testing"
)

// FuzzDecode: Decode never panics; without an error the instruction has a
// length in 1..15 that the own length tables agree with, and its bytes are
// the input's; with one, the error is an *Error.
func FuzzDecode(f *testing.F) {
	for _, code := range allCases() {
		f.Add(hx(f, code))
	}
	f.Add([]byte{0xc5, 0xf8})
	f.Add([]byte{0x62, 0xf1, 0x7d, 0x48, 0x70})
	f.Add([]byte{0x8f, 0xe8, 0x78, 0xc2, 0xc1, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Decode(data, 0x7f0000001000)
		if err != nil {
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("% x: error %T is not *Error: %v", data, err, err)
			}
			if in != nil {
				t.Fatalf("% x: both an Insn and an error", data)
			}
			return
		}
		if in.Len < 1 || in.Len > MaxLen || in.Len > len(data) {
			t.Fatalf("% x: length %d", data, in.Len)
		}
		p, lerr := parse(data)
		if lerr != nil || p.n != in.Len {
			t.Fatalf("% x: Decode length %d, tables %d (%v)", data, in.Len, p.n, lerr)
		}
		if string(in.Code()) != string(data[:in.Len]) {
			t.Fatalf("% x: bytes % x", data, in.Code())
		}
		if in.Verdict > CanRun {
			t.Fatalf("% x: verdict %v", data, in.Verdict)
		}
		if in.Verdict != CanRun && in.Reason == "" {
			t.Fatalf("% x: %v without a reason", data, in.Verdict)
		}
		if in.RIPRel && (in.DispOff <= 0 || in.DispOff+4 > in.Len || in.ModRMOff < 0 || in.ModRMOff >= in.DispOff) {
			t.Fatalf("% x: rip-relative recipe DispOff %d ModRMOff %d", data, in.DispOff, in.ModRMOff)
		}
		_ = in.String()
	})
}

// BenchmarkDecode measures decoding of typical probe sites (done once per
// probe insertion).
func BenchmarkDecode(b *testing.B) {
	sites := [][]byte{
		hx(b, "55"),                         // push rbp
		hx(b, "f3 0f 1e fa"),                // endbr64
		hx(b, "48 89 e5"),                   // mov rbp, rsp
		hx(b, "48 83 ec 18"),                // sub rsp, 0x18
		hx(b, "49 3b 66 10"),                // cmp rsp, [r14+0x10]
		hx(b, "48 8b 05 f0 ff ff ff"),       // mov rax, [rip-0x10]
		hx(b, "4c 8d 64 24 f8"),             // lea r12, [rsp-8]
		hx(b, "64 48 8b 04 25 28 00 00 00"), // mov rax, fs:[0x28]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Decode(sites[i%len(sites)], 0x401000); err != nil {
			b.Fatal(err)
		}
	}
}
