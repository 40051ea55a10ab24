package symbols

import (
	"fmt"
	"strings"
)

func globName(pattern, name string) bool {
	if ok, _ := globMatch(pattern, name); ok {
		return true
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 && !strings.Contains(pattern, "/") {
		ok, _ := globMatch(pattern, name[i+1:])
		return ok
	}
	return false
}

// CheckGlob reports a malformed pattern: an unterminated class or a
// trailing backslash.
func CheckGlob(p string) error {
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			if i+1 == len(p) {
				return fmt.Errorf("trailing \\ in pattern %q", p)
			}
			i++
		case '[':
			j := i + 1
			if j < len(p) && (p[j] == '!' || p[j] == '^') {
				j++
			}
			if j < len(p) && p[j] == ']' {
				j++
			}
			k := strings.IndexByte(p[j:], ']')
			if k < 0 {
				return fmt.Errorf("unterminated [ in pattern %q", p)
			}
			i = j + k
		}
	}
	return nil
}

// globMatch is path.Match without the special meaning of '/': '*' matches
// any run of characters, '?' any one, [...] a class ([!...] or [^...]
// negated, a-z ranges), '\' escapes. It backtracks only to the last '*',
// so its time is at most proportional to len(pattern)*len(name).
func globMatch(pattern, name string) (bool, error) {
	px, nx := 0, 0
	starP, starN := -1, -1
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			if pattern[px] == '*' {
				starP, starN = px, nx
				px++
				continue
			}
			if nx < len(name) {
				ok, w, err := matchOne(pattern[px:], name[nx])
				if err != nil {
					return false, err
				}
				if ok {
					px += w
					nx++
					continue
				}
			}
		}
		if starP >= 0 && starN < len(name) {
			starN++
			px, nx = starP+1, starN
			continue
		}
		return false, CheckGlob(pattern)
	}
	return true, nil
}

// matchOne matches the single-character element at the start of pattern
// (a literal, '?', an escape or a class) against c, and returns the
// element's width in the pattern.
func matchOne(pattern string, c byte) (ok bool, width int, err error) {
	switch pattern[0] {
	case '?':
		return true, 1, nil
	case '\\':
		if len(pattern) < 2 {
			return false, 0, fmt.Errorf("trailing \\ in pattern")
		}
		return pattern[1] == c, 2, nil
	case '[':
		// The class runs to the first ']' after an optional negation and
		// an optional leading ']' (which is then a member).
		j := 1
		neg := false
		if j < len(pattern) && (pattern[j] == '!' || pattern[j] == '^') {
			neg = true
			j++
		}
		start := j
		if j < len(pattern) && pattern[j] == ']' {
			j++
		}
		k := strings.IndexByte(pattern[j:], ']')
		if k < 0 {
			return false, 0, fmt.Errorf("unterminated [ in pattern %q", pattern)
		}
		class := pattern[start : j+k]
		in := false
		for i := 0; i < len(class); i++ {
			if i+2 < len(class) && class[i+1] == '-' {
				if class[i] <= c && c <= class[i+2] {
					in = true
				}
				i += 2
			} else if class[i] == c {
				in = true
			}
		}
		return in != neg, j + k + 1, nil
	}
	return pattern[0] == c, 1, nil
}
