package lora_test

import (
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func loadQuantized(t *testing.T) *llama.Model {
	t.Helper()
	base, err := llama.LoadQuantized(filepath.Join(fixtures(t), "llama-tiny"), quant.Config{UseDoubleQuant: true})
	require.NoError(t, err)
	return base
}

func logits(t *testing.T, m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, ids []int64, shape ...int64) []float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

func packedBytes(t *testing.T, m nn.Module) map[string][]byte {
	s := tensor.NewScope()
	defer s.Close()
	out := map[string][]byte{}
	for path, q := range quant.Layers(m) {
		out[path] = s.Bytes(q.Weight.T())
	}
	require.NoError(t, s.Err())
	return out
}

// The QLoRA recipe end to end on llama-tiny: LoRA on every linear layer of
// an NF4 + double-quant base, PEFT's parameter line (4-bit weights at their
// logical size), training that moves only A and B, an adapter with Python
// PEFT's key layout that loads on the float32 base and on the 4-bit base,
// exact unmerge, and merge into a float32 model.
func TestQLoRA(t *testing.T) {
	base := loadQuantized(t)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.Regex("all-linear")})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	// 139,584 base parameters; r=4 on all 14 linears: 2·4·(4·(64+…)) = 8,192
	require.Equal(t, "trainable params: 8,192 || all params: 147,776 || trainable%: 5.5435", peft.TrainableSummary(m))
	require.Len(t, m.TrainableParams(), 28)
	before := packedBytes(t, m)
	require.Len(t, before, 14)

	rng := rand.New(rand.NewPCG(7, 8))
	const B, L = 4, 16
	ids := make([]int64, B*L)
	for i := range ids { // a learnable sequence: each token predicts the next
		if i%L == 0 {
			ids[i] = int64(rng.IntN(64))
		} else {
			ids[i] = (ids[i-1]*5 + 3) % 64
		}
	}
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2, WeightDecay: 0})
	defer opt.Free()
	var losses []float64
	for step := 0; step < 20; step++ {
		s := tensor.NewScope()
		ids := s.FromInt64(ids, B, L)
		out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids})
		losses = append(losses, s.Item(out.Loss))
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		s.Close()
		require.NoError(t, opt.Step())
		require.NoError(t, opt.ZeroGrad())
	}
	t.Logf("QLoRA losses: %.4f → %.4f", losses[0], losses[len(losses)-1])
	require.Less(t, losses[len(losses)-1], 0.9*losses[0])
	require.Equal(t, before, packedBytes(t, m), "the 4-bit weights must not move")

	want := logits(t, m, ids[:L], 1, L)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))

	// Python PEFT's key layout: the keys and shapes of the lora-rich fixture
	// (r=4 on the same seven modules), written by PEFT itself
	got, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	defer got.Close()
	py, err := safetensors.OpenFiles(filepath.Join(fixtures(t), "adapters", "llama-tiny", "lora-rich", peft.WeightsName))
	require.NoError(t, err)
	defer py.Close()
	var pyKeys []string
	for _, k := range py.Names() {
		if strings.Contains(k, ".lora_") {
			pyKeys = append(pyKeys, k)
			gi, _, ok := got.Info(k)
			require.True(t, ok, k)
			pi, _, _ := py.Info(k)
			require.Equal(t, pi.Shape, gi.Shape, k)
			require.Equal(t, pi.DType, gi.DType, k)
		}
	}
	gotKeys := got.Names()
	sort.Strings(pyKeys)
	sort.Strings(gotKeys)
	require.Equal(t, pyKeys, gotKeys)
	require.Contains(t, gotKeys, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")

	// on the float32 base: PEFT's peft.Load, logits near the 4-bit ones
	f32, err := peft.Load(loadBase(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(f32)
	onF32 := logits(t, f32, ids[:L], 1, L)
	t.Logf("adapter on the float32 base vs on the 4-bit base: max abs diff %.4f", maxDiff(onF32, want))
	require.Less(t, maxDiff(onF32, want), 0.5)
	// on a fresh 4-bit base: the same model exactly
	q2, err := peft.Load(loadQuantized(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(q2)
	require.Equal(t, want, logits(t, q2, ids[:L], 1, L))

	// merge / unmerge keep the 4-bit layer untouched
	require.NoError(t, m.Merge(false))
	merged := logits(t, m, ids[:L], 1, L)
	require.LessOrEqual(t, maxDiff(merged, want), 2e-5)
	require.Empty(t, quant.Layers(m), "merged layers hold float32 copies")
	require.NoError(t, m.Unmerge())
	require.Len(t, quant.Layers(m), 14)
	require.Equal(t, before, packedBytes(t, m))
	require.Equal(t, want, logits(t, m, ids[:L], 1, L))

	// merge and unload: a float32 model that saves like any other
	plain, err := m.MergeAndUnload()
	require.NoError(t, err)
	require.Empty(t, quant.Layers(plain))
	require.LessOrEqual(t, maxDiff(logits(t, plain, ids[:L], 1, L), want), 2e-5)
	require.NoError(t, quant.Dequantize(plain)) // nothing left to dequantize
	require.NoError(t, plain.(*llama.Model).Save(t.TempDir()))
}

// DoRA reads the dequantized weight: its magnitude starts at the row norms
// of the 4-bit weight, so the fresh adapter changes nothing.
func TestQDoRAStartsAtTheBase(t *testing.T) {
	base := loadQuantized(t)
	ids := []int64{1, 5, 9, 200, 3, 77}
	want := logits(t, base, ids, 1, 6)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, UseDoRA: true, TargetModules: lora.List("q_proj", "v_proj")})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.LessOrEqual(t, maxDiff(logits(t, m, ids, 1, 6), want), 1e-5)
}

// The 4-bit forward dequantizes every weight on every step: 200 QLoRA
// training steps (forward, backward, AdamW) leave RSS within 5%, so the
// dequantized copies and their gradients' intermediates are freed.
func TestQLoRARSSFlatOverTrainingSteps(t *testing.T) {
	m, err := lora.Wrap(loadQuantized(t), &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.Regex("all-linear")})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-3})
	defer opt.Free()
	ids := make([]int64, 4*32)
	for i := range ids {
		ids[i] = int64((i * 37) % 512)
	}
	step := func() {
		s := tensor.NewScope()
		defer s.Close()
		x := s.FromInt64(ids, 4, 32)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		require.NoError(t, opt.Step())
		require.NoError(t, opt.ZeroGrad())
	}
	before, after, growth := memstat.Growth(20, 200, step)
	t.Logf("RSS %d KiB -> %d KiB after 200 QLoRA steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}
