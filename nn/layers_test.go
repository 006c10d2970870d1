package nn_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The layers are checked against plain float64 loops over the same inputs.

var (
	// x is [2, 3]; w is [out=2, in=3] (torch.nn.Linear layout); b is [2].
	linX = []float32{1, 2, 3, -1, 0.5, 2}
	linW = []float32{0.5, -1, 2, 1.5, 0.25, -0.75}
	linB = []float32{0.1, -0.2}
)

// linearRef is y[r][o] = Σ_i x[r][i]·w[o][i] (+ b[o]).
func linearRef(x, w, b []float32, in, out int) []float64 {
	rows := len(x) / in
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			acc := 0.0
			for i := 0; i < in; i++ {
				acc += float64(x[r*in+i]) * float64(w[o*in+i])
			}
			if b != nil {
				acc += float64(b[o])
			}
			y[r*out+o] = acc
		}
	}
	return y
}

func transpose(w []float32, rows, cols int) []float32 {
	out := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			out[c*rows+r] = w[r*cols+c]
		}
	}
	return out
}

func TestLinear(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	x := s.FromFloat32(linX, 2, 3)

	l := &nn.Linear{Weight: param(s, linW, 2, 3), Bias: param(s, linB, 2)}
	defer nn.FreeParams(l)
	y := l.Forward(s, x)
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 2}, y.Shape())
	// By hand: row 0 is 0.5-2+6+0.1 = 4.6, 1.5+0.5-2.25-0.2 = -0.45;
	// row 1 is -0.5-0.5+4+0.1 = 3.1, -1.5+0.125-1.5-0.2 = -3.075.
	requireClose(t, []float64{4.6, -0.45, 3.1, -3.075}, s.Float32s(y), 1e-6)
	requireClose(t, linearRef(linX, linW, linB, 3, 2), s.Float32s(y), 1e-6)
	require.Equal(t, int64(3), l.InFeatures())
	require.Equal(t, int64(2), l.OutFeatures())
	require.Equal(t, "in_features=3, out_features=2, bias=True", l.ExtraRepr())

	nb := &nn.Linear{Weight: param(s, linW, 2, 3)}
	defer nn.FreeParams(nb)
	y = nb.Forward(s, x)
	require.NoError(t, s.Err())
	requireClose(t, linearRef(linX, linW, nil, 3, 2), s.Float32s(y), 1e-6)
	require.Equal(t, "in_features=3, out_features=2, bias=False", nb.ExtraRepr())

	// Leading dimensions pass through: [2, 1, 3] -> [2, 1, 2].
	y = l.Forward(s, s.FromFloat32(linX, 2, 1, 3))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 1, 2}, y.Shape())
	requireClose(t, linearRef(linX, linW, linB, 3, 2), s.Float32s(y), 1e-6)

	// A width mismatch is an error in the scope, not a crash.
	require.Nil(t, l.Forward(s, s.FromFloat32([]float32{1, 2}, 1, 2)))
	require.Error(t, s.Err())
}

func TestNewLinear(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(7)
	a := nn.NewLinear(s, 64, 96, true, 0.02)
	defer nn.FreeParams(a)
	tensor.ManualSeed(7)
	b := nn.NewLinear(s, 64, 96, false, 0.02)
	defer nn.FreeParams(b)

	require.Equal(t, []int64{96, 64}, a.Weight.Shape())
	require.Equal(t, tensor.Float32, a.Weight.DType())
	require.Equal(t, []int64{96}, a.Bias.Shape())
	require.Nil(t, b.Bias)
	require.Equal(t, make([]float32, 96), s.Float32s(a.Bias.T()), "bias starts at zero")

	wa, wb := s.Float32s(a.Weight.T()), s.Float32s(b.Weight.T())
	require.Equal(t, wa, wb, "same seed, same weights")
	mean, std := moments(wa)
	require.InDelta(t, 0, mean, 0.002)
	require.InDelta(t, 0.02, std, 0.002)
	require.NoError(t, s.Err())
}

// moments is the sample mean and standard deviation.
func moments(v []float32) (mean, std float64) {
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		d := float64(x) - mean
		std += d * d
	}
	return mean, math.Sqrt(std / float64(len(v)))
}

func TestConv1DIsTransposedLinear(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	// Conv1D stores W [in, out]: the transpose of Linear's [out, in].
	wc := transpose(linW, 2, 3) // [3, 2]
	c := &nn.Conv1D{Weight: param(s, wc, 3, 2), Bias: param(s, linB, 2)}
	defer nn.FreeParams(c)
	require.Equal(t, "nf=2, nx=3", c.ExtraRepr())

	// [B=2, L=3, in=3] input.
	x3 := []float32{1, 2, 3, -1, 0.5, 2, 0, 1, -2, 4, -3, 0.5, 2, 2, 2, -0.5, 0.25, 1}
	y := c.Forward(s, s.FromFloat32(x3, 2, 3, 3))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3, 2}, y.Shape())
	// Reference straight from the Conv1D layout: y = Σ_i x[i]·Wc[i][o] + b[o].
	want := make([]float64, 6*2)
	for r := 0; r < 6; r++ {
		for o := 0; o < 2; o++ {
			acc := float64(linB[o])
			for i := 0; i < 3; i++ {
				acc += float64(x3[r*3+i]) * float64(wc[i*2+o])
			}
			want[r*2+o] = acc
		}
	}
	requireClose(t, want, s.Float32s(y), 1e-6)
	// And the same as a Linear holding the transposed weight.
	requireClose(t, linearRef(x3, linW, linB, 3, 2), s.Float32s(y), 1e-6)
	l := &nn.Linear{Weight: param(s, linW, 2, 3), Bias: param(s, linB, 2)}
	defer nn.FreeParams(l)
	requireClose(t, toF64(s.Float32s(l.Forward(s, s.FromFloat32(x3, 2, 3, 3)))), s.Float32s(y), 1e-6)

	// Without bias, on a 2-D input.
	nb := &nn.Conv1D{Weight: param(s, wc, 3, 2)}
	defer nn.FreeParams(nb)
	y = nb.Forward(s, s.FromFloat32(linX, 2, 3))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 2}, y.Shape())
	requireClose(t, linearRef(linX, linW, nil, 3, 2), s.Float32s(y), 1e-6)

	// A non-contiguous input (a transposed view) works too.
	xt := s.Transpose(s.FromFloat32(transpose(linX, 2, 3), 3, 2), 0, 1) // == linX as [2, 3]
	y = nb.Forward(s, xt)
	require.NoError(t, s.Err())
	requireClose(t, linearRef(linX, linW, nil, 3, 2), s.Float32s(y), 1e-6)
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestEmbedding(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	// Row r is [10r, 10r+1, 10r+2].
	var w []float32
	for r := 0; r < 5; r++ {
		for c := 0; c < 3; c++ {
			w = append(w, float32(10*r+c))
		}
	}
	e := &nn.Embedding{Weight: param(s, w, 5, 3)}
	defer nn.FreeParams(e)
	require.Equal(t, "5, 3", e.ExtraRepr())

	ids := []int64{4, 0, 2, 2, 2, 1}
	y := e.Forward(s, s.FromInt64(ids, 2, 3))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 3, 3}, y.Shape())
	var want []float32
	for _, id := range ids {
		want = append(want, float32(10*id), float32(10*id+1), float32(10*id+2))
	}
	require.Equal(t, want, s.Float32s(y))

	// An id past the table is an error, not a crash.
	require.Nil(t, e.Forward(s, s.FromInt64([]int64{5}, 1)))
	require.Error(t, s.Err())
}

func TestNewEmbedding(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(3)
	a := nn.NewEmbedding(s, 100, 50, 0.5)
	defer nn.FreeParams(a)
	tensor.ManualSeed(3)
	b := nn.NewEmbedding(s, 100, 50, 0.5)
	defer nn.FreeParams(b)
	tensor.ManualSeed(4)
	c := nn.NewEmbedding(s, 100, 50, 0.5)
	defer nn.FreeParams(c)

	require.Equal(t, []int64{100, 50}, a.Weight.Shape())
	va := s.Float32s(a.Weight.T())
	require.Equal(t, va, s.Float32s(b.Weight.T()))
	require.NotEqual(t, va, s.Float32s(c.Weight.T()))
	mean, std := moments(va)
	require.InDelta(t, 0, mean, 0.03)
	require.InDelta(t, 0.5, std, 0.03)
	require.NoError(t, s.Err())
}

func TestLayerNorm(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	const eps = 1e-5
	x := []float32{1, 2, 3, 4, 10, -3, 0.5, 0.25, 7, -1}
	w := []float32{1, 0.5, -2, 1.5, 3}
	b := []float32{0, 0.1, -0.3, 2, -1}
	ln := &nn.LayerNorm{Weight: param(s, w, 5), Bias: param(s, b, 5), Eps: eps}
	defer nn.FreeParams(ln)
	require.Equal(t, "(5,), eps=1e-05, elementwise_affine=True", ln.ExtraRepr())

	y := ln.Forward(s, s.FromFloat32(x, 2, 5))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{2, 5}, y.Shape())

	want := make([]float64, len(x))
	for r := 0; r < 2; r++ {
		row := x[r*5 : r*5+5]
		mean := 0.0
		for _, v := range row {
			mean += float64(v)
		}
		mean /= 5
		variance := 0.0 // biased, as torch
		for _, v := range row {
			d := float64(v) - mean
			variance += d * d
		}
		variance /= 5
		for i, v := range row {
			want[r*5+i] = (float64(v)-mean)/math.Sqrt(variance+eps)*float64(w[i]) + float64(b[i])
		}
	}
	requireClose(t, want, s.Float32s(y), 1e-5)

	// The defaults are weight 1, bias 0: a constant row becomes all zeros
	// and a normalised row has mean 0 and variance 1/(1+eps/var).
	def := nn.NewLayerNorm(s, 5, eps)
	defer nn.FreeParams(def)
	require.Equal(t, []float32{1, 1, 1, 1, 1}, s.Float32s(def.Weight.T()))
	require.Equal(t, []float32{0, 0, 0, 0, 0}, s.Float32s(def.Bias.T()))
	y = def.Forward(s, s.FromFloat32([]float32{3, 3, 3, 3, 3}, 1, 5))
	requireClose(t, []float64{0, 0, 0, 0, 0}, s.Float32s(y), 1e-6)
	require.NoError(t, s.Err())
}

func rmsRef(x, w []float32, dim int, eps float64) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x)/dim; r++ {
		row := x[r*dim : (r+1)*dim]
		ms := 0.0
		for _, v := range row {
			ms += float64(v) * float64(v)
		}
		ms /= float64(dim)
		for i, v := range row {
			out[r*dim+i] = float64(v) / math.Sqrt(ms+eps) * float64(w[i])
		}
	}
	return out
}

func TestRMSNorm(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	const eps = 1e-6
	x := []float32{1, -2, 3, 0.5, 0.001, 0.002, -0.003, 0, 100, 50, -25, 10}
	w := []float32{1, 0.5, 2, -1}
	n := &nn.RMSNorm{Weight: param(s, w, 4), Eps: eps}
	defer nn.FreeParams(n)
	require.Equal(t, "(4,), eps=1e-06", n.ExtraRepr())

	y := n.Forward(s, s.FromFloat32(x, 3, 4))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{3, 4}, y.Shape())
	// Row 1 is small enough that eps matters: (1.4e-5/4 → 3.5e-6) + 1e-6.
	requireClose(t, rmsRef(x, w, 4, eps), s.Float32s(y), 1e-5)

	// A bfloat16 input is normalised in float32 and cast back before the
	// weight multiplies it (as HF does): close to the float64 reference
	// within bfloat16 rounding. These inputs are exact in bfloat16.
	xb := []float32{1, -2, 3, 0.5, 0.25, 4, -8, 16}
	yb := n.Forward(s, s.To(s.FromFloat32(xb, 2, 4), tensor.BFloat16))
	require.NoError(t, s.Err())
	requireClose(t, rmsRef(xb, w, 4, eps), s.Float32s(yb), 1.0/128)

	def := nn.NewRMSNorm(s, 4, eps)
	defer nn.FreeParams(def)
	require.Equal(t, []float32{1, 1, 1, 1}, s.Float32s(def.Weight.T()))
	require.Equal(t, eps, def.Eps)
	require.NoError(t, s.Err())
}

func TestDropout(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	const n = 2000
	x := s.Ones(tensor.Float32, n)
	d := &nn.Dropout{P: 0.5}
	require.Equal(t, "p=0.5, inplace=False", d.ExtraRepr())

	// Eval mode: identity.
	require.Equal(t, s.Float32s(x), s.Float32s(d.Forward(s, x)))

	// Train mode: each element is dropped (0) or kept and scaled by 1/(1-p).
	tensor.ManualSeed(11)
	d.SetTraining(true)
	y := s.Float32s(d.Forward(s, x))
	require.NoError(t, s.Err())
	zeros := 0
	for i, v := range y {
		switch v {
		case 0:
			zeros++
		case 2:
		default:
			t.Fatalf("element %d is %v: want 0 or 2", i, v)
		}
	}
	// Binomial(2000, 0.5): sd ≈ 22; allow ±5 sd.
	require.InDelta(t, n/2, zeros, 110)

	// Two draws differ (it is random), and p=0 in train mode is identity.
	y2 := s.Float32s(d.Forward(s, x))
	require.NotEqual(t, y, y2)
	d0 := &nn.Dropout{P: 0, Train: true}
	require.Equal(t, s.Float32s(x), s.Float32s(d0.Forward(s, x)))

	d.SetTraining(false)
	require.Equal(t, s.Float32s(x), s.Float32s(d.Forward(s, x)))
	require.NoError(t, s.Err())
}

func TestIdentity(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2, 3}, 3)
	var l nn.Layer = nn.Identity{}
	require.Equal(t, []float32{1, 2, 3}, s.Float32s(l.Forward(s, x)))
	l = &nn.Identity{}
	require.Equal(t, []float32{1, 2, 3}, s.Float32s(l.Forward(s, x)))
}

// Every base layer is a Layer.
var (
	_ nn.Layer = (*nn.Linear)(nil)
	_ nn.Layer = (*nn.Conv1D)(nil)
	_ nn.Layer = (*nn.Embedding)(nil)
	_ nn.Layer = (*nn.LayerNorm)(nil)
	_ nn.Layer = (*nn.RMSNorm)(nil)
	_ nn.Layer = (*nn.Dropout)(nil)
	_ nn.Layer = nn.Identity{}
)
