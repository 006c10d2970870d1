package lntuning_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lntuning"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// BLOOM's LayerNorms (weight and bias, PEFT's defaults for bloom): tuned
// copies change the logits, merge into the model, and save/load.
func TestBloomLayerNorms(t *testing.T) {
	load := func() models.Model { return testutil.Load(t, bloom.Load, "bloom-tiny") }
	ids := []int64{3, 14, 15, 92, 65, 35, 89, 79}
	base := load()
	want := testutil.IDsLogits(t, base, ids, 2)
	m, err := lntuning.Wrap(base, &lntuning.Config{})
	require.NoError(t, err)
	s := tensor.NoGradScope()
	n := 0
	for _, np := range m.TrainableParams() {
		s.CopyInto(np.Param.T(), s.AddScalar(s.MulScalar(np.Param.T(), 1.5), 0.1))
		n++
	}
	require.NoError(t, s.Err())
	s.Close()
	require.Equal(t, 2*(2*2+1), n, "weight and bias of 2 norms per layer and ln_f")
	testutil.RequireMergesLikeForward(t, m, want, ids, 2, load)
}
