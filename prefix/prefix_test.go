package prefix_test

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

var fixtureNames = []string{"prefix-proj", "prefix-noproj"}

// fixtureConfigs are the settings the fixture adapters were made with; the
// key/value geometry (token_dim 32, 2 heads on llama-tiny's 2 KV heads) is
// left for the library to fill, as current PEFT does.
func fixtureConfigs() map[string]*prefix.Config {
	common := peft.PromptLearningConfig{NumVirtualTokens: 8, BaseModelNameOrPath: "llama-tiny"}
	return map[string]*prefix.Config{
		"prefix-proj":   {PromptLearningConfig: common, EncoderHiddenSize: 48, PrefixProjection: true},
		"prefix-noproj": {PromptLearningConfig: common},
	}
}

// Python PEFT's adapters give PEFT's logits [2, 12, 512] at every position
// (padded ones too): un-rotated prefix keys, real tokens at positions 8…19.
func TestFixtures(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			e := openExpected(t, name)
			m, err := peft.Load(loadBase(t), adapterDir(t, name))
			require.NoError(t, err)
			defer nn.FreeParams(m)
			require.Empty(t, m.TrainableParams(), "loaded for inference")
			require.Equal(t, []int64{2, 12, 512}, testutil.RequireLogits(t, m, e, "logits", 1e-4))
			restore := m.DisableAdapters()
			testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
			restore()

			ids, ishape := e.I64(t, "input_ids")
			mask, _ := e.I64(t, "attention_mask")
			s := tensor.NoGradScope()
			defer s.Close()
			idsT, maskT := s.FromInt64(ids, ishape...), s.FromInt64(mask, ishape...)
			out, err := m.Forward(s, models.Inputs{InputIDs: idsT, AttentionMask: maskT})
			require.NoError(t, err)
			require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(out.Logits), e.F32(t, "logits")), 1e-4)

			// explicit position ids count the caller's tokens; PEFT shifts them by P
			pos := s.Expand(s.Unsqueeze(s.Arange(tensor.Int64, 0, 12), 0), 2, 12)
			res := m.ForwardT(s, &models.Batch{InputIDs: idsT, AttentionMask: maskT, PositionIDs: pos})
			require.NoError(t, s.Err())
			require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(res.Logits), e.F32(t, "logits")), 1e-4)
		})
	}
}

// An adapter created here saves PEFT's key, shape, dtype and config fields
// for the same settings (token_dim and num_attention_heads filled with the
// KV geometry under GQA).
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
			require.Equal(t, []string{peft.PromptEmbeddingsKey}, got.Names())
			require.Equal(t, want.Names(), got.Names())
			wi, _, _ := want.Info(peft.PromptEmbeddingsKey)
			gi, _, _ := got.Info(peft.PromptEmbeddingsKey)
			require.Equal(t, []int64{8, 2 * 2 * 32}, wi.Shape)
			require.Equal(t, wi.Shape, gi.Shape)
			require.Equal(t, wi.DType, gi.DType)
			wc := testutil.ReadJSON(t, filepath.Join(py, peft.ConfigName))
			gc := testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName))
			require.Equal(t, keys(wc), keys(gc))
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

// Without GQA the prefix has every attention head: token_dim = hidden_size.
func TestGeometryWithoutGQA(t *testing.T) {
	cfg := &llama.Config{HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 3, NumAttentionHeads: 4, VocabSize: 512}
	base, err := llama.New(cfg, 1)
	require.NoError(t, err)
	c := &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 5}}
	m, err := peft.New(base, c)
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, 32, c.TokenDim)
	require.Equal(t, 4, c.NumAttentionHeads)
	require.Equal(t, 3, c.NumLayers)
	require.Equal(t, 32, c.EncoderHiddenSize)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	require.Equal(t, []int64{5, 3 * 2 * 32}, state[0].Param.Shape())
	// and the forward runs, logits keep the caller's length
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 2, 3}, 1, 3)})
	require.NoError(t, s.Err())
	require.Equal(t, []int64{1, 3, 512}, out.Logits.Shape())
}

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

// A trained-here adapter (projection MLP not saved) loads back as its
// projected prefix: same logits; saving again gives the same bytes.
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
			require.Equal(t, want, got)
			again := t.TempDir()
			require.NoError(t, loaded.Save(again))
			testutil.RequireSameTensors(t, filepath.Join(dir, peft.WeightsName), filepath.Join(again, peft.WeightsName))
		})
	}
}

// PEFT's trainable counts: the table (P × layers·2·token_dim), or with
// projection the small table plus Linear(32→48) and Linear(48→128).
func TestTrainableParametersLikePEFT(t *testing.T) {
	const base = 139584
	cases := map[string]int64{
		"prefix-noproj": 8 * 2 * 2 * 32,
		"prefix-proj":   8*32 + (32*48 + 48) + (48*128 + 128),
	}
	for name, cfg := range fixtureConfigs() {
		m, err := peft.New(loadBase(t), cfg)
		require.NoError(t, err)
		require.Equal(t, peft.FormatTrainable(cases[name], base+cases[name]), peft.TrainableSummary(m), name)
		var names []string
		for _, np := range m.TrainableParams() {
			names = append(names, np.Name)
		}
		if cfg.PrefixProjection {
			require.Equal(t, []string{"prompt_encoder.default.embedding.weight",
				"prompt_encoder.default.transform.0.weight", "prompt_encoder.default.transform.0.bias",
				"prompt_encoder.default.transform.2.weight", "prompt_encoder.default.transform.2.bias"}, names)
		} else {
			require.Equal(t, []string{"prompt_encoder.default.embedding.weight"}, names)
		}
		nn.FreeParams(m)
	}
}

// init_weights "zero": the prefix starts at zero (a zero table, or a zero
// last projection layer), and the key is written to the config.
func TestZeroInit(t *testing.T) {
	for _, proj := range []bool{false, true} {
		cfg := &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}, PrefixProjection: proj, InitWeights: "zero"}
		m, err := peft.New(loadBase(t), cfg)
		require.NoError(t, err)
		state, err := m.AdapterStateDict(peft.DefaultAdapter)
		require.NoError(t, err)
		s := tensor.NoGradScope()
		for _, v := range s.Float32s(state[0].Param.T()) {
			require.Zero(t, v)
		}
		s.Close()
		dir := t.TempDir()
		require.NoError(t, m.Save(dir))
		require.Equal(t, "zero", testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName))["init_weights"])
		nn.FreeParams(m)
	}
}

// A few AdamW steps lower the loss with and without projection; only the
// prefix encoder changes.
func TestTrainingLowersLoss(t *testing.T) {
	e := openExpected(t, "prefix-proj")
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	labels := append([]int64(nil), ids...)
	for i, v := range mask {
		if v == 0 {
			labels[i] = models.IgnoreIndex
		}
	}
	for name, cfg := range fixtureConfigs() {
		t.Run(name, func(t *testing.T) {
			tensor.ManualSeed(3)
			m, err := peft.New(loadBase(t), cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			before := testutil.Snapshot(t, m)
			opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
			defer opt.Free()
			var losses []float64
			for step := 0; step < 8; step++ {
				s := tensor.NewScope()
				out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...),
					AttentionMask: s.FromInt64(mask, shape...), Labels: s.FromInt64(labels, shape...)})
				require.NoError(t, s.Err())
				losses = append(losses, s.Item(out.Loss))
				s.Backward(out.Loss)
				require.NoError(t, s.Err())
				s.Close()
				require.NoError(t, opt.Step())
				require.NoError(t, opt.ZeroGrad())
			}
			t.Logf("losses %.4f", losses)
			for i := 1; i < len(losses); i++ {
				require.Less(t, losses[i], losses[i-1], "step %d", i)
			}
			require.Less(t, losses[len(losses)-1], losses[0]-0.02)
			after := testutil.Snapshot(t, m)
			changed := testutil.RequireOnlyTrainedChanged(t, before, after, func(k string) bool { return strings.HasPrefix(k, "prompt_encoder.") })
			require.Equal(t, len(m.TrainableParams()), changed)
		})
	}
}

// Decoding with the KV cache: the first call puts the prefix and the
// prompt into the cache; the next token alone with the cache (the mask
// covering the caller's tokens) gives the full forward's last logits.
func TestCacheDecoding(t *testing.T) {
	for _, name := range fixtureNames {
		t.Run(name, func(t *testing.T) {
			e := openExpected(t, name)
			m, err := peft.Load(loadBase(t), adapterDir(t, name))
			require.NoError(t, err)
			defer nn.FreeParams(m)
			ids, shape := e.I64(t, "input_ids")
			mask, _ := e.I64(t, "attention_mask")
			s := tensor.NoGradScope()
			defer s.Close()
			L := shape[1]
			idsT, maskT := s.FromInt64(ids, shape...), s.FromInt64(mask, shape...)
			want := e.F32(t, "logits")
			var last []float32 // expected logits at position L-1 of both rows
			for b := 0; b < 2; b++ {
				off := (b*int(L) + int(L) - 1) * 512
				last = append(last, want[off:off+512]...)
			}
			first := m.ForwardT(s, &models.Batch{InputIDs: s.Narrow(idsT, 1, 0, L-1),
				AttentionMask: s.Narrow(maskT, 1, 0, L-1), UseCache: true})
			require.NoError(t, s.Err())
			cache := first.PastKeyValues
			defer cache.Free()
			require.Equal(t, 8+L-1, cache.Len(), "the prefix heads the cache")
			step := m.ForwardT(s, &models.Batch{InputIDs: s.Narrow(idsT, 1, L-1, 1), AttentionMask: maskT,
				PastKeyValues: cache, UseCache: true})
			require.NoError(t, s.Err())
			d := testutil.MaxDiff(s.Float32s(step.Logits), last)
			t.Logf("cached step vs PEFT's full forward: %.3g", d)
			require.LessOrEqual(t, d, 1e-4)
		})
	}
}

func TestErrors(t *testing.T) {
	t.Run("adapter for another model", func(t *testing.T) {
		cfg := &llama.Config{HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, VocabSize: 512}
		other, err := llama.New(cfg, 1)
		require.NoError(t, err)
		defer other.Free()
		_, err = peft.Load(other, adapterDir(t, "prefix-noproj"))
		require.ErrorContains(t, err, "num_attention_heads 2 does not match the model's 4 key/value heads")
		cfg3 := &llama.Config{HiddenSize: 64, IntermediateSize: 64, NumHiddenLayers: 3, NumAttentionHeads: 4, NumKeyValueHeads: 2, VocabSize: 512}
		deeper, err := llama.New(cfg3, 1)
		require.NoError(t, err)
		defer deeper.Free()
		_, err = peft.Load(deeper, adapterDir(t, "prefix-proj"))
		require.ErrorContains(t, err, "num_layers 2 does not match the model's 3 layers")
	})
	t.Run("PEFT 0.10 sizes on a GQA model", func(t *testing.T) {
		// what PEFT 0.10 wrote for GQA models (all heads) does not fit
		dir := copyAdapter(t, "prefix-noproj")
		p := filepath.Join(dir, peft.ConfigName)
		data, _ := os.ReadFile(p)
		s := strings.Replace(string(data), `"num_attention_heads": 2`, `"num_attention_heads": 4`, 1)
		s = strings.Replace(s, `"token_dim": 32`, `"token_dim": 64`, 1)
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		_, err := peft.Load(loadBase(t), dir)
		require.ErrorContains(t, err, "num_attention_heads 4 does not match the model's 2 key/value heads")
	})
	t.Run("merge", func(t *testing.T) {
		m, err := peft.Load(loadBase(t), adapterDir(t, "prefix-proj"))
		require.NoError(t, err)
		defer nn.FreeParams(m)
		_, err = m.MergeAndUnload()
		require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
		require.ErrorContains(t, err, "PREFIX_TUNING")
		e := openExpected(t, "prefix-proj")
		got, _ := testutil.LogitsOf(t, m, e)
		require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4, "the model still works")
	})
	t.Run("bad init_weights", func(t *testing.T) {
		_, err := peft.New(loadBase(t), &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}, InitWeights: "ones"})
		require.ErrorContains(t, err, "init_weights")
	})
	t.Run("prefix key/values given twice", func(t *testing.T) {
		m, err := peft.Load(loadBase(t), adapterDir(t, "prefix-noproj"))
		require.NoError(t, err)
		defer nn.FreeParams(m)
		s := tensor.NoGradScope()
		defer s.Close()
		kv := s.Zeros(tensor.Float32, 1, 2, 3, 16)
		m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 2}, 1, 2), PrefixKV: []models.KV{{K: kv, V: kv}, {K: kv, V: kv}}})
		require.ErrorContains(t, s.Err(), "prefix key/values")
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
