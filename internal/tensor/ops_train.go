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
