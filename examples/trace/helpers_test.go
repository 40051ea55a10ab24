package main

import (
	"debug/elf"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

// elfSymbols returns how many entries the file's .symtab has.
func elfSymbols(path string) (int, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err == elf.ErrNoSymbols {
		return 0, nil
	}
	return len(syms), err
}
