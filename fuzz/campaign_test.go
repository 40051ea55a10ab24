package fuzz

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCampaign runs a bounded campaign over every form: each case is checked
// on the CPU and through emu.Step; any disagreement fails with its reproducer.
func TestCampaign(t *testing.T) {
	c, err := NewCampaign(oracle(t), 1, nil)
	require.NoError(t, err)
	c.OnMismatch = func(m *Mismatch) { t.Errorf("mismatch:\n%s", m) }
	n := 3000
	if testing.Short() {
		n = 500
	}
	require.NoError(t, c.Run(n, nil))
	assert.Equal(t, n, c.Cases)
	assert.Empty(t, c.Missing(), "forms of the emulated set that no encoding reached")
	t.Logf("cases=%d mismatches=%d forms=%d", c.Cases, c.Mismatches, c.FormsCovered())
	t.Logf("\n%s", c.Report())
}
