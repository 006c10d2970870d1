package tensor

import lib "github.com/sugarme/gotch/libtch"

// In-place ops update their first argument (used by optimizers under
// no-grad). libtch returns a second handle to the result, freed here.

// MulScalar_ is a *= v.
func (s *Scope) MulScalar_(a *T, v float64) {
	if !s.ok(a) {
		return
	}
	sc := lib.AtsFloat(v)
	lib.AtgMulScalar_(s.ptr(), a.c, sc)
	lib.AtsFree(sc)
	s.freeSlot()
	s.check("mul_")
}

// AddScalar_ is a += v.
func (s *Scope) AddScalar_(a *T, v float64) {
	if !s.ok(a) {
		return
	}
	sc := lib.AtsFloat(v)
	lib.AtgAddScalar_(s.ptr(), a.c, sc)
	lib.AtsFree(sc)
	s.freeSlot()
	s.check("add_")
}

// Add_ is a += b.
func (s *Scope) Add_(a, b *T) {
	if !s.ok(a, b) {
		return
	}
	lib.AtgAdd_(s.ptr(), a.c, b.c)
	s.freeSlot()
	s.check("add_")
}

// Addcmul_ is a += b·c.
func (s *Scope) Addcmul_(a, b, c *T) {
	if !s.ok(a, b, c) {
		return
	}
	lib.AtgAddcmul_(s.ptr(), a.c, b.c, c.c)
	s.freeSlot()
	s.check("addcmul_")
}

// Addcdiv_ is a += b/c.
func (s *Scope) Addcdiv_(a, b, c *T) {
	if !s.ok(a, b, c) {
		return
	}
	lib.AtgAddcdiv_(s.ptr(), a.c, b.c, c.c)
	s.freeSlot()
	s.check("addcdiv_")
}
