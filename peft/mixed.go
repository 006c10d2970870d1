package peft

import (
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// BaseAdapterName in a mixed batch marks a row that runs the base model
// without any adapter (HF's "__base__").
const BaseAdapterName = "__base__"

// RowChecker is implemented by Tuners that can run a different adapter on
// each row of a batch (LoRA, modules_to_save): CheckRows says upfront
// whether the layer can run names (one adapter name or BaseAdapterName per
// row), so that ForwardMixed fails before the forward with the layer's
// path. A Tuner reads the rows of a call with CallRows; one that cannot
// run them fails the call's scope.
type RowChecker interface {
	CheckRows(names []string) error
}

// CheckRows implements RowChecker: each row goes through its adapter's
// copy (the original for "__base__" and adapters without one).
func (w *ModulesToSave) CheckRows([]string) error { return nil }

// mixedForward runs each group of rows through its layer.
func (w *ModulesToSave) mixedForward(s *tensor.Scope, x *tensor.T, rows []string) *tensor.T {
	if x.Size(0) != int64(len(rows)) {
		return s.Failf("peft: mixed batch: %d adapter names for an input of %d rows", len(rows), x.Size(0))
	}
	// group rows by the layer that serves them, in order of first use
	var layers []nn.Layer
	var groups [][]int64
	for i, name := range rows {
		layer := w.Original
		if c, ok := w.Copies.Get(name); ok && name != BaseAdapterName {
			layer = c.(nn.Layer)
		}
		g := -1
		for j, l := range layers {
			if l == layer {
				g = j
			}
		}
		if g < 0 {
			layers = append(layers, layer)
			groups = append(groups, nil)
			g = len(layers) - 1
		}
		groups[g] = append(groups[g], int64(i))
	}
	if len(layers) == 1 {
		return layers[0].Forward(s, x)
	}
	outs := make([]*tensor.T, len(layers))
	inverse := make([]int64, len(rows)) // row i of the result is row inverse[i] of cat(outs)
	var at int64
	for g, layer := range layers {
		idx := s.FromInt64(groups[g], int64(len(groups[g])))
		outs[g] = layer.Forward(s, s.IndexSelect(x, 0, idx))
		for _, row := range groups[g] {
			inverse[row] = at
			at++
		}
	}
	return s.IndexSelect(s.Cat(0, outs...), 0, s.FromInt64(inverse, int64(len(inverse))))
}
