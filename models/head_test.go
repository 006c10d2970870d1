package models_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// headPass is one forward/backward pass with the fused loss head
// (lossOnly) or the plain one; the forward's scope is freed before
// backward, as train.Trainer does.
func headPass(t *testing.T, m nn.Module, fwd func(*tensor.Scope, *models.Batch) *models.Output, lossOnly, ckpt bool) (float64, bool, map[string][]float32) {
	t.Helper()
	require.NoError(t, nn.ZeroGrad(m))
	ids := []int64{1, 87, 23, 301, 5, 44, 410, 9, 77, 2, 3, 19, 250, 12, 7, 300}
	mask := []int64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	labels := append([]int64(nil), ids...)
	for _, i := range []int{0, 1, 2, 8, 9} { // padding and prompt tokens
		labels[i] = models.IgnoreIndex
	}
	s := tensor.NewScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, 2, 8), AttentionMask: s.FromInt64(mask, 2, 8),
		Labels: s.FromInt64(labels, 2, 8), LossOnly: lossOnly}
	if ckpt {
		b.Checkpoint = models.NewCheckpoint(1)
		defer b.Checkpoint.Free()
	}
	out := fwd(s, b)
	require.NoError(t, s.Err())
	noLogits := out.Logits == nil
	loss := s.Keep(out.Loss)
	defer loss.Free()
	s.FreeAll()
	b.Checkpoint.Backward(s, loss)
	require.NoError(t, s.Err())
	g := map[string][]float32{}
	for _, np := range nn.TrainableParams(m) {
		g[np.Name] = s.Float32s(s.Grad(np.Param.T()))
	}
	require.NoError(t, s.Err())
	return s.Item(loss), noLogits, g
}

// The fused loss head (models.CausalLMHead, LossOnly) gives the plain
// head's loss and LoRA gradients (float32: 1e-5 relative) for BLOOM and
// GPT-2 (LLaMA's own test covers bf16 and tied heads), in several chunks,
// with and without checkpointing; its logits are nil.
func TestFusedHeadSameLossAndGradients(t *testing.T) {
	old := models.LossChunkBytes
	models.LossChunkBytes = 1 // 16 rows a chunk
	defer func() { models.LossChunkBytes = old }()
	for _, fam := range []struct {
		name, target string
		load         func(string) (models.CausalLM, error)
	}{
		{"bloom-tiny", "query_key_value", func(d string) (models.CausalLM, error) { return bloom.Load(d) }},
		{"gpt2-tiny", "c_attn", func(d string) (models.CausalLM, error) { return gpt2.Load(d) }},
	} {
		t.Run(fam.name, func(t *testing.T) {
			base, err := fam.load(fixture(t, fam.name))
			require.NoError(t, err)
			pm, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List(fam.target),
				InitLoraWeights: lora.Init{Value: "false"}})
			require.NoError(t, err)
			defer nn.FreeParams(pm)
			for _, ckpt := range []bool{false, true} {
				l0, nil0, g0 := headPass(t, pm, pm.ForwardT, false, ckpt)
				l1, nil1, g1 := headPass(t, pm, pm.ForwardT, true, ckpt)
				require.False(t, nil0)
				require.True(t, nil1, "fused head taken")
				require.InEpsilon(t, l0, l1, 1e-5)
				require.NotEmpty(t, g0)
				for name, want := range g0 {
					var d2, n2 float64
					for i := range want {
						d := float64(g1[name][i] - want[i])
						d2 += d * d
						n2 += float64(want[i]) * float64(want[i])
					}
					require.Greater(t, n2, 0.0, name)
					require.LessOrEqual(t, math.Sqrt(d2), 1e-5*math.Sqrt(n2), name)
				}
			}
		})
	}
}
