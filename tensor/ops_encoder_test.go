package tensor

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEncoderOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.FromFloat32([]float32{1, 2, 3, 4}, 2, 2)
	b := s.FromFloat32([]float32{1, 0, 5, 4}, 2, 2)
	// ((0)² + 2² + (-2)² + 0²) / 4 = 2
	require.InDelta(t, 2.0, s.Item(s.MSELoss(a, b)), 1e-6)
	// BCE with logits by hand: -mean(y·log σ(x) + (1-y)·log(1-σ(x)))
	x := []float64{0.5, -1, 2}
	y := []float64{1, 0, 0}
	var want float64
	for i := range x {
		p := 1 / (1 + math.Exp(-x[i]))
		want -= y[i]*math.Log(p) + (1-y[i])*math.Log(1-p)
	}
	want /= 3
	got := s.Item(s.BCEWithLogits(s.FromFloat32([]float32{0.5, -1, 2}, 3), s.FromFloat32([]float32{1, 0, 0}, 3)))
	require.InDelta(t, want, got, 1e-6)
	require.Equal(t, []int64{1, 0}, s.Int64s(s.Argmax(s.FromFloat32([]float32{1, 5, 2, 9, 3, 4}, 2, 3), 1)))
	require.Equal(t, []float32{1, 0, 1, 1}, s.Float32s(s.Tril(s.Ones(Float32, 2, 2), 0)))
	require.Equal(t, []float32{0, 1}, s.Float32s(s.To(s.LogicalNot(s.GtScalar(s.FromFloat32([]float32{2, -1}, 2), 0)), Float32)))
	require.NoError(t, s.Err())
	s.MSELoss(a, s.FromFloat32([]float32{1, 2, 3}, 3))
	require.ErrorContains(t, s.Err(), "mse_loss")
}
