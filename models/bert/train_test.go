package bert_test

import (
	"math/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// newBase is a stand-in for a pretrained BERT: bert-tiny's geometry
// (hidden 64, 2 layers, 4 heads, vocabulary 512, 3 labels), initialised with
// std 1/√hidden so that its random features carry the tokens' identity
// (HF's 0.02 makes a 2-layer random encoder's [CLS] nearly constant).
func newBase(t testing.TB) *bert.ForSequenceClassification {
	cfg, err := bert.LoadConfig(filepath.Join(testutil.Fixtures(t), "bert-tiny"))
	require.NoError(t, err)
	cfg.InitializerRange = 0.125
	m, err := bert.NewForSequenceClassification(cfg, 11)
	require.NoError(t, err)
	return m
}

// seqTask is a small synthetic 3-class sequence-classification task for
// bert-tiny (vocabulary 512): a [CLS]-like id 1, then 5–11 tokens, each
// drawn with probability 1/2 from the class's 8 keyword ids (20+8c …) and
// otherwise from 400 shared filler ids; right padding to 12.
type seqTask struct {
	ids, mask, labels []int64
	n                 int
}

const taskLen = 12

func makeTask(n int, seed int64) *seqTask {
	r := rand.New(rand.NewSource(seed))
	t := &seqTask{n: n}
	for i := 0; i < n; i++ {
		c := int64(r.Intn(3))
		length := 6 + r.Intn(taskLen-5)
		for p := 0; p < taskLen; p++ {
			switch {
			case p == 0:
				t.ids, t.mask = append(t.ids, 1), append(t.mask, 1)
			case p < length && r.Intn(2) == 0:
				t.ids, t.mask = append(t.ids, 20+8*c+int64(r.Intn(8))), append(t.mask, 1)
			case p < length:
				t.ids, t.mask = append(t.ids, 100+int64(r.Intn(400))), append(t.mask, 1)
			default:
				t.ids, t.mask = append(t.ids, 0), append(t.mask, 0)
			}
		}
		t.labels = append(t.labels, c)
	}
	return t
}

func (t *seqTask) batch(s *tensor.Scope, from, to int) *models.Batch {
	n := int64(to - from)
	return &models.Batch{
		InputIDs:      s.FromInt64(t.ids[from*taskLen:to*taskLen], n, taskLen),
		AttentionMask: s.FromInt64(t.mask[from*taskLen:to*taskLen], n, taskLen),
		Labels:        s.FromInt64(t.labels[from:to], n),
	}
}

// accuracy of m's argmax predictions on t.
func accuracy(tb testing.TB, m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}, t *seqTask) float64 {
	s := tensor.NoGradScope()
	defer s.Close()
	b := t.batch(s, 0, t.n)
	b.Labels = nil
	out := m.ForwardT(s, b)
	require.NoError(tb, s.Err())
	pred := s.Int64s(s.Argmax(out.Logits, 1))
	right := 0
	for i, p := range pred {
		if p == t.labels[i] {
			right++
		}
	}
	return float64(right) / float64(t.n)
}

func snapshot(m nn.Module) map[string][]float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]float32{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = append([]float32(nil), s.Float32s(np.Param.T())...)
	}
	return out
}

func same(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Every method of the library that applies to an encoder trains bert-tiny
// (task SEQ_CLS: the classifier trains too, as PEFT adds it to
// modules_to_save) on the synthetic task: held-out accuracy rises from
// about chance (1/3) to well above it, the method's own parameters move,
// and no frozen base weight changes.
func TestEveryMethodTrainsSequenceClassification(t *testing.T) {
	plt := func(p int) peft.PromptLearningConfig {
		return peft.PromptLearningConfig{NumVirtualTokens: p, Task: peft.SeqCls}
	}
	cases := []struct {
		name string
		cfg  func() peft.Config
		lr   float64
		own  string // a parameter name fragment of the method itself
	}{
		{"lora", func() peft.Config {
			return &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("query", "value"), Task: peft.SeqCls}
		}, 1e-2, "lora_B"},
		{"ia3", func() peft.Config { return &ia3.Config{Task: peft.SeqCls} }, 3e-2, "ia3_l"},
		{"adapter-houlsby", func() peft.Config { c := adapter.Houlsby(); c.ReductionFactor = 4; c.Task = peft.SeqCls; return c }, 1e-2, "adapter_up"},
		{"adapter-pfeiffer", func() peft.Config { c := adapter.Pfeiffer(); c.ReductionFactor = 4; c.Task = peft.SeqCls; return c }, 1e-2, "adapter_up"},
		{"bitfit", func() peft.Config { return &bitfit.Config{Task: peft.SeqCls} }, 1e-2, "attention.self.query.bias"},
		{"freeze", func() peft.Config { return &freeze.Config{TrainableLayers: freeze.Layers(1), Task: peft.SeqCls} }, 3e-3, "layer.1.output.dense.weight"},
		{"prompt-tuning", func() peft.Config { return &prompt.TuningConfig{PromptLearningConfig: plt(8)} }, 3e-2, "prompt_encoder.default.embedding"},
		{"p-tuning", func() peft.Config {
			return &prompt.EncoderConfig{PromptLearningConfig: plt(8), EncoderHiddenSize: 32}
		}, 1e-2, "prompt_encoder.default.mlp_head"},
		{"prefix-tuning", func() peft.Config { return &prefix.Config{PromptLearningConfig: plt(8)} }, 3e-2, "prompt_encoder.default.embedding"},
	}
	trainSet, testSet := makeTask(192, 1), makeTask(150, 2)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := newBase(t)
			tensor.ManualSeed(7)
			m, err := peft.New(base, c.cfg())
			require.NoError(t, err)
			defer nn.FreeParams(m)
			require.Equal(t, "PeftModelForSequenceClassification", nn.TypeName(m))
			before := snapshot(m)
			trainable := map[string]bool{}
			for _, np := range m.TrainableParams() {
				trainable[np.Name] = true
			}
			hasHead := false
			for n := range trainable {
				hasHead = hasHead || strings.Contains(n, "classifier")
			}
			require.True(t, hasHead, "the classifier trains (SEQ_CLS)")
			acc0 := accuracy(t, m, testSet)

			nn.SetTraining(m, true)
			opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: c.lr, WeightDecay: 0})
			defer opt.Free()
			const bs = 32
			var first, last float64
			for epoch := 0; epoch < 6; epoch++ {
				for from := 0; from < trainSet.n; from += bs {
					s := tensor.NewScope()
					out := m.ForwardT(s, trainSet.batch(s, from, from+bs))
					s.Backward(out.Loss)
					require.NoError(t, s.Err())
					if epoch == 0 && from == 0 {
						first = s.Item(out.Loss)
					}
					last = s.Item(out.Loss)
					s.Close()
					require.NoError(t, opt.Step())
					require.NoError(t, opt.ZeroGrad())
				}
			}
			nn.SetTraining(m, false)
			acc := accuracy(t, m, testSet)
			t.Logf("%s: %s; loss %.3f -> %.3f; held-out accuracy %.2f -> %.2f", c.name,
				peft.TrainableSummary(m), first, last, acc0, acc)
			require.Less(t, acc0, 0.5, "starts near chance")
			require.Greater(t, acc, 0.6, "well above chance (1/3)")
			require.Less(t, last, first)

			after := snapshot(m)
			moved := false
			for k, v := range before {
				if trainable[k] {
					if strings.Contains(k, c.own) && !same(v, after[k]) {
						moved = true
					}
					continue
				}
				require.True(t, same(v, after[k]), "frozen %s changed", k)
			}
			require.True(t, moved, "the method's own parameters (%s) trained", c.own)
		})
	}
}
