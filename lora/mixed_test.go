package lora_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// randomLoRA is a config whose A and B both start random (PEFT's
// init_lora_weights=False), so every adapter changes the output.
func randomLoRA(r int, alpha float64, rslora bool, targets ...string) *lora.Config {
	return &lora.Config{R: r, LoraAlpha: alpha, UseRSLoRA: rslora, TargetModules: lora.List(targets...),
		InitLoraWeights: lora.Init{Value: "false"}}
}

func tinyLlama(t testing.TB) *llama.Model {
	base, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	return base
}

// mat is a row-major matrix read back from a tensor.
type mat struct {
	rows, cols int
	v          []float64
}

func matOf(s *tensor.Scope, t *tensor.T) mat {
	sh := t.Shape()
	f := s.Float32s(t)
	v := make([]float64, len(f))
	for i, x := range f {
		v[i] = float64(x)
	}
	return mat{int(sh[0]), int(sh[1]), v}
}

func (m mat) at(i, j int) float64 { return m.v[i*m.cols+j] }

// apply is m·x for a vector x.
func (m mat) apply(x []float64) []float64 {
	out := make([]float64, m.rows)
	for i := range out {
		for j := 0; j < m.cols; j++ {
			out[i] += m.at(i, j) * x[j]
		}
	}
	return out
}

func param(t testing.TB, d *nn.ModuleDict, name string) *tensor.T {
	mod, ok := d.Get(name)
	require.True(t, ok, name)
	return mod.(*nn.Linear).Weight.T()
}

func TestLinearMixedRowsIndependentMath(t *testing.T) {
	base := tinyLlama(t)
	m, err := peft.New(base, randomLoRA(4, 8, false, "q_proj"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.AddAdapter("b", randomLoRA(2, 3, true, "q_proj")))
	require.NoError(t, m.AddAdapter("c", randomLoRA(2, 2, false, "v_proj"))) // not on q_proj
	mod, err := nn.Get(m.Base(), "model.layers.0.self_attn.q_proj")
	require.NoError(t, err)
	layer := mod.(*lora.Linear)

	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(7)
	const B, L, H = 4, 3, 64
	x := s.Randn(tensor.Float32, B, L, H)
	xs := s.Float32s(x)
	w := matOf(s, layer.Base.(*nn.Linear).Weight.T())
	type ad struct {
		a, b  mat
		scale float64
	}
	ads := map[string]ad{
		"default": {matOf(s, param(t, layer.A, "default")), matOf(s, param(t, layer.B, "default")), 8.0 / 4},
		"b":       {matOf(s, param(t, layer.A, "b")), matOf(s, param(t, layer.B, "b")), 3 / math.Sqrt(2)},
	}
	require.NoError(t, s.Err())
	// y = W x + s·B(A x) for the row's adapter; base only for "__base__" and "c"
	expect := func(names []string) []float64 {
		var out []float64
		for r := 0; r < B; r++ {
			for p := 0; p < L; p++ {
				xv := make([]float64, H)
				for j := range xv {
					xv[j] = float64(xs[(r*L+p)*H+j])
				}
				y := w.apply(xv)
				if a, ok := ads[names[r]]; ok {
					u := a.b.apply(a.a.apply(xv))
					for i := range y {
						y[i] += a.scale * u[i]
					}
				}
				out = append(out, y...)
			}
		}
		return out
	}
	check := func(got []float32, want []float64) {
		t.Helper()
		require.Equal(t, len(want), len(got))
		var d float64
		for i := range got {
			d = math.Max(d, math.Abs(float64(got[i])-want[i]))
		}
		require.LessOrEqual(t, d, 1e-4)
	}

	names := []string{"b", peft.BaseAdapterName, "default", "c"}
	restore := peft.WithSelection(s, &peft.Selection{Rows: names})
	y := layer.Forward(s, x)
	require.NoError(t, s.Err())
	check(s.Float32s(y), expect(names))
	restore()

	// the gathered (BGMV) form gives the same rows
	defer func(v int) { lora.MixedGatherAdapters = v }(lora.MixedGatherAdapters)
	for _, g := range []int{1, 0} {
		lora.MixedGatherAdapters = g
		restore = peft.WithSelection(s, &peft.Selection{Rows: names})
		y = layer.Forward(s, x)
		require.NoError(t, s.Err())
		check(s.Float32s(y), expect(names))
		restore()
	}

	// without a selection: the active adapter on every row again
	y = layer.Forward(s, x)
	require.NoError(t, s.Err())
	check(s.Float32s(y), expect([]string{"default", "default", "default", "default"}))

	// a call choosing one adapter for the whole batch
	restore = peft.WithSelection(s, &peft.Selection{Adapters: []string{"c"}})
	y = layer.Forward(s, x)
	require.NoError(t, s.Err())
	check(s.Float32s(y), expect([]string{"c", "c", "c", "c"}))
	restore()

	// an assignment for another batch size fails in forward
	restore = peft.WithSelection(s, &peft.Selection{Rows: []string{"b", "b"}})
	layer.Forward(s, x)
	require.ErrorContains(t, s.Err(), "2 adapter names for an input of 4 rows")
	restore()
}

func TestLinearMixedRefusesMergedAndDoRA(t *testing.T) {
	base := tinyLlama(t)
	m, err := peft.New(base, randomLoRA(4, 8, false, "q_proj"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	dora := randomLoRA(4, 8, false, "q_proj")
	dora.UseDoRA = true
	require.NoError(t, m.AddAdapter("dora", dora))
	mod, err := nn.Get(m.Base(), "model.layers.0.self_attn.q_proj")
	require.NoError(t, err)
	layer := mod.(*lora.Linear)

	require.ErrorContains(t, layer.CheckRows([]string{"dora", "default"}), "DoRA")
	require.NoError(t, layer.CheckRows([]string{peft.BaseAdapterName, "default"}))
	require.NoError(t, m.Merge(false))
	require.ErrorContains(t, layer.CheckRows([]string{"default", "default"}), "merged")

	// the forward refuses them too, and a call that asks for other adapters
	// than the merged ones
	forward := func(sel *peft.Selection) error {
		s := tensor.NoGradScope()
		defer s.Close()
		defer peft.WithSelection(s, sel)()
		layer.Forward(s, s.Randn(tensor.Float32, 2, 3, 64))
		return s.Err()
	}
	for _, sel := range []*peft.Selection{
		{Rows: []string{"default", "default"}},
		{Disabled: true},
		{Adapters: []string{"dora"}},
	} {
		require.ErrorContains(t, forward(sel), "merged", "%+v", sel)
	}
	require.NoError(t, forward(&peft.Selection{Adapters: []string{"default"}}))
	require.NoError(t, forward(nil))
	require.NoError(t, m.Unmerge())
}
