package lntuning_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lntuning"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// peft estimate's LN tuning count from config.json alone equals the
// fixture's trainable parameters on llama-tiny, and the real count of
// PEFT's defaults on bloom-tiny (LayerNorms: weight and bias).
func TestEstimateCountsLNTuning(t *testing.T) {
	shape, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny", "config.json"))
	require.NoError(t, err)
	e, err := peft.EstimateMemory(shape, peft.MemoryOptions{Method: "lntuning"})
	require.NoError(t, err)
	require.EqualValues(t, 320, e.Trainable)

	bs, err := peft.ReadModelShape(testutil.Fixtures(t, "bloom-tiny", "config.json"))
	require.NoError(t, err)
	e, err = peft.EstimateMemory(bs, peft.MemoryOptions{Method: "lntuning"})
	require.NoError(t, err)
	m, err := lntuning.Wrap(testutil.Load(t, bloom.Load, "bloom-tiny"), &lntuning.Config{})
	require.NoError(t, err)
	tr, _ := nn.CountParams(m)
	require.Equal(t, tr, e.Trainable)

	// the linear targets of other methods (peft estimate --method all --targets q_proj): PEFT's defaults
	e, err = peft.EstimateMemory(shape, peft.MemoryOptions{Method: "lntuning", TargetModules: []string{"q_proj"}})
	require.NoError(t, err)
	require.EqualValues(t, 320, e.Trainable)
	e, err = peft.EstimateMemory(shape, peft.MemoryOptions{Method: "lntuning", TargetModules: []string{"norm"}})
	require.NoError(t, err)
	require.EqualValues(t, 64, e.Trainable)
	_, err = peft.EstimateMemory(shape, peft.MemoryOptions{Method: "lntuning", TargetModules: []string{"norm", "q_proj"}})
	require.ErrorContains(t, err, `lntuning target "q_proj"`)
}
