package tensor

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// Linear on a few rows takes the few-rows kernel (linearFewRows), on more rows
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

// Under no-grad a trainable weight does not stop the few-rows path,
// and the result equals libtorch's linear.
func TestLinearFewRowsUnderNoGrad(t *testing.T) {
	s := NoGradScope()
	defer s.Close()
	require.False(t, GradEnabled())
	w := s.Randn(Float32, 7, 5)
	s.SetRequiresGrad(w, true)
	x := s.Randn(Float32, 2, 1, 5)
	require.Equal(t, int64(2), s.fewRows(x, w, nil, w.Size(1)))
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

// The few-rows kernels (Linear's [out, in] weights and Conv1D's [in, out])
// against libtorch's matmul in float64 (an independent product): every row
// count they take, inner sizes with and without a tail
// beyond its 8-wide blocks, weights small enough to run on one thread and
// large enough to be split across the OpenMP team, bias or none, and an
// input that is a non-contiguous view.
func TestLinearFewRowsKernelMatchesMatmul(t *testing.T) {
	s := NoGradScope()
	defer s.Close()
	for _, dims := range [][2]int64{{3, 5}, {7, 16}, {33, 13}, {1000, 131}, {600, 512}} {
		out, in := dims[0], dims[1]
		w := s.Randn(Float32, out, in)
		b := s.Randn(Float32, out)
		for rows := int64(1); rows <= maxFewRows+1; rows++ {
			for _, bias := range []*T{nil, b} {
				for _, strided := range []bool{false, true} {
					var x *T
					if strided { // [in, rows] transposed: rows × in with stride in ≠ 1
						x = s.Transpose(s.Randn(Float32, in, rows), 0, 1)
					} else {
						x = s.Randn(Float32, rows, in)
					}
					want := s.Matmul(s.To(x, Float64), s.Transpose(s.To(w, Float64), 0, 1))
					if bias != nil {
						want = s.Add(want, s.To(bias, Float64))
					}
					for _, conv1D := range []bool{false, true} {
						var got *T
						if conv1D { // GPT-2's layout: the same weight as [in, out]
							got = s.Conv1D(x, s.Contiguous(s.Transpose(w, 0, 1)), bias)
						} else {
							got = s.Linear(x, w, bias)
						}
						require.NoError(t, s.Err())
						require.Equal(t, []int64{rows, out}, got.Shape())
						tol := 1e-5 * float64(in)
						require.InDeltaSlice(t, toF64(s.Float32s(s.To(want, Float32))), toF64(s.Float32s(got)), tol,
							"w %dx%d rows %d bias %v strided %v conv1D %v", out, in, rows, bias != nil, strided, conv1D)
					}
				}
			}
		}
	}
}

// Services decode on several goroutines at once: each scope's few-rows
// products (each on its own OS thread and OpenMP team) still equal
// libtorch's matmul when they run concurrently on shared weights.
func TestLinearFewRowsConcurrentScopes(t *testing.T) {
	setup := NoGradScope()
	w := setup.Keep(setup.Randn(Float32, 700, 256)) // large enough to use the thread team
	setup.Close()
	defer w.Free()
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			s := NoGradScope()
			defer s.Close()
			for i := range 20 {
				x := s.Randn(Float32, int64(1+(g+i)%maxFewRows), 256)
				want := s.Float32s(s.Matmul(x, s.Transpose(w, 0, 1)))
				got := s.Float32s(s.Linear(x, w, nil))
				if err := s.Err(); err != nil {
					errs <- err
					return
				}
				for j := range want {
					if d := want[j] - got[j]; d > 1e-4 || d < -1e-4 {
						errs <- fmt.Errorf("goroutine %d step %d element %d: %g vs %g", g, i, j, got[j], want[j])
						return
					}
				}
				s.FreeAll()
			}
			errs <- nil
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
}
