package prompt_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// fixtureConfigs are the settings each fixture adapter was made with.
func fixtureConfigs() map[string]peft.Config {
	common := func() peft.PromptLearningConfig {
		return peft.PromptLearningConfig{NumVirtualTokens: 8, BaseModelNameOrPath: "llama-tiny"}
	}
	return map[string]peft.Config{
		"prompt-tuning-random": &prompt.TuningConfig{PromptLearningConfig: common(), PromptTuningInit: prompt.Random},
		"prompt-tuning-text": &prompt.TuningConfig{PromptLearningConfig: common(), PromptTuningInit: prompt.Text,
			PromptTuningInitText: "Classify if the tweet is a complaint or not:", TokenizerNameOrPath: "llama-tiny",
			TokenizerKwargs: map[string]any{"use_fast": false}, Tokenizer: fakeTokenizer{ids: []int64{1, 487, 70}}},
		"p-tuning-mlp":  &prompt.EncoderConfig{PromptLearningConfig: common(), EncoderReparameterizationType: prompt.MLP, EncoderHiddenSize: 32},
		"p-tuning-lstm": &prompt.EncoderConfig{PromptLearningConfig: common(), EncoderReparameterizationType: prompt.LSTM, EncoderHiddenSize: 32},
	}
}

// An adapter created here from each fixture's settings saves exactly the
// keys, shapes, dtypes and adapter_config.json fields Python PEFT saved.
func TestCreatedAdapterHasPEFTsFormat(t *testing.T) {
	for name, cfg := range fixtureConfigs() {
		t.Run(name, func(t *testing.T) {
			m, err := peft.New(loadBase(t), cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))

			py := adapterDir(t, name)
			want, err := safetensors.OpenFiles(filepath.Join(py, peft.WeightsName))
			require.NoError(t, err)
			defer want.Close()
			got, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
			require.NoError(t, err)
			defer got.Close()
			require.Equal(t, []string{"prompt_embeddings"}, want.Names())
			require.Equal(t, want.Names(), got.Names())
			wi, _, _ := want.Info(peft.PromptEmbeddingsKey)
			gi, _, _ := got.Info(peft.PromptEmbeddingsKey)
			require.Equal(t, wi.Shape, gi.Shape)
			require.Equal(t, wi.DType, gi.DType)
			meta := got.Files()[0].Metadata()
			require.Equal(t, "pt", meta["format"])
			for k := range meta { // besides PEFT's "format", only the keys of the atomic switch (peft.MetaConfig…)
				require.True(t, k == "format" || strings.HasPrefix(k, "gopeft."), k)
			}

			wc := testutil.ReadJSON(t, filepath.Join(py, peft.ConfigName))
			gc := testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName))
			require.Equal(t, keys(wc), keys(gc), "same field set")
			require.Equal(t, wc, gc)
		})
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Load(Save(x)) is bit-identical for Python's adapters, and the config
// round-trips field for field.
func TestSaveLoadRoundTrip(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			src := adapterDir(t, name)
			m, err := peft.Load(loadBase(t), src)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))
			testutil.RequireSameAdapter(t, src, dir)
		})
	}
}

// An adapter trained here (the encoder network is not saved) loads back as
// the table of its encoder's output: same logits, and saving it again gives
// the same bytes.
func TestCreatedAdapterRoundTrip(t *testing.T) {
	for name, cfg := range fixtureConfigs() {
		t.Run(name, func(t *testing.T) {
			e := openExpected(t, name)
			m, err := peft.New(loadBase(t), cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			want, _ := testutil.LogitsOf(t, m, e)
			dir := t.TempDir()
			require.NoError(t, m.Save(dir))

			loaded, err := peft.Load(loadBase(t), dir)
			require.NoError(t, err)
			defer nn.FreeParams(loaded)
			got, _ := testutil.LogitsOf(t, loaded, e)
			require.Equal(t, want, got, "the loaded table is the encoder's output")
			again := t.TempDir()
			require.NoError(t, loaded.Save(again))
			testutil.RequireSameTensors(t, filepath.Join(dir, peft.WeightsName), filepath.Join(again, peft.WeightsName))
			require.Equal(t, testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName)), testutil.ReadJSON(t, filepath.Join(again, peft.ConfigName)))
		})
	}
}

// A config field this library does not know survives load and save.
func TestUnknownConfigFieldsSurvive(t *testing.T) {
	src := adapterDir(t, "p-tuning-lstm")
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(src, peft.ConfigName))
	require.NoError(t, err)
	data = append([]byte(`{"some_future_field": [1, 2],`), data[1:]...)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.ConfigName), data, 0o644))
	w, err := os.ReadFile(filepath.Join(src, peft.WeightsName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.WeightsName), w, 0o644))
	m, err := peft.Load(loadBase(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	out := t.TempDir()
	require.NoError(t, m.Save(out))
	require.Equal(t, []any{1.0, 2.0}, testutil.ReadJSON(t, filepath.Join(out, peft.ConfigName))["some_future_field"])
}

// The trainable-parameter line counts what PEFT counts: the base model plus
// the prompt encoder (table, and the MLP/LSTM while training).
func TestTrainableParametersLikePEFT(t *testing.T) {
	const base = 139584
	const h, d = 32, 64
	cases := map[string]int64{
		"prompt-tuning-random": 8 * d,
		"p-tuning-mlp":         8*d + (d*h + h) + (h*h + h) + (h*d + d),
		// 2 layers × 2 directions of (W_ih, W_hh, b_ih, b_hh), then 2h→2h→d
		"p-tuning-lstm": 8*d + 2*(4*h*d+4*h*h+8*h) + 2*(4*h*2*h+4*h*h+8*h) + (2*h*2*h + 2*h) + (2*h*d + d),
	}
	for name, cfg := range fixtureConfigs() {
		want, ok := cases[name]
		if !ok {
			continue
		}
		m, err := peft.New(loadBase(t), cfg)
		require.NoError(t, err)
		require.Equal(t, peft.FormatTrainable(want, base+want), peft.TrainableSummary(m), name)
		for _, np := range m.TrainableParams() {
			require.Contains(t, np.Name, "prompt_encoder.default.", name)
		}
		nn.FreeParams(m)
	}
}

// PEFT's in-memory names of the P-tuning encoder's parameters.
func TestEncoderParameterNames(t *testing.T) {
	m, err := peft.New(loadBase(t), fixtureConfigs()["p-tuning-lstm"])
	require.NoError(t, err)
	defer nn.FreeParams(m)
	var names []string
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range m.TrainableParams() {
		names = append(names, np.Name)
	}
	p := "prompt_encoder.default."
	require.Equal(t, []string{p + "embedding.weight",
		p + "lstm_head.weight_ih_l0", p + "lstm_head.weight_hh_l0", p + "lstm_head.bias_ih_l0", p + "lstm_head.bias_hh_l0",
		p + "lstm_head.weight_ih_l0_reverse", p + "lstm_head.weight_hh_l0_reverse", p + "lstm_head.bias_ih_l0_reverse", p + "lstm_head.bias_hh_l0_reverse",
		p + "lstm_head.weight_ih_l1", p + "lstm_head.weight_hh_l1", p + "lstm_head.bias_ih_l1", p + "lstm_head.bias_hh_l1",
		p + "lstm_head.weight_ih_l1_reverse", p + "lstm_head.weight_hh_l1_reverse", p + "lstm_head.bias_ih_l1_reverse", p + "lstm_head.bias_hh_l1_reverse",
		p + "mlp_head.0.weight", p + "mlp_head.0.bias", p + "mlp_head.2.weight", p + "mlp_head.2.bias"}, names)
	require.Contains(t, nn.Format(m), "(lstm_head): LSTM(64, 32, num_layers=2, batch_first=True, bidirectional=True)")
}
