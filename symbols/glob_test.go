package symbols

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGlob(t *testing.T) {
	cases := []struct {
		pat, name string
		want      bool
	}{
		{"http.*", "http.Get", true},
		{"*", "net/http.Get", true}, // '*' crosses '/'
		{"net/*.Get", "net/http.Get", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[a-c]x", "bx", true},
		{"[!a-c]x", "bx", false},
		{"[^a-c]x", "dx", true},
		{"*cmp", "strncmp", true},
		{"*cmp", "strncmpx", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{"[]]", "]", true},
	}
	for _, c := range cases {
		got, err := globMatch(c.pat, c.name)
		require.NoError(t, err, c.pat)
		assert.Equal(t, c.want, got, "%q ~ %q", c.pat, c.name)
	}
	assert.True(t, globName("http.*", "net/http.Get"), "a pattern without '/' also tries the name after the package path")
	assert.False(t, globName("net/x*", "net/http.Get"))
}

func TestGlobLinear(t *testing.T) {
	// A pattern that makes naive backtracking exponential.
	pat := strings.Repeat("*a", 20) + "*b"
	name := strings.Repeat("a", 200)
	done := make(chan bool)
	go func() {
		ok, err := globMatch(pat, name)
		assert.NoError(t, err)
		done <- ok
	}()
	select {
	case ok := <-done:
		assert.False(t, ok)
	case <-time.After(5 * time.Second):
		t.Fatal("globMatch backtracks exponentially")
	}
}
