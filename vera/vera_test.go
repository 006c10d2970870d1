package vera_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/gopeft/peft/vera"
	"github.com/stretchr/testify/require"
)

// copyAdapter writes the shipped VeRA adapter into a new folder with the
// config edited by edit and without the tensors drop names.
func copyAdapter(t *testing.T, edit func(map[string]any), drop ...string) string {
	src := testutil.Fixtures(t, "adapters", "llama-tiny", "vera")
	dir := t.TempDir()
	cfg := testutil.ReadJSON(t, filepath.Join(src, peft.ConfigName))
	edit(cfg)
	js, err := peft.EncodeConfig(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, peft.ConfigName), js, 0o644))
	set, err := safetensors.OpenFiles(filepath.Join(src, peft.WeightsName))
	require.NoError(t, err)
	defer set.Close()
	var keep []safetensors.Tensor
	for _, k := range set.Names() {
		skip := false
		for _, d := range drop {
			skip = skip || k == d
		}
		if skip {
			continue
		}
		info, _, _ := set.Info(k)
		data, err := set.Data(k)
		require.NoError(t, err)
		keep = append(keep, safetensors.Tensor{Name: k, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), data...)})
	}
	require.NoError(t, safetensors.Write(filepath.Join(dir, peft.WeightsName), keep, map[string]string{"format": "pt"}))
	return dir
}

// With save_projection=false PEFT saves no projections and draws them again
// from projection_prng_key with torch's CPU generator: the same adapter
// without vera_A/vera_B gives the fixture's logits, and saving it writes no
// projections either.
func TestProjectionsDrawnFromKey(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__vera")
	dir := copyAdapter(t, func(c map[string]any) { c["save_projection"] = false }, "base_model.vera_A", "base_model.vera_B")
	m, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	testutil.RequireLogits(t, m, e, "logits", 1e-4)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	require.Len(t, state, 8)
	for _, np := range state {
		require.Contains(t, np.Name, ".vera_lambda_")
	}

	// another key draws other projections: other logits
	dir2 := copyAdapter(t, func(c map[string]any) { c["save_projection"] = false; c["projection_prng_key"] = 1 }, "base_model.vera_A", "base_model.vera_B")
	m2, err := peft.Load(loadLlama(t), dir2)
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m2, e)
	require.Greater(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-3)
}

// Errors name the field, file or key.
func TestConfigAndLoadErrors(t *testing.T) {
	_, err := vera.Wrap(loadLlama(t), &vera.Config{R: 4, TargetModules: peft.TargetList("nope")})
	require.ErrorContains(t, err, `matched no module`)
	_, err = vera.Wrap(loadLlama(t), &vera.Config{R: 4, TargetModules: peft.TargetList("input_layernorm")})
	require.ErrorContains(t, err, "VeRA supports Linear and Conv1D")
	_, err = vera.Wrap(loadLlama(t), &vera.Config{R: -1})
	require.ErrorContains(t, err, `field "r"`)
	_, err = vera.Wrap(loadLlama(t), &vera.Config{VeraDropout: 1})
	require.ErrorContains(t, err, `field "vera_dropout"`)
	_, err = vera.Wrap(loadLlama(t), &vera.Config{Bias: "lora_only"})
	require.ErrorContains(t, err, `field "bias"`)
	_, err = vera.Decode([]byte(`{"peft_type":"VERA","r":"x"}`))
	require.Error(t, err)

	// projections missing although save_projection is true
	dir := copyAdapter(t, func(map[string]any) {}, "base_model.vera_A")
	_, err = peft.Load(loadLlama(t), dir)
	require.ErrorContains(t, err, `missing tensor "base_model.vera_A"`)
	// projections of the wrong shape (r 8 in the config, 16 in the file)
	dir = copyAdapter(t, func(c map[string]any) { c["r"] = 8 })
	_, err = peft.Load(loadLlama(t), dir)
	require.ErrorContains(t, err, "shape")
}

// A new adapter is the identity (λ_b = 0); a few AdamW steps change only the
// λ vectors (the shared projections never train), lower the loss, and the
// trained adapter merges to the same logits and reloads bit for bit.
func TestTrainingChangesOnlyLambdas(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__vera")
	base := loadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	m, err := vera.Wrap(base, &vera.Config{R: 8, TargetModules: peft.TargetList("q_proj", "v_proj", "down_proj")})
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m, e)
	require.True(t, testutil.EqualF32(want, got), "a fresh VeRA adapter leaves the model unchanged")

	projBefore := projections(t, m)
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	ids, shape := e.I64(t, "input_ids")
	batch := func(s *tensor.Scope) *models.Batch {
		x := s.FromInt64(ids, shape...)
		return &models.Batch{InputIDs: x, Labels: x}
	}
	losses := testutil.TrainSteps(t, m, opt.Step, batch, 6)
	t.Logf("losses %v", losses)
	require.Less(t, losses[len(losses)-1], losses[0])
	changed := testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(n string) bool {
		return strings.Contains(n, ".vera_lambda_")
	})
	require.Equal(t, 2*3*2, changed)
	require.Equal(t, projBefore, projections(t, m))

	adapted, _ := testutil.LogitsOf(t, m, e)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	loaded, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	again, _ := testutil.LogitsOf(t, loaded, e)
	require.True(t, testutil.EqualF32(adapted, again))
	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	mg, _ := testutil.LogitsOf(t, merged, e)
	require.LessOrEqual(t, testutil.MaxDiff(adapted, mg), 1e-4)
	nn.FreeParams(loaded)
}

// Two adapters: each has its own λ vectors and projections; both active
// add their updates; deleting one leaves the other.
func TestTwoAdapters(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__vera")
	m, err := peft.Load(loadLlama(t), testutil.Fixtures(t, "adapters", "llama-tiny", "vera"))
	require.NoError(t, err)
	require.NoError(t, m.LoadAdapter(testutil.Fixtures(t, "adapters", "llama-tiny", "vera"), "second"))
	one, _ := testutil.LogitsOf(t, m, e)
	require.NoError(t, m.SetAdapter("second"))
	two, _ := testutil.LogitsOf(t, m, e)
	require.True(t, testutil.EqualF32(one, two))
	require.NoError(t, m.SetAdapter("default", "second"))
	both, _ := testutil.LogitsOf(t, m, e)
	require.Greater(t, testutil.MaxDiff(both, one), 1e-3, "two active adapters add twice the update")
	require.NoError(t, m.DeleteAdapter("second"))
	testutil.RequireLogits(t, m, e, "logits", 1e-4)
}

// projections copies the values of the adapter's shared vera_A and vera_B,
// checking every layer holds the same ones.
func projections(t *testing.T, m *peft.Model) [][]float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	var out [][]float32
	var first *nn.Param
	for _, at := range peft.Tuners(m.Base()) {
		st := at.Tuner.(peft.SharedStater).SharedAdapterState(peft.DefaultAdapter)
		require.Len(t, st, 2)
		if first == nil {
			first = st[0].Param
			for _, np := range st {
				out = append(out, append([]float32(nil), s.Float32s(np.Param.T())...))
			}
		}
		require.Same(t, first, st[0].Param, "one vera_A for every layer")
	}
	require.NoError(t, s.Err())
	return out
}

// The call's Selection reaches the layers: a call with adapters disabled
// runs the base; a mixed-adapter batch fails with an error naming the
// layer type.
func TestCallSelection(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__vera")
	m, err := peft.Load(loadLlama(t), testutil.Fixtures(t, "adapters", "llama-tiny", "vera"))
	require.NoError(t, err)
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	run := func(sel *peft.Selection) ([]float32, error) {
		s := tensor.NoGradScope()
		defer s.Close()
		defer peft.WithSelection(s, sel)()
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
		if s.Err() != nil {
			return nil, s.Err()
		}
		return s.Float32s(out.Logits), nil
	}
	got, err := run(&peft.Selection{Disabled: true})
	require.NoError(t, err)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits_disabled")), 1e-4)
	got, err = run(&peft.Selection{Adapters: []string{peft.DefaultAdapter}})
	require.NoError(t, err)
	require.LessOrEqual(t, testutil.MaxDiff(got, e.F32(t, "logits")), 1e-4)
	_, err = run(&peft.Selection{Rows: []string{peft.DefaultAdapter, peft.BaseAdapterName}})
	require.ErrorContains(t, err, "(vera.Linear) cannot run different adapters per row")
}

// Keys this library does not know survive a load and a save.
func TestUnknownKeysKept(t *testing.T) {
	c, err := vera.Decode([]byte(`{"peft_type":"VERA","r":4,"future_key":[1,2]}`))
	require.NoError(t, err)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"future_key": [`)
	require.Contains(t, string(js), `"r": 4`)
}
