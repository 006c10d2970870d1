package fourierft_test

import (
	"math"
	"strings"
	"testing"

	"github.com/gopeft/peft/fourierft"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func loadLlama(t testing.TB) models.Model {
	return testutil.Load(t, llama.Load, "llama-tiny")
}

func fixtureConfig() *fourierft.Config {
	seed := int64(777)
	return &fourierft.Config{NFrequency: 64, Scaling: 150, RandomLocSeed: &seed, TargetModules: peft.TargetList("q_proj", "v_proj")}
}

// llama-tiny__fourierft (PEFT 0.13.2, 64 frequencies on q_proj and v_proj,
// scaling 150, seed 777): adapted, disabled and merged logits, merged
// weights, the saved files, and the trainable count of a fresh adapter.
func TestFourierFTFixture(t *testing.T) {
	testutil.RequireMethodFixture(t, testutil.MethodFixture{
		Name: "fourierft", Base: loadLlama, Mergeable: true,
		Fresh: func(base models.Model) (*peft.Model, error) { return fourierft.Wrap(base, fixtureConfig()) },
	})
}

// The locations a loaded adapter uses are PEFT's (fourierft_indices.<module>
// in the golden file), and Locations computes them.
func TestLocationsArePEFTs(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__fourierft")
	m, err := peft.Load(loadLlama(t), testutil.Fixtures(t, "adapters", "llama-tiny", "fourierft"))
	require.NoError(t, err)
	n := 0
	for _, at := range peft.Tuners(m.Base()) {
		l := at.Tuner.(*fourierft.Linear)
		want, shape := e.I64(t, "fourierft_indices."+at.Path)
		require.Equal(t, []int64{2, 64}, shape)
		rows, cols := l.Indices(peft.DefaultAdapter)
		require.Equal(t, want, append(rows, cols...), at.Path)
		out := int64(64)
		if strings.HasSuffix(at.Path, "v_proj") {
			out = 32
		}
		r2, c2 := fourierft.Locations(777, out, 64, 64)
		require.Equal(t, want, append(r2, c2...))
		n++
	}
	require.Equal(t, 4, n)
}

// ΔW equals the inverse DFT written out: scaling/(N·M) Σ_k s_k
// cos(2π(u_k i/N + v_k j/M)), computed in float64 from the spectrum and
// the locations.
func TestDeltaIsInverseDFT(t *testing.T) {
	m, err := peft.Load(loadLlama(t), testutil.Fixtures(t, "adapters", "llama-tiny", "fourierft"))
	require.NoError(t, err)
	at := peft.Tuners(m.Base())[1] // v_proj [32, 64]
	require.Equal(t, "model.layers.0.self_attn.v_proj", at.Path)
	l := at.Tuner.(*fourierft.Linear)
	s := tensor.NoGradScope()
	defer s.Close()
	spec := s.Float32s(l.AdapterState(peft.DefaultAdapter)[0].Param.T())
	d, err := l.DeltaWeight(peft.DefaultAdapter)
	require.NoError(t, err)
	got := s.Float32s(s.Track(d))
	rows, cols := l.Indices(peft.DefaultAdapter)
	const N, M = 32, 64
	require.Len(t, got, N*M)
	var worst float64
	for i := 0; i < N; i++ {
		for j := 0; j < M; j++ {
			var v float64
			for k := range spec {
				v += float64(spec[k]) * math.Cos(2*math.Pi*(float64(rows[k]*int64(i))/N+float64(cols[k]*int64(j))/M))
			}
			v *= 150.0 / (N * M)
			worst = math.Max(worst, math.Abs(v-float64(got[i*M+j])))
		}
	}
	t.Logf("max |ΔW - DFT| %.3g", worst)
	require.Less(t, worst, 1e-5)
}

// A few AdamW steps change only the spectra, lower the loss; the trained
// adapter reloads bit for bit and merges to the same logits.
func TestTrainingChangesOnlySpectrum(t *testing.T) {
	e := testutil.OpenExpected(t, "llama-tiny__fourierft")
	base := loadLlama(t)
	want, _ := testutil.LogitsOf(t, base, e)
	zero := fixtureConfig()
	zero.InitWeights = true
	zero.TargetModules = peft.TargetList("q_proj", "v_proj", "down_proj")
	m, err := fourierft.Wrap(base, zero)
	require.NoError(t, err)
	got, _ := testutil.LogitsOf(t, m, e)
	require.True(t, testutil.EqualF32(want, got), "a zero spectrum leaves the model unchanged")

	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-3})
	defer opt.Free()
	ids, shape := e.I64(t, "input_ids")
	losses := testutil.TrainSteps(t, m, opt.Step, func(s *tensor.Scope) *models.Batch {
		x := s.FromInt64(ids, shape...)
		return &models.Batch{InputIDs: x, Labels: x}
	}, 6)
	t.Logf("losses %v", losses)
	require.Less(t, losses[len(losses)-1], losses[0])
	changed := testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(n string) bool {
		return strings.Contains(n, ".fourierft_spectrum.")
	})
	require.Equal(t, 6, changed)

	adapted, _ := testutil.LogitsOf(t, m, e)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	loaded, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	again, _ := testutil.LogitsOf(t, loaded, e)
	require.True(t, testutil.EqualF32(adapted, again))
	nn.FreeParams(loaded)
	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	mg, _ := testutil.LogitsOf(t, merged, e)
	require.LessOrEqual(t, testutil.MaxDiff(adapted, mg), 1e-4)
}

// n_frequency_pattern: the first key matching the path's end wins, in the
// file's order, and survives a save.
func TestNFrequencyPattern(t *testing.T) {
	c, err := fourierft.Decode([]byte(`{"peft_type":"FOURIERFT","n_frequency":16,"target_modules":["q_proj","v_proj"],
		"n_frequency_pattern":{"layers\\.1\\.self_attn\\.q_proj":8,"q_proj":4}}`))
	require.NoError(t, err)
	m, err := peft.New(loadLlama(t), c)
	require.NoError(t, err)
	sizes := map[string]int64{}
	for _, at := range peft.Tuners(m.Base()) {
		sizes[at.Path] = at.Tuner.AdapterState(peft.DefaultAdapter)[0].Param.Numel()
	}
	require.Equal(t, map[string]int64{
		"model.layers.0.self_attn.q_proj": 4, "model.layers.0.self_attn.v_proj": 16,
		"model.layers.1.self_attn.q_proj": 8, "model.layers.1.self_attn.v_proj": 16,
	}, sizes)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"n_frequency_pattern": {
    "layers\\.1\\.self_attn\\.q_proj": 8,
    "q_proj": 4
  }`)
}

// Errors name the field or the layer.
func TestErrors(t *testing.T) {
	_, err := fourierft.Wrap(loadLlama(t), &fourierft.Config{NFrequency: 64 * 64 * 2, TargetModules: peft.TargetList("q_proj")})
	require.ErrorContains(t, err, "n_frequency 8192 is more than the layer's 64 × 64")
	_, err = fourierft.Wrap(loadLlama(t), &fourierft.Config{NFrequency: -1})
	require.ErrorContains(t, err, `field "n_frequency"`)
	_, err = fourierft.Wrap(loadLlama(t), &fourierft.Config{Bias: "lora_only"})
	require.ErrorContains(t, err, `field "bias"`)
	_, err = fourierft.Wrap(loadLlama(t), &fourierft.Config{TargetModules: peft.TargetList("norm")})
	require.ErrorContains(t, err, "FourierFT supports Linear and Conv1D")
	_, err = fourierft.Decode([]byte(`{"peft_type":"FOURIERFT","target_modules":".*q_proj","layers_to_transform":[0]}`))
	require.ErrorContains(t, err, `"layers_to_transform" cannot be used`)
	_, err = fourierft.Decode([]byte(`{"peft_type":"FOURIERFT","n_frequency_pattern":{"q_proj":0}}`))
	require.ErrorContains(t, err, `field "n_frequency_pattern"`)
	_, err = fourierft.Decode([]byte(`{"peft_type":"FOURIERFT","n_frequency_pattern":[1]}`))
	require.ErrorContains(t, err, "want an object")
}

// Keys this library does not know survive a load and a save; a mixed
// batch fails naming the layer type.
func TestUnknownKeysAndRows(t *testing.T) {
	c, err := fourierft.Decode([]byte(`{"peft_type":"FOURIERFT","n_frequency":4,"future_key":"x"}`))
	require.NoError(t, err)
	js, err := c.MarshalJSON()
	require.NoError(t, err)
	require.Contains(t, string(js), `"future_key": "x"`)

	m, err := fourierft.Wrap(loadLlama(t), fixtureConfig())
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	defer peft.WithSelection(s, &peft.Selection{Rows: []string{peft.DefaultAdapter}})()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64([]int64{1, 2, 3}, 1, 3)})
	require.ErrorContains(t, s.Err(), "(fourierft.FourierFTLinear) cannot run different adapters per row")
}
