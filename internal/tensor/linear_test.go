package tensor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Linear on a few rows takes the matrix-vector path (linearMV), on more rows
// libtorch's linear; both must equal x·wᵀ + b computed here by hand, for
// every input rank, with and without bias.
func TestLinearFewRowsMatchesHandComputation(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const in, out = 5, 3
	wv := make([]float32, out*in)
	for i := range wv {
		wv[i] = float32(i%7) - 2.5
	}
	bv := []float32{0.5, -1, 2}
	w := s.FromFloat32(wv, out, in)
	b := s.FromFloat32(bv, out)
	for _, shape := range [][]int64{{in}, {1, 1, in}, {3, in}, {4, 1, in}, {2, 3, in}} {
		n := int64(1)
		for _, d := range shape[:len(shape)-1] {
			n *= d
		}
		xv := make([]float32, n*in)
		for i := range xv {
			xv[i] = float32((i*5)%11) / 4
		}
		x := s.FromFloat32(xv, shape...)
		for _, bias := range []*T{nil, b} {
			y := s.Linear(x, w, bias)
			require.NoError(t, s.Err())
			want := append(append([]int64{}, shape[:len(shape)-1]...), out)
			require.Equal(t, want, y.Shape(), "shape %v", shape)
			got := s.Float32s(y)
			for r := int64(0); r < n; r++ {
				for o := 0; o < out; o++ {
					var acc float32
					for k := 0; k < in; k++ {
						acc += xv[r*in+int64(k)] * wv[o*in+k]
					}
					if bias != nil {
						acc += bv[o]
					}
					require.InDelta(t, acc, got[r*out+int64(o)], 1e-5, "shape %v row %d out %d", shape, r, o)
				}
			}
		}
	}
}

// With autograd in play Linear keeps libtorch's linear: gradients flow to x.
func TestLinearFewRowsKeepsGradients(t *testing.T) {
	s := NewScope()
	defer s.Close()
	w := s.FromFloat32([]float32{1, 2, 3, 4}, 2, 2)
	x := s.FromFloat32([]float32{1, 1}, 1, 2)
	s.SetRequiresGrad(x, true)
	s.Backward(s.Sum(s.Linear(x, w, nil), false))
	require.NoError(t, s.Err())
	require.Equal(t, []float32{4, 6}, s.Float32s(s.Grad(x))) // column sums of w
}

// Under no-grad a trainable weight does not stop the matrix-vector path,
// and the result equals libtorch's linear.
func TestLinearFewRowsUnderNoGrad(t *testing.T) {
	s := NoGradScope()
	defer s.Close()
	require.False(t, GradEnabled())
	w := s.Randn(Float32, 7, 5)
	s.SetRequiresGrad(w, true)
	x := s.Randn(Float32, 2, 1, 5)
	require.Equal(t, int64(2), s.mvRows(x, w, nil))
	want := s.Matmul(x, s.Transpose(w, 0, 1))
	got := s.Linear(x, w, nil)
	require.NoError(t, s.Err())
	require.InDeltaSlice(t, toF64(s.Float32s(want)), toF64(s.Float32s(got)), 1e-5)
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// Nested no-grad scopes put back the mode they found (the previous mode
// comes from the low 32 bits of gotch's wrapper result only).
func TestNestedNoGradScopesRestoreTheMode(t *testing.T) {
	require.True(t, GradEnabled())
	for i := 0; i < 100; i++ {
		outer := NoGradScope()
		inner := NoGradScope()
		require.False(t, GradEnabled())
		inner.Close()
		require.False(t, GradEnabled(), "the inner scope must not re-enable autograd")
		outer.Close()
		require.True(t, GradEnabled())
	}
}
