package ia3_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"

	_ "github.com/gopeft/peft/ia3"
)

// llama-tiny__ia3 (PEFT 0.10): adapted, disabled and merged logits, and
// every merged weight.
func TestIA3Fixture(t *testing.T) {
	fx := fixtures(t)
	e := openExpected(t, "llama-tiny__ia3")
	m, err := peft.Load(loadLlama(t), filepath.Join(fx, "adapters", "llama-tiny", "ia3"))
	require.NoError(t, err)
	d := maxDiff(logitsOf(t, m, e), e.f32(t, "logits"))
	t.Logf("adapted max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)

	restore := m.DisableAdapters()
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits_disabled")), 1e-4)
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits_base")), 1e-4)
	restore()

	// merge, unmerge (approximate: PEFT divides by l+1e-8), merge again
	require.NoError(t, m.Merge(false))
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits_merged")), 1e-4)
	require.NoError(t, m.Unmerge())
	require.LessOrEqual(t, maxDiff(logitsOf(t, m, e), e.f32(t, "logits")), 1e-4)

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	d = maxDiff(logitsOf(t, merged, e), e.f32(t, "logits_merged"))
	t.Logf("merged max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	params := map[string]*nn.Param{}
	for _, np := range nn.NamedParams(merged) {
		params[np.Name] = np.Param
		require.NotContains(t, np.Name, "ia3_")
	}
	s := tensor.NoGradScope()
	defer s.Close()
	n := 0
	for _, key := range e.set.Names() {
		if !strings.HasPrefix(key, "merged.") {
			continue
		}
		p, ok := params[strings.TrimPrefix(key, "merged.")]
		require.True(t, ok, key)
		require.LessOrEqual(t, maxDiff(s.Float32s(p.T()), e.f32(t, key)), 1e-5, key)
		n++
	}
	require.Equal(t, 6, n)
	nn.FreeParams(merged)
}
