package prompt_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

var fixtureNames = []string{"prompt-tuning-random", "prompt-tuning-text", "p-tuning-mlp", "p-tuning-lstm"}

// Python PEFT's adapters give PEFT's logits [2, 8+12, 512], virtual
// positions and padded positions included; disabled, the base model's.
func TestFixtures(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			e := openExpected(t, name)
			m, err := peft.Load(loadBase(t), adapterDir(t, name))
			require.NoError(t, err)
			defer nn.FreeParams(m)
			require.Empty(t, m.TrainableParams(), "loaded for inference")

			require.Equal(t, []int64{2, 20, 512}, testutil.RequireLogits(t, m, e, "logits", 1e-4))
			restore := m.DisableAdapters()
			require.Equal(t, []int64{2, 12, 512}, testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4))
			restore()

			// the public entry point gives the same
			ids, ishape := e.I64(t, "input_ids")
			mask, _ := e.I64(t, "attention_mask")
			s := tensor.NoGradScope()
			defer s.Close()
			idsT, maskT := s.FromInt64(ids, ishape...), s.FromInt64(mask, ishape...)
			require.NoError(t, s.Err())
			out, err := m.Forward(s, models.Inputs{InputIDs: idsT, AttentionMask: maskT})
			require.NoError(t, err)
			require.Equal(t, []int64{2, 20, 512}, out.Logits.Shape())
			require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(out.Logits), e.F32(t, "logits")), 1e-4)
		})
	}
}

// TEXT init takes the word embeddings of the tokenised init text, cut to 8
// rows: with the fixture's token ids it reproduces the (untrained) fixture
// exactly.
func TestTextInitReproducesFixture(t *testing.T) {
	e := openExpected(t, "prompt-tuning-text")
	var ids []int64
	require.NoError(t, json.Unmarshal([]byte(e.Meta(t, "init_token_ids")), &ids))
	require.Greater(t, len(ids), 8, "the init text is longer than the virtual tokens: it is cut")
	cfg := &prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8, BaseModelNameOrPath: "llama-tiny"},
		PromptTuningInit:     prompt.Text,
		PromptTuningInitText: e.Meta(t, "init_text"),
		TokenizerKwargs:      map[string]any{"use_fast": false},
		Tokenizer:            fakeTokenizer{ids: ids, name: "llama-tiny"},
	}
	m, err := peft.New(loadBase(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)

	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	require.Len(t, state, 1)
	want, err := safetensors.OpenFiles(filepath.Join(adapterDir(t, "prompt-tuning-text"), peft.WeightsName))
	require.NoError(t, err)
	defer want.Close()
	wb, _ := want.Data(peft.PromptEmbeddingsKey)
	s := tensor.NoGradScope()
	defer s.Close()
	require.Equal(t, safetensors.Float32s(wb), s.Float32s(state[0].Param.T()), "bit-identical to PEFT's init")

	got, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4)
	// the config written is PEFT's, field for field
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	require.Equal(t, testutil.ReadJSON(t, filepath.Join(adapterDir(t, "prompt-tuning-text"), peft.ConfigName)), testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName)))
}

// Short inputs repeat the text's ids until the virtual tokens are filled.
func TestTextInitRepeats(t *testing.T) {
	base := loadBase(t)
	cfg := &prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 5},
		PromptTuningInit:     prompt.Text, PromptTuningInitText: "hi",
		Tokenizer: fakeTokenizer{ids: []int64{1, 7}, name: "tok"},
	}
	s := tensor.NoGradScope()
	defer s.Close()
	emb := s.Float32s(base.Model.EmbedTokens.(*nn.Embedding).Weight.T())
	row := func(id int) []float32 { return append([]float32(nil), emb[id*64:(id+1)*64]...) }
	m, err := peft.New(base, cfg)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	got := s.Float32s(state[0].Param.T())
	for i, id := range []int{1, 7, 1, 7, 1} {
		require.Equal(t, row(id), got[i*64:(i+1)*64], "row %d", i)
	}
	require.Equal(t, "tok", cfg.TokenizerNameOrPath, "filled from the tokenizer")
}

// SAMPLE_VOCAB copies the word embeddings of random vocabulary entries.
func TestSampleVocabInit(t *testing.T) {
	base := loadBase(t)
	s := tensor.NoGradScope()
	defer s.Close()
	emb := s.Float32s(base.Model.EmbedTokens.(*nn.Embedding).Weight.T())
	m, err := peft.New(base, &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 6},
		PromptTuningInit: prompt.SampleVocab})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	got := s.Float32s(state[0].Param.T())
	for i := 0; i < 6; i++ {
		row := got[i*64 : (i+1)*64]
		found := false
		for id := 0; id < 512 && !found; id++ {
			found = testutil.MaxDiff(row, emb[id*64:(id+1)*64]) == 0
		}
		require.True(t, found, "row %d is a word embedding", i)
	}
}
