package tensor

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestQuantOps(t *testing.T) {
	s := NewScope()
	defer s.Close()
	b := s.FromBytes(Uint8, []int64{4}, []byte{0x00, 0x1f, 0xa5, 0xff})
	require.Equal(t, []byte{0x0, 0x1, 0xa, 0xf}, s.Bytes(s.ShiftRight(b, 4)))
	require.Equal(t, []byte{0x0, 0xf, 0x5, 0xf}, s.Bytes(s.AndScalar(b, 0xf)))
	require.Equal(t, []byte{0x00, 0xf0, 0x50, 0xf0}, s.Bytes(s.ShiftLeft(b, 4)))
	require.Equal(t, Uint8, s.ShiftLeft(b, 4).DType())
	require.Equal(t, []byte{0x00, 0xf1, 0x5a, 0xff}, s.Bytes(s.Or(s.ShiftLeft(s.AndScalar(b, 0xf), 4), s.ShiftRight(b, 4)))) // nibbles swapped

	x := s.FromFloat32([]float32{-3, 1, 2, 0.5, -0.25, 4}, 2, 3)
	require.Equal(t, []float32{3, 4}, s.Float32s(s.Amax(s.Abs(x), false, 1)))
	require.Equal(t, []float32{-1, 1, 1, 0.5, -0.25, 1}, s.Float32s(s.Clamp(x, -1, 1)))
	require.Equal(t, []float32{0.5, 0.25}, s.Float32s(s.Reciprocal(s.FromFloat32([]float32{2, 4}, 2))))
	// ties go to the first position
	require.Equal(t, []int64{0, 1}, s.Int64s(s.Argmin(s.FromFloat32([]float32{1, 1, 2, 3, 0, 0}, 2, 3), 1, false)))
	st := s.Stack(1, s.FromFloat32([]float32{1, 2}, 2), s.FromFloat32([]float32{3, 4}, 2))
	require.Equal(t, []int64{2, 2}, st.Shape())
	require.Equal(t, []float32{1, 3, 2, 4}, s.Float32s(st))
	require.NoError(t, s.Err())
}
