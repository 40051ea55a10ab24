package probespec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/onetrap/onetrap/memio"
	"github.com/onetrap/onetrap/regs"
	"github.com/onetrap/onetrap/uprobe"
)

// Type says how a value prints (and compares, in a filter).
type Type uint8

// Types, as spelled after ':' in an argument word.
const (
	TypeDefault  Type = iota // hexadecimal, as a register
	TypeHex                  // x: hexadecimal
	TypeSigned               // d: signed decimal, 64 bits
	TypeUnsigned             // u: unsigned decimal, 64 bits
	TypeInt                  // i32: signed decimal, 32 bits (C int)
	TypeUint                 // u32: unsigned decimal, 32 bits
	TypeCString              // str: a NUL-terminated string at the address
	TypeGoString             // string: a Go string (pointer, length)
	TypeBytes                // bytes: a Go []byte (pointer, length, capacity)
	TypeVoid                 // void: nothing (a function's result only)
)

var typeNames = map[string]Type{
	"x": TypeHex, "d": TypeSigned, "u": TypeUnsigned, "i32": TypeInt, "u32": TypeUint,
	"str": TypeCString, "string": TypeGoString, "bytes": TypeBytes, "void": TypeVoid,
}

// ParseType parses a type name: x, d, u, i32, u32, str, string, bytes, void.
func ParseType(s string) (Type, error) {
	if t, ok := typeNames[s]; ok {
		return t, nil
	}
	return 0, fmt.Errorf("unknown type %q (x, d, u, i32, u32, str, string, bytes)", s)
}

// Size is the width in bytes of an integer type's value: 4 for i32 and u32,
// else 8.
func (t Type) Size() int {
	if t == TypeInt || t == TypeUint {
		return 4
	}
	return 8
}

// Signed reports whether the type compares and prints as a signed number.
func (t Type) Signed() bool { return t == TypeSigned || t == TypeInt }

// IsString reports whether the value is text read from memory.
func (t Type) IsString() bool {
	return t == TypeCString || t == TypeGoString || t == TypeBytes
}

// Value reads a's value as an integer from the registers: sign-extended for
// a signed 32-bit type, so that it compares as the program sees it.
func (a *Arg) Value(r *regs.Regs) uint64 {
	v := r.Get(a.Reg)
	if a.Type == TypeInt {
		v = uint64(int64(int32(v)))
	}
	return v
}

// String reads a string value (see Type.IsString) of at most max bytes.
// A string longer than max is cut, and more is true.
func (a *Arg) String(r *regs.Regs, m memio.Memory, max int) (s string, more bool, err error) {
	ptr := r.Get(a.Reg)
	switch a.Type {
	case TypeCString:
		if ptr == 0 {
			return "", false, errors.New("NULL")
		}
		s, err = uprobe.ReadCString(m, ptr, max)
	case TypeGoString:
		s, err = uprobe.ReadGoString(m, ptr, r.Get(a.Len), max)
	case TypeBytes:
		var b []byte
		b, err = uprobe.ReadGoSlice(m, ptr, r.Get(a.Len), 1, max)
		s = string(b)
	default:
		return "", false, fmt.Errorf("%s is not a string", a.Label)
	}
	if errors.Is(err, uprobe.ErrTooLong) {
		return s, true, nil
	}
	return s, false, err
}

// Append appends a's value as the type says: a number, a quoted string (cut
// at max bytes, with "..." after a cut one), or the address and the error
// when the string cannot be read.
func (a *Arg) Append(b []byte, r *regs.Regs, m memio.Memory, max int) []byte {
	return AppendValue(b, a.Type, a.Value(r), func() (string, bool, error) { return a.String(r, m, max) })
}

// AppendValue appends v printed as t says; str reads a string type's text.
func AppendValue(b []byte, t Type, v uint64, str func() (string, bool, error)) []byte {
	switch t {
	case TypeSigned, TypeInt:
		return strconv.AppendInt(b, int64(v), 10)
	case TypeUnsigned:
		return strconv.AppendUint(b, v, 10)
	case TypeUint:
		return strconv.AppendUint(b, v&0xffffffff, 10)
	case TypeCString, TypeGoString, TypeBytes:
		s, more, err := str()
		if err != nil {
			if t == TypeCString && v == 0 {
				return append(b, "NULL"...)
			}
			b = append(b, "0x"...)
			b = strconv.AppendUint(b, v, 16)
			return append(b, " <unreadable>"...)
		}
		b = strconv.AppendQuote(b, s)
		if more {
			b = append(b, "..."...)
		}
		return b
	case TypeVoid:
		return b
	}
	b = append(b, "0x"...)
	return strconv.AppendUint(b, v, 16)
}

// CondSpec is a parsed filter: comparisons joined by && and ||, && binding
// tighter, as in
//
//	malloc if arg0 > 4096
//	open if arg0:str == "/etc/passwd" || arg1 != 0
//	read if retval:d < 0
//
// An operand is argN, retval or a register, optionally typed; the value is
// an integer (decimal, negative, or 0x hex) or a double-quoted string for a
// string operand. Numbers compare signed when the operand's type is signed
// (d, i32) or the value is negative, else unsigned.
type CondSpec struct {
	Raw string
	Or  [][]CmpSpec // a disjunction of conjunctions
}

// CmpSpec is one comparison of a filter.
type CmpSpec struct {
	Operand ArgSpec
	Op      string // == != < <= > >=
	Num     uint64 // the value, as a 64-bit pattern
	Neg     bool   // the value was written negative
	Str     string
	IsStr   bool
}

func parseCond(s string) (*CondSpec, error) {
	c := &CondSpec{Raw: s}
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty filter after 'if'")
	}
	for _, alt := range strings.Split(s, "||") {
		var and []CmpSpec
		for _, term := range strings.Split(alt, "&&") {
			cmp, err := parseCmp(strings.TrimSpace(term))
			if err != nil {
				return nil, err
			}
			and = append(and, cmp)
		}
		c.Or = append(c.Or, and)
	}
	return c, nil
}

var cmpOps = []string{"==", "!=", "<=", ">=", "<", ">"}

func parseCmp(t string) (CmpSpec, error) {
	for _, op := range cmpOps {
		i := strings.Index(t, op)
		if i < 0 {
			continue
		}
		lhs, rhs := strings.TrimSpace(t[:i]), strings.TrimSpace(t[i+len(op):])
		a, err := parseOperand(lhs)
		if err != nil {
			return CmpSpec{}, fmt.Errorf("filter %q: %s: %w", t, lhs, err)
		}
		c := CmpSpec{Operand: a, Op: op}
		if q, err := strconv.Unquote(rhs); err == nil && strings.HasPrefix(rhs, `"`) {
			if a.Type == TypeDefault {
				c.Operand.Type = TypeCString
			}
			if !c.Operand.Type.IsString() || (op != "==" && op != "!=") {
				return CmpSpec{}, fmt.Errorf("filter %q: a string compares with == or != to a string operand", t)
			}
			c.Str, c.IsStr = q, true
			return c, nil
		}
		if n, err := strconv.ParseInt(rhs, 0, 64); err == nil && n < 0 {
			c.Num, c.Neg = uint64(n), true
		} else if u, err := strconv.ParseUint(rhs, 0, 64); err == nil {
			c.Num = u
		} else {
			return CmpSpec{}, fmt.Errorf("filter %q: %q is not a number nor a quoted string", t, rhs)
		}
		return c, nil
	}
	return CmpSpec{}, fmt.Errorf("filter %q: no comparison (== != < <= > >=)", t)
}

// Cond is a filter resolved for a calling convention.
type Cond struct {
	Raw string
	Or  [][]Cmp
	// NeedsRet is set when a comparison reads retval: the filter is
	// decided at the return.
	NeedsRet bool
}

// Cmp is a resolved comparison.
type Cmp struct {
	CmpSpec
	Arg Arg
}

func (c *CondSpec) resolve(abi uprobe.ABI) (*Cond, error) {
	if c == nil {
		return nil, nil
	}
	out := &Cond{Raw: c.Raw}
	for _, and := range c.Or {
		var rs []Cmp
		for _, cs := range and {
			a, err := ResolveArg(cs.Operand, abi)
			if err != nil {
				return nil, fmt.Errorf("filter: %w", err)
			}
			out.NeedsRet = out.NeedsRet || a.Ret
			rs = append(rs, Cmp{CmpSpec: cs, Arg: a})
		}
		out.Or = append(out.Or, rs)
	}
	return out, nil
}

// Eval tells whether the filter holds. entry holds the registers at the
// function's entry (or at the probe, for a probe that is not a call), ret
// those at its return; with ret nil, a comparison on retval counts as true,
// so that a call is dropped at its entry only when no result can save it.
// String operands are read from m, at most max bytes.
func (c *Cond) Eval(entry, ret *regs.Regs, m memio.Memory, max int) bool {
	if c == nil {
		return true
	}
	for _, and := range c.Or {
		ok := true
		for i := range and {
			if !and[i].eval(entry, ret, m, max) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (c *Cmp) eval(entry, ret *regs.Regs, m memio.Memory, max int) bool {
	r := entry
	if c.Arg.Ret {
		if ret == nil {
			return true
		}
		r = ret
	}
	if c.IsStr {
		s, more, err := c.Arg.String(r, m, max)
		eq := err == nil && !more && s == c.Str
		return eq == (c.Op == "==")
	}
	v := c.Arg.Value(r)
	if c.Arg.Type.Signed() || c.Neg {
		return compare(int64(v), int64(c.Num), c.Op)
	}
	return compare(v, c.Num, c.Op)
}

func compare[T int64 | uint64](a, b T, op string) bool {
	switch op {
	case "==":
		return a == b
	case "!=":
		return a != b
	case "<":
		return a < b
	case "<=":
		return a <= b
	case ">":
		return a > b
	}
	return a >= b
}
