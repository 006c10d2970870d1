package freeze_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func loadLlama(t testing.TB) *llama.Model {
	m, err := llama.Load(filepath.Join(testutil.Fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	return m
}

// trainSteps runs AdamW (lr 0.01) on the LM loss of a fixed batch and
// returns the first and last losses.
func trainSteps(t *testing.T, m *peft.Model, steps int) (float64, float64) {
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 0.01})
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

// Closed forms from llama-tiny's config: a decoder layer has
// q,o (h·h each), k,v (h·kv·d each), the SwiGLU MLP (3·h·I) and two norms
// (2h); lm_head is V·h.
func TestTrainableCountsFromConfig(t *testing.T) {
	c := loadLlama(t).Config
	h, I, kv := c.HiddenSize, c.IntermediateSize, c.NumKeyValueHeads*c.HeadSize()
	attn := 2*h*h + 2*h*kv
	mlp := 3 * h * I
	layer := attn + mlp + 2*h
	cases := []struct {
		cfg  *freeze.Config
		want int64
	}{
		{&freeze.Config{}, 2 * layer}, // LLaMA-Factory's default: the last 2 (of 2) layers
		{&freeze.Config{TrainableLayers: freeze.Layers(1)}, layer},
		{&freeze.Config{TrainableLayers: freeze.Layers(-1), TrainableModules: []string{"mlp"}}, mlp},
		{&freeze.Config{TrainableLayers: freeze.Layers(1), TrainableModules: []string{"self_attn", "mlp"},
			ExtraModules: []string{"lm_head", "norm"}}, attn + mlp + c.VocabSize*h + h},
		{&freeze.Config{TrainableLayers: freeze.Layers(0), ExtraModules: []string{"embed_tokens"}}, c.VocabSize * h},
	}
	for i, tc := range cases {
		m, err := freeze.Wrap(loadLlama(t), tc.cfg)
		require.NoError(t, err, i)
		tr, _ := nn.CountParams(m)
		require.Equal(t, tc.want, tr, "case %d", i)
		nn.FreeParams(m)
	}
}

// The first layer's MLP and lm_head train; everything else stays
// bit-identical; save → load onto a fresh base gives the same logits, and
// the merged model saves as a full HF checkpoint (LLaMA-Factory's output).
func TestTrainSaveLoad(t *testing.T) {
	base := loadLlama(t)
	want0 := logits(t, base)
	cfg := &freeze.Config{TrainableLayers: freeze.Layers(-1), TrainableModules: []string{"mlp"}, ExtraModules: []string{"lm_head"}}
	m, err := freeze.Wrap(base, cfg)
	require.NoError(t, err)
	require.Equal(t, want0, logits(t, m))
	before := testutil.Snapshot(t, m)
	first, last := trainSteps(t, m, 8)
	t.Logf("freeze loss %.4f -> %.4f", first, last)
	require.Less(t, last, first-0.1)
	after := testutil.Snapshot(t, m)
	changed := 0
	for name, v := range before {
		trains := strings.Contains(name, "layers.0.mlp.") || strings.Contains(name, "lm_head")
		if trains {
			require.NotEqual(t, v, after[name], name)
			changed++
		} else {
			require.Equal(t, v, after[name], name)
		}
	}
	require.Equal(t, 4, changed)

	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	set, err := safetensors.OpenFiles(filepath.Join(dir, peft.WeightsName))
	require.NoError(t, err)
	names := set.Names()
	set.Close()
	require.Equal(t, []string{"lm_head.weight", "model.layers.0.mlp.down_proj.weight",
		"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"}, names)
	var js map[string]any
	data, _ := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.NoError(t, json.Unmarshal(data, &js))
	require.Equal(t, map[string]any{"peft_type": "FREEZE", "task_type": "CAUSAL_LM", "freeze_trainable_layers": -1.0,
		"freeze_trainable_modules": []any{"mlp"}, "freeze_extra_modules": []any{"lm_head"},
		"base_model_name_or_path": base.Path, "revision": nil, "inference_mode": true}, js)

	trained := logits(t, m)
	loaded, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	require.Equal(t, trained, logits(t, loaded))
	dir2 := t.TempDir()
	require.NoError(t, loaded.Save(dir2))
	for _, f := range []string{peft.WeightsName, peft.ConfigName} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		require.Equal(t, a, b, f)
	}

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	require.Same(t, base, merged)
	full := t.TempDir()
	require.NoError(t, merged.Save(full))
	reread, err := llama.Load(full)
	require.NoError(t, err)
	require.Equal(t, trained, logits(t, reread))
}

// BLOOM's lm_head is tied to the word embeddings: training it trains the
// shared tensor, saved under the embedding's name.
func TestTiedHeadOnBloom(t *testing.T) {
	b, err := bloom.Load(filepath.Join(testutil.Fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	m, err := freeze.Wrap(b, &freeze.Config{TrainableLayers: freeze.Layers(0), ExtraModules: []string{"lm_head"}})
	require.NoError(t, err)
	tr, _ := nn.CountParams(m)
	require.Equal(t, b.Config.VocabSize*b.Config.HiddenSize, tr)
	st, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	require.Len(t, st, 1)
	require.Equal(t, "transformer.word_embeddings.weight", st[0].Name)

	m2, err := freeze.Wrap(loadBloomT(t), &freeze.Config{TrainableModules: []string{"self_attention"}})
	require.NoError(t, err)
	var got []string
	for _, np := range m2.TrainableParams() {
		got = append(got, strings.TrimPrefix(np.Name, "base_model.model."))
	}
	sort.Strings(got)
	require.Len(t, got, 8) // 2 layers × qkv and dense, weight and bias
	require.Equal(t, "transformer.h.0.self_attention.dense.bias", got[0])
}

func loadBloomT(t *testing.T) *bloom.Model {
	b, err := bloom.Load(filepath.Join(testutil.Fixtures(t), "bloom-tiny"))
	require.NoError(t, err)
	return b
}

func TestErrors(t *testing.T) {
	_, err := freeze.Wrap(loadLlama(t), &freeze.Config{TrainableLayers: freeze.Layers(3)})
	require.ErrorContains(t, err, "freeze_trainable_layers 3: the model has 2 layers")
	_, err = freeze.Wrap(loadLlama(t), &freeze.Config{TrainableModules: []string{"attn"}})
	require.ErrorContains(t, err, `"attn" is not a sub-module`)
	require.ErrorContains(t, err, "self_attn")
	_, err = freeze.Wrap(loadLlama(t), &freeze.Config{ExtraModules: []string{"ln_f"}})
	require.ErrorContains(t, err, `"ln_f" is not a module outside the layers`)
	require.ErrorContains(t, err, "embed_tokens")
	_, err = freeze.Wrap(loadLlama(t), &freeze.Config{TrainableLayers: freeze.Layers(0)})
	require.ErrorContains(t, err, "nothing to train")

	c, err := freeze.Decode([]byte(`{"peft_type":"FREEZE","freeze_trainable_layers":-2,"freeze_trainable_modules":"mlp, self_attn"}`))
	require.NoError(t, err)
	require.Equal(t, freeze.StringList{"mlp", "self_attn"}, c.(*freeze.Config).TrainableModules)
}
