package ia3

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// For Linear and GPT-2's Conv1D, attention and feed-forward vectors: the
// merged layer computes what the adapted one did, and unmerge restores the
// weights up to PEFT's 1e-8 epsilon.
func TestMergeMatchesForwardForLinearAndConv1D(t *testing.T) {
	for _, conv := range []bool{false, true} {
		for _, ff := range []bool{false, true} {
			s := tensor.NoGradScope()
			tensor.ManualSeed(11)
			const in, out = 5, 3
			var base nn.Layer
			var w, b *nn.Param
			if conv {
				c := &nn.Conv1D{Weight: nn.NewParam(s.Keep(s.Randn(tensor.Float32, in, out))), Bias: nn.NewParam(s.Keep(s.Randn(tensor.Float32, out)))}
				base, w, b = c, c.Weight, c.Bias
			} else {
				l := &nn.Linear{Weight: nn.NewParam(s.Keep(s.Randn(tensor.Float32, out, in))), Bias: nn.NewParam(s.Keep(s.Randn(tensor.Float32, out)))}
				base, w, b = l, l.Weight, l.Bias
			}
			l := newLinear(base, ff)
			require.NoError(t, l.addAdapter("a", false)) // N(0,1): not the identity
			require.NoError(t, l.addAdapter("b", false))
			l.SetActive([]string{"a", "b"})
			p, _ := l.L.Get("a")
			if ff {
				require.Equal(t, []int64{1, in}, p.Shape())
			} else {
				require.Equal(t, []int64{out, 1}, p.Shape())
			}
			w0, b0 := s.Float32s(w.T()), s.Float32s(b.T())
			x := s.Randn(tensor.Float32, 2, 4, in)
			want := s.Float32s(l.Forward(s, x))
			require.NoError(t, l.Merge([]string{"a", "b"}, true))
			require.Equal(t, []string{"a", "b"}, l.Merged())
			got := s.Float32s(base.Forward(s, x)) // the base layer alone, merged weights
			require.InDeltaSlice(t, f64(want), f64(got), 1e-5, "conv=%v ff=%v", conv, ff)
			if ff {
				require.Equal(t, b0, s.Float32s(b.T()), "a feed-forward merge leaves the bias")
			}
			require.NoError(t, l.Unmerge())
			require.InDeltaSlice(t, f64(w0), f64(s.Float32s(w.T())), 1e-5)
			require.InDeltaSlice(t, f64(b0), f64(s.Float32s(b.T())), 1e-5)
			require.NoError(t, s.Err())
			s.Close()
		}
	}
}

func TestSafeMergeRefusesNonFinite(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	lin := &nn.Linear{Weight: nn.NewParam(s.Keep(s.Ones(tensor.Float32, 2, 2)))}
	l := newLinear(lin, false)
	require.NoError(t, l.addAdapter("a", true))
	p, _ := l.L.Get("a")
	s.CopyInto(p.T(), s.FromFloat32([]float32{float32(math.Inf(1)), 1}, 2, 1))
	require.ErrorContains(t, l.Merge([]string{"a"}, true), "not finite")
	require.Empty(t, l.Merged())
	require.Equal(t, []float32{1, 1, 1, 1}, s.Float32s(lin.Weight.T()))
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
