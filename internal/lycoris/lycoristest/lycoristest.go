// Package lycoristest holds the checks the loha and lokr tests share: a
// PEFT fixture through the API (adapted, disabled, merged logits, merged
// weights, unmerge), the trainable count of a fresh adapter against
// PEFT's line, the save round trip and the saved keys, identity at init,
// and a short training run. Functions are for tests only and not safe for
// concurrent use on one model.
package lycoristest

import (
	"fmt"
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

// Llama loads llama-tiny (freed when the test ends).
func Llama(t testing.TB) *llama.Model {
	return testutil.Load(t, llama.Load, "llama-tiny")
}

// AdapterDir is testdata/hf/adapters/llama-tiny/<fixture>.
func AdapterDir(t testing.TB, fixture string) string {
	return testutil.Fixtures(t, "adapters", "llama-tiny", fixture)
}

// RequireFixture loads the shipped adapter with peft.Load and checks the
// golden file llama-tiny__<fixture>: logits, logits_disabled (and that
// equals logits_base), logits_merged after Merge, logits again after
// Unmerge, then MergeAndUnload's logits and merged weights. prefix is the
// method's parameter prefix ("hada_", "lokr_"), which must be gone after
// unloading.
func RequireFixture(t *testing.T, fixture, prefix string) {
	e := testutil.OpenExpected(t, "llama-tiny__"+fixture)
	m, err := peft.Load(Llama(t), AdapterDir(t, fixture))
	require.NoError(t, err)
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	restore := m.DisableAdapters()
	testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
	testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
	restore()
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	require.NoError(t, m.Merge(false))
	testutil.RequireLogits(t, m, e, "logits_merged", 1e-4)
	require.NoError(t, m.Unmerge())
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	testutil.RequireLogits(t, merged, e, "logits_merged", 1e-4)
	for _, np := range nn.NamedParams(merged) {
		require.NotContains(t, np.Name, prefix)
	}
	require.Equal(t, 3, testutil.RequireMergedParams(t, merged, e.Set))
}

// RequireTrainableCount creates cfg fresh on llama-tiny through the API
// and compares the counts of the trainable-parameter line with the
// fixture's print_trainable_parameters (PEFT's line ends with more digits
// of the percentage).
func RequireTrainableCount(t *testing.T, fixture string, cfg peft.Config) *peft.Model {
	e := testutil.OpenExpected(t, "llama-tiny__"+fixture)
	m, err := peft.New(Llama(t), cfg)
	require.NoError(t, err)
	want, _, _ := strings.Cut(e.Meta(t, "print_trainable_parameters"), " || trainable%")
	got, _, _ := strings.Cut(peft.TrainableSummary(m), " || trainable%")
	require.Equal(t, want, got)
	return m
}

// RequireRoundTrip loads the shipped adapter, saves it, and asserts the
// folder equals the shipped one (weights bit for bit, same config fields
// and values); loading the saved folder and saving again gives the same.
func RequireRoundTrip(t *testing.T, fixture string) {
	src := AdapterDir(t, fixture)
	m, err := peft.Load(Llama(t), src)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	testutil.RequireSameAdapter(t, src, dir)

	m2, err := peft.Load(Llama(t), dir)
	require.NoError(t, err)
	dir2 := t.TempDir()
	require.NoError(t, m2.Save(dir2))
	testutil.RequireSameAdapter(t, dir, dir2)
	raw1, err := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.NoError(t, err)
	raw2, err := os.ReadFile(filepath.Join(dir2, peft.ConfigName))
	require.NoError(t, err)
	require.Equal(t, string(raw1), string(raw2))
}

// RequireSavedLikePEFT saves m (a fresh adapter) and asserts the weights
// file has the shipped adapter's tensor names, shapes and dtypes, and the
// config the shipped config's keys (plus extra, minus missing).
func RequireSavedLikePEFT(t *testing.T, m *peft.Model, fixture string, extra, missing []string) {
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	shapes := func(path string) map[string]string {
		set, err := safetensors.OpenFiles(path)
		require.NoError(t, err)
		defer set.Close()
		out := map[string]string{}
		for _, k := range set.Names() {
			info, _, _ := set.Info(k)
			out[k] = fmt.Sprintf("%s %v", info.DType, info.Shape)
		}
		return out
	}
	src := AdapterDir(t, fixture)
	require.Equal(t, shapes(filepath.Join(src, peft.WeightsName)), shapes(filepath.Join(dir, peft.WeightsName)))
	keys := func(path string, add, drop []string) []string {
		var out []string
		for k := range testutil.ReadJSON(t, path) {
			if !contains(drop, k) {
				out = append(out, k)
			}
		}
		out = append(out, add...)
		sort.Strings(out)
		return out
	}
	require.Equal(t, keys(filepath.Join(src, peft.ConfigName), extra, missing), keys(filepath.Join(dir, peft.ConfigName), nil, nil))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// RequireIdentityAtInit checks that a fresh adapter of cfg leaves
// llama-tiny's logits as they are (bit for bit: the update is exactly 0),
// on the inputs of the golden file llama-tiny__<fixture>.
func RequireIdentityAtInit(t *testing.T, fixture string, cfg peft.Config) {
	e := testutil.OpenExpected(t, "llama-tiny__"+fixture)
	m, err := peft.New(Llama(t), cfg)
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m, e)
	base, _ := testutil.LogitsOf(t, Llama(t), e)
	require.True(t, testutil.EqualF32(got, base), "max diff %g", testutil.MaxDiff(got, base))
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits_base")), 1e-4)
}

var ids = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

// IDsBatch is a fixed [2, 8] batch with labels = inputs.
func IDsBatch(s *tensor.Scope) *models.Batch {
	x := s.FromInt64(ids, 2, 8)
	return &models.Batch{InputIDs: x, Labels: x}
}

// RequireTraining trains m (a fresh adapter) with AdamW(lr) for steps
// steps on a fixed batch: every adapter parameter (its name contains
// prefix) changes, every other parameter stays bit-identical, and the
// loss goes down. It returns the losses.
func RequireTraining(t *testing.T, m *peft.Model, prefix string, lr float64, steps int) []float64 {
	before := testutil.Snapshot(t, m)
	params := m.TrainableParams()
	require.NotEmpty(t, params)
	for _, np := range params {
		require.Contains(t, np.Name, prefix)
	}
	opt := train.NewAdamW(params, train.AdamWConfig{LR: lr})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, IDsBatch, steps)
	after := testutil.Snapshot(t, m)
	n := testutil.RequireOnlyTrainedChanged(t, before, after, func(name string) bool { return strings.Contains(name, prefix) })
	require.Equal(t, len(params), n)
	require.Less(t, losses[len(losses)-1], losses[0], "losses %v", losses)
	return losses
}

// RequireBadInputsFail runs the shipped adapter on inputs of inconsistent
// shapes (and a layer on an input of the wrong width): each forward
// returns an error, none panics.
func RequireBadInputsFail(t *testing.T, fixture string) {
	m, err := peft.Load(Llama(t), AdapterDir(t, fixture))
	require.NoError(t, err)
	ds := tensor.NewScope()
	defer ds.Close()
	in := ds.FromInt64([]int64{1, 5, 7, 9, 11, 13}, 2, 3)
	for what, c := range map[string]models.Inputs{
		"mask of another length": {InputIDs: in, AttentionMask: ds.FromInt64([]int64{1, 1, 1, 1}, 2, 2)},
		"ids of one dimension":   {InputIDs: ds.FromInt64([]int64{1, 5, 7}, 3)},
		"no input":               {},
	} {
		require.NotPanics(t, func() {
			s := tensor.NoGradScope()
			defer s.Close()
			_, err := m.Forward(s, c)
			require.Error(t, err, what)
		}, what)
	}
	layer := peft.Tuners(m.Base())[0].Tuner
	require.NotPanics(t, func() {
		s := tensor.NoGradScope()
		defer s.Close()
		layer.Forward(s, s.Zeros(tensor.Float32, 2, 7))
		require.Error(t, s.Err())
	})
}

// RequireBF16Base loads the shipped adapter onto llama-tiny in bfloat16:
// the adapter's parameters stay float32 (PEFT's autocast_adapter_dtype),
// the logits are within bf16 noise of the float32 model's (no further from
// them than the bf16 base alone is from the float32 base, plus a margin),
// and merging keeps the weights bfloat16.
func RequireBF16Base(t *testing.T, fixture, prefix string) {
	require.NoError(t, tensor.CanCompute(tensor.BFloat16, tensor.CPU))
	e := testutil.OpenExpected(t, "llama-tiny__"+fixture)
	bf := testutil.Load(t, llama.Load, "llama-tiny", models.WithDType("bfloat16"))
	baseBF, _ := testutil.LogitsOf(t, bf, e)
	gap := testutil.MaxDiff(baseBF, e.F32(t, "logits_base"))
	m, err := peft.Load(bf, AdapterDir(t, fixture))
	require.NoError(t, err)
	for _, np := range nn.NamedParams(m) {
		if strings.Contains(np.Name, prefix) {
			require.Equal(t, tensor.Float32, np.Param.DType(), np.Name)
		} else {
			require.Equal(t, tensor.BFloat16, np.Param.DType(), np.Name)
		}
	}
	got, _ := testutil.LogitsOf(t, m, e)
	d := testutil.MaxDiff(got, e.F32(t, "logits"))
	t.Logf("bf16 base: adapted %.4g from float32 (base alone %.4g)", d, gap)
	require.LessOrEqual(t, d, 2*gap+2e-3)
	require.NoError(t, m.Merge(false))
	for _, at := range peft.Tuners(m.Base()) {
		for _, np := range nn.LocalParams(at.Tuner.BaseLayer()) {
			require.Equal(t, tensor.BFloat16, np.Param.DType(), at.Path)
		}
	}
	merged, _ := testutil.LogitsOf(t, m, e)
	require.LessOrEqual(t, testutil.MaxDiff(merged, e.F32(t, "logits_merged")), 2*gap+2e-2)
}
