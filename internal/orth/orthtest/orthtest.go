// Package orthtest holds the checks the orthogonal methods' tests (oft,
// boft, hra) share: a shipped PEFT adapter against its golden logits,
// merged weights, saved format and trainable count, and a short training
// run. Test support only.
package orthtest

import (
	"encoding/json"
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
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// LoadLlama loads llama-tiny.
func LoadLlama(t testing.TB) *llama.Model {
	t.Helper()
	m, err := llama.Load(testutil.Fixtures(t, "llama-tiny"))
	require.NoError(t, err)
	return m
}

// Fixture checks the shipped adapter testdata/hf/adapters/llama-tiny/<name>
// against expected/llama-tiny__<name>: loaded through peft.Load, its
// logits, logits_disabled, logits_merged (Merge and MergeAndUnload) and the
// merged weights within tol; unmerge restores the adapted logits;
// Load(Save(x)) is bit-identical with the same config; a fresh adapter of
// the same config (through the API) has PEFT's trainable count and saves
// the same keys, shapes and config keys.
func Fixture(t *testing.T, name string, tol float64) {
	dir := testutil.Fixtures(t, "adapters", "llama-tiny", name)
	e := testutil.OpenExpected(t, "llama-tiny__"+name)

	// Load(Save(x)): weights bit for bit, the config's fields equal
	m, err := peft.Load(LoadLlama(t), dir)
	require.NoError(t, err)
	saved := t.TempDir()
	require.NoError(t, m.Save(saved))
	testutil.RequireSameAdapter(t, dir, saved)
	again, err := peft.Load(LoadLlama(t), saved)
	require.NoError(t, err)
	saved2 := t.TempDir()
	require.NoError(t, again.Save(saved2))
	testutil.RequireSameAdapter(t, saved, saved2)
	nn.FreeParams(again)

	testutil.RequireLogits(t, m, e, "logits", tol)
	requireSelection(t, m, e, tol)
	restore := m.DisableAdapters()
	testutil.RequireLogits(t, m, e, "logits_disabled", tol)
	restore()
	require.NoError(t, m.Merge(false))
	testutil.RequireLogits(t, m, e, "logits_merged", tol)
	require.NoError(t, m.Unmerge())
	testutil.RequireLogits(t, m, e, "logits", tol)
	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	testutil.RequireLogits(t, merged, e, "logits_merged", tol)
	var stored []string
	require.NoError(t, json.Unmarshal([]byte(e.Meta(t, "merged_params_stored")), &stored))
	require.Equal(t, len(stored), testutil.RequireMergedParams(t, merged, e.Set))
	nn.FreeParams(merged)

	// a fresh adapter of the same config, created through the API
	cfg, err := peft.ReadConfig(dir)
	require.NoError(t, err)
	fresh, err := peft.New(LoadLlama(t), cfg)
	require.NoError(t, err)
	defer nn.FreeParams(fresh)
	want := e.Meta(t, "print_trainable_parameters")
	got := peft.TrainableSummary(fresh)
	cut := func(s string) string { return s[:strings.Index(s, " || trainable%")] }
	require.Equal(t, cut(want), cut(got))
	out := t.TempDir()
	require.NoError(t, fresh.Save(out))
	RequireSameFormat(t, dir, out)
}

// RequireSameFormat asserts two adapter folders hold the same tensor names,
// shapes and dtypes and the same adapter_config.json keys.
func RequireSameFormat(t testing.TB, want, got string) {
	t.Helper()
	w, err := safetensors.OpenFiles(filepath.Join(want, peft.WeightsName))
	require.NoError(t, err)
	defer w.Close()
	g, err := safetensors.OpenFiles(filepath.Join(got, peft.WeightsName))
	require.NoError(t, err)
	defer g.Close()
	require.Equal(t, w.Names(), g.Names())
	for _, k := range w.Names() {
		wi, _, _ := w.Info(k)
		gi, _, _ := g.Info(k)
		require.Equal(t, wi.Shape, gi.Shape, k)
		require.Equal(t, wi.DType, gi.DType, k)
	}
	keys := func(dir string) []string {
		var m map[string]any
		b, err := os.ReadFile(filepath.Join(dir, peft.ConfigName))
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, &m))
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	require.Equal(t, keys(want), keys(got))
}

var ids = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

// Batch is a fixed [2, 8] language-modelling batch.
func Batch(s *tensor.Scope) *models.Batch {
	x := s.FromInt64(ids, 2, 8)
	return &models.Batch{InputIDs: x, Labels: x}
}

// Train runs steps AdamW steps (lr 0.01) on Batch and asserts that the
// loss fell, that every parameter whose name contains one of marks changed
// and that every other parameter is bit-identical.
func Train(t *testing.T, m *peft.Model, steps int, marks ...string) {
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 0.01})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, Batch, steps)
	t.Logf("losses %.4f … %.4f", losses[0], losses[len(losses)-1])
	require.Less(t, losses[len(losses)-1], losses[0])
	n := testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(name string) bool {
		for _, k := range marks {
			if strings.Contains(name, k) {
				return true
			}
		}
		return false
	})
	require.Positive(t, n)
}

// requireSelection checks the per-call adapter choice (peft.Selection):
// disabled gives logits_disabled, the adapter by name gives logits, and a
// different adapter per row fails the call with a clear error.
func requireSelection(t *testing.T, m *peft.Model, e *testutil.Expected, tol float64) {
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	run := func(sel *peft.Selection) ([]float32, error) {
		s := tensor.NoGradScope()
		defer s.Close()
		defer peft.WithSelection(s, sel)()
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
		if err := s.Err(); err != nil {
			return nil, err
		}
		return s.Float32s(out.Logits), nil
	}
	got, err := run(&peft.Selection{Disabled: true})
	require.NoError(t, err)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits_disabled")), tol)
	got, err = run(&peft.Selection{Adapters: []string{peft.DefaultAdapter}})
	require.NoError(t, err)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), tol)
	_, err = run(&peft.Selection{Rows: []string{peft.DefaultAdapter, peft.DefaultAdapter}})
	require.ErrorContains(t, err, "cannot run different adapters per row")
}
