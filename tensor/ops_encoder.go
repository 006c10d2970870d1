package tensor

import lib "github.com/sugarme/gotch/libtch"

// Ops used by the encoder families (BERT's classification heads and their
// losses) and by GPT-2.

// reductionMean is at::Reduction::Mean.
const reductionMean = 1

// MSELoss is the mean squared error between a and b (same shapes), as
// torch.nn.MSELoss().
func (s *Scope) MSELoss(a, b *T) *T {
	if !s.ok(a, b) {
		return nil
	}
	lib.AtgMseLoss(s.ptr(), a.c, b.c, reductionMean)
	return s.result("mse_loss")
}

// BCEWithLogits is the mean binary cross-entropy of logits against targets
// in [0, 1] (same shapes), as torch.nn.BCEWithLogitsLoss().
func (s *Scope) BCEWithLogits(logits, targets *T) *T {
	if !s.ok(logits, targets) {
		return nil
	}
	lib.AtgBinaryCrossEntropyWithLogits(s.ptr(), logits.c, targets.c, nil, nil, reductionMean)
	return s.result("binary_cross_entropy_with_logits")
}

// Argmax is the int64 index of the largest entry along d (the dimension is
// removed).
func (s *Scope) Argmax(t *T, d int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgArgmax(s.ptr(), t.c, d, 0, 0)
	return s.result("argmax")
}

// Tril keeps the lower triangle of the last two dimensions (entries with
// column - row <= diagonal), zeroing the rest.
func (s *Scope) Tril(t *T, diagonal int64) *T {
	if !s.ok(t) {
		return nil
	}
	lib.AtgTril(s.ptr(), t.c, diagonal)
	return s.result("tril")
}

// LogicalNot is the elementwise !a of a boolean tensor.
func (s *Scope) LogicalNot(a *T) *T { return s.un("logical_not", lib.AtgLogicalNot, a) }
