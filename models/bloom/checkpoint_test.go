package bloom_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

type trainable interface {
	nn.Module
	ForwardT(s *tensor.Scope, b *models.Batch) *models.Output
}

func gradsOf(t *testing.T, m trainable, ckpt bool) (float64, map[string][]float32) {
	ids := []int64{1, 87, 23, 301, 5, 44, 410, 9, 77, 2, 3, 19, 250, 12, 7, 300}
	mask := []int64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	require.NoError(t, nn.ZeroGrad(m))
	s := tensor.NewScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, 2, 8), Labels: s.FromInt64(ids, 2, 8), AttentionMask: s.FromInt64(mask, 2, 8)}
	var ck *models.Checkpoint
	if ckpt {
		ck = models.NewCheckpoint(1)
		defer ck.Free()
		b.Checkpoint = ck
	}
	out := m.ForwardT(s, b)
	// free the forward's scope first, as train.Trainer does: the
	// checkpoint must hold the ALiBi biases and the mask its
	// recomputation reads
	loss := s.Keep(out.Loss)
	defer loss.Free()
	s.FreeAll()
	ck.Backward(s, loss)
	require.NoError(t, s.Err())
	res := map[string][]float32{}
	for _, np := range nn.TrainableParams(m) {
		res[np.Name] = s.Float32s(s.Grad(np.Param.T()))
	}
	require.NoError(t, s.Err())
	return s.Item(loss), res
}

func requireSame(t *testing.T, m trainable) {
	l0, g0 := gradsOf(t, m, false)
	l1, g1 := gradsOf(t, m, true)
	require.InDelta(t, l0, l1, 1e-6)
	require.NotEmpty(t, g0)
	for name, want := range g0 {
		var d float64
		for i := range want {
			d = math.Max(d, math.Abs(float64(want[i]-g1[name][i])))
		}
		require.LessOrEqual(t, d, 1e-5, name)
	}
}

// Activation checkpointing per BLOOM block gives the plain pass's
// gradients: full fine-tuning (the embedding layernorm feeds the first
// block with a graph) and LoRA on query_key_value.
func TestCheckpointingSameGradients(t *testing.T) {
	m, err := bloom.Load(filepath.Join("..", "..", "testdata", "hf", "bloom-tiny"))
	require.NoError(t, err)
	requireSame(t, m)
	pm, err := lora.Wrap(m, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("query_key_value", "dense_4h_to_h"),
		InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	defer nn.FreeParams(pm)
	requireSame(t, pm)
}
