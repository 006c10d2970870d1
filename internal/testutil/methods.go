package testutil

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/stretchr/testify/require"
)

// MethodFixture is one of README-methods.md's llama-tiny fixtures
// (testdata/hf/adapters/llama-tiny/<Name>, expected/llama-tiny__<Name>)
// and how to check it through the API (a plain value).
type MethodFixture struct {
	// Name is the fixture's method folder ("vera", "ln-tuning").
	Name string
	// Base loads a fresh llama-tiny (the test frees it).
	Base func(t testing.TB) models.Model
	// Fresh wraps a base with a new adapter of the fixture's config (for
	// the trainable-parameter line); nil skips that check.
	Fresh func(base models.Model) (*peft.Model, error)
	// Mergeable: logits_merged and merged.<param> are checked.
	Mergeable bool
	// Tol is the logits tolerance [1e-4].
	Tol float64
}

// RequireMethodFixture checks a method fixture: the shipped adapter loaded
// with peft.Load gives logits, logits_disabled (DisableAdapters) and, when
// mergeable, logits_merged after Merge, logits again after Unmerge, and
// logits_merged plus every stored merged.<param> after MergeAndUnload;
// saving the loaded adapter writes the shipped weights bit for bit and the
// shipped config's keys and values; Load(Save(x)) saves the same files
// again and gives the same logits bit for bit; a fresh adapter of the same
// config prints the fixture's print_trainable_parameters line.
func RequireMethodFixture(t *testing.T, f MethodFixture) {
	t.Helper()
	tol := f.Tol
	if tol == 0 {
		tol = 1e-4
	}
	shipped := Fixtures(t, "adapters", "llama-tiny", f.Name)
	e := OpenExpected(t, "llama-tiny__"+f.Name)

	m, err := peft.Load(f.Base(t), shipped)
	require.NoError(t, err)
	RequireLogits(t, m, e, "logits", tol)
	adapted, _ := LogitsOf(t, m, e)
	restore := m.DisableAdapters()
	RequireLogits(t, m, e, "logits_disabled", tol)
	restore()
	require.True(t, EqualF32(adapted, first(LogitsOf(t, m, e))), "enabled again after DisableAdapters")

	// Save writes what PEFT wrote; Load(Save(x)) is bit-identical
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	RequireSameTensors(t, filepath.Join(shipped, peft.WeightsName), filepath.Join(dir, peft.WeightsName))
	want, got := ReadJSON(t, filepath.Join(shipped, peft.ConfigName)), ReadJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Equal(t, normalizeLists(want), normalizeLists(got), "adapter_config.json")
	again, err := peft.Load(f.Base(t), dir)
	require.NoError(t, err)
	require.True(t, EqualF32(adapted, first(LogitsOf(t, again, e))), "Load(Save(x)) logits")
	dir2 := t.TempDir()
	require.NoError(t, again.Save(dir2))
	RequireSameAdapter(t, dir, dir2)
	nn.FreeParams(again)

	if f.Mergeable {
		require.NoError(t, m.Merge(false))
		RequireLogits(t, m, e, "logits_merged", tol)
		require.NoError(t, m.Unmerge())
		RequireLogits(t, m, e, "logits", tol)
		merged, err := m.MergeAndUnload()
		require.NoError(t, err)
		RequireLogits(t, merged, e, "logits_merged", tol)
		var stored []string
		require.NoError(t, json.Unmarshal([]byte(e.Meta(t, "merged_params_stored")), &stored))
		require.Equal(t, len(stored), RequireMergedParams(t, merged, e.Set))
		require.Empty(t, peft.Tuners(merged), "MergeAndUnload leaves no adapter layer")
	}

	if f.Fresh != nil {
		fresh, err := f.Fresh(f.Base(t))
		require.NoError(t, err)
		require.Equal(t, e.Meta(t, "print_trainable_parameters"), peft.TrainableSummary(fresh))
		// a fresh adapter saves the shipped keys, shapes and config keys
		fdir := t.TempDir()
		require.NoError(t, fresh.Save(fdir))
		RequireSameLayout(t, filepath.Join(shipped, peft.WeightsName), filepath.Join(fdir, peft.WeightsName))
		fc := ReadJSON(t, filepath.Join(fdir, peft.ConfigName))
		require.Equal(t, sortedKeys(want), sortedKeys(fc), "adapter_config.json keys")
		nn.FreeParams(fresh)
	}
}

// RequireSameLayout asserts two safetensors files hold the same names,
// shapes and dtypes.
func RequireSameLayout(t testing.TB, want, got string) {
	t.Helper()
	a, err := safetensors.OpenFiles(want)
	require.NoError(t, err)
	defer a.Close()
	b, err := safetensors.OpenFiles(got)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, a.Names(), b.Names())
	for _, k := range a.Names() {
		ia, _, _ := a.Info(k)
		ib, _, _ := b.Info(k)
		require.Equal(t, ia.Shape, ib.Shape, k)
		require.Equal(t, ia.DType, ib.DType, k)
	}
}

func first(v []float32, _ []int64) []float32 { return v }

// normalizeLists sorts every list of strings (PEFT writes Python sets, in
// no fixed order).
func normalizeLists(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if l, ok := v.([]any); ok {
			strs := make([]string, 0, len(l))
			all := true
			for _, x := range l {
				s, ok := x.(string)
				all = all && ok
				strs = append(strs, s)
			}
			if all {
				sort.Strings(strs)
				out[k] = strs
				continue
			}
		}
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
