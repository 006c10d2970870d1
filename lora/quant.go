package lora

import (
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/tensor"
)

// QLoRA: LoRA on 4-bit base layers (package nn/quant), PEFT's
// lora/bnb.py. Nothing else changes: the base layer's forward dequantizes
// its weight on the fly, A and B are float32 and train as usual, the
// adapter is saved under the same keys (so it loads on the full-precision
// base too), and DoRA reads the dequantized weight.
//
// Merging differs from PEFT on purpose. PEFT adds ΔW to the dequantized
// weight and rounds the sum back to 4 bits (lossy, with a warning); here
// the merged layer becomes a float32 nn.Linear holding dequant(W) + ΔW
// exactly, and the 4-bit layer is kept aside until Unmerge puts it back
// untouched. MergeAndUnload therefore gives a model whose merged layers are
// float32 (quant.Dequantize turns the remaining 4-bit ones, if any, into
// float32 too): the dequantized model QLoRA training is meant to produce.

// quantInOut returns a 4-bit base layer's widths.
func quantInOut(base nn.Layer) (in, out int64, ok bool) {
	q, ok := base.(*quant.Linear)
	if !ok {
		return 0, 0, false
	}
	return q.InFeatures(), q.OutFeatures(), true
}

// baseWeightT is the base weight as its layer stores it ([out, in], or
// [in, out] for Conv1D); a 4-bit weight is dequantized into s.
func (l *Linear) baseWeightT(s *tensor.Scope) *tensor.T {
	if q, ok := l.Base.(*quant.Linear); ok {
		return q.Dequantize(s)
	}
	w, _, err := baseWeight(l.Base)
	if err != nil {
		return s.Fail(err)
	}
	return w.T()
}

// dequantizeForMerge swaps a 4-bit base for its float32 copy when one of
// names is an adapter of this layer, keeping the 4-bit layer aside.
func (l *Linear) dequantizeForMerge(names []string) error {
	q, ok := l.Base.(*quant.Linear)
	if !ok {
		return nil
	}
	mine := false
	for _, n := range names {
		if _, has := l.A.Get(n); has {
			mine = true
		}
	}
	if !mine {
		return nil
	}
	f, err := q.Dequantized()
	if err != nil {
		return err
	}
	l.quantBase, l.Base = q, f
	return nil
}

// restoreIfUnmerged puts the 4-bit base back when a merge left nothing
// merged (a safe merge that refused non-finite weights).
func (l *Linear) restoreIfUnmerged() {
	if len(l.merged) == 0 {
		l.restoreQuantBase()
	}
}

// restoreQuantBase drops the merged float32 copy and puts the 4-bit base
// back; it reports whether there was one.
func (l *Linear) restoreQuantBase() bool {
	if l.quantBase == nil {
		return false
	}
	if f, ok := l.Base.(*nn.Linear); ok {
		f.Weight.Free() // the bias is the 4-bit layer's own
	}
	l.Base, l.quantBase = l.quantBase, nil
	for name, f := range l.doraFactor {
		f.Free()
		delete(l.doraFactor, name)
	}
	l.merged = nil
	return true
}

// Unloaded implements peft.Unloader: the base layer, merged or not. After
// a merge the 4-bit layer it replaced is freed (its bias lives on in the
// merged layer).
func (l *Linear) Unloaded() nn.Layer {
	if l.quantBase != nil {
		l.quantBase.Weight.Free()
		l.quantBase.FreeBuffers()
		l.quantBase = nil
	}
	return l.Base
}
