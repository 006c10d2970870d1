package tensor

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGenerateOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.FromFloat32([]float32{
		0.5, 3, -1, 3,
		2, -4, 7, 0,
	}, 2, 4)

	require.Equal(t, []int64{1, 2}, s.Int64s(s.Argmax(x, 1))) // first maximum on ties

	v, i := s.Topk(x, 2, 1, true, true)
	require.Equal(t, []float32{3, 3, 7, 2}, s.Float32s(v))
	row1 := s.Int64s(i)[2:]
	require.Equal(t, []int64{2, 0}, row1)
	v, i = s.Topk(x, 1, 1, false, true)
	require.Equal(t, []float32{-1, -4}, s.Float32s(v))
	require.Equal(t, []int64{2, 1}, s.Int64s(i))

	sv, si := s.Sort(x, 1, false)
	require.Equal(t, []float32{-1, 0.5, 3, 3, -4, 0, 2, 7}, s.Float32s(sv))
	require.Equal(t, []int64{1, 3, 0, 2}, s.Int64s(si)[4:])
	sv, _ = s.Sort(x, 1, true)
	require.Equal(t, []float32{7, 2, 0, -4}, s.Float32s(sv)[4:])

	idx := s.FromInt64([]int64{3, 0, 1, 1}, 2, 2)
	src := s.FromFloat32([]float32{10, 20, 30, 30}, 2, 2)
	require.Equal(t, []float32{20, 3, -1, 10, 2, 30, 7, 0}, s.Float32s(s.Scatter(x, 1, idx, src)))

	f := s.Float32s(s.IndexFill(x, 1, s.FromInt64([]int64{0, 2}, 2), math.Inf(-1)))
	require.True(t, math.IsInf(float64(f[0]), -1) && math.IsInf(float64(f[2]), -1) && math.IsInf(float64(f[6]), -1))
	require.Equal(t, float32(3), f[1])

	lt := s.Int64s(s.LtScalar(x, 0.5))
	require.Equal(t, []int64{0, 0, 1, 0, 0, 1, 0, 1}, lt)
	le := s.Int64s(s.LeScalar(x, 0.5))
	require.Equal(t, []int64{1, 0, 1, 0, 0, 1, 0, 1}, le)
	col := s.FromFloat32([]float32{1, 2}, 2, 1)
	require.Equal(t, []int64{1, 0, 1, 0, 0, 1, 0, 1}, s.Int64s(s.Lt(x, col)))
	require.NoError(t, s.Err())

	// errors are recorded, not fatal
	s.Topk(x, 9, 1, true, true)
	require.Error(t, s.Err())
}
