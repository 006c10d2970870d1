package testutil

import (
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// RequireMergesLikeForward checks a wrapped model whose adapter is not the
// identity (random init) with no golden file: its logits on ids differ
// from base's, merging gives the adapted logits within 1e-4, unmerging
// gives them back, and Load(Save(x)) onto reload() gives them bit for bit.
// It frees m's adapters by unloading.
func RequireMergesLikeForward(t *testing.T, m *peft.Model, baseLogits []float32, ids []int64, rows int, reload func() models.Model) {
	t.Helper()
	adapted := IDsLogits(t, m, ids, rows)
	require.Greater(t, MaxDiff(adapted, baseLogits), 1e-4, "the adapter changes the logits")
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	loaded, err := peft.Load(reload(), dir)
	require.NoError(t, err)
	require.True(t, EqualF32(adapted, IDsLogits(t, loaded, ids, rows)), "Load(Save(x))")
	nn.FreeParams(loaded)
	require.NoError(t, m.Merge(true))
	d := MaxDiff(adapted, IDsLogits(t, m, ids, rows))
	t.Logf("merged - adapted: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.NoError(t, m.Unmerge())
	require.LessOrEqual(t, MaxDiff(adapted, IDsLogits(t, m, ids, rows)), 1e-5)
	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	require.LessOrEqual(t, MaxDiff(adapted, IDsLogits(t, merged, ids, rows)), 1e-4)
}
