package prompt_test

import (
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// On the fixture batch (labels = the input ids, padding ignored), a few
// AdamW steps lower the loss; only the prompt encoder changes, every base
// weight stays bit-identical.
func TestTrainingLowersLoss(t *testing.T) {
	cases := map[string]peft.Config{
		"prompt tuning": &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}},
		"p-tuning mlp":  &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}, EncoderHiddenSize: 32},
		"p-tuning lstm": &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
			EncoderReparameterizationType: prompt.LSTM, EncoderHiddenSize: 32},
	}
	e := openExpected(t, "prompt-tuning-random")
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	labels := append([]int64(nil), ids...)
	for i, v := range mask {
		if v == 0 {
			labels[i] = models.IgnoreIndex
		}
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			tensor.ManualSeed(1)
			m, err := peft.New(loadBase(t), cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			nn.SetTraining(m, true)
			before := testutil.Snapshot(t, m)
			opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
			defer opt.Free()

			var losses []float64
			for step := 0; step < 8; step++ {
				s := tensor.NewScope()
				out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...),
					AttentionMask: s.FromInt64(mask, shape...), Labels: s.FromInt64(labels, shape...)})
				require.NoError(t, s.Err())
				require.Equal(t, int64(20), out.Logits.Size(1), "P virtual positions first")
				losses = append(losses, s.Item(out.Loss))
				s.Backward(out.Loss)
				require.NoError(t, s.Err())
				s.Close()
				require.NoError(t, opt.Step())
				require.NoError(t, opt.ZeroGrad())
			}
			t.Logf("losses %.4f", losses)
			for i := 1; i < len(losses); i++ {
				require.Less(t, losses[i], losses[i-1], "step %d", i)
			}
			require.Less(t, losses[len(losses)-1], losses[0]-0.02)

			after := testutil.Snapshot(t, m)
			changed := testutil.RequireOnlyTrainedChanged(t, before, after, func(k string) bool { return strings.HasPrefix(k, "prompt_encoder.") })
			require.Equal(t, len(m.TrainableParams()), changed, "every encoder parameter trained")
		})
	}
}

// The labels get -100 for the virtual positions: the loss is the mean over
// the real tokens, each predicted from the position before it (the first
// real token from the last virtual one), computed here by hand.
func TestLossIgnoresVirtualTokens(t *testing.T) {
	m, err := peft.Load(loadBase(t), adapterDir(t, "p-tuning-mlp"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	e := openExpected(t, "p-tuning-mlp")
	ids, shape := e.I64(t, "input_ids")
	s := tensor.NoGradScope()
	defer s.Close()
	idsT := s.FromInt64(ids, shape...)
	out := m.ForwardT(s, &models.Batch{InputIDs: idsT, Labels: idsT})
	require.NoError(t, s.Err())
	// by hand: logits of positions P-1 … P+L-1 against [ignored, ids…]
	last := s.Narrow(out.Logits, 1, 7, 13)
	labels := s.Cat(1, s.Full(tensor.Int64, models.IgnoreIndex, 2, 1), idsT)
	want := models.ShiftedLoss(s, last, labels)
	require.NoError(t, s.Err())
	require.InDelta(t, s.Item(want), s.Item(out.Loss), 1e-6)
}
