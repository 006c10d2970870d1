package prompt_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/stretchr/testify/require"
)

func otherModel(t *testing.T) *llama.Model {
	cfg := &llama.Config{HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, VocabSize: 512}
	m, err := llama.New(cfg, 1)
	require.NoError(t, err)
	t.Cleanup(m.Free)
	return m
}

func TestErrors(t *testing.T) {
	t.Run("adapter for a model of another hidden size", func(t *testing.T) {
		for _, name := range fixtureNames {
			other := otherModel(t)
			_, err := peft.Load(other, adapterDir(t, name))
			require.ErrorContains(t, err, "token_dim 64 does not match the model's hidden size 32", name)
			require.NotContains(t, strings.Join(nn.Paths(other), " "), "prompt_encoder")
		}
		_, err := peft.New(otherModel(t), &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4, TokenDim: 64}})
		require.ErrorContains(t, err, "token_dim 64 does not match the model's hidden size 32")
	})
	t.Run("TEXT init without a tokenizer", func(t *testing.T) {
		cfg := &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
			PromptTuningInit: prompt.Text, PromptTuningInitText: "Classify", TokenizerNameOrPath: "llama-tiny"}
		_, err := peft.New(loadBase(t), cfg)
		require.ErrorContains(t, err, "TEXT init needs a tokenizer")
		cfg.Tokenizer, cfg.PromptTuningInitText = fakeTokenizer{ids: []int64{1}}, ""
		_, err = peft.New(loadBase(t), cfg)
		require.ErrorContains(t, err, "prompt_tuning_init_text")
		cfg.PromptTuningInitText, cfg.TokenizerNameOrPath = "Classify", ""
		_, err = peft.New(loadBase(t), cfg)
		require.ErrorContains(t, err, "tokenizer_name_or_path")
		cfg.TokenizerNameOrPath, cfg.Tokenizer = "llama-tiny", fakeTokenizer{ids: []int64{1, 512}}
		_, err = peft.New(loadBase(t), cfg)
		require.ErrorContains(t, err, "outside the model's vocabulary of 512")
	})
	t.Run("a saved TEXT adapter loads without a tokenizer", func(t *testing.T) {
		m, err := peft.Load(loadBase(t), adapterDir(t, "prompt-tuning-text"))
		require.NoError(t, err)
		nn.FreeParams(m)
	})
	t.Run("merge", func(t *testing.T) {
		e := openExpected(t, "p-tuning-lstm")
		m, err := peft.Load(loadBase(t), adapterDir(t, "p-tuning-lstm"))
		require.NoError(t, err)
		defer nn.FreeParams(m)
		err = m.Merge(false)
		require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
		require.ErrorContains(t, err, `adapter "default" is P_TUNING, which is not mergeable`)
		_, err = m.MergeAndUnload()
		require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
		got, _ := testutil.LogitsOf(t, m, e)
		require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4, "the model still works")
		base, err := m.Unload()
		require.NoError(t, err)
		for _, p := range nn.Paths(base) {
			require.NotContains(t, p, "prompt_encoder")
		}
		got, _ = testutil.LogitsOf(t, base, e)
		require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits_base")), 1e-4)
	})
	t.Run("bad config fields", func(t *testing.T) {
		for _, c := range []struct{ adapter, from, to, field string }{
			{"prompt-tuning-text", `"prompt_tuning_init": "TEXT"`, `"prompt_tuning_init": "VOCAB"`, "prompt_tuning_init"},
			{"prompt-tuning-random", `"tokenizer_kwargs": null`, `"tokenizer_kwargs": {"use_fast": false}`, "tokenizer_kwargs"},
			{"prompt-tuning-text", `"task_type": "CAUSAL_LM"`, `"task_type": "SEQ_2_SEQ_LM"`, "task_type"},
			{"prompt-tuning-text", `"num_transformer_submodules": 1`, `"num_transformer_submodules": 2`, "num_transformer_submodules"},
			{"prompt-tuning-text", `"num_virtual_tokens": 8`, `"num_virtual_tokens": 0`, "num_virtual_tokens"},
			{"p-tuning-mlp", `"MLP"`, `"GRU"`, "encoder_reparameterization_type"},
			{"p-tuning-mlp", `"encoder_dropout": 0.0`, `"encoder_dropout": 1.5`, "encoder_dropout"},
		} {
			dir := copyAdapter(t, c.adapter)
			p := filepath.Join(dir, peft.ConfigName)
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Contains(t, string(data), c.from)
			require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), c.from, c.to, 1)), 0o644))
			_, err = peft.Load(loadBase(t), dir)
			require.ErrorContains(t, err, c.field, c.to)
		}
	})
	t.Run("wrong tensor shape", func(t *testing.T) {
		dir := copyAdapter(t, "prompt-tuning-random")
		p := filepath.Join(dir, peft.ConfigName)
		data, _ := os.ReadFile(p)
		require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(data), `"num_virtual_tokens": 8`, `"num_virtual_tokens": 9`, 1)), 0o644))
		_, err := peft.Load(loadBase(t), dir)
		require.ErrorContains(t, err, "prompt_embeddings")
		require.ErrorContains(t, err, "[8 64]")
	})
	t.Run("one method per model", func(t *testing.T) {
		m, err := peft.Load(loadBase(t), adapterDir(t, "prompt-tuning-random"))
		require.NoError(t, err)
		defer nn.FreeParams(m)
		err = m.AddAdapter("lora", &lora.Config{R: 4, LoraAlpha: 4, TargetModules: lora.List("q_proj")})
		require.ErrorContains(t, err, "cannot add a LORA adapter to a PROMPT_TUNING model")
		err = m.AddAdapter("pt", &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}})
		require.ErrorContains(t, err, "cannot add a P_TUNING adapter")
	})
}

func copyAdapter(t *testing.T, name string) string {
	dst := t.TempDir()
	for _, f := range []string{peft.ConfigName, peft.WeightsName} {
		data, err := os.ReadFile(filepath.Join(adapterDir(t, name), f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, f), data, 0o644))
	}
	return dst
}

// Several prompt adapters: the active one runs and trains, the others are
// frozen; deleting the active one switches to the first remaining.
func TestMultipleAdapters(t *testing.T) {
	e := openExpected(t, "prompt-tuning-random")
	m, err := peft.Load(loadBase(t), adapterDir(t, "prompt-tuning-random"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.LoadAdapter(adapterDir(t, "prompt-tuning-text"), "text"))
	got, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4, "default stays active")

	require.NoError(t, m.SetAdapter("text"))
	got, _ = testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(got, openExpected(t, "prompt-tuning-text").F32(t, "logits")), 1e-4)
	var trainable []string
	for _, np := range m.TrainableParams() {
		trainable = append(trainable, np.Name)
	}
	require.Equal(t, []string{"prompt_encoder.text.embedding.weight"}, trainable)

	added := &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 3}}
	require.NoError(t, m.AddAdapter("third", added))
	require.Equal(t, []string{"default", "text", "third"}, m.Adapters())
	require.NoError(t, m.DeleteAdapter("text"))
	require.Equal(t, "default", m.ActiveAdapter())
	got, _ = testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4)
	for _, np := range nn.NamedParams(m) {
		require.NotContains(t, np.Name, ".text.")
	}

	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	_, err = os.Stat(filepath.Join(dir, "third", peft.WeightsName))
	require.NoError(t, err, "non-default adapters go to dir/<name>")
}
