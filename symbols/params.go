package symbols

import (
	"debug/dwarf"
	"sync"
)

// Param is a parameter or result of a function, as DWARF describes it.
type Param struct {
	Name string
	// Kind is how the value is read and printed.
	Kind ParamKind
	// Size is the value's size in bytes.
	Size int64
}

// ParamKind classifies a parameter's type.
type ParamKind uint8

// Parameter kinds.
const (
	KindOther    ParamKind = iota // a struct, a float, ...: not in an integer register as one word
	KindSigned                    // a signed integer
	KindUnsigned                  // an unsigned integer or a bool
	KindPointer                   // a pointer
	KindCString                   // a pointer to char
	KindGoString                  // a Go string: pointer and length
	KindGoSlice                   // a Go slice: pointer, length, capacity
)

// Signature is what DWARF says of a function's parameters and results.
type Signature struct {
	Params  []Param
	Results []Param // Go's results (C has at most one, in Results[0])
	Void    bool    // a C function known to return nothing
}

type sigIndex struct {
	once sync.Once
	byPC map[uint64]dwarf.Offset
}

// Signature returns fn's parameters from DWARF, or nil when the file has
// no DWARF entry for it. The first call indexes the file's subprograms.
func (f *File) Signature(fn *Func) *Signature {
	dw, err := f.dwarf()
	if err != nil || dw == nil {
		return nil
	}
	idx := &f.sigs
	idx.once.Do(func() { idx.byPC = indexSubprograms(dw) })
	off, ok := idx.byPC[fn.Addr]
	if !ok {
		return nil
	}
	return readSignature(dw, off)
}

func indexSubprograms(dw *dwarf.Data) (out map[uint64]dwarf.Offset) {
	out = map[uint64]dwarf.Offset{}
	defer func() { recover() }() // corrupt DWARF: what was indexed so far
	r := dw.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			return out
		}
		if e.Tag != dwarf.TagSubprogram {
			continue
		}
		if pc, ok := e.Val(dwarf.AttrLowpc).(uint64); ok {
			out[pc] = e.Offset
		}
		if !e.Children {
			continue
		}
		// Parameters and nested scopes need not be walked here.
		r.SkipChildren()
	}
}

func readSignature(dw *dwarf.Data, off dwarf.Offset) (sig *Signature) {
	defer func() {
		if recover() != nil {
			sig = nil
		}
	}()
	r := dw.Reader()
	r.Seek(off)
	e, err := r.Next()
	if err != nil || e == nil {
		return nil
	}
	sig = &Signature{}
	if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
		if typ, err := dw.Type(t); err == nil {
			sig.Results = append(sig.Results, Param{Kind: kindOf(typ), Size: typ.Size()})
		}
	} else {
		sig.Void = true
	}
	if !e.Children {
		return sig
	}
	for {
		c, err := r.Next()
		if err != nil || c == nil || c.Tag == 0 {
			return sig
		}
		if c.Tag != dwarf.TagFormalParameter {
			if c.Children {
				r.SkipChildren()
			}
			continue
		}
		p := Param{}
		p.Name, _ = c.Val(dwarf.AttrName).(string)
		if t, ok := c.Val(dwarf.AttrType).(dwarf.Offset); ok {
			if typ, err := dw.Type(t); err == nil {
				p.Kind, p.Size = kindOf(typ), typ.Size()
			}
		}
		// Go marks results with DW_AT_variable_parameter.
		if isRet, _ := c.Val(dwarf.AttrVarParam).(bool); isRet {
			sig.Void = false
			sig.Results = append(sig.Results, p)
		} else {
			sig.Params = append(sig.Params, p)
		}
	}
}

func kindOf(t dwarf.Type) ParamKind {
	for {
		switch tt := t.(type) {
		case *dwarf.TypedefType:
			if tt.Name == "string" {
				return KindGoString
			}
			t = tt.Type
			continue
		case *dwarf.QualType:
			t = tt.Type
			continue
		case *dwarf.IntType, *dwarf.CharType:
			return KindSigned
		case *dwarf.UintType, *dwarf.UcharType, *dwarf.BoolType:
			return KindUnsigned
		case *dwarf.PtrType:
			if isChar(tt.Type) {
				return KindCString
			}
			return KindPointer
		case *dwarf.StructType:
			switch {
			case tt.StructName == "string":
				return KindGoString
			case len(tt.StructName) > 2 && tt.StructName[:2] == "[]":
				return KindGoSlice
			}
			return KindOther
		}
		return KindOther
	}
}

func isChar(t dwarf.Type) bool {
	for {
		switch tt := t.(type) {
		case *dwarf.QualType:
			t = tt.Type
		case *dwarf.TypedefType:
			t = tt.Type
		case *dwarf.CharType, *dwarf.UcharType:
			return true
		default:
			return false
		}
	}
}
