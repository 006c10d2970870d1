package models

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Every rope type against the independent plain-torch reference
// (testdata/reference/rope_reference.py → rope_golden.json).
func TestRopeMatchesReference(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "testdata", "reference", "rope_golden.json"))
	require.NoError(t, err)
	var golden struct {
		Cases []struct {
			Name            string         `json:"name"`
			Config          map[string]any `json:"config"`
			HeadDim         int64          `json:"head_dim"`
			SeqLen          int64          `json:"seq_len"`
			InvFreq         []float64      `json:"inv_freq"`
			AttentionFactor float64        `json:"attention_factor"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &golden))
	require.GreaterOrEqual(t, len(golden.Cases), 15)
	types := map[string]bool{}
	for _, c := range golden.Cases {
		t.Run(c.Name, func(t *testing.T) {
			theta := 10000.0
			if v, ok := c.Config["rope_theta"].(float64); ok {
				theta = v
			}
			r, err := ParseRope(c.Config, theta, c.HeadDim, int64(c.Config["max_position_embeddings"].(float64)))
			require.NoError(t, err)
			types[r.Type] = true
			inv, att := r.Frequencies(c.SeqLen)
			require.Len(t, inv, len(c.InvFreq))
			for i, want := range c.InvFreq {
				require.InDelta(t, 0, (float64(inv[i])-want)/want, 2e-6, "inv_freq[%d]: got %g want %g", i, inv[i], want)
			}
			require.InDelta(t, c.AttentionFactor, att, 1e-12)
		})
	}
	for _, ty := range RopeTypes {
		require.True(t, types[ty], "no golden case for rope type %q", ty)
	}
}

// CosSin is cos/sin of position × inv_freq, scaled by the attention
// factor; longrope switches to the long factors past the original length.
func TestRopeCosSin(t *testing.T) {
	raw := map[string]any{"original_max_position_embeddings": 4.0, "rope_scaling": map[string]any{
		"type": "longrope", "short_factor": []any{1.0, 1.0}, "long_factor": []any{2.0, 4.0}}}
	r, err := ParseRope(raw, 100, 4, 16)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, last := range []int64{3, 4} { // seq_len 4: short; 5: long
		cos, sin := r.CosSin(s, s.FromInt64([]int64{0, last}, 1, 2))
		require.NoError(t, s.Err())
		require.Equal(t, []int64{1, 1, 2, 4}, cos.Shape())
		inv, att := r.Frequencies(last + 1)
		require.Greater(t, att, 1.0) // factor 16/4
		c, sn := s.Float32s(cos), s.Float32s(sin)
		for j := 0; j < 4; j++ {
			a := float64(last) * float64(inv[j%2])
			require.InDelta(t, att*math.Cos(a), c[4+j], 1e-6)
			require.InDelta(t, att*math.Sin(a), sn[4+j], 1e-6)
			require.InDelta(t, att, c[j], 1e-6) // position 0
		}
		if last == 4 {
			require.InDelta(t, 1/(2.0), inv[0], 1e-7)
		}
	}
}

// Partial rotary: the dimensions past cos's width pass through.
func TestApplyRotaryPartial(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 1, 1, 1, 6)
	r := NewRope(10000, 4)
	cos, sin := r.CosSin(s, s.FromInt64([]int64{1}, 1, 1))
	y := s.Float32s(ApplyRotary(s, x, cos, sin))
	require.NoError(t, s.Err())
	inv, _ := r.Frequencies(0)
	c0, s0 := math.Cos(float64(inv[0])), math.Sin(float64(inv[0]))
	c1, s1 := math.Cos(float64(inv[1])), math.Sin(float64(inv[1]))
	want := []float64{1*c0 - 3*s0, 2*c1 - 4*s1, 3*c0 + 1*s0, 4*c1 + 2*s1, 5, 6}
	for i := range want {
		require.InDelta(t, want[i], y[i], 1e-6)
	}
}

// Bad rope blocks fail naming the field.
func TestParseRopeErrors(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want string
	}{
		{`{"rope_scaling": 3}`, `field "rope_scaling": want an object`},
		{`{"rope_scaling": {"rope_type": "wibble", "factor": 2.0}}`, `field "rope_scaling.rope_type": rope type "wibble" is not supported`},
		{`{"rope_scaling": {"type": "linear"}}`, `field "rope_scaling.factor": missing`},
		{`{"rope_scaling": {"type": "linear", "factor": "2"}}`, `field "rope_scaling.factor": want a number`},
		{`{"rope_scaling": {"type": "dynamic", "factor": -1.0}}`, `field "rope_scaling.factor" must be positive`},
		{`{"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8}}`, `field "rope_scaling.high_freq_factor": missing`},
		{`{"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}}`, `must be greater than`},
		{`{"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "truncate": "no"}}`, `field "rope_scaling.truncate": want a boolean`},
		{`{"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0, 2.0]}}`, `field "rope_scaling.short_factor": has 1 numbers, want 2`},
		{`{"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0, 1.0]}}`, `field "rope_scaling.long_factor": want a list of 2 numbers`},
		{`{"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0, 0.0], "long_factor": [1.0, 2.0]}}`, `element 1 must be a positive number`},
		{`{"partial_rotary_factor": 1.5}`, `field "partial_rotary_factor" must be in (0, 1]`},
		{`{"partial_rotary_factor": 0.1}`, `rotary dimensions, want an even number`},
		{`{"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}}`, `field "rope_parameters.rope_theta" must be a positive number`},
	} {
		var raw map[string]any
		require.NoError(t, json.Unmarshal([]byte(c.raw), &raw))
		_, err := ParseRope(raw, 10000, 4, 64)
		require.ErrorContains(t, err, c.want, c.raw)
	}
	r, err := ParseRope(nil, 10000, 8, 0) // a config built in code
	require.NoError(t, err)
	require.Equal(t, "default", r.Type)
	require.Equal(t, int64(8), r.Dim)
}
