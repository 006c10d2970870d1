package lora

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// CheckRows implements peft.RowChecker: it says upfront whether the layer
// can run names (one adapter or peft.BaseAdapterName per batch row) in one
// forward. As in PEFT, merged adapters and DoRA adapters among the names
// cannot. The forward of a mixed call checks the same again.
func (l *Linear) CheckRows(names []string) error {
	if len(l.merged) > 0 {
		return fmt.Errorf("adapters %v are merged: unmerge before running a mixed batch", l.merged)
	}
	for _, n := range names {
		if n != peft.BaseAdapterName && l.isDoRA(n) {
			return fmt.Errorf("adapter %q uses DoRA, which cannot run in a mixed batch", n)
		}
	}
	return nil
}

// CheckRows implements peft.RowChecker (merged adapters cannot run per row).
func (e *Embedding) CheckRows(names []string) error {
	if len(e.merged) > 0 {
		return fmt.Errorf("adapters %v are merged: unmerge before running a mixed batch", e.merged)
	}
	return nil
}

// mergedCall is the forward of a layer with merged adapters: y, unless
// the call chooses other adapters (peft.CheckMergedCall).
func mergedCall(s *tensor.Scope, layer string, merged []string, y *tensor.T) *tensor.T {
	if err := peft.CheckMergedCall(s, layer, merged); err != nil {
		return s.Fail(err)
	}
	return y
}

// rowGroups groups the rows of a mixed batch by adapter, in order of first
// use, leaving out the base rows and adapters for which has is false.
func rowGroups(rows []string, has func(string) bool) (order []string, groups map[string][]int64) {
	groups = map[string][]int64{}
	for i, name := range rows {
		if name == peft.BaseAdapterName || !has(name) {
			continue // base output for those rows (as for a layer without the adapter)
		}
		if _, seen := groups[name]; !seen {
			order = append(order, name)
		}
		groups[name] = append(groups[name], int64(i))
	}
	return order, groups
}

// mixedForward adds each adapter's update to its own rows of the base
// output y (PEFT's _mixed_batch_forward): y[rows_a] += B(A(dropout(x[rows_a])))·s_a.
func (l *Linear) mixedForward(s *tensor.Scope, x, y *tensor.T, rows []string) *tensor.T {
	if x.Size(0) != int64(len(rows)) {
		return s.Failf("lora: mixed batch: %d adapter names for an input of %d rows", len(rows), x.Size(0))
	}
	order, groups := rowGroups(rows, func(n string) bool { _, ok := l.A.Get(n); return ok })
	for _, name := range order {
		if l.isDoRA(name) {
			return s.Failf("lora: mixed batch: adapter %q uses DoRA, which cannot run in a mixed batch", name)
		}
	}
	for _, name := range order {
		g := groups[name]
		drop, _ := l.Dropout.Get(name)
		xin := castTo(s, x, l.lin(l.A, name).Weight.DType())
		if len(g) == len(rows) { // every row: no gather/scatter needed
			xa := drop.(nn.Layer).Forward(s, xin)
			y = s.Add(y, s.MulScalar(l.lin(l.B, name).Forward(s, l.lin(l.A, name).Forward(s, xa)), l.scaling[name]))
			continue
		}
		idx := s.FromInt64(g, int64(len(g)))
		xa := drop.(nn.Layer).Forward(s, s.IndexSelect(xin, 0, idx))
		upd := s.MulScalar(l.lin(l.B, name).Forward(s, l.lin(l.A, name).Forward(s, xa)), l.scaling[name])
		if y.DType() != upd.DType() { // index_add_ needs one dtype: add in the adapter's (PEFT's promotion)
			y = s.To(y, upd.DType())
		}
		y = s.IndexAdd(y, 0, idx, upd)
	}
	return y
}

// mixedForward adds each adapter's embedding update to its own rows of y.
func (e *Embedding) mixedForward(s *tensor.Scope, ids, y *tensor.T, rows []string) *tensor.T {
	if ids.Size(0) != int64(len(rows)) {
		return s.Failf("lora: mixed batch: %d adapter names for an input of %d rows", len(rows), ids.Size(0))
	}
	order, groups := rowGroups(rows, func(n string) bool { _, ok := e.A.Get(n); return ok })
	for _, name := range order {
		g := groups[name]
		a, _ := e.A.Get(name)
		b, _ := e.B.Get(name)
		idx := s.FromInt64(g, int64(len(g)))
		sub := ids
		if len(g) != len(rows) {
			sub = s.IndexSelect(ids, 0, idx)
		}
		after := s.Embedding(s.Transpose(a.T(), 0, 1), sub)
		upd := s.MulScalar(s.Matmul(after, s.Transpose(b.T(), 0, 1)), e.scaling[name])
		if len(g) == len(rows) {
			y = s.Add(y, upd)
			continue
		}
		if y.DType() != upd.DType() {
			y = s.To(y, upd.DType())
		}
		y = s.IndexAdd(y, 0, idx, upd)
	}
	return y
}
