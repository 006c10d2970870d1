package gpt2

import (
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func fixtures(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "the golden fixtures must be at testdata/hf")
	return f
}

type expectedFile struct{ set *safetensors.Set }

func openExpected(t testing.TB, name string) *expectedFile {
	set, err := safetensors.OpenFiles(filepath.Join(fixtures(t), "expected", name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return &expectedFile{set}
}

func (e *expectedFile) f32(t testing.TB, key string) []float32 {
	b, err := e.set.Data(key)
	require.NoError(t, err, key)
	return safetensors.Float32s(b)
}

func (e *expectedFile) i64(t testing.TB, key string) ([]int64, []int64) {
	info, _, ok := e.set.Info(key)
	require.True(t, ok, key)
	b, err := e.set.Data(key)
	require.NoError(t, err)
	return safetensors.Int64s(b), info.Shape
}

func loadTiny(t testing.TB) *Model {
	m, err := Load(filepath.Join(fixtures(t), "gpt2-tiny"))
	require.NoError(t, err)
	t.Cleanup(m.Free)
	return m
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		if math.IsInf(float64(a[i]), 0) || math.IsInf(float64(b[i]), 0) || math.IsNaN(float64(a[i])) {
			return math.Inf(1)
		}
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// logits_base of the gpt2-tiny fixture is transformers' GPT2LMHeadModel on
// a left-padded batch without position ids: Conv1D layers, the fused
// c_attn, HF's where(causal)+padding masks (padded rows included), tied head.
func TestLogitsMatchHF(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "gpt2-tiny__lora-c_attn")
	ids, shape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	want := exp.f32(t, "logits_base")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 12, 512}, out.Logits.Shape())
	d := maxAbsDiff(s.Float32s(out.Logits), want) // every position, padded ones too
	t.Logf("max abs diff vs HF: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
}

// With generate's position ids (cumsum(mask)-1), the left-padded row's real
// tokens get the logits the same tokens get when run alone, unpadded; with
// forward()'s default positions they do not (GPT-2's positions are learned).
func TestPositionIDsFromMaskMakeLeftPaddingInvisible(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "gpt2-tiny__lora-c_attn")
	ids, shape := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	const V, pad = 512, 3
	s := tensor.NoGradScope()
	defer s.Close()
	maskT := s.FromInt64(mask, shape...)
	pos := PositionIDsT(s, maskT)
	require.Equal(t, []int64{1, 1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8}, s.Int64s(s.Select(pos, 0, 1)))
	padded := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: maskT, PositionIDs: pos})
	alone := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids[12+pad:], 1, 12-pad)})
	plain := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: maskT})
	require.NoError(t, s.Err())
	got := s.Float32s(padded.Logits)[(12+pad)*V:]
	d := maxAbsDiff(got, s.Float32s(alone.Logits))
	t.Logf("left-padded row with position ids vs alone: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.Greater(t, maxAbsDiff(s.Float32s(plain.Logits)[(12+pad)*V:], s.Float32s(alone.Logits)), 1e-2)
}

// Feeding tokens one at a time through the KV cache (and the left-padded
// row with its growing mask) gives the full forward pass's logits.
func TestKVCacheMatchesFullForward(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "gpt2-tiny__lora-c_attn")
	ids, _ := exp.i64(t, "input_ids")
	mask, _ := exp.i64(t, "attention_mask")
	want := exp.f32(t, "logits_base")
	const V = 512
	for row := 0; row < 2; row++ {
		rowIDs, rowMask := ids[row*12:(row+1)*12], mask[row*12:(row+1)*12]
		s := tensor.NoGradScope()
		cache := &models.Cache{}
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(rowIDs[:5], 1, 5),
			AttentionMask: s.FromInt64(rowMask[:5], 1, 5), PastKeyValues: cache, UseCache: true})
		require.NoError(t, s.Err())
		got := s.Float32s(out.Logits)
		for p := 5; p < 12; p++ {
			out = m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(rowIDs[p:p+1], 1, 1),
				AttentionMask: s.FromInt64(rowMask[:p+1], 1, int64(p+1)), PastKeyValues: cache, UseCache: true})
			require.NoError(t, s.Err())
			got = append(got, s.Float32s(out.Logits)...)
		}
		require.EqualValues(t, 12, cache.Len())
		cache.Free()
		s.Close()
		for p := 0; p < 12; p++ {
			if rowMask[p] == 0 {
				continue
			}
			w := want[(row*12+p)*V : (row*12+p+1)*V]
			require.LessOrEqual(t, maxAbsDiff(got[p*V:(p+1)*V], w), 1e-4, "row %d position %d", row, p)
		}
	}
}

// Prefix key/values of length P with a mask over the real tokens only equal
// a cache holding those keys/values (the mask is prefixed by ones, and the
// real tokens' positions start at P, as in HF).
func TestPrefixKVEqualsPastCache(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "gpt2-tiny__lora-c_attn")
	ids, _ := exp.i64(t, "input_ids")
	row := ids[:12]
	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[:4], 1, 4), PastKeyValues: cache, UseCache: true})
	full := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[4:], 1, 8), PastKeyValues: cache})
	prefix := make([]models.KV, len(cache.Layers))
	copy(prefix, cache.Layers)
	withPrefix := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[4:], 1, 8), PrefixKV: prefix,
		AttentionMask: s.Ones(tensor.Int64, 1, 8)})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, maxAbsDiff(s.Float32s(full.Logits), s.Float32s(withPrefix.Logits)), 1e-5)
	// and both equal the last 8 positions of one pass over the 12 tokens
	whole := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row, 1, 12)})
	require.LessOrEqual(t, maxAbsDiff(s.Float32s(s.Narrow(whole.Logits, 1, 4, 8)), s.Float32s(full.Logits)), 1e-4)
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(filepath.Join(fixtures(t), "gpt2-tiny"))
	require.NoError(t, err)
	defer set.Close()
	sort.Strings(names)
	require.Equal(t, set.Names(), names) // lm_head is tied: listed once, as wte
	require.Same(t, m.Transformer.Wte.(*nn.Embedding).Weight, m.LMHead.(*nn.Linear).Weight)
	require.Contains(t, nn.Format(m), "(c_attn): Conv1D(nf=192, nx=64)")
}

func TestParamCountsFromConfig(t *testing.T) {
	m := loadTiny(t)
	_, total := nn.CountParams(m)
	require.Equal(t, m.Config.NumParams(), total)
	// openai-community/gpt2: 124,439,808 parameters (tied head counted once)
	small := &Config{NEmbd: 768, NLayer: 12, NHead: 12, VocabSize: 50257, NPositions: 1024, TieWordEmbeddings: true}
	require.EqualValues(t, 124_439_808, small.NumParams())
}

func TestSaveLoadRoundTripIsBitIdentical(t *testing.T) {
	src := filepath.Join(fixtures(t), "gpt2-tiny")
	m := loadTiny(t)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	a, err := safetensors.OpenDir(src)
	require.NoError(t, err)
	defer a.Close()
	b, err := safetensors.OpenDir(dir)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, a.Names(), b.Names())
	for _, k := range a.Names() {
		da, _ := a.Data(k)
		db, _ := b.Data(k)
		require.Equal(t, da, db, k)
	}
	cfg, err := LoadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, "GPT2LMHeadModel", cfg.Raw["architectures"].([]any)[0])
	require.Equal(t, "gelu_new", cfg.Raw["activation_function"])
	require.Nil(t, cfg.Raw["n_inner"])
	_, hasAlias := cfg.Raw["hidden_size"]
	require.False(t, hasAlias, "fields are written under the names the file used")
	_, err = os.Stat(filepath.Join(dir, "generation_config.json"))
	require.NoError(t, err)
}

// A checkpoint saved from GPT2Model (openai-community/gpt2's layout: no
// "transformer." prefix, attn.bias buffers) loads to the same model.
func TestLoadGPT2ModelCheckpoint(t *testing.T) {
	m := loadTiny(t)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	tensors, err := nn.StateTensors(nn.NamedParams(m.Transformer), "")
	require.NoError(t, err)
	tril := make([]byte, 4*4) // a stand-in for the [1,1,n,n] causal buffer
	tensors = append(tensors, safetensors.Tensor{Name: "h.0.attn.bias", DType: safetensors.F32, Shape: []int64{1, 1, 2, 2}, Data: tril})
	require.NoError(t, safetensors.Write(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"}))
	m2, err := Load(dir)
	require.NoError(t, err)
	defer m2.Free()
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromInt64([]int64{5, 9, 200, 3}, 1, 4)
	a := m.ForwardT(s, &models.Batch{InputIDs: x})
	b := m2.ForwardT(s, &models.Batch{InputIDs: x})
	require.NoError(t, s.Err())
	require.Equal(t, 0.0, maxAbsDiff(s.Float32s(a.Logits), s.Float32s(b.Logits)))
}

func TestConfigErrors(t *testing.T) {
	_, err := ParseConfig("config.json", []byte(`{"model_type":"gpt2","n_layer":2,"n_head":4,"vocab_size":10}`))
	require.ErrorContains(t, err, `missing field "n_embd"`)
	_, err = ParseConfig("config.json", []byte(`{"n_embd":64,"n_layer":2,"n_head":5,"vocab_size":10}`))
	require.ErrorContains(t, err, `"n_head"`)
	_, err = ParseConfig("config.json", []byte(`{"n_embd":64,"n_layer":2,"n_head":4,"vocab_size":10,"activation_function":"gelu_magic"}`))
	require.ErrorContains(t, err, `"activation_function"`)
	_, err = ParseConfig("config.json", []byte(`{"n_embd":64,"n_layer":2,"n_head":4,"vocab_size":10,"attn_pdrop":1.5}`))
	require.ErrorContains(t, err, `"attn_pdrop"`)
	_, err = ParseConfig("config.json", []byte(`{"n_embd":64,`))
	require.ErrorContains(t, err, "config.json")
	c, err := ParseConfig("config.json", []byte(`{"hidden_size":32,"num_hidden_layers":3,"num_attention_heads":4,"vocab_size":10,"max_position_embeddings":64}`))
	require.NoError(t, err)
	require.EqualValues(t, 32, c.NEmbd)
	require.EqualValues(t, 3, c.NLayer)
	require.EqualValues(t, 4, c.NHead)
	require.EqualValues(t, 64, c.NPositions)
	require.EqualValues(t, 128, c.Inner())
	require.True(t, c.TieWordEmbeddings)
	require.Equal(t, 0.1, c.AttnPdrop, "GPT2Config's default dropout")
	js, err := c.JSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"hidden_size": 32`)
	require.NotContains(t, string(js), `"n_embd"`)

	dir := t.TempDir()
	src := filepath.Join(fixtures(t), "gpt2-tiny")
	for _, f := range []string{"config.json", "model.safetensors"} {
		data, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		if f == "config.json" {
			data = []byte(string(data[:len(data)-2]) + `, "n_layer": 3}`)
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
	}
	_, err = Load(dir)
	require.ErrorContains(t, err, `"n_layer" is 3, the checkpoint has 2 layers`) // from the headers, before building
}

func TestForwardErrors(t *testing.T) {
	m := loadTiny(t)
	s0 := tensor.NoGradScope()
	_, err := m.Forward(s0, models.Inputs{})
	s0.Close()
	require.ErrorContains(t, err, "input_ids")
	s := tensor.NoGradScope()
	defer s.Close()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 2, 3}, 1, 3), AttentionMask: s.FromInt64([]int64{1, 1}, 1, 2)})
	require.ErrorContains(t, s.Err(), "attention_mask")
	s2 := tensor.NoGradScope()
	defer s2.Close()
	m.ForwardT(s2, &models.Batch{InputIDs: s2.Zeros(tensor.Int64, 1, 129)})
	require.ErrorContains(t, s2.Err(), "n_positions 128")
	s3 := tensor.NoGradScope()
	defer s3.Close()
	m.ForwardT(s3, &models.Batch{InputIDs: s3.Zeros(tensor.Int64, 1, 3), PositionIDs: s3.Zeros(tensor.Int64, 1, 4)})
	require.ErrorContains(t, s3.Err(), "position_ids")
}

// Token type ids are embedded with wte and added (GPT2Model's behaviour).
func TestTokenTypeIDsUseWte(t *testing.T) {
	m := loadTiny(t)
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{5, 9, 200}, 1, 3)
	tt := s.FromInt64([]int64{1, 1, 0}, 1, 3)
	a := m.ForwardT(s, &models.Batch{InputIDs: ids, TokenTypeIDs: tt})
	emb := s.Add(m.Transformer.Wte.Forward(s, ids), m.Transformer.Wte.Forward(s, tt))
	b := m.ForwardT(s, &models.Batch{InputsEmbeds: emb})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, maxAbsDiff(s.Float32s(a.Logits), s.Float32s(b.Logits)), 1e-6)
}

// Training moves the loss down and every parameter gets a gradient (the
// tied head included).
func TestBackwardThroughEverything(t *testing.T) {
	cfg := &Config{NEmbd: 32, NLayer: 2, NHead: 4, VocabSize: 64, NPositions: 16, TieWordEmbeddings: true, ResidPdrop: 0.1}
	m, err := New(cfg, 3)
	require.NoError(t, err)
	defer m.Free()
	nn.SetTraining(m, true)
	s := tensor.NewScope()
	defer s.Close()
	x := s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4)
	out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
	s.Backward(out.Loss)
	require.NoError(t, s.Err())
	for _, np := range nn.NamedParams(m) {
		require.NotNil(t, s.Grad(np.Param.T()), np.Name)
	}
	require.InDelta(t, math.Log(64), s.Item(out.Loss), 0.3, "an untrained model is near uniform")
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{NEmbd: 64, NLayer: 2, NHead: 4, VocabSize: 256, NPositions: 64, TieWordEmbeddings: true}
	m, err := New(cfg, 7)
	require.NoError(t, err)
	defer m.Free()
	ids := make([]int64, 4*32)
	mask := make([]int64, 4*32)
	for i := range ids {
		ids[i] = int64((i * 37) % 256)
		mask[i] = 1
		if i%32 < 3 && i >= 64 { // two left-padded rows
			mask[i] = 0
		}
	}
	step := func() {
		s := tensor.NewScope()
		defer s.Close()
		x := s.FromInt64(ids, 4, 32)
		am := s.FromInt64(mask, 4, 32)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, AttentionMask: am, PositionIDs: PositionIDsT(s, am), Labels: x})
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		require.NoError(t, nn.ZeroGrad(m))
	}
	before, after, growth := memstat.Growth(20, 200, step)
	t.Logf("RSS %d KiB -> %d KiB after 200 steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}

// With activation checkpointing (no dropout) every parameter gets the
// gradient of a plain backward pass.
func TestCheckpointingGivesTheSameGradients(t *testing.T) {
	cfg := &Config{NEmbd: 32, NLayer: 3, NHead: 4, VocabSize: 64, NPositions: 16, TieWordEmbeddings: true}
	m, err := New(cfg, 5)
	require.NoError(t, err)
	defer m.Free()
	nn.SetTraining(m, true)
	grads := func(ck *models.Checkpoint) map[string][]float32 {
		require.NoError(t, nn.ZeroGrad(m))
		s := tensor.NewScope()
		defer s.Close()
		x := s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4)
		mask := s.FromInt64([]int64{0, 1, 1, 1, 1, 1, 1, 1}, 2, 4)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, AttentionMask: mask, Labels: x, Checkpoint: ck})
		// free the forward's scope first, as train.Trainer does: the
		// checkpoint must hold the masks its recomputation reads
		loss := s.Keep(out.Loss)
		defer loss.Free()
		s.FreeAll()
		ck.Backward(s, loss)
		require.NoError(t, s.Err())
		g := map[string][]float32{}
		for _, np := range nn.NamedParams(m) {
			g[np.Name] = s.Float32s(s.Grad(np.Param.T()))
		}
		return g
	}
	plain := grads(nil)
	ck := models.NewCheckpoint(1)
	defer ck.Free()
	checked := grads(ck)
	for k, v := range plain {
		require.LessOrEqual(t, maxAbsDiff(v, checked[k]), 1e-5, k)
	}
}
