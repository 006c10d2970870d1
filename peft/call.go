package peft

import (
	"fmt"
	"slices"

	"github.com/gopeft/peft/tensor"
)

// Selection is the adapter choice of one call (a forward, a generation):
// it travels with the call in its tensor.Scope (WithSelection), so
// concurrent calls on one model can run different adapters without
// changing the model. A nil Selection (or none attached) means the model's
// own choice (SetAdapter, DisableAdapters).
//
// A Selection is read, never written, by the layers; do not change one
// while a call uses it.
type Selection struct {
	// Adapters run summed (PEFT's active adapters); nil keeps the layer's
	// own active adapters.
	Adapters []string
	// Disabled runs the base model alone (PEFT's disable_adapter()).
	Disabled bool
	// Rows, when set, gives every batch row its adapter (or
	// BaseAdapterName): PEFT's forward(..., adapter_names=[...]).
	Rows []string
}

type selectionKey struct{}

// WithSelection attaches sel to s for the forwards run in s and returns a
// function that puts back what was attached before.
func WithSelection(s *tensor.Scope, sel *Selection) (restore func()) {
	prev := s.SetValue(selectionKey{}, sel)
	return func() { s.SetValue(selectionKey{}, prev) }
}

// SelectionOf returns the Selection attached to s, or nil.
func SelectionOf(s *tensor.Scope) *Selection {
	sel, _ := s.Value(selectionKey{}).(*Selection)
	return sel
}

// CallAdapters is what a Tuner's forward runs for the call in s: the
// adapters of the call's Selection when one is attached, else the layer's
// own active adapters, and whether adapters are off (the layer's own
// disabled flag or the call's). Every Tuner reads its adapters through it,
// so that a call's choice reaches every layer.
func CallAdapters(s *tensor.Scope, active []string, disabled bool) (names []string, off bool) {
	sel := SelectionOf(s)
	if sel == nil {
		return active, disabled
	}
	if sel.Disabled || disabled {
		return nil, true
	}
	if sel.Adapters != nil {
		return sel.Adapters, false
	}
	return active, false
}

// CallRows returns the per-row adapters of the call in s (a mixed batch),
// or nil.
func CallRows(s *tensor.Scope) []string {
	if sel := SelectionOf(s); sel != nil {
		return sel.Rows
	}
	return nil
}

// CheckMergedCall is for the forward of a Tuner whose adapters merged (a
// non-empty list) are folded into its base weights: the merged weight
// already runs them, so a call may only run the model's own choice. It
// returns an error naming layer when the call in s chooses otherwise (per
// row, other adapters, or none), since the base output without the merged
// adapters is not available until they are unmerged.
func CheckMergedCall(s *tensor.Scope, layer string, merged []string) error {
	sel := SelectionOf(s)
	if sel == nil || len(merged) == 0 {
		return nil
	}
	if sel.Rows != nil {
		return fmt.Errorf("%s: mixed batch: adapters %v are merged: unmerge before running a mixed batch", layer, merged)
	}
	if sel.Disabled || (sel.Adapters != nil && !sameSet(sel.Adapters, merged)) {
		return fmt.Errorf("%s: adapters %v are merged into the base weights: a call cannot run other adapters (%v, disabled %v) until they are unmerged", layer, merged, sel.Adapters, sel.Disabled)
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
