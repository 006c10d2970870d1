package tensor

import lib "github.com/sugarme/gotch/libtch"

// In-place ops update their first argument (optimizers under no-grad; the
// attention scores, whose producer's backward does not need them). libtch returns a second handle to the result, freed here.

// MulScalar_ is a *= v.
func (s *Scope) MulScalar_(a *T, v float64) { s.scalarInPlace("mul_", lib.AtgMulScalar_, a, v) }

// DivScalar_ is a /= v.
func (s *Scope) DivScalar_(a *T, v float64) { s.scalarInPlace("div_", lib.AtgDivScalar_, a, v) }

// AddScalar_ is a += v.
func (s *Scope) AddScalar_(a *T, v float64) { s.scalarInPlace("add_", lib.AtgAddScalar_, a, v) }

func (s *Scope) scalarInPlace(op string, f func(*lib.Ctensor, lib.Ctensor, lib.Cscalar), a *T, v float64) {
	if !s.ok(a) {
		return
	}
	sc := lib.AtsFloat(v)
	f(s.ptr(), a.c, sc)
	lib.AtsFree(sc)
	s.freeSlot()
	s.check(op)
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

// Mark returns a position in the scope's list of owned tensors, for
// FreeSince.
func (s *Scope) Mark() int { return len(s.owned) }

// FreeSince frees every tensor the scope took ownership of after mark,
// except keep: a loop over layers frees each layer's intermediates once its
// output exists (autograd keeps what backward needs alive in C++).
func (s *Scope) FreeSince(mark int, keep ...*T) {
	if mark > len(s.owned) {
		return
	}
	kept := s.owned[:mark]
	for _, t := range s.owned[mark:] {
		hold := false
		for _, k := range keep {
			if t == k {
				hold = true
				break
			}
		}
		if hold {
			kept = append(kept, t)
		} else {
			t.Free()
		}
	}
	for i := len(kept); i < len(s.owned); i++ {
		s.owned[i] = nil
	}
	s.owned = kept
}

// Copy_ copies src into dst in place (dst may be a view: a narrowed slice
// of a larger tensor is written through).
func (s *Scope) Copy_(dst, src *T) {
	if !s.ok(dst, src) {
		return
	}
	lib.AtCopy_(dst.c, src.c)
	s.check("copy_")
}
