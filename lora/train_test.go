package lora_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The training-trace fixture: lora-default loaded trainable, plain SGD(0.1)
// for 3 steps. Parameter names are PEFT's in-memory names, which are ours.
func TestTrainingTraceMatchesPEFT(t *testing.T) {
	fx := fixtures(t)
	base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
	require.NoError(t, err)
	m, err := peft.Load(base, filepath.Join(fx, "adapters", "llama-tiny", "lora-default"), peft.Trainable())
	require.NoError(t, err)
	defer nn.FreeParams(m)
	nn.SetTraining(m, true)
	e := openExpected(t, "llama-tiny__train-trace-lora-sgd")
	ids, shape := e.i64(t, "input_ids")
	mask, _ := e.i64(t, "attention_mask")
	labels, _ := e.i64(t, "labels")
	wantLosses := e.f32(t, "losses")

	params := m.TrainableParams()
	require.Len(t, params, 8)
	s := tensor.NewScope()
	defer s.Close()
	for _, np := range params {
		require.LessOrEqual(t, maxDiff(s.Float32s(np.Param.T()), e.f32(t, "init."+np.Name)), 0.0, np.Name)
	}
	loss := func() *tensor.T {
		out := m.ForwardT(s, &models.Batch{
			InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...),
			Labels: s.FromInt64(labels, shape...),
		})
		require.NoError(t, s.Err())
		return out.Loss
	}
	for step := 0; step < 3; step++ {
		l := loss()
		require.InDelta(t, wantLosses[step], s.Item(l), 1e-5, "loss before update %d", step)
		s.Backward(l)
		require.NoError(t, s.Err())
		ng := tensor.NoGradScope()
		for _, np := range params {
			g := ng.Grad(np.Param.T())
			require.NotNil(t, g, np.Name)
			if step == 0 {
				require.LessOrEqual(t, maxDiff(ng.Float32s(g), e.f32(t, "grad0."+np.Name)), 1e-5, np.Name)
			}
			ng.CopyInto(np.Param.T(), ng.Sub(np.Param.T(), ng.MulScalar(g, 0.1)))
			ng.Zero(g)
		}
		require.NoError(t, ng.Err())
		ng.Close()
		s.FreeAll()
	}
	require.InDelta(t, wantLosses[3], s.Item(loss()), 1e-5, "loss after 3 updates")
	for _, np := range params {
		require.LessOrEqual(t, maxDiff(s.Float32s(np.Param.T()), e.f32(t, "final."+np.Name)), 1e-5, np.Name)
	}
	for _, np := range nn.NamedParams(m) {
		if !strings.Contains(np.Name, "lora_") {
			require.False(t, np.Param.RequiresGrad(), "base parameter %s must be frozen", np.Name)
		}
	}
}
