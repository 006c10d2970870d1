package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by training (activation checkpointing, gradient clipping).

// BackwardKeep is Backward with retain_graph: the graph's saved tensors
// survive, so a part of it shared with a later backward pass (a prefix
// encoder feeding every layer) can be traversed again. They are released
// with the handles that refer to the graph.
func (s *Scope) BackwardKeep(loss *T) {
	if !s.ok(loss) {
		return
	}
	lib.AtBackward(loss.c, 1, 0)
	s.check("backward")
}

// Exp_ is a = exp(a), in place (the fused loss head turns log-probabilities
// into probabilities without a second buffer).
func (s *Scope) Exp_(a *T) {
	if !s.ok(a) {
		return
	}
	lib.AtgExp_(s.ptr(), a.c)
	s.freeSlot()
	s.check("exp_")
}

// ScatterAdd_ adds src into a at the indices idx along dimension d, in
// place (a[i][idx[i][j]] += src[i][j] for d = 1).
func (s *Scope) ScatterAdd_(a *T, d int64, idx, src *T) {
	if !s.ok(a, idx, src) {
		return
	}
	lib.AtgScatterAdd_(s.ptr(), a.c, d, idx.c, src.c)
	s.freeSlot()
	s.check("scatter_add_")
}
