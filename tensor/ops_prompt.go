package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by the prompt-learning methods (P-tuning's encoders, prefix
// tuning's key/value layout).

// Relu is max(a, 0).
func (s *Scope) Relu(a *T) *T { return s.un("relu", lib.AtgRelu, a) }

// Permute reorders t's dimensions (a view): dimension i of the result is
// dimension dims[i] of t.
func (s *Scope) Permute(t *T, dims ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgPermute(s.ptr(), t.c, dims, len(dims))
	return s.result("permute")
}

// Randint draws int64 values uniformly from [0, high) with libtorch's
// generator.
func (s *Scope) Randint(high int64, shape ...int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgRandint(s.ptr(), high, shape, len(shape), int32(Int64), s.dev.code())
	return s.result("randint")
}
