package train

import (
	"math"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Issue #19 item 8: gradients of the size of eps, where eps's place in the
// update matters (PyTorch adds it after dividing √v by the bias correction;
// adding it before gives updates ~30× smaller at step 1). The test with
// large gradients cannot tell the two apart.
func TestAdamWEpsPlacement(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	coef := []float64{1e-8, -3e-8, 5e-9}
	pt := s.Keep(s.FromFloat32([]float32{1, -2, 0.5}, 3))
	s.SetRequiresGrad(pt, true)
	param := nn.NewParam(pt)
	defer param.Free()
	cfg := AdamWConfig{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0}
	opt := NewAdamW([]nn.NamedParam{{Name: "p", Param: param}}, cfg)
	defer opt.Free()
	c := s.Keep(s.FromFloat32([]float32{1e-8, -3e-8, 5e-9}, 3))
	defer c.Free()
	p := []float64{1, -2, 0.5}
	m := make([]float64, 3)
	v := make([]float64, 3)
	for step := 1; step <= 4; step++ {
		loss := s.Sum(s.Mul(c, param.T()), false) // gradient = coef, the size of eps
		s.Backward(loss)
		require.NoError(t, s.Err())
		require.NoError(t, opt.Step())
		require.NoError(t, opt.ZeroGrad())
		for i := range p {
			g := float64(float32(coef[i]))
			m[i] = cfg.Beta1*m[i] + (1-cfg.Beta1)*g
			v[i] = cfg.Beta2*v[i] + (1-cfg.Beta2)*g*g
			bc1 := 1 - math.Pow(cfg.Beta1, float64(step))
			bc2 := 1 - math.Pow(cfg.Beta2, float64(step))
			p[i] -= cfg.LR / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + cfg.Eps)
		}
		got := s.Float32s(param.T())
		for i := range p {
			require.InDelta(t, p[i], float64(got[i]), 1e-5, "step %d param %d", step, i)
		}
		s.FreeAll()
	}
}
