package tensor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPromptOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	require.Equal(t, []float32{0, 0, 2, 0.5}, s.Float32s(s.Relu(s.FromFloat32([]float32{-1, 0, 2, 0.5}, 4))))

	// [2, 3, 4] permuted to [4, 2, 3]: out[k][i][j] = in[i][j][k]
	in := make([]float32, 24)
	for i := range in {
		in[i] = float32(i)
	}
	p := s.Permute(s.FromFloat32(in, 2, 3, 4), 2, 0, 1)
	require.Equal(t, []int64{4, 2, 3}, p.Shape())
	got := s.Float32s(p)
	for k := 0; k < 4; k++ {
		for i := 0; i < 2; i++ {
			for j := 0; j < 3; j++ {
				require.Equal(t, in[i*12+j*4+k], got[k*6+i*3+j])
			}
		}
	}

	r := s.Int64s(s.Randint(5, 1000))
	seen := map[int64]bool{}
	for _, v := range r {
		require.True(t, v >= 0 && v < 5, "%d", v)
		seen[v] = true
	}
	require.Len(t, seen, 5)
	require.NoError(t, s.Err())
}
