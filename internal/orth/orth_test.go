package orth

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Cayley of random blocks is orthogonal (QᵀQ = I), of zero blocks the
// identity, and of a 2×2 block [[0, a], [-a, 0]] the rotation with
// cos θ = (1-a²)/(1+a²), sin θ = -2a/(1+a²); BlockDiag places blocks on the
// diagonal.
func TestCayleyAndBlockDiag(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	q := Cayley(s, s.Randn(tensor.Float32, 3, 5, 5))
	qtq := s.Float32s(s.Matmul(s.Transpose(q, 1, 2), q))
	for b := 0; b < 3; b++ {
		for i := 0; i < 5; i++ {
			for j := 0; j < 5; j++ {
				want := 0.0
				if i == j {
					want = 1
				}
				require.InDelta(t, want, qtq[b*25+i*5+j], 1e-5)
			}
		}
	}
	require.Equal(t, []float32{1, 0, 0, 1}, s.Float32s(Cayley(s, s.Zeros(tensor.Float32, 1, 2, 2))))
	a := 0.5
	got := s.Float32s(Cayley(s, s.FromFloat32([]float32{0, float32(a), float32(-a), 0}, 1, 2, 2)))
	c, sn := (1-a*a)/(1+a*a), -2*a/(1+a*a)
	require.InDeltaSlice(t, []float64{c, sn, -sn, c}, []float64{float64(got[0]), float64(got[1]), float64(got[2]), float64(got[3])}, 1e-6)

	bd := s.Float32s(BlockDiag(s, s.FromFloat32([]float32{1, 2, 3, 4, 5, 6, 7, 8}, 2, 2, 2)))
	require.Equal(t, []float32{
		1, 2, 0, 0,
		3, 4, 0, 0,
		0, 0, 5, 6,
		0, 0, 7, 8}, bd)
	require.NoError(t, s.Err())
	require.False(t, math.IsNaN(float64(bd[0])))
}

// rank_pattern keys match as PEFT's re.match(rf"(.*\.)?{key}$", path): the
// end of the path at a dot boundary, the first key in file order winning;
// an alternation's later branches are anchored at the path's start.
func TestPatternLookup(t *testing.T) {
	var p Pattern
	require.NoError(t, json.Unmarshal([]byte(`{"layers.0.self_attn.q_proj": 2, "q_proj": 3, "x|v_proj": 5}`), &p))
	require.NoError(t, p.Validate("rank_pattern"))
	for path, want := range map[string]float64{
		"model.layers.0.self_attn.q_proj":  2,
		"model.layers.1.self_attn.q_proj":  3,
		"model.layers.1.self_attn.v_proj":  0, // re.match anchors "v_proj$" at the start
		"v_proj":                           5,
		"model.layers.1.self_attn.xq_proj": 5, // "(.*\.)?x" matches a prefix: re.match needs no $ there
		"model.layers.1.self_attn.k_proj":  0,
	} {
		v, ok := p.Lookup(path)
		require.Equal(t, want != 0, ok, path)
		require.Equal(t, want, v, path)
	}
	b, err := json.Marshal(p)
	require.NoError(t, err)
	require.JSONEq(t, `{"layers.0.self_attn.q_proj": 2, "q_proj": 3, "x|v_proj": 5}`, string(b))
	require.ErrorContains(t, Pattern{Keys: []string{"("}, Values: map[string]float64{"(": 1}}.Validate("rank_pattern"), `"rank_pattern"`)
	require.ErrorContains(t, Pattern{Keys: []string{"a"}, Values: map[string]float64{"a": 1.5}}.Validate("rank_pattern"), "positive integer")
}
