package orthtest

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// RequireTwoAdaptersOnBiasedLayers wraps bloom-tiny (whose fused
// query_key_value and dense layers have biases) with two random adapters
// made by newCfg, both active: merging both gives the adapted logits, as
// does unmerging afterwards then running unmerged; disabled gives the
// base; and the adapters change the logits.
func RequireTwoAdaptersOnBiasedLayers(t *testing.T, newCfg func() peft.Config) {
	base, err := bloom.Load(testutil.Fixtures(t, "bloom-tiny"))
	require.NoError(t, err)
	plain := testutil.IDsLogits(t, base, ids, 2)
	m, err := peft.New(base, newCfg())
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.AddAdapter("second", newCfg()))
	one := testutil.IDsLogits(t, m, ids, 2)
	require.NoError(t, m.SetAdapter(peft.DefaultAdapter, "second"))
	both := testutil.IDsLogits(t, m, ids, 2)
	require.Greater(t, testutil.MaxDiff(plain, one), 1e-3)
	require.Greater(t, testutil.MaxDiff(one, both), 1e-3)

	require.NoError(t, m.Merge(false))
	d := testutil.MaxDiff(both, testutil.IDsLogits(t, m, ids, 2))
	t.Logf("two adapters, merged vs forward: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.NoError(t, m.Unmerge())
	require.LessOrEqual(t, testutil.MaxDiff(both, testutil.IDsLogits(t, m, ids, 2)), 1e-4)
	restore := m.DisableAdapters()
	require.LessOrEqual(t, testutil.MaxDiff(plain, testutil.IDsLogits(t, m, ids, 2)), 1e-5)
	restore()
}
