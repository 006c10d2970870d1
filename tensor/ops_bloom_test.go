package tensor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBloomOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	// gather along the last dimension: out[i][j] = in[i][idx[i][j]]
	in := s.FromFloat32([]float32{10, 11, 12, 20, 21, 22}, 2, 3)
	idx := s.FromInt64([]int64{2, 0, 1, 1}, 2, 2)
	require.Equal(t, []float32{12, 10, 21, 21}, s.Float32s(s.Gather(in, 1, idx)))
	require.Equal(t, []float32{0.5, 0.5, 2}, s.Float32s(s.ClampMin(s.FromFloat32([]float32{-1, 0.5, 2}, 3), 0.5)))
	require.Equal(t, []float32{-0.02, 0, 3}, s.Float32s(s.LeakyRelu(s.FromFloat32([]float32{-2, 0, 3}, 3))))
	s.Gather(in, 1, s.FromInt64([]int64{5}, 1, 1))
	require.ErrorContains(t, s.Err(), "gather")
}
