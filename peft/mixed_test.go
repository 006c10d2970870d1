package peft_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"

	_ "github.com/gopeft/peft/lora"
)

func hfFixtures(t testing.TB) string {
	f, err := filepath.Abs(filepath.Join("..", "testdata", "hf"))
	require.NoError(t, err)
	_, err = os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

// golden reads one expected/llama-tiny__<name>.safetensors file.
func golden(t testing.TB, name string) *safetensors.Set {
	set, err := safetensors.OpenFiles(filepath.Join(hfFixtures(t), "expected", "llama-tiny__"+name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return set
}

func goldenF32(t testing.TB, set *safetensors.Set, key string) []float32 {
	b, err := set.Data(key)
	require.NoError(t, err, key)
	return safetensors.Float32s(b)
}

func goldenI64(t testing.TB, set *safetensors.Set, key string) ([]int64, []int64) {
	info, _, ok := set.Info(key)
	require.True(t, ok, key)
	b, err := set.Data(key)
	require.NoError(t, err, key)
	return safetensors.Int64s(b), info.Shape
}

// row returns batch row i of flat logits [B, ...].
func row(x []float32, i, rows int) []float32 {
	n := len(x) / rows
	return x[i*n : (i+1)*n]
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// run does a forward on the fixture inputs, mixed when names != nil.
func run(t testing.TB, m *peft.Model, in *safetensors.Set, names []string) ([]float32, error) {
	ids, shape := goldenI64(t, in, "input_ids")
	mask, _ := goldenI64(t, in, "attention_mask")
	s := tensor.NoGradScope()
	defer s.Close()
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)}
	var out *models.Output
	if names != nil {
		out = m.ForwardMixed(s, b, names)
	} else {
		out = m.ForwardT(s, b)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Float32s(out.Logits), nil
}

// twoAdapters loads lora-default as "default" and lora-rich (with
// modules_to_save lm_head) as "rich".
func twoAdapters(t testing.TB) *peft.Model {
	fx := hfFixtures(t)
	base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
	require.NoError(t, err)
	m, err := peft.Load(base, filepath.Join(fx, "adapters", "llama-tiny", "lora-default"))
	require.NoError(t, err)
	require.NoError(t, m.LoadAdapter(filepath.Join(fx, "adapters", "llama-tiny", "lora-rich"), "rich"))
	t.Cleanup(func() { nn.FreeParams(m) })
	return m
}

func TestForwardMixedRowsMatchSingleAdapterFixtures(t *testing.T) {
	m := twoAdapters(t)
	def, rich := golden(t, "lora-default"), golden(t, "lora-rich")
	want := map[string][]float32{
		"default":            goldenF32(t, def, "logits"),
		"rich":               goldenF32(t, rich, "logits"),
		peft.BaseAdapterName: goldenF32(t, def, "logits_base"),
	}
	// the three differ on every row, so a wrong row assignment shows
	for i := 0; i < 2; i++ {
		require.Greater(t, maxAbsDiff(row(want["default"], i, 2), row(want["rich"], i, 2)), 0.1)
		require.Greater(t, maxAbsDiff(row(want["default"], i, 2), row(want[peft.BaseAdapterName], i, 2)), 0.1)
		require.Greater(t, maxAbsDiff(row(want["rich"], i, 2), row(want[peft.BaseAdapterName], i, 2)), 0.1)
	}
	for _, names := range [][]string{
		{"default", "rich"},
		{"rich", "default"},
		{"rich", peft.BaseAdapterName},
		{peft.BaseAdapterName, "default"},
		{"rich", "rich"},
		{peft.BaseAdapterName, peft.BaseAdapterName},
	} {
		got, err := run(t, m, def, names)
		require.NoError(t, err, names)
		for i, n := range names {
			d := maxAbsDiff(row(got, i, 2), row(want[n], i, 2))
			require.LessOrEqual(t, d, 1e-4, "names %v row %d (%s): max abs diff %.3g", names, i, n, d)
		}
	}
	// the assignment is gone afterwards: a plain forward is the active adapter's
	got, err := run(t, m, def, nil)
	require.NoError(t, err)
	require.LessOrEqual(t, maxAbsDiff(got, want["default"]), 1e-4)
	head, err := nn.Get(m.Base(), "lm_head")
	require.NoError(t, err)
	require.IsType(t, &peft.ModulesToSave{}, head)

	// disabled adapters: every row is the base model's
	restore := m.DisableAdapters()
	got, err = run(t, m, def, []string{"rich", "default"})
	restore()
	require.NoError(t, err)
	require.LessOrEqual(t, maxAbsDiff(got, goldenF32(t, def, "logits_disabled")), 1e-4)
}

func TestForwardMixedErrors(t *testing.T) {
	m := twoAdapters(t)
	fx := hfFixtures(t)
	require.NoError(t, m.LoadAdapter(filepath.Join(fx, "adapters", "llama-tiny", "lora-dora"), "dora"))
	def := golden(t, "lora-default")
	plain := goldenF32(t, def, "logits")
	stillPlain := func() {
		t.Helper()
		got, err := run(t, m, def, nil)
		require.NoError(t, err)
		require.LessOrEqual(t, maxAbsDiff(got, plain), 1e-4)
		head, err := nn.Get(m.Base(), "lm_head")
		require.NoError(t, err)
		require.IsType(t, &peft.ModulesToSave{}, head)
	}

	_, err := run(t, m, def, []string{"default"})
	require.ErrorContains(t, err, "1 adapter names for a batch of 2 rows")
	stillPlain()

	_, err = run(t, m, def, []string{"default", "nope"})
	require.ErrorContains(t, err, `no adapter "nope"`)
	stillPlain()

	_, err = run(t, m, def, []string{"dora", "default"})
	require.ErrorContains(t, err, "DoRA")
	stillPlain()
	// a DoRA adapter that is loaded but not named is fine
	_, err = run(t, m, def, []string{"rich", "default"})
	require.NoError(t, err)

	require.NoError(t, m.Merge(false))
	_, err = run(t, m, def, []string{"default", "rich"})
	require.ErrorContains(t, err, "merged")
	require.NoError(t, m.Unmerge())
	stillPlain()
}
