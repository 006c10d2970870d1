package models

import (
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// positions returns [B=2, H=1, n, D=2] with values counting up from start,
// so every position of every row is distinct.
func positions(s *tensor.Scope, start, n int64) *tensor.T {
	v := make([]float32, 2*n*2)
	for i := range v {
		v[i] = float32(start*10 + int64(i))
	}
	return s.FromFloat32(v, 2, 1, n, 2)
}

// A decoding cache grown in place (past the first buffer's headroom, so it
// reallocates) holds exactly what concatenating every step would, and
// Set (beam reordering) replaces its contents.
func TestAttendKVGrowsInPlaceLikeConcatenation(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	var cache KV
	defer cache.free()
	want := positions(s, 0, 5)
	k, v := AttendKV(s, nil, nil, &cache, want, s.MulScalar(want, -1))
	require.NoError(t, s.Err())
	require.Equal(t, s.Float32s(want), s.Float32s(k))
	for step := int64(1); step <= cacheHeadroom+40; step++ {
		x := positions(s, 1000+step, 1)
		want = s.Cat(2, want, x)
		k, v = AttendKV(s, nil, &cache, &cache, x, s.MulScalar(x, -1))
		require.NoError(t, s.Err())
	}
	require.Equal(t, []int64{2, 1, 5 + cacheHeadroom + 40, 2}, k.Shape())
	require.Equal(t, s.Float32s(want), s.Float32s(s.Contiguous(k)))
	require.Equal(t, s.Float32s(s.MulScalar(want, -1)), s.Float32s(s.Contiguous(v)))
	require.Greater(t, cache.kBuf.Size(2), k.Size(2)-1, "the buffer was grown, not replaced by a concatenation")

	// a read-only past (no cache to extend) is concatenated and left alone
	x := positions(s, 5000, 1)
	k2, _ := AttendKV(s, nil, &cache, nil, x, x)
	require.Equal(t, k.Size(2)+1, k2.Size(2))
	require.Equal(t, k.Size(2), cache.K.Size(2))

	// reordering rows replaces the buffer (and frees k, a view of it): the
	// next step appends to the new order
	n, oldRow1 := k.Size(2), s.Float32s(s.Contiguous(s.Select(k, 0, 1)))
	idx := s.FromInt64([]int64{1, 1}, 2)
	cache.Set(s.Keep(s.IndexSelect(cache.K, 0, idx)), s.Keep(s.IndexSelect(cache.V, 0, idx)))
	k3, _ := AttendKV(s, nil, &cache, &cache, x, x)
	require.NoError(t, s.Err())
	past := s.Narrow(k3, 2, 0, n)
	require.Equal(t, oldRow1, s.Float32s(s.Contiguous(s.Select(past, 0, 0))), "row 0 is old row 1")
	require.Equal(t, oldRow1, s.Float32s(s.Contiguous(s.Select(past, 0, 1))))
	require.Equal(t, s.Float32s(x), s.Float32s(s.Contiguous(s.Narrow(k3, 2, n, 1))), "then the new position")
}

// With autograd on, the cache keeps contiguous copies made by concatenation
// (gradients flow through k), and a prefix goes before everything.
func TestAttendKVWithGradAndPrefix(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	var cache KV
	defer cache.free()
	prefix := &KV{K: positions(s, 7, 3), V: positions(s, 8, 3)}
	k := positions(s, 0, 2)
	s.SetRequiresGrad(k, true)
	gotK, gotV := AttendKV(s, prefix, nil, &cache, k, positions(s, 1, 2))
	require.NoError(t, s.Err())
	require.Equal(t, s.Float32s(s.Cat(2, prefix.K, k)), s.Float32s(gotK))
	require.Equal(t, s.Float32s(s.Cat(2, prefix.V, positions(s, 1, 2))), s.Float32s(gotV))
	require.Nil(t, cache.kBuf)
	s.Backward(s.Sum(gotK, false))
	require.Equal(t, []float32{1, 1, 1, 1, 1, 1, 1, 1}, s.Float32s(s.Grad(k)))
}
