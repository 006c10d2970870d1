package tensor

import (
	lib "github.com/sugarme/gotch/libtch"
)

// Ops used by generation: the logits processors
// (repetition penalty, top-k, top-p, minimum length) and beam selection.

// Topk returns the k largest (or smallest) entries along d and their int64
// positions, in descending (ascending) order when sorted is set.
func (s *Scope) Topk(t *T, k, d int64, largest, sorted bool) (values, indices *T) {
	if !s.ok(t) {
		return nil, nil
	}
	lib.AtgTopk(s.ptr(), t.c, k, d, b2i(largest), b2i(sorted))
	r := s.results("topk", 2)
	return r[0], r[1]
}

// Sort sorts t along d and returns the sorted values and their int64
// positions in t.
func (s *Scope) Sort(t *T, d int64, descending bool) (values, indices *T) {
	if !s.ok(t) {
		return nil, nil
	}
	lib.AtgSort(s.ptr(), t.c, d, b2i(descending))
	r := s.results("sort", 2)
	return r[0], r[1]
}

// Scatter returns a copy of t with src's entries written at the int64
// positions idx along d (torch.scatter; idx and src have the same shape).
func (s *Scope) Scatter(t *T, d int64, idx, src *T) *T {
	if !s.ok(t, idx, src) {
		return nil
	}
	lib.AtgScatter(s.ptr(), t.c, d, idx.c, src.c)
	return s.result("scatter")
}

// IndexFill returns a copy of t with every entry at the int64 positions idx
// of dimension d set to v.
func (s *Scope) IndexFill(t *T, d int64, idx *T, v float64) *T {
	if !s.ok(t, idx) {
		return nil
	}
	sc := lib.AtsFloat(v)
	lib.AtgIndexFill(s.ptr(), t.c, d, idx.c, sc)
	lib.AtsFree(sc)
	return s.result("index_fill")
}

// LtScalar is the boolean a < v.
func (s *Scope) LtScalar(a *T, v float64) *T { return s.scalar("lt", lib.AtgLt, a, v) }

// LeScalar is the boolean a <= v.
func (s *Scope) LeScalar(a *T, v float64) *T { return s.scalar("le", lib.AtgLe, a, v) }

// Lt is the boolean a < b (broadcasting).
func (s *Scope) Lt(a, b *T) *T { return s.bin("lt", lib.AtgLtTensor, a, b) }
