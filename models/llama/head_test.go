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
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// headCase is one batch for the fused-head tests: left padding in the
// second row, labels -100 on the padding and on a two-token prompt.
func headCase(vocab int64) (ids, mask, labels, shape []int64) {
	shape = []int64{2, 12}
	mask = []int64{
		1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
		0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	}
	for i := range mask {
		ids = append(ids, int64(i*7919+13)%vocab)
		lab := ids[i]
		if mask[i] == 0 || i%12 < 2 || (i >= 12 && i%12 < 5) {
			lab = models.IgnoreIndex
		}
		labels = append(labels, lab)
	}
	return
}

type headRun struct {
	loss      float64
	logitsNil bool
	grads     map[string][]float32
}

// runHead is one forward and backward pass, with the fused head
// (lossOnly) or the plain one, checkpointed or not; the forward's scope is
// freed before backward, as train.Trainer does.
func runHead(t *testing.T, m trainable, vocab int64, lossOnly, ckpt bool) headRun {
	t.Helper()
	require.NoError(t, nn.ZeroGrad(m))
	ids, mask, labels, shape := headCase(vocab)
	s := tensor.NewScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...),
		Labels: s.FromInt64(labels, shape...), LossOnly: lossOnly}
	if ckpt {
		b.Checkpoint = models.NewCheckpoint(7)
		defer b.Checkpoint.Free()
	}
	out := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	r := headRun{logitsNil: out.Logits == nil, grads: map[string][]float32{}}
	loss := s.Keep(out.Loss)
	defer loss.Free()
	s.FreeAll()
	b.Checkpoint.Backward(s, loss)
	require.NoError(t, s.Err())
	r.loss = s.Item(loss)
	for _, np := range nn.TrainableParams(m) {
		g := s.Grad(np.Param.T())
		require.NotNil(t, g, np.Name)
		r.grads[np.Name] = s.Float32s(g)
	}
	require.NoError(t, s.Err())
	return r
}

// requireSameHead compares the fused head's loss and gradients with the
// plain head's: the loss to relLoss (relative), each parameter's gradient
// by ‖fused − plain‖ ≤ relGrad·‖plain‖.
func requireSameHead(t *testing.T, m trainable, vocab int64, ckpt, fused bool, relLoss, relGrad float64) {
	t.Helper()
	plain := runHead(t, m, vocab, false, ckpt)
	got := runHead(t, m, vocab, true, ckpt)
	require.False(t, plain.logitsNil)
	require.Equal(t, fused, got.logitsNil, "fused head taken")
	require.InEpsilon(t, plain.loss, got.loss, relLoss, "loss")
	require.Len(t, got.grads, len(plain.grads))
	for name, want := range plain.grads {
		g := got.grads[name]
		require.Len(t, g, len(want), name)
		var d2, n2 float64
		for i := range want {
			d := float64(g[i] - want[i])
			d2 += d * d
			n2 += float64(want[i]) * float64(want[i])
		}
		require.Greater(t, n2, 0.0, "%s: no gradient", name)
		require.LessOrEqual(t, math.Sqrt(d2), relGrad*math.Sqrt(n2), "%s: ‖Δgrad‖ vs ‖grad‖ %g", name, math.Sqrt(n2))
	}
}

func withChunk(t *testing.T, bytes int64) {
	old := models.LossChunkBytes
	models.LossChunkBytes = bytes
	t.Cleanup(func() { models.LossChunkBytes = old })
}

func wrapLoRA(t *testing.T, base *llama.Model, targets ...string) *peft.Model {
	pm, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List(targets...),
		InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	return pm
}

// Tolerances. float32: the fused head computes what autograd computes on
// rows of the same matrices, in another order (the loss summed per chunk,
// (softmax − one-hot)/N instead of softmax/N − one-hot/N): 1e-5 relative.
// bfloat16: the gradient at the hidden states is rounded to bfloat16 in
// both paths (the backward of logits.float() casts it, here the cast
// before the product with the weight), from float32 values that differ in
// their last bits, so an element may round to the neighbouring bfloat16
// (2⁻⁸ relative) and carry that through the layers' bfloat16 backward:
// 2⁻⁸ of the gradient's norm. The loss is float32 arithmetic on the same
// bfloat16 logits: 1e-5.
const (
	f32Rel  = 1e-5
	bf16Rel = 1.0 / 256
)

// The fused loss head gives the plain head's loss and LoRA gradients on
// the llama-tiny fixture in float32 and bfloat16, with and without
// activation checkpointing, in several chunks, with padding and -100
// labels.
func TestFusedHeadSameLossAndGradients(t *testing.T) {
	withChunk(t, 1) // 16 rows a chunk: 17 rows with a target → 2 chunks
	dir := filepath.Join("..", "..", "testdata", "hf", "llama-tiny")
	for _, dt := range []string{"float32", "bfloat16"} {
		base, err := llama.Load(dir, models.WithDType(dt))
		require.NoError(t, err)
		pm := wrapLoRA(t, base, "q_proj", "v_proj", "down_proj")
		rel := f32Rel
		if dt == "bfloat16" {
			rel = bf16Rel
		}
		for _, ckpt := range []bool{false, true} {
			t.Run(dt+map[bool]string{false: "", true: "/checkpointing"}[ckpt], func(t *testing.T) {
				requireSameHead(t, pm, 512, ckpt, true, 1e-5, rel)
			})
		}
		nn.FreeParams(pm)
	}
}

// A large vocabulary (a random model, tied embeddings like Qwen2.5's) in
// float32 and bfloat16, with the default chunk size and with small chunks.
func TestFusedHeadLargeVocab(t *testing.T) {
	const vocab = 30000
	cfg := &llama.Config{ModelType: "qwen2", HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, VocabSize: vocab, MaxPositionEmbeddings: 64,
		TieWordEmbeddings: true, AttentionBias: true, RMSNormEps: 1e-6, RopeTheta: 10000, HiddenAct: "silu",
		InitializerRange: 0.02}
	m, err := llama.New(cfg, 3)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	m.Free()
	for _, dt := range []string{"float32", "bfloat16"} {
		base, err := llama.Load(dir, models.WithDType(dt))
		require.NoError(t, err)
		pm := wrapLoRA(t, base, "q_proj", "v_proj")
		rel := f32Rel
		if dt == "bfloat16" {
			rel = bf16Rel
		}
		for _, chunk := range []int64{models.LossChunkBytes, 1} {
			withChunk(t, chunk)
			for _, ckpt := range []bool{false, true} {
				requireSameHead(t, pm, vocab, ckpt, true, 1e-5, rel)
			}
		}
		nn.FreeParams(pm)
	}
}

// A head that trains keeps the plain path (logits returned), and its
// gradients are those of the plain head: LoRA on lm_head, lm_head in
// modules_to_save, and full fine-tuning.
func TestFusedHeadFallsBackWhenTheHeadTrains(t *testing.T) {
	withChunk(t, 1)
	dir := filepath.Join("..", "..", "testdata", "hf", "llama-tiny")
	load := func() *llama.Model {
		m, err := llama.Load(dir)
		require.NoError(t, err)
		return m
	}
	pm := wrapLoRA(t, load(), "q_proj", "lm_head")
	requireSameHead(t, pm, 512, true, false, 1e-6, 1e-6)
	nn.FreeParams(pm)

	saved, err := lora.Wrap(load(), &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj"),
		ModulesToSave_: []string{"lm_head"}, InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	requireSameHead(t, saved, 512, false, false, 1e-6, 1e-6)
	nn.FreeParams(saved)

	full := load()
	defer full.Free()
	requireSameHead(t, full, 512, false, false, 1e-6, 1e-6)
}

// Without autograd (evaluation) the fused head returns the loss only;
// a batch whose targets are all -100 takes the plain path (HF's NaN).
func TestFusedHeadEvalAndNoTargets(t *testing.T) {
	withChunk(t, 1)
	m := tinyBase(t)
	defer m.Free()
	require.NoError(t, nn.Freeze(m))
	ids, mask, labels, shape := headCase(512)
	s := tensor.NoGradScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...),
		Labels: s.FromInt64(labels, shape...)}
	plain := m.ForwardT(s, b)
	b.LossOnly = true
	fused := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	require.Nil(t, fused.Logits)
	require.InEpsilon(t, s.Item(plain.Loss), s.Item(fused.Loss), 1e-6)

	none := make([]int64, len(labels))
	for i := range none {
		none[i] = models.IgnoreIndex
	}
	b.Labels = s.FromInt64(none, shape...)
	out := m.ForwardT(s, b)
	require.NoError(t, s.Err())
	require.NotNil(t, out.Logits)
	require.True(t, math.IsNaN(s.Item(out.Loss)))
}
