package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by 4-bit quantization (package nn/quant): blockwise absmax,
// nearest-code search, nibble packing and code-table lookup.

type withIntScalar func(*lib.Ctensor, lib.Ctensor, lib.Cscalar)

// intScalar runs an op with an integer scalar (bitwise ops on uint8 need
// one: a float scalar would promote the result).
func (s *Scope) intScalar(op string, f withIntScalar, a *T, v int64) *T {
	if !s.ok(a) {
		return nil
	}
	sc := lib.AtsInt(v)
	f(s.ptr(), a.c, sc)
	lib.AtsFree(sc)
	return s.result(op)
}

// ShiftLeft is a << n for integer tensors.
func (s *Scope) ShiftLeft(a *T, n int64) *T {
	return s.intScalar("bitwise_left_shift", lib.AtgBitwiseLeftShiftTensorScalar, a, n)
}

// ShiftRight is a >> n for integer tensors.
func (s *Scope) ShiftRight(a *T, n int64) *T {
	return s.intScalar("bitwise_right_shift", lib.AtgBitwiseRightShiftTensorScalar, a, n)
}

// AndScalar is the bitwise a & v for integer tensors.
func (s *Scope) AndScalar(a *T, v int64) *T {
	return s.intScalar("bitwise_and", lib.AtgBitwiseAnd, a, v)
}

// Or is the bitwise a | b for integer tensors.
func (s *Scope) Or(a, b *T) *T { return s.bin("bitwise_or", lib.AtgBitwiseOrTensor, a, b) }

// Reciprocal is 1 / a.
func (s *Scope) Reciprocal(a *T) *T { return s.un("reciprocal", lib.AtgReciprocal, a) }

// Clamp limits a to [lo, hi].
func (s *Scope) Clamp(a *T, lo, hi float64) *T {
	if !s.ok(a) {
		return nil
	}
	l, h := lib.AtsFloat(lo), lib.AtsFloat(hi)
	lib.AtgClamp(s.ptr(), a.c, l, h)
	lib.AtsFree(l)
	lib.AtsFree(h)
	return s.result("clamp")
}

// Amax is the maximum over dims.
func (s *Scope) Amax(t *T, keep bool, dims ...int64) *T {
	if !s.ok(t) {
		return nil
	}
	if len(dims) == 0 {
		return s.Failf("amax: no dimensions")
	}
	lib.AtgAmax(s.ptr(), t.c, dims, len(dims), b2i(keep))
	return s.result("amax")
}

// Argmin is the int64 position of the smallest entry along d (the first
// one on ties).
func (s *Scope) Argmin(t *T, d int64, keep bool) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgArgmin(s.ptr(), t.c, d, 0, b2i(keep))
	return s.result("argmin")
}

// Stack joins tensors of one shape along a new dimension d.
func (s *Scope) Stack(d int64, ts ...*T) *T {
	if !s.ok(ts...) {
		return nil
	}
	if len(ts) == 0 {
		return s.Failf("stack: no tensors")
	}
	cs := make([]lib.Ctensor, len(ts))
	for i, t := range ts {
		cs[i] = t.c
	}
	lib.AtgStack(s.ptr(), cs, len(cs), d)
	return s.result("stack")
}
