package tensor

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// Re(ifft2(X))[i, j] = 1/(N·M) Σ_{u,v} X[u, v]·cos(2π(u·i/N + v·j/M)) for
// a real X; the gradient flows back to X.
func TestIfft2Real(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const n, m = 3, 5
	x := make([]float32, n*m)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*1.7) + 0.1*float64(i))
	}
	xt := s.FromFloat32(x, n, m)
	s.SetRequiresGrad(xt, true)
	y := s.Ifft2Real(xt)
	require.NoError(t, s.Err())
	require.Equal(t, []int64{n, m}, y.Shape())
	got := s.Float32s(s.Contiguous(y))
	for i := 0; i < n; i++ {
		for j := 0; j < m; j++ {
			var want float64
			for u := 0; u < n; u++ {
				for v := 0; v < m; v++ {
					want += float64(x[u*m+v]) * math.Cos(2*math.Pi*(float64(u*i)/n+float64(v*j)/m))
				}
			}
			require.InDelta(t, want/(n*m), got[i*m+j], 1e-6, "[%d %d]", i, j)
		}
	}
	// d Σ y[0, 0] / dX = 1/(N·M) everywhere
	s.Backward(s.Sum(s.Narrow(s.Narrow(y, 0, 0, 1), 1, 0, 1), false))
	require.NoError(t, s.Err())
	for _, g := range s.Float32s(s.Grad(xt)) {
		require.InDelta(t, 1.0/(n*m), g, 1e-7)
	}
	require.Nil(t, s.Ifft2Real(s.FromFloat32([]float32{1, 2}, 2)))
	require.ErrorContains(t, s.Err(), "at least 2 dimensions")
}
