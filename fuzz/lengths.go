package fuzz

import (
	"debug/elf"
	"errors"
	"fmt"
	"sort"

	"github.com/onetrap/onetrap/decode"
)

// LengthStats counts a length campaign.
type LengthStats struct {
	Files     int // ELF files read
	Funcs     int // function bodies walked
	Insns     int // instructions decoded along them
	Rejected  int // decoded as Reject: not measured
	Undecoded int // decode errors (the walk of that function stops there)
	Checked   int // instructions not rejected whose length the CPU confirmed or denied
	Distinct  int // distinct encodings among them, each run on the CPU once
	Illegal   int // distinct encodings the CPU refused with SIGILL: not measurable
	Disagree  int // instructions whose decoded length the CPU denies
}

// String gives the counts as key=value pairs.
func (s LengthStats) String() string {
	return fmt.Sprintf("files=%d funcs=%d insns=%d checked=%d distinct=%d rejected=%d undecoded=%d illegal=%d disagreements=%d",
		s.Files, s.Funcs, s.Insns, s.Checked, s.Distinct, s.Rejected, s.Undecoded, s.Illegal, s.Disagree)
}

// LengthDisagreement is an instruction whose length decode and the CPU see
// differently.
type LengthDisagreement struct {
	File   string
	Addr   uint64
	Code   []byte // the bytes of the longer reading
	Decode int
	CPU    int   // 0 when the CPU reads past Code
	Err    error // ErrTooShort when the CPU reads past the decoded length
	Text   string
}

// String describes the disagreement on one line, bytes included.
func (d *LengthDisagreement) String() string {
	cpu := fmt.Sprint(d.CPU)
	if d.Err != nil {
		cpu = "more (" + d.Err.Error() + ")"
	}
	return fmt.Sprintf("length: %s %#x: % x (%s): decode %d bytes, cpu %s", d.File, d.Addr, d.Code, d.Text, d.Decode, cpu)
}

// LengthChecker referees decode's lengths with the CPU.
type LengthChecker struct {
	O     *Oracle
	Stats LengthStats
	// Max bounds the instructions decoded (0: no bound), PerFile those
	// decoded in one file.
	Max, PerFile int
	// OnDisagree is called for every disagreement.
	OnDisagree func(*LengthDisagreement)
	// Progress, when set, is called after every function.
	Progress func(*LengthStats)

	seen map[string]int // encoding -> CPU length, or -1 for SIGILL
}

// Check decodes code at pc and, unless decode refuses it or fails, checks
// its length with the CPU. It returns the decoded instruction, or nil when
// decoding failed.
func (l *LengthChecker) Check(file string, code []byte, pc uint64) (*decode.Insn, error) {
	in, err := decode.Decode(code, pc)
	if err != nil {
		l.Stats.Undecoded++
		return nil, nil
	}
	l.Stats.Insns++
	if in.Verdict == decode.Refused {
		l.Stats.Rejected++
		return in, nil
	}
	if l.seen == nil {
		l.seen = map[string]int{}
	}
	key := string(in.Code())
	n, ok := l.seen[key]
	if !ok {
		var lerr error
		n, lerr = l.O.CPULength(in.Code())
		switch {
		case errors.Is(lerr, ErrIllegal):
			n = -1
			l.Stats.Illegal++
		case errors.Is(lerr, ErrTooShort):
			n = 16 // longer than any instruction may be
		case lerr != nil:
			return in, lerr
		}
		l.seen[key] = n
		l.Stats.Distinct++
	}
	if n < 0 {
		return in, nil
	}
	l.Stats.Checked++
	if n != in.Len {
		l.Stats.Disagree++
		if l.OnDisagree != nil {
			d := &LengthDisagreement{File: file, Addr: pc, Code: append([]byte(nil), code[:min(len(code), max(n, in.Len), 15)]...),
				Decode: in.Len, CPU: n, Text: insnText(in)}
			if n > 15 {
				d.CPU, d.Err = 0, ErrTooShort
			}
			l.OnDisagree(d)
		}
	}
	return in, nil
}

// File walks every function symbol of the ELF file at path (its symbol table
// and its dynamic symbols), decoding linearly through each body and checking
// every instruction decode does not reject against the CPU. It stops when
// Max instructions have been decoded in all, or PerFile in this file.
func (l *LengthChecker) File(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: not x86-64", path)
	}
	syms, _ := f.Symbols()
	dyn, _ := f.DynamicSymbols()
	syms = append(syms, dyn...)
	sort.Slice(syms, func(i, j int) bool { return syms[i].Value < syms[j].Value })
	l.Stats.Files++
	first := l.Stats.Insns
	data := map[elf.SectionIndex][]byte{}
	done := map[uint64]bool{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || done[s.Value] ||
			s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) {
			continue
		}
		done[s.Value] = true
		sec := f.Sections[s.Section]
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_EXECINSTR == 0 ||
			s.Value < sec.Addr || s.Value+s.Size > sec.Addr+sec.Size {
			continue
		}
		b, ok := data[s.Section]
		if !ok {
			if b, err = sec.Data(); err != nil {
				return fmt.Errorf("%s: section %s: %w", path, sec.Name, err)
			}
			data[s.Section] = b
		}
		body := b[s.Value-sec.Addr : s.Value-sec.Addr+s.Size]
		l.Stats.Funcs++
		for off := 0; off < len(body); {
			if l.Max > 0 && l.Stats.Insns >= l.Max || l.PerFile > 0 && l.Stats.Insns-first >= l.PerFile {
				return nil
			}
			in, err := l.Check(path, body[off:], s.Value+uint64(off))
			if err != nil {
				return err
			}
			if in == nil {
				break
			}
			off += in.Len
		}
		if l.Progress != nil {
			l.Progress(&l.Stats)
		}
	}
	return nil
}
