package llama_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

type trainable interface {
	nn.Module
	ForwardT(s *tensor.Scope, b *models.Batch) *models.Output
}

// grads runs one forward/backward pass (checkpointed or not) and returns
// the loss and every trainable parameter's gradient by name.
func grads(t *testing.T, m trainable, ids, mask []int64, shape []int64, ckpt bool) (float64, map[string][]float32) {
	t.Helper()
	require.NoError(t, nn.ZeroGrad(m))
	s := tensor.NewScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), Labels: s.FromInt64(ids, shape...)}
	if mask != nil {
		b.AttentionMask = s.FromInt64(mask, shape...)
	}
	var ck *models.Checkpoint
	if ckpt {
		ck = models.NewCheckpoint(42)
		defer ck.Free()
		b.Checkpoint = ck
	}
	out := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	if ckpt {
		require.Equal(t, 2, ck.Len())
	}
	// free the forward's scope first, as train.Trainer does: the
	// checkpoint must hold the rotary tables, the mask and the prefix
	// key/values its recomputation reads
	loss := s.Keep(out.Loss)
	defer loss.Free()
	s.FreeAll()
	ck.Backward(s, loss)
	require.NoError(t, s.Err())
	res := map[string][]float32{}
	for _, np := range nn.TrainableParams(m) {
		g := s.Grad(np.Param.T())
		if g == nil {
			res[np.Name] = nil
			continue
		}
		res[np.Name] = s.Float32s(g)
	}
	require.NoError(t, s.Err())
	return s.Item(loss), res
}

func requireSameGrads(t *testing.T, m trainable, ids, mask, shape []int64, wantTrained int) {
	t.Helper()
	l0, g0 := grads(t, m, ids, mask, shape, false)
	l1, g1 := grads(t, m, ids, mask, shape, true)
	require.InDelta(t, l0, l1, 1e-6, "loss")
	require.Len(t, g1, len(g0))
	nonzero := 0
	for name, want := range g0 {
		got := g1[name]
		require.Equal(t, want == nil, got == nil, name)
		require.Len(t, got, len(want), name)
		var d, norm float64
		for i := range want {
			d = math.Max(d, math.Abs(float64(want[i]-got[i])))
			norm = math.Max(norm, math.Abs(float64(want[i])))
		}
		require.LessOrEqual(t, d, 1e-5, "%s: max |grad diff| (max |grad| %g)", name, norm)
		if norm > 0 {
			nonzero++
		}
	}
	require.Equal(t, wantTrained, nonzero, "parameters with a non-zero gradient")
}

var (
	ckIDs   = []int64{1, 87, 23, 301, 5, 44, 410, 9, 77, 2, 3, 19, 250, 12, 7, 300}
	ckMask  = []int64{0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	ckShape = []int64{2, 8}
)

func tinyBase(t *testing.T) *llama.Model {
	m, err := llama.Load(filepath.Join("..", "..", "testdata", "hf", "llama-tiny"))
	require.NoError(t, err)
	return m
}

func TestCheckpointingFullFineTuningSameGradients(t *testing.T) {
	m := tinyBase(t)
	defer m.Free()
	total := len(nn.NamedParams(m))
	requireSameGrads(t, m, ckIDs, ckMask, ckShape, total)
}

func TestCheckpointingLoRASameGradients(t *testing.T) {
	pm, err := lora.Wrap(tinyBase(t), &lora.Config{R: 4, LoraAlpha: 8,
		TargetModules: lora.List("q_proj", "v_proj", "down_proj"), InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	defer nn.FreeParams(pm)
	requireSameGrads(t, pm, ckIDs, ckMask, ckShape, 2*3*2)
}

// LoRA on the last layer only: the first layer is not recomputed, and the
// gradients are still those of the plain pass.
func TestCheckpointingSkipsLayersBelowTheTrainableOnes(t *testing.T) {
	pm, err := lora.Wrap(tinyBase(t), &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj", "v_proj"),
		LayersToTransform: lora.IntList{1}, InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	defer nn.FreeParams(pm)
	requireSameGrads(t, pm, ckIDs, nil, ckShape, 4)
}

// Prefix tuning: every layer reads key/values from one shared encoder
// graph, which the layer-by-layer backward passes traverse repeatedly.
func TestCheckpointingPrefixTuningSameGradients(t *testing.T) {
	cfg := &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4},
		PrefixProjection: true, EncoderHiddenSize: 16}
	pm, err := peft.New(tinyBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(pm)
	requireSameGrads(t, pm, ckIDs, ckMask, ckShape, 5)
}

// Prompt tuning: only the first layer's input (virtual tokens) trains.
func TestCheckpointingPromptTuningSameGradients(t *testing.T) {
	cfg := &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}
	pm, err := peft.New(tinyBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(pm)
	requireSameGrads(t, pm, ckIDs, ckMask, ckShape, 1)
}
