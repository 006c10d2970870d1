package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by BLOOM, IA3's T-Few losses and the bottleneck adapters.

// Gather picks, along dimension d, the entries of t at the int64 positions
// idx (idx has t's rank; torch.gather).
func (s *Scope) Gather(t *T, d int64, idx *T) *T {
	if !s.ok(t, idx) {
		return nil
	}
	lib.AtgGather(s.ptr(), t.c, d, idx.c, 0)
	return s.result("gather")
}

// ClampMin is max(a, v) elementwise.
func (s *Scope) ClampMin(a *T, v float64) *T {
	return s.scalar("clamp_min", lib.AtgClampMin, a, v)
}

// LeakyRelu is max(a, 0.01·a) (torch's default negative slope).
func (s *Scope) LeakyRelu(a *T) *T { return s.un("leaky_relu", lib.AtgLeakyRelu, a) }
