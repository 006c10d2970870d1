package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by the orthogonal fine-tuning methods (OFT, BOFT: the Cayley
// transform of skew-symmetric blocks).

// Eye makes the n×n identity matrix on the scope's device.
func (s *Scope) Eye(dt DType, n int64) *T {
	if !s.ok() {
		return nil
	}
	lib.AtgEye(s.ptr(), n, int32(dt), s.dev.code())
	return s.result("eye")
}

// Inverse is the matrix inverse of a (torch.inverse), batched over
// leading dimensions; autograd flows through it.
func (s *Scope) Inverse(a *T) *T {
	if !s.ok(a) {
		return nil
	}
	lib.AtgInverse(s.ptr(), a.c)
	return s.result("inverse")
}
