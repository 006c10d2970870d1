package adaptionprompt_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/adaptionprompt"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

const fixture = "llama-tiny__adaption-prompt"

func loadLlama(t testing.TB) *llama.Model { return testutil.Load(t, llama.Load, "llama-tiny") }

func adapterDir(t testing.TB) string {
	return testutil.Fixtures(t, "adapters", "llama-tiny", "adaption-prompt")
}

// llama-tiny__adaption-prompt (PEFT 0.10): the shipped adapter loaded
// through the API gives PEFT's adapted and disabled logits; merging is
// refused; the trainable count of a fresh adapter with the same config is
// PEFT's line.
func TestFixture(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	restore := m.DisableAdapters()
	testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
	testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
	restore()
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	// the adapter really changes the output (PEFT: max |adapted - base| 0.405)
	got, _ := testutil.LogitsOf(t, m, e)
	require.Greater(t, testutil.MaxDiff(got, e.F32(t, "logits_base")), 0.1)

	err = m.Merge(false)
	require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
	_, err = m.MergeAndUnload()
	require.True(t, errors.Is(err, peft.ErrNotMergeable), "%v", err)
	testutil.RequireLogits(t, m, e, "logits", 1e-4) // a refused merge changes nothing

	base, err := m.Unload()
	require.NoError(t, err)
	for _, np := range nn.NamedParams(base) {
		require.NotContains(t, np.Name, "adaption_")
	}
	testutil.RequireLogits(t, base, e, "logits_base", 1e-4)

	fresh, err := peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 2})
	require.NoError(t, err)
	want := e.Meta(t, "print_trainable_parameters")
	require.Equal(t, want[:strings.Index(want, " || trainable%")], strings.SplitN(peft.TrainableSummary(fresh), " || trainable%", 2)[0])
	// zero-init gate: a new adapter leaves the model as it was
	testutil.RequireLogits(t, fresh, e, "logits_base", 1e-5)
}

// Save writes PEFT's keys and config fields, and Load(Save(x)) is bit for
// bit the shipped adapter.
func TestSaveRoundTrip(t *testing.T) {
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	testutil.RequireSameAdapter(t, adapterDir(t), dir)

	again, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	dir2 := t.TempDir()
	require.NoError(t, again.Save(dir2))
	testutil.RequireSameAdapter(t, dir, dir2)

	// a fresh adapter's file has the shipped adapter's key set and config keys
	fresh, err := peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 2})
	require.NoError(t, err)
	dir3 := t.TempDir()
	require.NoError(t, fresh.Save(dir3))
	require.Equal(t, keysOf(t, filepath.Join(adapterDir(t), peft.WeightsName)), keysOf(t, filepath.Join(dir3, peft.WeightsName)))
	shipped := testutil.ReadJSON(t, filepath.Join(adapterDir(t), peft.ConfigName))
	saved := testutil.ReadJSON(t, filepath.Join(dir3, peft.ConfigName))
	require.Equal(t, sortedKeys(shipped), sortedKeys(saved))
	require.Equal(t, "self_attn", saved["target_modules"])
}

func keysOf(t *testing.T, path string) []string {
	set, err := safetensors.OpenFiles(path)
	require.NoError(t, err)
	defer set.Close()
	return set.Names()
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

var ids = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

func idsBatch(s *tensor.Scope) *models.Batch {
	x := s.FromInt64(ids, 2, 8)
	return &models.Batch{InputIDs: x, Labels: x}
}

// A few AdamW steps change only the prompts and gates (of the top layer
// only, with adapter_layers 1) and lower the loss.
func TestTraining(t *testing.T) {
	tensor.ManualSeed(1)
	m, err := peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 1})
	require.NoError(t, err)
	var names []string
	for _, np := range m.TrainableParams() {
		names = append(names, np.Name)
	}
	require.Equal(t, []string{
		"base_model.model.model.layers.1.self_attn.adaption_prompt.default",
		"base_model.model.model.layers.1.self_attn.adaption_gate.default",
	}, names)
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 0.01})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, idsBatch, 8)
	t.Logf("losses %v", losses)
	require.Less(t, losses[len(losses)-1], losses[0])
	changed := testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(n string) bool {
		return strings.Contains(n, ".adaption_")
	})
	require.Equal(t, 2, changed)
}

// Generation with the KV cache: greedy decoding gives, at every step, the
// argmax of a full forward over the sequence so far (the adapter's keys
// and values are per-layer constants, so cached steps need nothing more);
// the cached logits equal the full pass's for the fixture's padded rows.
func TestGeneration(t *testing.T) {
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	e := testutil.OpenExpected(t, fixture)
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	testutil.RequireKVCacheMatchesFull(t, m, ids, mask, int(shape[0]), 5, e.F32(t, "logits"), nil)

	prompt := ids[:shape[1]] // row 0: no padding
	out, err := generate.Generate(context.Background(), m, generate.Input{InputIDs: [][]int64{prompt}},
		generate.GenerationConfig{MaxNewTokens: 6})
	require.NoError(t, err)
	seq := out.Sequences[0]
	require.Len(t, seq, len(prompt)+6)
	for n := len(prompt); n < len(seq); n++ {
		logits := testutil.IDsLogits(t, m, seq[:n], 1)
		last := logits[(n-1)*512 : n*512]
		best := 0
		for i, v := range last {
			if v > last[best] {
				best = i
			}
		}
		require.EqualValues(t, best, seq[n], "step %d", n-len(prompt))
	}
}

// Bad configs and models fail with errors naming the field or the cause.
func TestErrors(t *testing.T) {
	for _, c := range []struct {
		json, want string
	}{
		{`{"peft_type": "ADAPTION_PROMPT", "adapter_len": 0, "adapter_layers": 2}`, `"adapter_len"`},
		{`{"peft_type": "ADAPTION_PROMPT", "adapter_len": 4}`, `"adapter_layers"`},
		{`{"peft_type": "ADAPTION_PROMPT", "adapter_len": "x", "adapter_layers": 2}`, `adapter_len`},
	} {
		_, err := peft.ParseConfig("adapter_config.json", []byte(c.json))
		require.Error(t, err, c.json)
		require.Contains(t, err.Error(), c.want)
	}
	_, err := peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 3})
	require.ErrorContains(t, err, "more adapter layers '3' than the model has '2'")
	_, err = peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 1, TargetModules: "mlp.nothing"})
	require.ErrorContains(t, err, "adapter_layers")

	// a second adapter runs alone; two active at once is refused
	m, err := peft.New(loadLlama(t), &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 2})
	require.NoError(t, err)
	require.NoError(t, m.AddAdapter("other", &adaptionprompt.Config{AdapterLen: 2, AdapterLayers: 1}))
	require.NoError(t, m.SetAdapter("other"))
	_ = testutil.IDsLogits(t, m, ids, 2)
	require.NoError(t, m.SetAdapter("default", "other"))
	s := tensor.NoGradScope()
	defer s.Close()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 2, 8)})
	require.ErrorContains(t, s.Err(), "one adapter runs at a time")
}

// A model type PEFT's adaption prompt does not know is refused.
func TestUnsupportedModel(t *testing.T) {
	dir := testutil.Fixtures(t, "llama-tiny")
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	tmp := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "config.json"), []byte(strings.Replace(string(raw), `"model_type": "llama"`, `"model_type": "qwen2"`, 1)), 0o644))
	require.NoError(t, os.Symlink(filepath.Join(dir, "model.safetensors"), filepath.Join(tmp, "model.safetensors")))
	base, err := llama.Load(tmp)
	require.NoError(t, err)
	defer base.Free()
	_, err = peft.New(base, &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 1})
	require.ErrorContains(t, err, `unsupported model type "qwen2"`)
}
