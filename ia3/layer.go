package ia3

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Linear is PEFT's IA3 layer around a base nn.Linear or GPT-2 nn.Conv1D.
// Each adapter owns one vector ia3_l (PEFT's ParameterDict, so its
// in-memory name is "<layer>.ia3_l.<adapter>" and its saved name
// "<layer>.ia3_l"):
//
//   - attention layers: ia3_l is [out, 1] and scales the output,
//     y = base(x) ⊙ l (the bias is scaled too);
//   - feed-forward layers: ia3_l is [1, in] and scales the input,
//     y = base(x ⊙ l).
//
// Several active adapters multiply their vectors.
type Linear struct {
	Base nn.Layer      `nn:"base_layer"`
	L    *nn.ParamDict `nn:"ia3_l"`

	feedforward bool
	active      []string
	disabled    bool
	merged      []string
}

func (*Linear) TypeName() string { return "ia3.Linear" }

// IsFeedforward reports whether the layer scales its input (feed-forward)
// rather than its output.
func (l *Linear) IsFeedforward() bool { return l.feedforward }

func newLinear(base nn.Layer, feedforward bool) *Linear {
	return &Linear{Base: base, L: nn.NewParamDict(), feedforward: feedforward}
}

// baseWeight returns the base weight and whether it is stored [in, out]
// (Conv1D, PEFT's fan_in_fan_out).
func baseWeight(base nn.Layer) (*nn.Param, *nn.Param, bool, error) {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Weight, b.Bias, false, nil
	case *nn.Conv1D:
		return b.Weight, b.Bias, true, nil
	}
	return nil, nil, false, fmt.Errorf("IA3 supports Linear and Conv1D layers, not %s", nn.TypeName(base))
}

// inOut returns the layer's input and output widths.
func (l *Linear) inOut() (int64, int64) {
	w, _, t, _ := baseWeight(l.Base)
	sh := w.Shape()
	if t {
		return sh[0], sh[1]
	}
	return sh[1], sh[0]
}

// addAdapter creates adapter name's vector (PEFT's update_layer): ones, or
// N(0, 1) when init is false.
func (l *Linear) addAdapter(name string, ones bool) error {
	in, out := l.inOut()
	shape := []int64{out, 1}
	if l.feedforward {
		shape = []int64{1, in}
	}
	s := tensor.NoGradScope()
	defer s.Close()
	var v *tensor.T
	if ones {
		v = s.Ones(tensor.Float32, shape...)
	} else {
		v = s.Randn(tensor.Float32, shape...)
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.L.Set(name, nn.NewParam(s.Keep(v)))
	return nil
}

// scaling is the product of the active adapters' flattened vectors, or nil
// when no active adapter lives here.
func (l *Linear) scaling(s *tensor.Scope, names []string) *tensor.T {
	var sc *tensor.T
	for _, name := range names {
		p, ok := l.L.Get(name)
		if !ok {
			continue
		}
		v := s.Reshape(p.T(), -1)
		if sc == nil {
			sc = v
		} else {
			sc = s.Mul(sc, v)
		}
	}
	return sc
}

// Forward implements nn.Layer with the adapters of the call in s
// (peft.CallAdapters). IA3 cannot run a different adapter per row: a
// mixed call (peft.CallRows) fails.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if len(l.merged) > 0 {
		if err := peft.CheckMergedCall(s, "ia3.Linear", l.merged); err != nil {
			return s.Fail(err)
		}
		return l.Base.Forward(s, x)
	}
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off {
		return l.Base.Forward(s, x)
	}
	if peft.CallRows(s) != nil {
		return s.Failf("ia3.Linear: IA3 cannot run a different adapter per row (mixed batch)")
	}
	sc := l.scaling(s, names)
	if sc == nil {
		return l.Base.Forward(s, x)
	}
	dt := x.DType()
	if l.feedforward {
		xs := s.Mul(s.To(x, sc.DType()), sc)
		w, _, _, _ := baseWeight(l.Base)
		if w != nil && xs != nil && xs.DType() != w.DType() {
			xs = s.To(xs, w.DType())
		}
		y := l.Base.Forward(s, xs)
		if y != nil && y.DType() != dt {
			y = s.To(y, dt)
		}
		return y
	}
	y := s.Mul(s.To(l.Base.Forward(s, x), sc.DType()), sc)
	if y != nil && y.DType() != dt {
		y = s.To(y, dt)
	}
	return y
}

// factor is adapter name's vector shaped to multiply the stored weight:
// rows ([out, 1]) or columns ([1, in]) of a Linear's [out, in] weight,
// transposed for Conv1D's [in, out].
func (l *Linear) factor(s *tensor.Scope, name string, transposed bool) *tensor.T {
	p, _ := l.L.Get(name)
	v := p.T()
	if transposed {
		v = s.Transpose(v, 0, 1)
	}
	return v
}

// Merge folds adapters into the base weight: W ← W ⊙ l (rows for attention
// layers, columns for feed-forward ones), and for attention layers the bias
// b ← b ⊙ l.
func (l *Linear) Merge(names []string, safe bool) error {
	w, b, t, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		p, ok := l.L.Get(name)
		if !ok {
			continue
		}
		nw := s.Contiguous(s.Mul(w.T(), s.To(l.factor(s, name, t), w.DType())))
		var nb *tensor.T
		if !l.feedforward && b != nil {
			nb = s.Mul(b.T(), s.To(s.Reshape(p.T(), -1), b.DType()))
		}
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(nw))
		if nb != nil {
			b.Set(s.Keep(nb))
		}
		l.merged = append(l.merged, name)
	}
	return s.Err()
}

// Unmerge divides the merged vectors out again, last merged first. As in
// PEFT it divides by l + 1e-8, so it is exact only up to that epsilon.
func (l *Linear) Unmerge() error {
	w, b, t, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		p, _ := l.L.Get(name)
		nw := s.Contiguous(s.Div(w.T(), s.AddScalar(s.To(l.factor(s, name, t), w.DType()), 1e-8)))
		var nb *tensor.T
		if !l.feedforward && b != nil {
			nb = s.Div(b.T(), s.AddScalar(s.To(s.Reshape(p.T(), -1), b.DType()), 1e-8))
		}
		if err := s.Err(); err != nil {
			return err
		}
		w.Set(s.Keep(nw))
		if nb != nil {
			b.Set(s.Keep(nb))
		}
		l.merged = l.merged[:len(l.merged)-1]
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer      { return l.Base }
func (l *Linear) Adapters() []string       { return l.L.Keys() }
func (l *Linear) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *Linear) Merged() []string         { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's vector.
func (l *Linear) DeleteAdapter(name string) { l.L.Delete(name) }

// AdapterState lists the adapter's tensor under PEFT's file name "ia3_l".
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	p, ok := l.L.Get(name)
	if !ok {
		return nil
	}
	return []nn.NamedParam{{Name: "ia3_l", Param: p}}
}

// SetTrainable marks the adapter's vector trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	p, ok := l.L.Get(name)
	if !ok {
		return nil
	}
	s := tensor.NewScope()
	defer s.Close()
	s.SetRequiresGrad(p.T(), on)
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
