package bert

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func tinyDir(t testing.TB) string { return filepath.Join(testutil.Fixtures(t), "bert-tiny") }

func loadTiny(t testing.TB) *ForSequenceClassification {
	return testutil.Load(t, LoadForSequenceClassification, "bert-tiny")
}

// logits_base of the bert-tiny fixture is transformers'
// BertForSequenceClassification on a left-padded batch: embeddings, post-LN
// layers, key padding mask, pooler over position 0, classifier.
func TestLogitsMatchHF(t *testing.T) {
	m := loadTiny(t)
	exp := testutil.OpenExpected(t, "bert-tiny__lora-seqcls")
	ids, shape := exp.I64(t, "input_ids")
	mask, _ := exp.I64(t, "attention_mask")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3}, out.Logits.Shape())
	d := testutil.MaxDiff(s.Float32s(out.Logits), exp.F32(t, "logits_base"))
	t.Logf("max abs diff vs HF: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
}

// Load picks the class from config.json's architectures; the heads agree
// with the encoder: classifier(pooler output) computed by hand.
func TestLoadDispatchAndHeadMath(t *testing.T) {
	loaded, err := Load(tinyDir(t))
	require.NoError(t, err)
	cls, ok := loaded.(*ForSequenceClassification)
	require.True(t, ok, "%T", loaded)
	defer cls.Free()
	require.EqualValues(t, 3, cls.NumLabels())
	require.False(t, cls.PerToken())
	require.Equal(t, []string{"LABEL_0", "LABEL_1", "LABEL_2"}, cls.Bert.Config.Labels())

	enc, err := LoadModel(tinyDir(t)) // the classifier in the file is skipped
	require.NoError(t, err)
	defer enc.Free()
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{2, 40, 41, 300, 7, 9}, 2, 3)
	out := enc.ForwardT(s, &models.Batch{InputIDs: ids})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3, 64}, out.LastHiddenState.Shape())
	require.Equal(t, []int64{2, 64}, out.PoolerOutput.Shape())
	w := cls.Classifier.(*nn.Linear)
	byHand := s.Add(s.Matmul(out.PoolerOutput, s.Transpose(w.Weight.T(), 0, 1)), w.Bias.T())
	got := cls.ForwardT(s, &models.Batch{InputIDs: ids})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(got.Logits), s.Float32s(byHand)), 1e-6)
	// and the pooler is tanh(dense(h[:, 0]))
	p := enc.Pooler.Dense.(*nn.Linear)
	pool := s.Tanh(s.Add(s.Matmul(s.Select(out.LastHiddenState, 1, 0), s.Transpose(p.Weight.T(), 0, 1)), p.Bias.T()))
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(out.PoolerOutput), s.Float32s(pool)), 1e-6)
}

// BERT masks keys only: the ids at padded positions do not change any real
// position's hidden state.
func TestPaddedKeysAreInvisible(t *testing.T) {
	m := loadTiny(t)
	exp := testutil.OpenExpected(t, "bert-tiny__lora-seqcls")
	ids, shape := exp.I64(t, "input_ids")
	mask, _ := exp.I64(t, "attention_mask")
	other := append([]int64(nil), ids...)
	for i := range other {
		if mask[i] == 0 {
			other[i] = 77 + int64(i)
		}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	am := s.FromInt64(mask, shape...)
	a, _ := m.Bert.encode(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: am})
	b, _ := m.Bert.encode(s, &models.Batch{InputIDs: s.FromInt64(other, shape...), AttentionMask: am})
	require.NoError(t, s.Err())
	real := func(x *tensor.T) []float32 { return s.Float32s(s.Narrow(s.Select(x, 0, 1), 0, 3, 9)) }
	require.LessOrEqual(t, testutil.MaxDiff(real(a), real(b)), 1e-6)
	require.Greater(t, testutil.MaxDiff(s.Float32s(s.Select(a, 0, 1)), s.Float32s(s.Select(b, 0, 1))), 1e-3, "padded queries do change")
}

// Prefix key/values that the mask hides, with explicit positions 0…L-1,
// leave the output as it is without them; visible ones change it.
func TestPrefixKV(t *testing.T) {
	m := loadTiny(t)
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{2, 40, 41, 300, 7, 9, 11, 12}, 2, 4)
	const P = 3
	prefix := make([]models.KV, m.Bert.NumLayers())
	for i := range prefix {
		prefix[i] = models.KV{K: s.Randn(tensor.Float32, 1, 4, P, 16), V: s.Randn(tensor.Float32, 1, 4, P, 16)}
	}
	base := m.ForwardT(s, &models.Batch{InputIDs: ids})
	hidden := m.ForwardT(s, &models.Batch{InputIDs: ids, PrefixKV: prefix,
		AttentionMask: s.Cat(1, s.Zeros(tensor.Int64, 2, P), s.Ones(tensor.Int64, 2, 4)),
		PositionIDs:   s.Unsqueeze(s.Arange(tensor.Int64, 0, 4), 0)})
	visible := m.ForwardT(s, &models.Batch{InputIDs: ids, PrefixKV: prefix, AttentionMask: s.Ones(tensor.Int64, 2, 4)})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(base.Logits), s.Float32s(hidden.Logits)), 1e-5)
	require.Greater(t, testutil.MaxDiff(s.Float32s(base.Logits), s.Float32s(visible.Logits)), 1e-4)
	m.ForwardT(s, &models.Batch{InputIDs: ids, PrefixKV: prefix[:1]})
	require.ErrorContains(t, s.Err(), "prefix key/values for 1 layers")
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(tinyDir(t))
	require.NoError(t, err)
	defer set.Close()
	sort.Strings(names)
	require.Equal(t, set.Names(), names)
	f := nn.Format(m)
	require.Contains(t, f, "(query): Linear(in_features=64, out_features=64, bias=True)")
	require.Contains(t, f, "(classifier): Linear(in_features=64, out_features=3, bias=True)")
	require.Contains(t, f, "BertSelfAttention")
}

func TestParamCountsFromConfig(t *testing.T) {
	m := loadTiny(t)
	_, total := nn.CountParams(m)
	cfg := m.Bert.Config
	require.Equal(t, cfg.NumParams(true)+cfg.NumLabels*(cfg.HiddenSize+1), total)
	var biases int64
	for _, np := range nn.NamedParams(m.Bert) {
		if strings.HasSuffix(np.Name, ".bias") {
			biases += np.Param.Numel()
		}
	}
	require.Equal(t, cfg.NumBiasParams(true), biases)
	// bert-base-uncased: 109,482,240 parameters in BertModel with its pooler,
	// 102,912 biases (BitFit's 0.09%)
	base := &Config{VocabSize: 30522, HiddenSize: 768, NumHiddenLayers: 12, NumAttentionHeads: 12, IntermediateSize: 3072,
		MaxPositionEmbeddings: 512, TypeVocabSize: 2}
	require.EqualValues(t, 109_482_240, base.NumParams(true))
	require.EqualValues(t, 102_912, base.NumBiasParams(true))
}

func TestSaveLoadRoundTripIsBitIdentical(t *testing.T) {
	m := loadTiny(t)
	dir := testutil.RequireSaveRoundTrip(t, m, tinyDir(t))
	cfg, err := LoadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, "BertForSequenceClassification", cfg.Raw["architectures"].([]any)[0])
	require.EqualValues(t, 3, cfg.NumLabels)
	_, hasNum := cfg.Raw["num_labels"]
	require.False(t, hasNum, "HF writes id2label, not num_labels")
}

// A base checkpoint (BertModel's keys, no "bert." prefix, no classifier,
// LayerNorm weights under their old names gamma/beta, a position_ids
// buffer and a pre-training head) loads into a new classifier of any
// width, seeded; a classifier of the wrong width is a clear error.
func TestLoadBaseCheckpointIntoNewHead(t *testing.T) {
	m := loadTiny(t)
	dir := t.TempDir()
	require.NoError(t, m.Bert.Save(dir))
	tensors, err := nn.StateTensors(nn.NamedParams(m.Bert), "")
	require.NoError(t, err)
	for i := range tensors {
		n := tensors[i].Name
		if strings.HasSuffix(n, "LayerNorm.weight") {
			tensors[i].Name = strings.TrimSuffix(n, "weight") + "gamma"
		} else if strings.HasSuffix(n, "LayerNorm.bias") {
			tensors[i].Name = strings.TrimSuffix(n, "bias") + "beta"
		}
	}
	tensors = append(tensors,
		safetensors.Tensor{Name: "embeddings.position_ids", DType: safetensors.I64, Shape: []int64{1, 1}, Data: make([]byte, 8)},
		safetensors.Tensor{Name: "cls.predictions.bias", DType: safetensors.F32, Shape: []int64{1}, Data: make([]byte, 4)})
	require.NoError(t, safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}))

	enc, err := Load(dir)
	require.NoError(t, err)
	require.IsType(t, &Model{}, enc)
	enc.(*Model).Free()

	a, err := LoadForSequenceClassification(dir, HeadOptions{NumLabels: 5, Seed: 3})
	require.NoError(t, err)
	defer a.Free()
	b, err := LoadForSequenceClassification(dir, HeadOptions{NumLabels: 5, Seed: 3})
	require.NoError(t, err)
	defer b.Free()
	require.Equal(t, []int64{5, 64}, a.Classifier.(*nn.Linear).Weight.Shape())
	s := tensor.NoGradScope()
	defer s.Close()
	require.Equal(t, s.Float32s(a.Classifier.(*nn.Linear).Weight.T()), s.Float32s(b.Classifier.(*nn.Linear).Weight.T()), "seeded")
	require.Equal(t, s.Float32s(m.Bert.Encoder.Layer.Items[1].(*Layer).Output.LayerNorm.(*nn.LayerNorm).Weight.T()),
		s.Float32s(a.Bert.Encoder.Layer.Items[1].(*Layer).Output.LayerNorm.(*nn.LayerNorm).Weight.T()), "gamma read as weight")
	tok, err := LoadForTokenClassification(dir, HeadOptions{NumLabels: 4})
	require.NoError(t, err)
	require.Nil(t, tok.Bert.Pooler)
	tok.Free()

	_, err = LoadForSequenceClassification(tinyDir(t), HeadOptions{NumLabels: 5})
	require.ErrorContains(t, err, `"classifier.weight" has shape [3 64], the model expects [5 64]`)
	require.ErrorContains(t, err, "HeadOptions.NumLabels")
}

func TestConfigErrors(t *testing.T) {
	base := `"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":10`
	_, err := ParseConfig("config.json", []byte(`{"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":10}`))
	require.ErrorContains(t, err, `missing field "hidden_size"`)
	_, err = ParseConfig("config.json", []byte(`{`+base+`,"num_attention_heads":5}`))
	require.ErrorContains(t, err, `"num_attention_heads"`)
	_, err = ParseConfig("config.json", []byte(`{`+base+`,"position_embedding_type":"relative_key"}`))
	require.ErrorContains(t, err, `"position_embedding_type"`)
	_, err = ParseConfig("config.json", []byte(`{`+base+`,"problem_type":"ranking"}`))
	require.ErrorContains(t, err, `"problem_type"`)
	_, err = ParseConfig("config.json", []byte(`{`+base+`,"hidden_act":"gelu_magic"}`))
	require.ErrorContains(t, err, `"hidden_act"`)
	_, err = ParseConfig("config.json", []byte(`{`+base+`,"num_labels":2,"id2label":{"0":"a","1":"b","2":"c"}}`))
	require.ErrorContains(t, err, `"num_labels" (2) disagrees with "id2label" (3 labels)`)
	c, err := ParseConfig("config.json", []byte(`{`+base+`}`))
	require.NoError(t, err)
	require.EqualValues(t, 2, c.NumLabels, "PretrainedConfig's default")
	require.Equal(t, 1e-12, c.LayerNormEps)
	c, err = ParseConfig("config.json", []byte(`{`+base+`,"num_labels":1}`))
	require.NoError(t, err)
	require.EqualValues(t, 1, c.NumLabels)

	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(tinyDir(t), "config.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(strings.Replace(string(data), `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, 1)), 0o644))
	st, err := os.ReadFile(filepath.Join(tinyDir(t), "model.safetensors"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.safetensors"), st, 0o644))
	_, err = Load(dir)
	require.ErrorContains(t, err, `"num_hidden_layers" is 3, the checkpoint has 2 layers`) // from the headers, before building
}

func TestForwardErrors(t *testing.T) {
	m := loadTiny(t)
	s0 := tensor.NoGradScope()
	_, err := m.Forward(s0, models.Inputs{})
	s0.Close()
	require.ErrorContains(t, err, "input_ids")
	check := func(b func(s *tensor.Scope) *models.Batch, want string) {
		t.Helper()
		s := tensor.NoGradScope()
		defer s.Close()
		m.ForwardT(s, b(s))
		require.ErrorContains(t, s.Err(), want)
	}
	ids := func(s *tensor.Scope) *tensor.T { return s.FromInt64([]int64{1, 2, 3, 4, 5, 6}, 2, 3) }
	check(func(s *tensor.Scope) *models.Batch {
		return &models.Batch{InputIDs: ids(s), AttentionMask: s.Ones(tensor.Int64, 2, 2)}
	}, "attention_mask")
	check(func(s *tensor.Scope) *models.Batch {
		return &models.Batch{InputIDs: ids(s), TokenTypeIDs: s.Zeros(tensor.Int64, 2, 4)}
	}, "token_type_ids")
	check(func(s *tensor.Scope) *models.Batch {
		return &models.Batch{InputIDs: s.Zeros(tensor.Int64, 1, 129)}
	}, "max_position_embeddings 128")
	check(func(s *tensor.Scope) *models.Batch { return &models.Batch{InputIDs: ids(s), UseCache: true} }, "no key/value cache")
	check(func(s *tensor.Scope) *models.Batch {
		return &models.Batch{InputIDs: ids(s), Labels: s.FromInt64([]int64{0, 1, 2}, 3)}
	}, "single-label classification, want int64 class ids [2]")
	check(func(s *tensor.Scope) *models.Batch {
		return &models.Batch{InputIDs: ids(s), Labels: s.FromFloat32([]float32{0, 1}, 2)}
	}, "multi-label classification, want [2 3]")
	enc, err := LoadModel(tinyDir(t))
	require.NoError(t, err)
	defer enc.Free()
	s1 := tensor.NoGradScope()
	defer s1.Close()
	_, err = enc.Forward(s1, models.Inputs{Labels: m.Bert.Embeddings.WordEmbeddings.(*nn.Embedding).Weight.T()})
	require.ErrorContains(t, err, "labels need a head")
}

// The losses for every problem type, against the formulas by hand.
func TestLossesMatchFormulas(t *testing.T) {
	cfg := &Config{VocabSize: 50, HiddenSize: 16, NumHiddenLayers: 1, NumAttentionHeads: 2, IntermediateSize: 32,
		MaxPositionEmbeddings: 16, NumLabels: 3}
	m, err := NewForSequenceClassification(cfg, 1)
	require.NoError(t, err)
	defer m.Free()
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{1, 2, 3, 4, 5, 6}, 2, 3)
	logits := s.Float32s(m.ForwardT(s, &models.Batch{InputIDs: ids}).Logits)
	logSoftmax := func(row []float32, k int) float64 {
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v))
		}
		return float64(row[k]) - math.Log(z)
	}
	// single-label: mean -log p(label)
	out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromInt64([]int64{2, 0}, 2)})
	require.NoError(t, s.Err())
	want := -(logSoftmax(logits[0:3], 2) + logSoftmax(logits[3:6], 0)) / 2
	require.InDelta(t, want, s.Item(out.Loss), 1e-5)
	// multi-label: float targets [B, n] → BCE with logits
	tg := []float32{1, 0, 1, 0, 0, 1}
	out = m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromFloat32(tg, 2, 3)})
	require.NoError(t, s.Err())
	want = 0
	for i, x := range logits {
		p := 1 / (1 + math.Exp(-float64(x)))
		want -= float64(tg[i])*math.Log(p) + (1-float64(tg[i]))*math.Log(1-p)
	}
	require.InDelta(t, want/6, s.Item(out.Loss), 1e-5)
	// problem_type regression with 3 outputs: MSE over [B, n]
	m.Bert.Config.ProblemType = Regression
	out = m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromFloat32(tg, 2, 3)})
	require.NoError(t, s.Err())
	want = 0
	for i, x := range logits {
		want += math.Pow(float64(x)-float64(tg[i]), 2)
	}
	require.InDelta(t, want/6, s.Item(out.Loss), 1e-5)

	// one label: regression by default, labels [B]
	cfg1 := *cfg
	cfg1.NumLabels, cfg1.ProblemType = 1, ""
	r, err := NewForSequenceClassification(&cfg1, 1)
	require.NoError(t, err)
	defer r.Free()
	rl := s.Float32s(r.ForwardT(s, &models.Batch{InputIDs: ids}).Logits)
	out = r.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromFloat32([]float32{0.5, -1}, 2)})
	require.NoError(t, s.Err())
	want = (math.Pow(float64(rl[0])-0.5, 2) + math.Pow(float64(rl[1])+1, 2)) / 2
	require.InDelta(t, want, s.Item(out.Loss), 1e-5)

	// token classification: CE over tokens, -100 ignored
	tc, err := NewForTokenClassification(cfg, 2)
	require.NoError(t, err)
	defer tc.Free()
	require.True(t, tc.PerToken())
	tl := tc.ForwardT(s, &models.Batch{InputIDs: ids})
	require.Equal(t, []int64{2, 3, 3}, tl.Logits.Shape())
	lg := s.Float32s(tl.Logits)
	labels := []int64{1, -100, 2, 0, 0, -100}
	out = tc.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromInt64(labels, 2, 3)})
	require.NoError(t, s.Err())
	want, n := 0, 0
	for i, l := range labels {
		if l >= 0 {
			want -= logSoftmax(lg[i*3:i*3+3], int(l))
			n++
		}
	}
	require.InDelta(t, want/float64(n), s.Item(out.Loss), 1e-5)
	tc.ForwardT(s, &models.Batch{InputIDs: ids, Labels: s.FromInt64([]int64{1, 2}, 2)})
	require.ErrorContains(t, s.Err(), "labels: shape [2], want [2 3]")
}

// Every parameter gets a gradient, dropout on.
func TestBackwardThroughEverything(t *testing.T) {
	cfg := &Config{VocabSize: 64, HiddenSize: 32, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 64,
		MaxPositionEmbeddings: 16, NumLabels: 2, HiddenDropoutProb: 0.1}
	m, err := NewForSequenceClassification(cfg, 3)
	require.NoError(t, err)
	defer m.Free()
	loss := testutil.RequireBackwardThroughEverything(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		return &models.Batch{InputIDs: s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4),
			TokenTypeIDs: s.FromInt64([]int64{0, 0, 1, 1, 0, 1, 1, 1}, 2, 4), Labels: s.FromInt64([]int64{0, 1}, 2)}
	})
	require.InDelta(t, math.Log(2), loss, 0.3)
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{VocabSize: 256, HiddenSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 128,
		MaxPositionEmbeddings: 64, NumLabels: 3}
	m, err := NewForSequenceClassification(cfg, 7)
	require.NoError(t, err)
	defer m.Free()
	ids, mask := testutil.PaddedRows(256)
	testutil.RequireTrainingRSSFlat(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		return &models.Batch{InputIDs: s.FromInt64(ids, 4, 32), AttentionMask: s.FromInt64(mask, 4, 32),
			Labels: s.FromInt64([]int64{0, 1, 2, 1}, 4)}
	})
}

// With activation checkpointing (no dropout) every parameter gets the
// gradient of a plain backward pass.
func TestCheckpointingGivesTheSameGradients(t *testing.T) {
	cfg := &Config{VocabSize: 64, HiddenSize: 32, NumHiddenLayers: 3, NumAttentionHeads: 4, IntermediateSize: 64,
		MaxPositionEmbeddings: 16, NumLabels: 2}
	m, err := NewForSequenceClassification(cfg, 5)
	require.NoError(t, err)
	defer m.Free()
	testutil.RequireCheckpointingSameGradients(t, m, func(s *tensor.Scope, ck *models.Checkpoint) *models.Batch {
		return &models.Batch{InputIDs: s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4),
			AttentionMask: s.FromInt64([]int64{1, 1, 1, 1, 1, 1, 0, 0}, 2, 4), Labels: s.FromInt64([]int64{1, 0}, 2), Checkpoint: ck}
	})
}
