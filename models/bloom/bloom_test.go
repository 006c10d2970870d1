package bloom

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func loadTiny(t testing.TB) *Model { return testutil.Load(t, Load, "bloom-tiny") }

// logits_base of the bloom-tiny fixture is transformers' BloomForCausalLM
// on a left-padded batch: ALiBi, the fused qkv layout, masks, tied head.
func TestLogitsMatchHF(t *testing.T) {
	// every position, padded ones too
	shape := testutil.RequireLogits(t, loadTiny(t), testutil.OpenExpected(t, "bloom-tiny__lora-qkv"), "logits_base", 1e-4)
	require.Equal(t, []int64{2, 12, 512}, shape)
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
	exp := testutil.OpenExpected(t, "bloom-tiny__lora-qkv")
	ids, _ := exp.I64(t, "input_ids")
	mask, _ := exp.I64(t, "attention_mask")
	testutil.RequireKVCacheMatchesFull(t, loadTiny(t), ids, mask, 2, 5, exp.F32(t, "logits_base"), nil)
}

// Prefix key/values of length P with a mask over the real tokens only equal
// a cache holding those keys/values (the mask is prefixed by ones).
func TestPrefixKVEqualsPastCache(t *testing.T) {
	ids, _ := testutil.OpenExpected(t, "bloom-tiny__lora-qkv").I64(t, "input_ids")
	testutil.RequirePrefixKVEqualsCache(t, loadTiny(t), ids[:12], 4)
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(filepath.Join(testutil.Fixtures(t), "bloom-tiny"))
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
	src := filepath.Join(testutil.Fixtures(t), "bloom-tiny")
	m := loadTiny(t)
	dir := testutil.RequireSaveRoundTrip(t, m, src)
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
	require.Equal(t, 0.0, testutil.MaxDiff(s.Float32s(a.Logits), s.Float32s(b.Logits)))
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
	src := filepath.Join(testutil.Fixtures(t), "bloom-tiny")
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
	testutil.RequireBackwardThroughEverything(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		x := s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4)
		return &models.Batch{InputIDs: x, Labels: x}
	})
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{HiddenSize: 64, NLayer: 2, NHead: 4, VocabSize: 256, TieWordEmbeddings: true}
	m, err := New(cfg, 7)
	require.NoError(t, err)
	defer m.Free()
	ids, mask := testutil.PaddedRows(256)
	testutil.RequireTrainingRSSFlat(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		x := s.FromInt64(ids, 4, 32)
		return &models.Batch{InputIDs: x, AttentionMask: s.FromInt64(mask, 4, 32), Labels: x}
	})
}
