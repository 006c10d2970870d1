package train

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// AdamW on f(p) = Σ c_i·p_i² against the update rule computed here in
// float64 (Loshchilov & Hutter's decoupled decay, PyTorch's bias correction).
func TestAdamWMatchesHandComputation(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	p0 := []float64{1, -2, 0.5}
	coef := []float64{1, 3, -2}
	p32 := []float32{1, -2, 0.5}
	pt := s.Keep(s.FromFloat32(p32, 3))
	s.SetRequiresGrad(pt, true)
	param := nn.NewParam(pt)
	defer param.Free()
	cfg := AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	opt := NewAdamW([]nn.NamedParam{{Name: "p", Param: param}}, cfg)
	defer opt.Free()
	c := s.Keep(s.FromFloat32([]float32{1, 3, -2}, 3))
	defer c.Free()

	p := append([]float64(nil), p0...)
	m := make([]float64, 3)
	v := make([]float64, 3)
	for step := 1; step <= 3; step++ {
		loss := s.Sum(s.Mul(c, s.Mul(param.T(), param.T())), false)
		s.Backward(loss)
		require.NoError(t, s.Err())
		require.NoError(t, opt.Step())
		require.NoError(t, opt.ZeroGrad())
		for i := range p {
			g := 2 * coef[i] * p[i]
			p[i] *= 1 - cfg.LR*cfg.WeightDecay
			m[i] = cfg.Beta1*m[i] + (1-cfg.Beta1)*g
			v[i] = cfg.Beta2*v[i] + (1-cfg.Beta2)*g*g
			mh := m[i] / (1 - math.Pow(cfg.Beta1, float64(step)))
			vh := v[i] / (1 - math.Pow(cfg.Beta2, float64(step)))
			p[i] -= cfg.LR * mh / (math.Sqrt(vh) + cfg.Eps)
		}
		got := s.Float32s(param.T())
		for i := range p {
			require.InDelta(t, p[i], float64(got[i]), 1e-5, "step %d param %d", step, i)
		}
		s.FreeAll()
	}
	require.Equal(t, 3, opt.Steps())
}
