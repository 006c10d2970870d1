package nn_test

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Sequential chains its layers and names them "0", "1", … as PyTorch does,
// parameter-free layers keeping their index; ReLU and Tanh are checked
// against math.
func TestSequential(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	l0 := &nn.Linear{Weight: nn.NewParam(s.Keep(s.FromFloat32(linW, 2, 3))), Bias: nn.NewParam(s.Keep(s.FromFloat32(linB, 2)))}
	l2 := &nn.Linear{Weight: nn.NewParam(s.Keep(s.FromFloat32([]float32{1, -1}, 1, 2)))}
	q := nn.NewSequential(l0, nn.Tanh{}, l2, nn.ReLU{})
	defer nn.FreeParams(q)
	var names []string
	for _, np := range nn.NamedParams(q) {
		names = append(names, np.Name)
	}
	require.Equal(t, []string{"0.weight", "0.bias", "2.weight"}, names)
	require.Equal(t, "Sequential(\n  (0): Linear(in_features=3, out_features=2, bias=True)\n  (1): Tanh()\n  (2): Linear(in_features=2, out_features=1, bias=False)\n  (3): ReLU()\n)", nn.Format(q))

	got := s.Float32s(q.Forward(s, s.FromFloat32(linX, 2, 3)))
	require.NoError(t, s.Err())
	for i := 0; i < 2; i++ {
		var h [2]float64
		for o := 0; o < 2; o++ {
			sum := float64(linB[o])
			for k := 0; k < 3; k++ {
				sum += float64(linX[i*3+k]) * float64(linW[o*3+k])
			}
			h[o] = math.Tanh(sum)
		}
		want := math.Max(h[0]-h[1], 0)
		require.InDelta(t, want, got[i], 1e-6, "row %d", i)
	}
	require.Error(t, q.SetChild("1", struct{}{}), "items stay layers")
}

// NewLinearTorch draws weight and bias from U(±1/√in), PyTorch's default.
func TestNewLinearTorch(t *testing.T) {
	s := tensor.NoGradScope()
	defer s.Close()
	tensor.ManualSeed(5)
	l := nn.NewLinearTorch(s, 16, 300, true)
	defer nn.FreeParams(l)
	bound := 1 / math.Sqrt(16)
	for _, p := range []*nn.Param{l.Weight, l.Bias} {
		var lo, hi float64
		for _, v := range s.Float32s(p.T()) {
			lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
		}
		require.GreaterOrEqual(t, lo, -bound)
		require.LessOrEqual(t, hi, bound)
		require.Less(t, lo, -0.8*bound, "spread over the whole interval")
		require.Greater(t, hi, 0.8*bound)
	}
	require.Equal(t, []int64{300, 16}, l.Weight.Shape())
}
