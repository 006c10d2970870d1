package bert_test

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

type fixture struct {
	set       *safetensors.Set
	ids, mask []int64
	shape     []int64
}

func openFixture(t *testing.T) *fixture {
	set, err := safetensors.OpenFiles(filepath.Join(testutil.Fixtures(t), "expected", "bert-tiny__lora-seqcls.safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	f := &fixture{set: set}
	info, _, _ := set.Info("input_ids")
	f.shape = info.Shape
	b, _ := set.Data("input_ids")
	f.ids = safetensors.Int64s(b)
	b, _ = set.Data("attention_mask")
	f.mask = safetensors.Int64s(b)
	return f
}

func (f *fixture) f32(t *testing.T, k string) []float32 {
	b, err := f.set.Data(k)
	require.NoError(t, err, k)
	return safetensors.Float32s(b)
}

func (f *fixture) run(t *testing.T, m interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}) []float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(f.ids, f.shape...), AttentionMask: s.FromInt64(f.mask, f.shape...)})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3}, out.Logits.Shape())
	return s.Float32s(out.Logits)
}

// bert-tiny__lora-seqcls: LoRA on query/value of BertForSequenceClassification
// with task SEQ_CLS and the trained classifier (modules_to_save), loaded
// through peft.Load: adapted, disabled (the original classifier comes
// back) and merged [B, num_labels] logits, and every merged parameter.
func TestLoRASeqClsFixture(t *testing.T) {
	f := openFixture(t)
	base, err := bert.Load(filepath.Join(testutil.Fixtures(t), "bert-tiny"))
	require.NoError(t, err)
	m, err := peft.Load(base, filepath.Join(testutil.Fixtures(t), "adapters", "bert-tiny", "lora-seqcls"))
	require.NoError(t, err)
	require.Equal(t, "PeftModelForSequenceClassification", nn.TypeName(m))
	require.Contains(t, nn.Format(m), "(classifier): ModulesToSaveWrapper(")

	d := testutil.MaxDiff(f.run(t, m), f.f32(t, "logits"))
	t.Logf("adapted max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)

	restore := m.DisableAdapters()
	d = testutil.MaxDiff(f.run(t, m), f.f32(t, "logits_disabled"))
	t.Logf("disabled max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.LessOrEqual(t, testutil.MaxDiff(f.run(t, m), f.f32(t, "logits_base")), 1e-4, "bias=none: disabled is the base model")
	restore()

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	d = testutil.MaxDiff(f.run(t, merged), f.f32(t, "logits_merged"))
	t.Logf("merged max abs diff %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	n := testutil.RequireMergedParams(t, merged, f.set)
	require.Equal(t, 6, n)
	merged.(*bert.ForSequenceClassification).Free()
}

// perturb moves every trainable parameter off its initial value (a fresh
// LoRA or adapter is the identity), seeded.
func perturb(t *testing.T, m *peft.Model, seed int64) {
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	for _, np := range m.TrainableParams() {
		p := np.Param.T()
		s.CopyInto(p, s.Add(p, s.MulScalar(s.Randn(p.DType(), p.Shape()...), 0.1)))
	}
	require.NoError(t, s.Err())
}

// Every method's SEQ_CLS adapter saves with its classifier — under PEFT's
// keys: base_model.model.classifier.* for layer methods,
// base_model.classifier.* beside prompt_embeddings for prompt learning
// (PEFT's prompt-learning model has no tuner level), the plain HF name
// for selective methods — and loads back into a fresh base with the same
// logits.
func TestSeqClsAdaptersRoundTrip(t *testing.T) {
	cases := []struct {
		name    string
		cfg     func() peft.Config
		headKey string
	}{
		{"lora", func() peft.Config { return &lora.Config{TargetModules: lora.List("query", "value"), Task: peft.SeqCls} }, "base_model.model.classifier.weight"},
		{"ia3", func() peft.Config { return &ia3.Config{Task: peft.SeqCls} }, "base_model.model.classifier.weight"},
		{"adapter", func() peft.Config { c := adapter.Houlsby(); c.Task = peft.SeqCls; return c }, "base_model.model.classifier.weight"},
		{"bitfit", func() peft.Config { return &bitfit.Config{Task: peft.SeqCls} }, "classifier.weight"},
		{"prompt-tuning", func() peft.Config {
			return &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, Task: peft.SeqCls}}
		}, "base_model.classifier.weight"},
		{"prefix-tuning", func() peft.Config {
			return &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, Task: peft.SeqCls}, PrefixProjection: true}
		}, "base_model.classifier.weight"},
	}
	f := openFixture(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := peft.New(newBase(t), c.cfg())
			require.NoError(t, err)
			defer nn.FreeParams(m)
			perturb(t, m, 3)
			want := f.run(t, m)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
			require.NoError(t, err)
			require.Contains(t, set.Names(), c.headKey)
			set.Close()
			cfg, err := peft.ReadConfig(dir)
			require.NoError(t, err)
			require.Equal(t, peft.SeqCls, cfg.TaskType())

			loaded, err := peft.Load(newBase(t), dir)
			require.NoError(t, err)
			defer nn.FreeParams(loaded)
			d := testutil.MaxDiff(f.run(t, loaded), want)
			t.Logf("%s: reloaded max abs diff %.3g", c.name, d)
			require.LessOrEqual(t, d, 1e-5)
			require.Empty(t, loaded.TrainableParams(), "loaded for inference")
		})
	}
}

// Prompt learning on an encoder: virtual tokens are prepended (token type
// 0), the mask is extended, labels are left alone — computed here by hand
// from the prompt embeddings and the base model.
func TestPromptTuningOnEncoder(t *testing.T) {
	cfg := &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, Task: peft.SeqCls}}
	m, err := peft.New(newBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	perturb(t, m, 5)
	base := m.Base().(*bert.ForSequenceClassification)
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{1, 30, 31, 200, 0, 1, 44, 45, 46, 47}, 2, 5)
	mask := s.FromInt64([]int64{1, 1, 1, 1, 0, 1, 1, 1, 1, 1}, 2, 5)
	tt := s.FromInt64([]int64{0, 0, 1, 1, 1, 0, 0, 0, 1, 1}, 2, 5)
	labels := s.FromInt64([]int64{2, 0}, 2)
	got := m.ForwardT(s, &models.Batch{InputIDs: ids, AttentionMask: mask, TokenTypeIDs: tt, Labels: labels})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3}, got.Logits.Shape())

	enc, _ := m.PromptEncoder.Get(peft.DefaultAdapter)
	prompts := s.Expand(s.Unsqueeze(enc.(peft.PromptEncoder).Prompt(s), 0), 2, -1, -1)
	emb := s.Cat(1, prompts, base.InputEmbeddings().Forward(s, ids))
	want := base.ForwardT(s, &models.Batch{InputsEmbeds: emb, // the wrapped base: the adapter's classifier copy runs
		AttentionMask: s.Cat(1, s.Ones(tensor.Int64, 2, 4), mask), TokenTypeIDs: s.Cat(1, s.Zeros(tensor.Int64, 2, 4), tt), Labels: labels})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(got.Logits), s.Float32s(want.Logits)), 1e-6)
	require.InDelta(t, s.Item(want.Loss), s.Item(got.Loss), 1e-6)

	// CAUSAL_LM prompt learning does not fit a classifier
	_, err = peft.New(newBase(t), &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}})
	require.ErrorContains(t, err, "task_type CAUSAL_LM does not fit BertForSequenceClassification")
	_, err = peft.New(newBase(t), &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, Task: peft.QuestionAns}})
	require.ErrorContains(t, err, `"task_type": "QUESTION_ANS" is not supported for prompt learning`)
}

// TOKEN_CLS prompt learning: the logits include the virtual positions and
// the labels are not padded (as in PEFT): unpadded labels are a clear
// error, labels padded with -100 give the loss over the real tokens.
func TestPromptTuningTokenClassification(t *testing.T) {
	cfg, err := bert.LoadConfig(filepath.Join(testutil.Fixtures(t), "bert-tiny"))
	require.NoError(t, err)
	cfg.InitializerRange = 0.125
	base, err := bert.NewForTokenClassification(cfg, 3)
	require.NoError(t, err)
	m, err := peft.New(base, &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 2, Task: peft.TokenCls}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, "PeftModelForTokenClassification", nn.TypeName(m))
	require.Contains(t, nn.Format(m), "(classifier): ModulesToSaveWrapper(")
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{1, 30, 31, 200, 1, 44, 45, 46}, 2, 4)
	m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromInt64([]int64{0, 1, 2, 0, 1, 1, 2, 0}, 2, 4)})
	require.ErrorContains(t, s.Err(), "pad the labels with -100")
	s2 := tensor.NoGradScope()
	defer s2.Close()
	padded := []int64{-100, -100, 0, 1, 2, 0, -100, -100, 1, 1, 2, 0}
	out := m.ForwardT(s2, &models.Batch{InputIDs: s2.FromInt64([]int64{1, 30, 31, 200, 1, 44, 45, 46}, 2, 4), Labels: s2.FromInt64(padded, 2, 6)})
	require.NoError(t, s2.Err())
	require.Equal(t, []int64{2, 6, 3}, out.Logits.Shape())
	real := s2.Narrow(out.Logits, 1, 2, 4)
	byHand := s2.CrossEntropy(s2.Reshape(real, -1, 3), s2.FromInt64([]int64{0, 1, 2, 0, 1, 1, 2, 0}, 8), -100)
	require.InDelta(t, s2.Item(byHand), s2.Item(out.Loss), 1e-6)
}

// A second SEQ_CLS adapter gets its own classifier copy: switching
// adapters switches heads, and each saved adapter carries its head.
func TestSecondSeqClsAdapterHasItsOwnHead(t *testing.T) {
	f := openFixture(t)
	m, err := peft.New(newBase(t), &lora.Config{TargetModules: lora.List("query", "value"), Task: peft.SeqCls})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	perturb(t, m, 1)
	require.NoError(t, m.AddAdapter("other", &lora.Config{TargetModules: lora.List("query"), Task: peft.SeqCls}))
	require.NoError(t, m.SetAdapter("other"))
	perturb(t, m, 2)
	other := f.run(t, m)
	require.NoError(t, m.SetAdapter(peft.DefaultAdapter))
	def := f.run(t, m)
	require.Greater(t, testutil.MaxDiff(def, other), 1e-3)
	for _, np := range m.TrainableParams() {
		require.NotContains(t, np.Name, ".other.", "only the active adapter trains")
	}
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	for _, sub := range []string{dir, filepath.Join(dir, "other")} {
		set, err := safetensors.OpenFiles(filepath.Join(sub, peft.WeightsName))
		require.NoError(t, err)
		require.Contains(t, set.Names(), "base_model.model.classifier.bias")
		set.Close()
	}
	loaded, err := peft.Load(newBase(t), filepath.Join(dir, "other"))
	require.NoError(t, err)
	defer nn.FreeParams(loaded)
	require.LessOrEqual(t, testutil.MaxDiff(f.run(t, loaded), other), 1e-6)
}

// FEATURE_EXTRACTION on a bare BertModel: no head to save, the output is
// the hidden states (with the virtual tokens under prompt tuning).
func TestFeatureExtraction(t *testing.T) {
	enc, err := bert.LoadModel(filepath.Join(testutil.Fixtures(t), "bert-tiny"))
	require.NoError(t, err)
	m, err := peft.New(enc, &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, Task: peft.FeatureExtraction}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, "PeftModelForFeatureExtraction", nn.TypeName(m))
	require.NotContains(t, nn.Format(m), "ModulesToSaveWrapper")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 30, 31, 200, 1, 44, 45, 46}, 2, 4),
		AttentionMask: s.Ones(tensor.Int64, 2, 4), TokenTypeIDs: s.Zeros(tensor.Int64, 2, 4)})
	require.NoError(t, s.Err())
	require.Nil(t, out.Logits)
	require.Equal(t, []int64{2, 8, 64}, out.LastHiddenState.Shape())
	require.Equal(t, []int64{2, 64}, out.PoolerOutput.Shape())

	enc2, err := bert.LoadModel(filepath.Join(testutil.Fixtures(t), "bert-tiny"))
	require.NoError(t, err)
	l, err := peft.New(enc2, &lora.Config{TargetModules: lora.List("query", "value"), Task: peft.FeatureExtraction})
	require.NoError(t, err)
	defer nn.FreeParams(l)
	for _, np := range l.TrainableParams() {
		require.Contains(t, np.Name, "lora_", "nothing but LoRA trains")
	}
	res, err := l.Forward(s, models.Inputs{InputIDs: s.FromInt64([]int64{1, 30, 31}, 1, 3)})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 3, 64}, res.LastHiddenState.Shape())
}
