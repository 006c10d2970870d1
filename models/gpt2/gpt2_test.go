package gpt2

import (
	"math"
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

func loadTiny(t testing.TB) *Model { return testutil.Load(t, Load, "gpt2-tiny") }

// logits_base of the gpt2-tiny fixture is transformers' GPT2LMHeadModel on
// a left-padded batch without position ids: Conv1D layers, the fused
// c_attn, HF's where(causal)+padding masks (padded rows included), tied head.
func TestLogitsMatchHF(t *testing.T) {
	// every position, padded ones too
	shape := testutil.RequireLogits(t, loadTiny(t), testutil.OpenExpected(t, "gpt2-tiny__lora-c_attn"), "logits_base", 1e-4)
	require.Equal(t, []int64{2, 12, 512}, shape)
}

// With generate's position ids (cumsum(mask)-1), the left-padded row's real
// tokens get the logits the same tokens get when run alone, unpadded; with
// forward()'s default positions they do not (GPT-2's positions are learned).
func TestPositionIDsFromMaskMakeLeftPaddingInvisible(t *testing.T) {
	m := loadTiny(t)
	exp := testutil.OpenExpected(t, "gpt2-tiny__lora-c_attn")
	ids, shape := exp.I64(t, "input_ids")
	mask, _ := exp.I64(t, "attention_mask")
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
	d := testutil.MaxDiff(got, s.Float32s(alone.Logits))
	t.Logf("left-padded row with position ids vs alone: %.3g", d)
	require.LessOrEqual(t, d, 1e-4)
	require.Greater(t, testutil.MaxDiff(s.Float32s(plain.Logits)[(12+pad)*V:], s.Float32s(alone.Logits)), 1e-2)
}

// Feeding tokens one at a time through the KV cache (and the left-padded
// row with its growing mask) gives the full forward pass's logits.
func TestKVCacheMatchesFullForward(t *testing.T) {
	exp := testutil.OpenExpected(t, "gpt2-tiny__lora-c_attn")
	ids, _ := exp.I64(t, "input_ids")
	mask, _ := exp.I64(t, "attention_mask")
	testutil.RequireKVCacheMatchesFull(t, loadTiny(t), ids, mask, 2, 5, exp.F32(t, "logits_base"), nil)
}

// Prefix key/values of length P with a mask over the real tokens only equal
// a cache holding those keys/values (the mask is prefixed by ones, and the
// real tokens' positions start at P, as in HF).
func TestPrefixKVEqualsPastCache(t *testing.T) {
	ids, _ := testutil.OpenExpected(t, "gpt2-tiny__lora-c_attn").I64(t, "input_ids")
	testutil.RequirePrefixKVEqualsCache(t, loadTiny(t), ids[:12], 4)
}

func TestParamNamesAreHFs(t *testing.T) {
	m := loadTiny(t)
	var names []string
	for _, np := range nn.NamedParams(m) {
		names = append(names, np.Name)
	}
	set, err := safetensors.OpenDir(filepath.Join(testutil.Fixtures(t), "gpt2-tiny"))
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
	src := filepath.Join(testutil.Fixtures(t), "gpt2-tiny")
	m := loadTiny(t)
	dir := testutil.RequireSaveRoundTrip(t, m, src)
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
	require.Equal(t, 0.0, testutil.MaxDiff(s.Float32s(a.Logits), s.Float32s(b.Logits)))
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
	src := filepath.Join(testutil.Fixtures(t), "gpt2-tiny")
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
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(a.Logits), s.Float32s(b.Logits)), 1e-6)
}

// Training moves the loss down and every parameter gets a gradient (the
// tied head included).
func TestBackwardThroughEverything(t *testing.T) {
	cfg := &Config{NEmbd: 32, NLayer: 2, NHead: 4, VocabSize: 64, NPositions: 16, TieWordEmbeddings: true, ResidPdrop: 0.1}
	m, err := New(cfg, 3)
	require.NoError(t, err)
	defer m.Free()
	loss := testutil.RequireBackwardThroughEverything(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		x := s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4)
		return &models.Batch{InputIDs: x, Labels: x}
	})
	require.InDelta(t, math.Log(64), loss, 0.3, "an untrained model is near uniform")
}

// 200 forward+backward steps of a small model: RSS stays within 5%.
func TestRSSFlatOverTrainingSteps(t *testing.T) {
	cfg := &Config{NEmbd: 64, NLayer: 2, NHead: 4, VocabSize: 256, NPositions: 64, TieWordEmbeddings: true}
	m, err := New(cfg, 7)
	require.NoError(t, err)
	defer m.Free()
	ids, mask := testutil.PaddedRows(256)
	testutil.RequireTrainingRSSFlat(t, m, func(s *tensor.Scope, _ *models.Checkpoint) *models.Batch {
		x := s.FromInt64(ids, 4, 32)
		am := s.FromInt64(mask, 4, 32)
		return &models.Batch{InputIDs: x, AttentionMask: am, PositionIDs: PositionIDsT(s, am), Labels: x}
	})
}

// With activation checkpointing (no dropout) every parameter gets the
// gradient of a plain backward pass.
func TestCheckpointingGivesTheSameGradients(t *testing.T) {
	cfg := &Config{NEmbd: 32, NLayer: 3, NHead: 4, VocabSize: 64, NPositions: 16, TieWordEmbeddings: true}
	m, err := New(cfg, 5)
	require.NoError(t, err)
	defer m.Free()
	testutil.RequireCheckpointingSameGradients(t, m, func(s *tensor.Scope, ck *models.Checkpoint) *models.Batch {
		x := s.FromInt64([]int64{1, 5, 9, 13, 17, 21, 2, 4}, 2, 4)
		mask := s.FromInt64([]int64{0, 1, 1, 1, 1, 1, 1, 1}, 2, 4)
		return &models.Batch{InputIDs: x, AttentionMask: mask, Labels: x, Checkpoint: ck}
	})
}
