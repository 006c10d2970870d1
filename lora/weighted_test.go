package lora_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// mul is a·b for row-major matrices.
func mul(a, b mat) mat {
	out := mat{a.rows, b.cols, make([]float64, a.rows*b.cols)}
	for i := 0; i < a.rows; i++ {
		for k := 0; k < a.cols; k++ {
			x := a.at(i, k)
			for j := 0; j < b.cols; j++ {
				out.v[i*b.cols+j] += x * b.at(k, j)
			}
		}
	}
	return out
}

func scaled(a mat, f float64) mat {
	out := mat{a.rows, a.cols, make([]float64, len(a.v))}
	for i, x := range a.v {
		out.v[i] = f * x
	}
	return out
}

func add(a, b mat) mat {
	out := mat{a.rows, a.cols, make([]float64, len(a.v))}
	for i := range a.v {
		out.v[i] = a.v[i] + b.v[i]
	}
	return out
}

func maxAbs(a, b mat) float64 {
	var d float64
	for i := range a.v {
		d = math.Max(d, math.Abs(a.v[i]-b.v[i]))
	}
	return d
}

func frob2(a mat) float64 {
	var n float64
	for _, x := range a.v {
		n += x * x
	}
	return n
}

// weightedModel has "default" (r 8, α 16 on q/v) and "b" (r 4, α 8,
// rsLoRA, on q/k), both random, so the per-layer sets of adapters differ.
func weightedModel(t testing.TB) *peft.Model {
	m, err := peft.New(tinyLlama(t), randomLoRA(8, 16, false, "q_proj", "v_proj"))
	require.NoError(t, err)
	t.Cleanup(func() { nn.FreeParams(m) })
	require.NoError(t, m.AddAdapter("b", randomLoRA(4, 8, true, "q_proj", "k_proj")))
	return m
}

// scales are the adapters' scalings from their configs (α/r, α/√r).
var scales = map[string]float64{"default": 16.0 / 8, "b": 8 / math.Sqrt(4), "e": 8.0 / 8}

// loraLayers lists the model's LoRA layers by path.
func loraLayers(t testing.TB, m *peft.Model) map[string]*lora.Linear {
	out := map[string]*lora.Linear{}
	require.NoError(t, nn.Walk(m.Base(), func(path string, mod nn.Module) error {
		if l, ok := mod.(*lora.Linear); ok {
			out[path] = l
		}
		return nil
	}))
	require.NotEmpty(t, out)
	return out
}

// factors reads adapter name's A [r, in] and B [out, r] of a layer.
func factors(t testing.TB, s *tensor.Scope, l *lora.Linear, name string) (a, b mat, ok bool) {
	if _, has := l.A.Get(name); !has {
		return mat{}, mat{}, false
	}
	return matOf(s, param(t, l.A, name)), matOf(s, param(t, l.B, name)), true
}

// expectedSum is Σ w_i·s_i·B_i·A_i over the adapters the layer has.
func expectedSum(t testing.TB, s *tensor.Scope, l *lora.Linear, adapters []string, weights []float64) mat {
	var sum *mat
	for i, a := range adapters {
		fa, fb, ok := factors(t, s, l, a)
		if !ok {
			continue
		}
		d := scaled(mul(fb, fa), weights[i]*scales[a])
		if sum == nil {
			sum = &d
		} else {
			*sum = add(*sum, d)
		}
	}
	require.NotNil(t, sum)
	return *sum
}

// newDelta is the combined adapter's B·A, after checking its scaling is 1.
func newDelta(t testing.TB, s *tensor.Scope, m *peft.Model, l *lora.Linear, name string, r int) mat {
	c, ok := m.Config(name)
	require.True(t, ok)
	cfg := c.(*lora.Config)
	require.Equal(t, r, cfg.R)
	require.Equal(t, float64(r), cfg.LoraAlpha)
	require.False(t, cfg.UseRSLoRA)
	a, b, ok := factors(t, s, l, name)
	require.True(t, ok)
	require.Equal(t, r, a.rows)
	require.Equal(t, r, b.cols)
	return mul(b, a)
}

func TestAddWeightedAdapterCatIsExactWeightedSum(t *testing.T) {
	m := weightedModel(t)
	adapters, weights := []string{"default", "b"}, []float64{0.7, -1.3}
	require.NoError(t, lora.AddWeightedAdapter(m, adapters, weights, "cat", "cat", 0))
	c, _ := m.Config("cat")
	require.Equal(t, []string{"q_proj", "v_proj", "k_proj"}, c.(*lora.Config).TargetModules.List)
	require.Equal(t, "default", m.ActiveAdapter())

	s := tensor.NoGradScope()
	defer s.Close()
	n := 0
	for path, l := range loraLayers(t, m) {
		got := newDelta(t, s, m, l, "cat", 12)
		want := expectedSum(t, s, l, adapters, weights)
		require.LessOrEqual(t, maxAbs(got, want), 1e-5, path)
		n++
	}
	require.Equal(t, 6, n) // q, k, v in both layers
	require.NoError(t, s.Err())
}

func TestAddWeightedAdapterSVD(t *testing.T) {
	m := weightedModel(t)
	adapters, weights := []string{"default", "b"}, []float64{0.7, -1.3}
	// k = 12 ≥ rank of the sum (8 + 4): exact
	require.NoError(t, lora.AddWeightedAdapter(m, adapters, weights, "full", "svd", 12))
	// k = 3: the best rank-3 approximation
	require.NoError(t, lora.AddWeightedAdapter(m, adapters, weights, "k3", "svd", 3))
	// default k: the largest rank
	require.NoError(t, lora.AddWeightedAdapter(m, adapters, weights, "auto", "svd", 0))
	c, _ := m.Config("auto")
	require.Equal(t, 8, c.(*lora.Config).R)

	s := tensor.NoGradScope()
	defer s.Close()
	for path, l := range loraLayers(t, m) {
		want := expectedSum(t, s, l, adapters, weights)
		require.LessOrEqual(t, maxAbs(newDelta(t, s, m, l, "full", 12), want), 1e-4, path)

		got := newDelta(t, s, m, l, "k3", 3)
		// Eckart–Young: ‖ΔW − ΔW_3‖²_F = Σ_{j≥3} σ_j² of ΔW
		wantF := make([]float32, len(want.v))
		for i, x := range want.v {
			wantF[i] = float32(x)
		}
		_, sv, _ := s.SVD(s.FromFloat32(wantF, int64(want.rows), int64(want.cols)))
		sig := s.Float32s(sv)
		require.NoError(t, s.Err())
		var dropped float64
		for _, x := range sig[3:] {
			dropped += float64(x) * float64(x)
		}
		errF := frob2(add(want, scaled(got, -1)))
		require.InDelta(t, dropped, errF, 1e-4*frob2(want)+1e-8, path)
		// A is Vh's first rows: orthonormal
		a, _, _ := factors(t, s, l, "k3")
		aat := mul(a, mat{a.cols, a.rows, transpose(a)})
		for i := 0; i < 3; i++ {
			for j := 0; j < 3; j++ {
				id := 0.0
				if i == j {
					id = 1
				}
				require.InDelta(t, id, aat.at(i, j), 1e-4, path)
			}
		}
	}
}

func transpose(a mat) []float64 {
	out := make([]float64, len(a.v))
	for i := 0; i < a.rows; i++ {
		for j := 0; j < a.cols; j++ {
			out[j*a.rows+i] = a.at(i, j)
		}
	}
	return out
}

func TestAddWeightedAdapterLinear(t *testing.T) {
	m := weightedModel(t)
	require.NoError(t, m.AddAdapter("e", randomLoRA(8, 8, false, "q_proj", "v_proj")))
	// one adapter: always linear, exactly w·ΔW (also with a negative weight)
	require.NoError(t, lora.AddWeightedAdapter(m, []string{"default"}, []float64{1}, "one", "svd", 0))
	require.NoError(t, lora.AddWeightedAdapter(m, []string{"default"}, []float64{-0.5}, "neg", "linear", 0))
	// two adapters of equal rank: A and B are combined separately
	ws := []float64{0.5, -2}
	require.NoError(t, lora.AddWeightedAdapter(m, []string{"default", "e"}, ws, "two", "linear", 0))
	err := lora.AddWeightedAdapter(m, []string{"default", "b"}, ws, "bad", "linear", 0)
	require.ErrorContains(t, err, "equal ranks")

	s := tensor.NoGradScope()
	defer s.Close()
	for path, l := range loraLayers(t, m) {
		if _, ok := l.A.Get("default"); !ok {
			_, has := l.A.Get("one")
			require.False(t, has, path) // k_proj: not a target of "default"
			continue
		}
		require.LessOrEqual(t, maxAbs(newDelta(t, s, m, l, "one", 8), expectedSum(t, s, l, []string{"default"}, []float64{1})), 1e-5, path)
		require.LessOrEqual(t, maxAbs(newDelta(t, s, m, l, "neg", 8), expectedSum(t, s, l, []string{"default"}, []float64{-0.5})), 1e-5, path)

		var wantA, wantB *mat
		for i, name := range []string{"default", "e"} {
			a, b, ok := factors(t, s, l, name)
			require.True(t, ok)
			ws := ws[i] * scales[name]
			sign := 1.0
			if ws < 0 {
				sign = -1
			}
			ta, tb := scaled(a, sign*math.Sqrt(math.Abs(ws))), scaled(b, math.Sqrt(math.Abs(ws)))
			if wantA == nil {
				wantA, wantB = &ta, &tb
			} else {
				*wantA, *wantB = add(*wantA, ta), add(*wantB, tb)
			}
		}
		a, b, ok := factors(t, s, l, "two")
		require.True(t, ok)
		require.LessOrEqual(t, maxAbs(a, *wantA), 1e-5, path)
		require.LessOrEqual(t, maxAbs(b, *wantB), 1e-5, path)
	}
}

func TestAddWeightedAdapterErrors(t *testing.T) {
	m := weightedModel(t)
	require.NoError(t, m.LoadAdapter(filepath.Join(fixtures(t), "adapters", "llama-tiny", "lora-dora"), "dora"))
	for _, tc := range []struct {
		adapters []string
		weights  []float64
		name     string
		comb     string
		msg      string
	}{
		{[]string{"default", "dora"}, []float64{1, 1}, "x", "cat", "DoRA"},
		{[]string{"default", "b"}, []float64{1, 1}, "x", "ties", "not supported"},
		{[]string{"default", "b"}, []float64{1, 1}, "x", "sum", "unknown combination"},
		{[]string{"default", "nope"}, []float64{1, 1}, "x", "cat", `no adapter "nope"`},
		{[]string{"default", "b"}, []float64{1}, "x", "cat", "1 weights for 2 adapters"},
		{[]string{"default", "b"}, []float64{1, 1}, "b", "cat", "already exists"},
		{nil, nil, "x", "cat", "no adapters"},
	} {
		err := lora.AddWeightedAdapter(m, tc.adapters, tc.weights, tc.name, tc.comb, 0)
		require.ErrorContains(t, err, tc.msg, tc)
	}
	require.Equal(t, []string{"default", "b", "dora"}, m.Adapters())
}

func TestAddWeightedAdapterSavesAndReloads(t *testing.T) {
	fx := fixtures(t)
	// lora-rich: regex targets, rsLoRA, bias lora_only, modules_to_save lm_head;
	// lora-default: list targets
	m, err := peft.Load(tinyLlama(t), filepath.Join(fx, "adapters", "llama-tiny", "lora-rich"))
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.LoadAdapter(filepath.Join(fx, "adapters", "llama-tiny", "lora-default"), "def"))
	require.NoError(t, lora.AddWeightedAdapter(m, []string{"default", "def"}, []float64{0.5, 1}, "mix", "cat", 0))
	c, _ := m.Config("mix")
	cfg := c.(*lora.Config)
	require.Equal(t, 12, cfg.R)
	require.Equal(t, "none", cfg.Bias)
	require.Equal(t, []string{"lm_head"}, cfg.ModulesToSave())
	require.NotEmpty(t, cfg.TargetModules.Regex)

	// the new lm_head copy is the one lora-rich trained
	head, err := nn.Get(m.Base(), "lm_head")
	require.NoError(t, err)
	w := head.(*peft.ModulesToSave)
	s := tensor.NoGradScope()
	defer s.Close()
	richHead, _ := w.Copies.Get("default")
	mixHead, _ := w.Copies.Get("mix")
	require.Equal(t, s.Float32s(richHead.(*nn.Linear).Weight.T()), s.Float32s(mixHead.(*nn.Linear).Weight.T()))

	dir := t.TempDir()
	require.NoError(t, m.SaveAdapter(dir, "mix"))
	require.NoError(t, m.SetAdapter("mix"))
	e := openExpected(t, "llama-tiny__lora-default")
	want := logitsOf(t, m, e)
	require.Greater(t, maxDiff(want, e.f32(t, "logits_base")), 0.1)

	m2, err := peft.Load(tinyLlama(t), dir)
	require.NoError(t, err)
	defer nn.FreeParams(m2)
	c2, _ := m2.Config(peft.DefaultAdapter)
	require.Equal(t, cfg.TargetModules.Regex, c2.(*lora.Config).TargetModules.Regex)
	require.LessOrEqual(t, maxDiff(logitsOf(t, m2, e), want), 1e-5)
}
