package gpt2_test

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/testutil"
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
	set, err := safetensors.OpenFiles(filepath.Join(testutil.Fixtures(t), "expected", "gpt2-tiny__lora-c_attn.safetensors"))
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
			base, err := gpt2.Load(filepath.Join(testutil.Fixtures(t), "gpt2-tiny"))
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
