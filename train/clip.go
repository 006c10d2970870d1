package train

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// ClipGradNorm is torch.nn.utils.clip_grad_norm_: the L2 norm of all the
// parameters' gradients taken together; when it exceeds maxNorm every
// gradient is scaled by maxNorm / (norm + 1e-6). maxNorm ≤ 0 only measures.
// It returns the norm before clipping.
func ClipGradNorm(params []nn.NamedParam, maxNorm float64) (float64, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	var sum float64
	var grads []*tensor.T
	for _, np := range params {
		g := s.Grad(np.Param.T())
		if g == nil {
			continue
		}
		grads = append(grads, g)
		sum += s.Item(s.Sum(s.Mul(g, g), false))
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("train: gradient norm: %w", err)
	}
	norm := math.Sqrt(sum)
	if maxNorm > 0 {
		if coef := maxNorm / (norm + 1e-6); coef < 1 {
			for _, g := range grads {
				s.MulScalar_(g, coef)
			}
		}
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("train: clip gradients: %w", err)
	}
	return norm, nil
}
