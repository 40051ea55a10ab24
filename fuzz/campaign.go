package fuzz

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"

	"github.com/onetrap/onetrap/decode"
	"github.com/onetrap/onetrap/emu"
)

// FormStats counts what became of one form's encodings.
type FormStats struct {
	Emulated   int            // decoded as Emulate and run on both sides
	Faulted    int            // of those, the CPU faulted (and emu had to as well)
	Other      map[string]int // not emulated, by reason
	Undecoded  int            // decode.Decode returned an error
	UndecodedX string         // an example of those
}

// Campaign generates cases from Forms and checks each against the CPU.
type Campaign struct {
	Checker *Checker
	Gen     *Gen
	Forms   []*Form
	Stats   map[*Form]*FormStats
	// OnMismatch is called for every mismatch found.
	OnMismatch func(*Mismatch)
	// Cases counts the cases checked against the CPU, Mismatches those
	// that disagreed.
	Cases, Mismatches int
	// Shapes counts the checked cases by Shape.
	Shapes map[string]int
	// Foreign counts cases skipped because they touched the sandbox's own
	// mappings, which the emulator's memory does not model.
	Foreign int
	// Unrunnable counts cases skipped because the CPU cannot be started
	// from their state (ErrUnrunnable): there is nothing to compare with.
	Unrunnable int

	st State
}

// NewCampaign returns a campaign over the forms whose names match re (all of
// them when re is nil), with a generator seeded by seed, that checks with ch
// (NewChecker's when nil).
func NewCampaign(o *Oracle, seed uint64, re *regexp.Regexp, ch *Checker) (*Campaign, error) {
	if ch == nil {
		var err error
		if ch, err = NewChecker(o); err != nil {
			return nil, err
		}
	}
	c := &Campaign{Checker: ch, Gen: &Gen{R: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))},
		Stats: map[*Form]*FormStats{}, Shapes: map[string]int{}}
	for _, f := range Forms {
		if re == nil || re.MatchString(f.Name) {
			c.Forms = append(c.Forms, f)
			c.Stats[f] = &FormStats{Other: map[string]int{}}
		}
	}
	if len(c.Forms) == 0 {
		return nil, fmt.Errorf("fuzz: no form matches %v", re)
	}
	return c, nil
}

// Run checks n cases, cycling through the forms, calling progress (if not
// nil) after each attempt with the number of cases done. It runs on the
// oracle's thread. The error is the oracle's failure, never a mismatch.
func (c *Campaign) Run(n int, progress func(done int)) error {
	var err error
	c.Checker.O.Do(func() {
		start := c.Cases
		for i := 0; c.Cases-start < n; i++ {
			f := c.Forms[i%len(c.Forms)]
			if err = c.One(f); err != nil {
				return
			}
			if progress != nil {
				progress(c.Cases - start)
			}
			if i > 50*n+1000 && c.Cases == start {
				err = fmt.Errorf("fuzz: no form in the selection decodes as emulated")
				return
			}
		}
	})
	return err
}

// One generates one instruction of form f and, when the decoder emulates it,
// checks it from a random state.
func (c *Campaign) One(f *Form) error {
	s := c.Stats[f]
	if s == nil {
		s = &FormStats{Other: map[string]int{}}
		c.Stats[f] = s
	}
	e := c.Gen.Encode(f)
	in, err := decode.Decode(e.Code, e.RIP)
	if err != nil {
		s.Undecoded++
		if s.UndecodedX == "" {
			s.UndecodedX = err.Error()
		}
		return nil
	}
	if in.Len != len(e.Code) {
		// The encoder's length is only a claim: the CPU decides.
		n, lerr := c.Checker.O.Length(e.Code)
		if lerr == nil && n != in.Len {
			c.Mismatches++
			c.report(&Mismatch{Form: f.Name, Code: e.Code, Text: insnText(in),
				Why: []string{fmt.Sprintf("decode measures %d bytes, the CPU %d (%v)", in.Len, n, in.Verdict)}})
		}
		return nil
	}
	if ok, why := emu.Supports(in); !ok {
		s.Other[in.Verdict.String()+": "+why]++
		return nil
	}
	c.Gen.Prepare(in, &c.st)
	m, err := c.Checker.Check(in, &c.st)
	if errors.Is(err, ErrForeign) {
		c.Foreign++
		return nil
	}
	if errors.Is(err, ErrUnrunnable) {
		c.Unrunnable++
		return nil
	}
	if err != nil {
		return err
	}
	c.Cases++
	s.Emulated++
	c.Shapes[Shape(in)]++
	if c.Checker.out.Faulted() {
		s.Faulted++
	}
	if m != nil {
		m.Form = f.Name
		c.Mismatches++
		c.report(m)
	}
	return nil
}

func (c *Campaign) report(m *Mismatch) {
	if c.OnMismatch != nil {
		c.OnMismatch(m)
	}
}

// FormsCovered returns how many forms had at least one emulated case.
func (c *Campaign) FormsCovered() int {
	n := 0
	for _, f := range c.Forms {
		if c.Stats[f].Emulated > 0 {
			n++
		}
	}
	return n
}

// Missing lists the forms expected to be emulated that produced no
// emulated case, each with why its encodings were not emulated.
func (c *Campaign) Missing() []string {
	var out []string
	for _, f := range c.Forms {
		s := c.Stats[f]
		if !f.Expect || s.Emulated > 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s", f.Name, s.summary()))
	}
	return out
}

// summary tells what became of a form's encodings.
func (s *FormStats) summary() string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range s.Other {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || all[i].v == all[j].v && all[i].k < all[j].k })
	var parts []string
	if s.Emulated > 0 {
		parts = append(parts, fmt.Sprintf("%d emulated (%d faulting)", s.Emulated, s.Faulted))
	}
	for i, e := range all {
		if i == 4 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%d %s", e.v, e.k))
	}
	if s.Undecoded > 0 {
		parts = append(parts, fmt.Sprintf("%d undecoded (%s)", s.Undecoded, s.UndecodedX))
	}
	if len(parts) == 0 {
		return "never generated"
	}
	return strings.Join(parts, "; ")
}

// Report writes one line per form: its cases and what was not emulated.
func (c *Campaign) Report() string {
	var b strings.Builder
	for _, f := range c.Forms {
		fmt.Fprintf(&b, "%-34s %s\n", f.Name, c.Stats[f].summary())
	}
	return b.String()
}
