package gpt2_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func fx(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err)
	return f
}

func diff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// gpt2-tiny__lora-c_attn: LoRA on the fused query_key_value with bias="all"
// (every bias of the model was trained and is in the adapter file), loaded
// through peft.Load: adapted, disabled (the loaded biases stay, as in PEFT)
// and merged logits, and every merged parameter.
func TestLoRAQKVFixture(t *testing.T) {
	base, err := gpt2.Load(filepath.Join(fx(t), "gpt2-tiny"))
	require.NoError(t, err)
	set, err := safetensors.OpenFiles(filepath.Join(fx(t), "expected", "gpt2-tiny__lora-c_attn.safetensors"))
	require.NoError(t, err)
	defer set.Close()
	f32 := func(k string) []float32 {
		b, err := set.Data(k)
		require.NoError(t, err, k)
		return safetensors.Float32s(b)
	}
	i64 := func(k string) ([]int64, []int64) {
		info, _, _ := set.Info(k)
		b, _ := set.Data(k)
		return safetensors.Int64s(b), info.Shape
	}
	ids, shape := i64("input_ids")
	mask, _ := i64("attention_mask")
	run := func(m interface {
		ForwardT(*tensor.Scope, *models.Batch) *models.Output
	}) []float32 {
		s := tensor.NoGradScope()
		defer s.Close()
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
		require.NoError(t, s.Err())
		return s.Float32s(out.Logits)
	}

	m, err := peft.Load(base, filepath.Join(fx(t), "adapters", "gpt2-tiny", "lora-c_attn"))
	require.NoError(t, err)
	d := diff(run(m), f32("logits"))
	t.Logf("adapted max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)

	restore := m.DisableAdapters()
	d = diff(run(m), f32("logits_disabled"))
	t.Logf("disabled max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.Greater(t, diff(run(m), f32("logits_base")), 1e-3, "bias=all biases stay under disable")
	restore()

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	d = diff(run(merged), f32("logits_merged"))
	t.Logf("merged max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	params := map[string]*nn.Param{}
	for _, np := range nn.NamedParams(merged) {
		params[np.Name] = np.Param
	}
	s := tensor.NoGradScope()
	defer s.Close()
	n := 0
	for _, key := range set.Names() {
		if !strings.HasPrefix(key, "merged.") {
			continue
		}
		p, ok := params[strings.TrimPrefix(key, "merged.")]
		require.True(t, ok, key)
		require.LessOrEqual(t, diff(s.Float32s(p.T()), f32(key)), 1e-5, key)
		n++
	}
	require.Equal(t, 15, n)
	merged.(*gpt2.Model).Free()
}

// Every method trains GPT-2 (Conv1D layers, learned positions, prefix
// key/values): a few AdamW steps on the fixture batch lower the loss.
func TestMethodsTrainGPT2(t *testing.T) {
	cases := map[string]func() peft.Config{
		"lora":    func() peft.Config { return &lora.Config{R: 4, LoraAlpha: 8} }, // default target: c_attn
		"ia3":     func() peft.Config { return &ia3.Config{} },                    // c_attn, mlp.c_proj
		"adapter": func() peft.Config { return adapter.Pfeiffer() },
		"bitfit":  func() peft.Config { return &bitfit.Config{} },
		"prompt-tuning": func() peft.Config {
			return &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}
		},
		"prefix-tuning": func() peft.Config {
			return &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}
		},
	}
	set, err := safetensors.OpenFiles(filepath.Join(fx(t), "expected", "gpt2-tiny__lora-c_attn.safetensors"))
	require.NoError(t, err)
	defer set.Close()
	info, _, _ := set.Info("input_ids")
	b, _ := set.Data("input_ids")
	ids := safetensors.Int64s(b)
	b, _ = set.Data("attention_mask")
	mask := safetensors.Int64s(b)
	labels := append([]int64(nil), ids...)
	for i, v := range mask {
		if v == 0 {
			labels[i] = models.IgnoreIndex
		}
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			base, err := gpt2.Load(filepath.Join(fx(t), "gpt2-tiny"))
			require.NoError(t, err)
			tensor.ManualSeed(1)
			m, err := peft.New(base, cfg())
			require.NoError(t, err)
			defer nn.FreeParams(m)
			opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
			defer opt.Free()
			var losses []float64
			for step := 0; step < 5; step++ {
				s := tensor.NewScope()
				am := s.FromInt64(mask, info.Shape...)
				out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, info.Shape...), AttentionMask: am,
					PositionIDs: gpt2.PositionIDsT(s, am), Labels: s.FromInt64(labels, info.Shape...)})
				s.Backward(out.Loss)
				require.NoError(t, s.Err())
				losses = append(losses, s.Item(out.Loss))
				s.Close()
				require.NoError(t, opt.Step())
				require.NoError(t, opt.ZeroGrad())
			}
			t.Logf("%s: losses %.4f", name, losses)
			for i := 1; i < len(losses); i++ {
				require.Less(t, losses[i], losses[i-1], "step %d", i)
			}
		})
	}
}
