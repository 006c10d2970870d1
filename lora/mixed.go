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
	if MixedGatherAdapters > 0 && len(order) >= MixedGatherAdapters && l.noDropout(order) {
		return l.gatheredForward(s, x, y, rows, order)
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

// MixedGatherAdapters is the number of distinct adapters in one layer of a
// mixed batch from which the layer computes every row's update at once, in
// the form of Punica's BGMV (batched gather matrix-vector): each row's A
// and B are gathered (ranks zero-padded to the largest), and two batched
// matmuls give all the updates, a handful of ops whatever the number of
// adapters, where the grouped form runs ~7 ops per adapter. Below it (and
// with dropout on) the rows are grouped by adapter. 0 turns the gathered
// form off. Set it before forwards start (it is read without a lock).
var MixedGatherAdapters = 4

// noDropout reports whether the adapters' dropout is off (identity or not
// training): the gathered form has none.
func (l *Linear) noDropout(names []string) bool {
	for _, n := range names {
		d, _ := l.Dropout.Get(n)
		switch d := d.(type) {
		case *nn.Identity:
		case *nn.Dropout:
			if d.Train && d.P > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// gatheredForward adds every row's update in one pass: u_i = s_i·B_i A_i x_i
// with A_i, B_i the row's adapter (zero for base rows and adapters this
// layer does not have).
func (l *Linear) gatheredForward(s *tensor.Scope, x, y *tensor.T, rows, order []string) *tensor.T {
	rmax := int64(0)
	for _, n := range order {
		rmax = max(rmax, int64(l.rank[n]))
	}
	padA := map[string]*tensor.T{}
	padB := map[string]*tensor.T{}
	var zeroA, zeroB *tensor.T
	for _, n := range order {
		a, b := l.lin(l.A, n).Weight.T(), l.lin(l.B, n).Weight.T() // [r, in], [out, r]
		if r := a.Size(0); r < rmax {
			a = s.Cat(0, a, s.Zeros(a.DType(), rmax-r, a.Size(1)))
			b = s.Cat(1, b, s.Zeros(b.DType(), b.Size(0), rmax-r))
		}
		padA[n], padB[n] = a, b
	}
	as := make([]*tensor.T, len(rows))
	bs := make([]*tensor.T, len(rows))
	scale := make([]float32, len(rows))
	for i, n := range rows {
		a, ok := padA[n]
		if !ok { // base row, or an adapter this layer does not have
			if zeroA == nil {
				a0 := padA[order[0]]
				zeroA, zeroB = s.Zeros(a0.DType(), a0.Shape()...), s.Zeros(a0.DType(), padB[order[0]].Shape()...)
			}
			as[i], bs[i] = zeroA, zeroB
			continue
		}
		as[i], bs[i], scale[i] = a, padB[n], float32(l.scaling[n])
	}
	R := int64(len(rows))
	A := s.Stack(0, as...) // [R, r, in]
	B := s.Stack(0, bs...) // [R, out, r]
	xin := castTo(s, x, A.DType())
	in := xin.Size(xin.Dim() - 1)
	x3 := s.Reshape(xin, R, -1, in)                                                                     // [R, L, in]
	h := s.Mul(s.Matmul(x3, s.Transpose(A, 1, 2)), castTo(s, s.FromFloat32(scale, R, 1, 1), A.DType())) // [R, L, r]
	u := s.Matmul(h, s.Transpose(B, 1, 2))                                                              // [R, L, out]
	if s.Err() != nil {
		return nil
	}
	sh := y.Shape()
	return s.Add(y, s.Reshape(u, sh...))
}
