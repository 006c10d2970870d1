package nn

import (
	"fmt"

	"github.com/gopeft/peft/tensor"
)

// ZeroGrad sets the accumulated gradient of every parameter under m to zero
// (parameters without a gradient are left as they are).
func ZeroGrad(m Module) error {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range NamedParams(m) {
		if g := s.Grad(np.Param.T()); g != nil {
			s.Zero(g)
		}
		s.FreeAll()
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("nn: zero grad: %w", err)
	}
	return nil
}
