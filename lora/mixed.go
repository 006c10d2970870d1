package lora

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// SetRowAdapters implements peft.RowAdapterSetter: names gives each batch
// row's adapter (or peft.BaseAdapterName) for the following forwards; nil
// clears it. As in PEFT, it refuses a layer with merged adapters and DoRA
// adapters among the names.
func (l *Linear) SetRowAdapters(names []string) error {
	if names == nil {
		l.rows = nil
		return nil
	}
	if len(l.merged) > 0 {
		return fmt.Errorf("adapters %v are merged: unmerge before running a mixed batch", l.merged)
	}
	for _, n := range names {
		if n != peft.BaseAdapterName && l.isDoRA(n) {
			return fmt.Errorf("adapter %q uses DoRA, which cannot run in a mixed batch", n)
		}
	}
	l.rows = append([]string(nil), names...)
	return nil
}

// mixedForward adds each adapter's update to its own rows of the base
// output y (PEFT's _mixed_batch_forward): y[rows_a] += B(A(dropout(x[rows_a])))·s_a.
func (l *Linear) mixedForward(s *tensor.Scope, x, y *tensor.T, rows []string) *tensor.T {
	if x.Size(0) != int64(len(rows)) {
		return s.Failf("lora: mixed batch: %d adapter names for an input of %d rows", len(rows), x.Size(0))
	}
	var order []string
	groups := map[string][]int64{}
	for i, name := range rows {
		if name == peft.BaseAdapterName {
			continue
		}
		if _, ok := l.A.Get(name); !ok {
			continue // this layer has no such adapter: base output for those rows
		}
		if l.isDoRA(name) {
			return s.Failf("lora: mixed batch: adapter %q uses DoRA", name)
		}
		if _, seen := groups[name]; !seen {
			order = append(order, name)
		}
		groups[name] = append(groups[name], int64(i))
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
