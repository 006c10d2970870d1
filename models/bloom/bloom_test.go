package bloom

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
	m, err := Load(filepath.Join(fixtures(t), "bloom-tiny"))
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
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// logits_base of the bloom-tiny fixture is transformers' BloomForCausalLM
// on a left-padded batch: ALiBi, the fused qkv layout, masks, tied head.
func TestLogitsMatchHF(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "bloom-tiny__lora-qkv")
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

func TestSlopesMatchALiBi(t *testing.T) {
	// 4 heads: 2^(-8i/4) = 2^-2, 2^-4, 2^-6, 2^-8
	require.Equal(t, []float32{0.25, 0.0625, 0.015625, 0.00390625}, Slopes(4))
	// 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head sequence 2^(-i)
	require.Equal(t, []float32{0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125}, Slopes(6))
	require.Equal(t, []float32{0.00390625}, Slopes(1)) // one head: 2^-8
}

// Feeding tokens one at a time through the KV cache (and the left-padded
// row with its growing mask) gives the full forward pass's logits.
func TestKVCacheMatchesFullForward(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "bloom-tiny__lora-qkv")
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
		// compare the valid (unpadded) query positions
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
// a cache holding those keys/values (the mask is prefixed by ones).
func TestPrefixKVEqualsPastCache(t *testing.T) {
	m := loadTiny(t)
	exp := openExpected(t, "bloom-tiny__lora-qkv")
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
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(filepath.Join(fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	defer set.Close()
	sort.Strings(names)
	require.Equal(t, set.Names(), names) // lm_head is tied: listed once, as the embedding
	require.Same(t, m.Transformer.WordEmbeddings.(*nn.Embedding).Weight, m.LMHead.(*nn.Linear).Weight)
	require.Contains(t, nn.Format(m), "(query_key_value): Linear(in_features=64, out_features=192, bias=True)")
}

// The closed forms of Config agree with the loaded model's parameters.
func TestParamCountsFromConfig(t *testing.T) {
	m := loadTiny(t)
	_, total := nn.CountParams(m)
	require.Equal(t, m.Config.NumParams(), total)
	var biases int64
	for _, np := range nn.NamedParams(m) {
		if filepath.Ext(np.Name) == ".bias" {
			biases += np.Param.Numel()
		}
	}
	require.Equal(t, m.Config.NumBiasParams(), biases)
	require.EqualValues(t, (11*2+2)*64, biases)
	// Langboat/bloom-1b4-zh (the seed's BitFit example): h 2048, 24 layers,
	// 16 heads, vocabulary 46145.
	zh := &Config{HiddenSize: 2048, NLayer: 24, NHead: 16, VocabSize: 46145, TieWordEmbeddings: true}
	require.EqualValues(t, 1_303_111_680, zh.NumParams())
	require.EqualValues(t, 544_768, zh.NumBiasParams())
}

func TestSaveLoadRoundTripIsBitIdentical(t *testing.T) {
	src := filepath.Join(fixtures(t), "bloom-tiny")
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
	require.Equal(t, "BloomForCausalLM", cfg.Raw["architectures"].([]any)[0])
	require.Equal(t, 2.0, cfg.Raw["eos_token_id"])
	m2, err := Load(dir)
	require.NoError(t, err)
	defer m2.Free()
	require.Equal(t, m.Config.NHead, m2.Config.NHead)
}

// A checkpoint saved from BloomModel (bigscience/bloom-560m's layout: no
// "transformer." prefix) loads to the same model.
func TestLoadBloomModelCheckpoint(t *testing.T) {
	m := loadTiny(t)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	require.NoError(t, nn.SaveState(m.Transformer, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}))
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
	_, err := ParseConfig("config.json", []byte(`{"model_type":"bloom","n_layer":2,"n_head":4,"vocab_size":10}`))
	require.ErrorContains(t, err, `missing field "hidden_size"`)
	_, err = ParseConfig("config.json", []byte(`{"hidden_size":64,"n_layer":2,"n_head":5,"vocab_size":10}`))
	require.ErrorContains(t, err, `"n_head"`)
	c, err := ParseConfig("config.json", []byte(`{"n_embed":32,"num_hidden_layers":3,"num_attention_heads":4,"vocab_size":10}`))
	require.NoError(t, err)
	require.EqualValues(t, 32, c.HiddenSize)
	require.EqualValues(t, 3, c.NLayer)
	require.EqualValues(t, 4, c.NHead)
	require.True(t, c.TieWordEmbeddings)

	dir := t.TempDir()
	src := filepath.Join(fixtures(t), "bloom-tiny")
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
}

// Training moves the loss down and every parameter gets a gradient (the
// tied head included).
func TestBackwardThroughEverything(t *testing.T) {
	cfg := &Config{HiddenSize: 32, NLayer: 2, NHead: 4, VocabSize: 64, TieWordEmbeddings: true, HiddenDropout: 0.1}
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
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{HiddenSize: 64, NLayer: 2, NHead: 4, VocabSize: 256, TieWordEmbeddings: true}
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
		out := m.ForwardT(s, &models.Batch{InputIDs: x, AttentionMask: s.FromInt64(mask, 4, 32), Labels: x})
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		require.NoError(t, nn.ZeroGrad(m))
	}
	before, after, growth := memstat.Growth(20, 200, step)
	t.Logf("RSS %d KiB -> %d KiB after 200 steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}
