package bitfit_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func loadBloom(t testing.TB) *bloom.Model {
	m, err := bloom.Load(filepath.Join(testutil.Fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	return m
}

// trainSteps runs AdamW on the LM loss of a fixed batch and returns the
// first and last losses.
func trainSteps(t *testing.T, m *peft.Model, steps int, lr float64) (float64, float64) {
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, idsBatch, steps)
	return losses[0], losses[len(losses)-1]
}

var ids = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

func idsBatch(s *tensor.Scope) *models.Batch {
	x := s.FromInt64(ids, 2, 8)
	return &models.Batch{InputIDs: x, Labels: x}
}

func logits(t testing.TB, m testutil.Forwarder) []float32 { return testutil.IDsLogits(t, m, ids, 2) }

// The bias count from config.json alone equals the real model's, for
// BLOOM, LLaMA (none) and Qwen2 (q/k/v biases); and the seed's
// bloom-1b4-zh arithmetic.
func TestBiasParamsFromConfigMatchesRealModels(t *testing.T) {
	count := func(m nn.Module) int64 {
		var n int64
		for _, np := range nn.NamedParams(m) {
			if strings.HasSuffix(np.Name, ".bias") {
				n += np.Param.Numel()
			}
		}
		return n
	}
	for _, name := range []string{"bloom-tiny", "llama-tiny", "gpt2-tiny", "bert-tiny"} {
		data, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), name, "config.json"))
		require.NoError(t, err)
		got, err := bitfit.BiasParamsFromConfig(data)
		require.NoError(t, err)
		var m nn.Module
		switch name {
		case "bloom-tiny":
			m = loadBloom(t)
		case "gpt2-tiny":
			m, err = gpt2.Load(filepath.Join(testutil.Fixtures(t), name))
		case "bert-tiny":
			m, err = bert.Load(filepath.Join(testutil.Fixtures(t), name))
		default:
			m, err = llama.Load(filepath.Join(testutil.Fixtures(t), name))
		}
		require.NoError(t, err)
		require.Equal(t, count(m), got, name)
		nn.FreeParams(m)
	}
	q, err := llama.New(&llama.Config{ModelType: "qwen2", HiddenSize: 32, IntermediateSize: 48, NumHiddenLayers: 3,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, VocabSize: 50, AttentionBias: true}, 1)
	require.NoError(t, err)
	defer q.Free()
	js, err := q.Config.JSON()
	require.NoError(t, err)
	got, err := bitfit.BiasParamsFromConfig(js)
	require.NoError(t, err)
	require.Equal(t, count(q), got)
	require.EqualValues(t, 3*(32+2*16), got)

	zh := []byte(`{"model_type": "bloom", "hidden_size": 2048, "n_layer": 24, "n_head": 16, "vocab_size": 46145}`)
	got, err = bitfit.BiasParamsFromConfig(zh)
	require.NoError(t, err)
	require.EqualValues(t, 544_768, got)
	var zc bloom.Config
	require.NoError(t, json.Unmarshal(zh, &zc))
	zc.TieWordEmbeddings = true
	require.Equal(t, "trainable params: 544,768 || all params: 1,303,111,680 || trainable%: 0.0418",
		peft.FormatTrainable(got, zc.NumParams()))
	// GPT-2 small: 12·(7·768 + 3072) + 768
	got, err = bitfit.BiasParamsFromConfig([]byte(`{"model_type":"gpt2","n_embd":768,"n_layer":12,"n_head":12}`))
	require.NoError(t, err)
	require.EqualValues(t, 102_144, got)
	// bert-base-uncased loaded for classification: encoder and pooler, the head not counted
	got, err = bitfit.BiasParamsFromConfig([]byte(`{"model_type":"bert","hidden_size":768,"num_hidden_layers":12,"intermediate_size":3072,"architectures":["BertForMaskedLM"]}`))
	require.NoError(t, err)
	require.EqualValues(t, 102_912, got)

	_, err = bitfit.BiasParamsFromConfig([]byte(`{"model_type":"bloom","n_layer":2}`))
	require.ErrorContains(t, err, `"hidden_size"`)
	_, err = bitfit.BiasParamsFromConfig([]byte(`{"model_type":"t5"}`))
	require.ErrorContains(t, err, `"t5"`)
}

func TestAllBiasesTrainAndNothingElseChanges(t *testing.T) {
	base := loadBloom(t)
	want := logits(t, base)
	m, err := bitfit.Wrap(base, &bitfit.Config{})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.Equal(t, want, logits(t, m), "wrapping changes nothing")
	tr, total := nn.CountParams(m)
	require.Equal(t, base.Config.NumBiasParams(), tr)
	require.EqualValues(t, 1536, tr)
	require.Equal(t, "trainable params: 1,536 || all params: 132,992 || trainable%: 1.1550", peft.FormatTrainable(tr, total))
	for _, np := range m.TrainableParams() {
		require.True(t, strings.HasSuffix(np.Name, ".bias"), np.Name)
	}

	before := testutil.Snapshot(t, m)
	first, last := trainSteps(t, m, 10, 0.05)
	t.Logf("BitFit loss %.4f -> %.4f", first, last)
	require.Less(t, last, first-0.1)
	after := testutil.Snapshot(t, m)
	for name, v := range before {
		if strings.HasSuffix(name, ".bias") {
			require.NotEqual(t, v, after[name], name)
		} else {
			require.Equal(t, v, after[name], name)
		}
	}

	// disabling changes nothing (the biases are the model's own), merging
	// is a no-op that hands the model back
	trained := logits(t, m)
	restore := m.DisableAdapters()
	require.Equal(t, trained, logits(t, m))
	restore()
	require.Error(t, m.AddAdapter("second", &bitfit.Config{}))
	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	require.Same(t, base, merged)
	require.Equal(t, trained, logits(t, merged))
}

// Only the attention query_key_value biases: 3h per block.
func TestSelectedBiasesSaveAndLoad(t *testing.T) {
	cfg := &bitfit.Config{TargetModules: bitfit.List("query_key_value")}
	base := loadBloom(t)
	m, err := bitfit.Wrap(base, cfg)
	require.NoError(t, err)
	tr, _ := nn.CountParams(m)
	require.Equal(t, base.Config.NLayer*3*base.Config.HiddenSize, tr)
	before := testutil.Snapshot(t, m)
	first, last := trainSteps(t, m, 10, 0.05)
	require.Less(t, last, first)
	after := testutil.Snapshot(t, m)
	for name, v := range before {
		if strings.HasSuffix(name, "query_key_value.bias") {
			require.NotEqual(t, v, after[name], name)
		} else {
			require.Equal(t, v, after[name], name)
		}
	}

	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	require.Equal(t, []string{
		"transformer.h.0.self_attention.query_key_value.bias",
		"transformer.h.1.self_attention.query_key_value.bias",
	}, set.Names())
	set.Close()
	var js map[string]any
	data, err := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &js))
	require.Equal(t, map[string]any{"peft_type": "BITFIT", "task_type": "CAUSAL_LM",
		"target_modules": []any{"query_key_value"}, "base_model_name_or_path": base.Path,
		"revision": nil, "inference_mode": true}, js)

	want := logits(t, m)
	fresh := loadBloom(t)
	loaded, err := peft.Load(fresh, dir)
	require.NoError(t, err)
	defer nn.FreeParams(loaded)
	require.Equal(t, want, logits(t, loaded))
	tr, _ = nn.CountParams(loaded)
	require.Zero(t, tr, "loaded for inference: frozen")
	dir2 := t.TempDir()
	require.NoError(t, loaded.Save(dir2))
	for _, f := range []string{peft.WeightsName, peft.ConfigName} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		require.Equal(t, a, b, f)
	}
	again, err := peft.Load(loadBloom(t), dir, peft.Trainable())
	require.NoError(t, err)
	tr, _ = nn.CountParams(again)
	require.EqualValues(t, 384, tr)
	nn.FreeParams(m)
}

func TestErrors(t *testing.T) {
	l, err := llama.Load(filepath.Join(testutil.Fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	_, err = bitfit.Wrap(l, &bitfit.Config{})
	require.ErrorContains(t, err, "no bias parameters")
	_, err = bitfit.Wrap(loadBloom(t), &bitfit.Config{TargetModules: bitfit.List("q_proj")})
	require.ErrorContains(t, err, `target_modules ["q_proj"] matched no module with a bias`)
	require.ErrorContains(t, err, "query_key_value")
	_, err = bitfit.Wrap(loadBloom(t), &bitfit.Config{TargetModules: bitfit.Regex("(")})
	require.ErrorContains(t, err, "target_modules")

	// a file with a bias of the wrong shape, and one with an extra tensor
	m, err := bitfit.Wrap(loadBloom(t), &bitfit.Config{TargetModules: bitfit.List("ln_f")})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	p := filepath.Join(dir, peft.WeightsName)
	require.NoError(t, safetensors.Write(p, []safetensors.Tensor{{Name: "transformer.ln_f.bias", DType: "F32", Shape: []int64{3}, Data: make([]byte, 12)}}, nil))
	_, err = peft.Load(loadBloom(t), dir)
	require.ErrorContains(t, err, `"transformer.ln_f.bias" has shape [3]`)
	require.NoError(t, safetensors.Write(p, []safetensors.Tensor{
		{Name: "transformer.ln_f.bias", DType: "F32", Shape: []int64{64}, Data: make([]byte, 256)},
		{Name: "transformer.ln_f.weight", DType: "F32", Shape: []int64{64}, Data: make([]byte, 256)},
	}, nil))
	_, err = peft.Load(loadBloom(t), dir)
	require.ErrorContains(t, err, `unexpected tensor "transformer.ln_f.weight"`)
	require.NoError(t, os.Remove(p))
	_, err = peft.Load(loadBloom(t), dir)
	require.ErrorContains(t, err, peft.WeightsName)
}
