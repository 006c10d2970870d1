package adalora

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// SVDLinear is PEFT's AdaLoRA layer around a base nn.Linear or GPT-2
// nn.Conv1D: the update is in SVD form, ΔW = B·diag(E)·A · alpha /
// (ranknum + 1e-5), with lora_A [r, in] (right singular vectors), lora_E
// [r, 1] (singular values, zeroed by the rank allocator) and lora_B
// [out, r] (left singular vectors); ranknum is the layer's rank when the
// adapter was created (a frozen [1] tensor, not saved). Parameter names
// are PEFT's ParameterDict names ("<layer>.lora_A.<adapter>").
//
// An SVDLinear is not safe for concurrent mutation; concurrent forwards
// while nothing changes are safe.
type SVDLinear struct {
	Base    nn.Layer       `nn:"base_layer"`
	Dropout *nn.ModuleDict `nn:"lora_dropout"`
	A       *nn.ParamDict  `nn:"lora_A"`
	B       *nn.ParamDict  `nn:"lora_B"`
	E       *nn.ParamDict  `nn:"lora_E"`
	Ranknum *nn.ParamDict  `nn:"ranknum"`

	alpha    map[string]float64 // PEFT's scaling: lora_alpha (or r when alpha <= 0)
	active   []string
	disabled bool
	merged   []string
	sens     map[string]*sensitivity // the rank allocator's state, per adapter
}

func (*SVDLinear) TypeName() string { return "adalora.SVDLinear" }

func newSVDLinear(base nn.Layer) *SVDLinear {
	return &SVDLinear{Base: base, Dropout: nn.NewModuleDict(), A: nn.NewParamDict(), B: nn.NewParamDict(),
		E: nn.NewParamDict(), Ranknum: nn.NewParamDict(), alpha: map[string]float64{}, sens: map[string]*sensitivity{}}
}

// baseWeight returns the base weight and whether it is stored [in, out].
func baseWeight(base nn.Layer) (*nn.Param, bool, error) {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Weight, false, nil
	case *nn.Conv1D:
		return b.Weight, true, nil
	}
	return nil, false, fmt.Errorf("AdaLoRA supports Linear and Conv1D layers, not %s", nn.TypeName(base))
}

// inOut returns the layer's input and output widths.
func (l *SVDLinear) inOut() (int64, int64) {
	w, t, _ := baseWeight(l.Base)
	sh := w.Shape()
	if t {
		return sh[0], sh[1]
	}
	return sh[1], sh[0]
}

// Rank is adapter name's current rank (rows of lora_A; 0 when absent).
func (l *SVDLinear) Rank(name string) int {
	a, ok := l.A.Get(name)
	if !ok {
		return 0
	}
	return int(a.Shape()[0])
}

// addAdapter creates adapter name with rank r (PEFT's update_layer):
// A, B ~ N(0, 0.02) and E = 0 when init, else N(0, 1); ranknum = r.
func (l *SVDLinear) addAdapter(name string, r int, alpha, dropout float64, init bool) error {
	in, out := l.inOut()
	s := tensor.NoGradScope()
	defer s.Close()
	rr := int64(r)
	a := s.Randn(tensor.Float32, rr, in)
	e := s.Randn(tensor.Float32, rr, 1)
	b := s.Randn(tensor.Float32, out, rr)
	if init {
		s.Normal(a, 0, 0.02)
		s.Normal(b, 0, 0.02)
		e = s.Zeros(tensor.Float32, rr, 1)
	}
	rank := s.Full(tensor.Float32, float64(r), 1)
	if err := s.Err(); err != nil {
		return err
	}
	l.A.Set(name, nn.NewParam(s.Keep(a)))
	l.E.Set(name, nn.NewParam(s.Keep(e)))
	l.B.Set(name, nn.NewParam(s.Keep(b)))
	l.Ranknum.Set(name, nn.NewParam(s.Keep(rank)))
	if alpha <= 0 {
		alpha = float64(r)
	}
	l.alpha[name] = alpha
	if dropout > 0 {
		l.Dropout.Set(name, &nn.Dropout{P: dropout})
	} else {
		l.Dropout.Set(name, &nn.Identity{})
	}
	return nil
}

// resize keeps the ranks of adapter name where keep is true (PEFT's
// resize_modules_by_rank_pattern): lora_A's and lora_E's rows, lora_B's
// columns. ranknum keeps its value, so the scale stays what it was.
func (l *SVDLinear) resize(name string, keep []bool) error {
	a, ok := l.A.Get(name)
	if !ok {
		return fmt.Errorf("no adapter %q", name)
	}
	if r := int(a.Shape()[0]); r != len(keep) {
		return fmt.Errorf("the rank pattern has %d entries, the layer's rank is %d", len(keep), r)
	}
	var idx []int64
	for i, on := range keep {
		if on {
			idx = append(idx, int64(i))
		}
	}
	if len(idx) == len(keep) {
		return nil
	}
	s := tensor.NoGradScope()
	defer s.Close()
	d := a.T().Device()
	s.SetDevice(d)
	ix := s.FromInt64(idx, int64(len(idx)))
	e, _ := l.E.Get(name)
	b, _ := l.B.Get(name)
	na := s.Contiguous(s.IndexSelect(a.T(), 0, ix))
	ne := s.Contiguous(s.IndexSelect(e.T(), 0, ix))
	nb := s.Contiguous(s.IndexSelect(b.T(), 1, ix))
	if err := s.Err(); err != nil {
		return err
	}
	trainable := a.RequiresGrad()
	for _, p := range []struct {
		p *nn.Param
		t *tensor.T
	}{{a, na}, {e, ne}, {b, nb}} {
		t := s.Keep(p.t)
		p.p.Set(t)
		s.SetRequiresGrad(t, trainable)
	}
	l.resetSensitivity(name)
	return s.Err()
}

// Forward implements nn.Layer: base(x) + dropout(x)·(A⊙E)ᵀ·Bᵀ · alpha /
// (ranknum + 1e-5), summed over the call's adapters.
func (l *SVDLinear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if peft.CallRows(s) != nil {
		return s.Failf("adalora: SVDLinear cannot run a different adapter per batch row (mixed-adapter batches are not supported by AdaLoRA)")
	}
	y := l.Base.Forward(s, x)
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off || len(l.merged) > 0 {
		return y
	}
	outDT := y.DType()
	for _, name := range names {
		a, ok := l.A.Get(name)
		if !ok {
			continue
		}
		e, _ := l.E.Get(name)
		b, _ := l.B.Get(name)
		rn, _ := l.Ranknum.Get(name)
		drop, _ := l.Dropout.Get(name)
		xa := drop.(nn.Layer).Forward(s, castTo(s, x, a.DType()))
		h := s.Linear(s.Linear(xa, s.Mul(a.T(), e.T()), nil), b.T(), nil)
		h = s.Div(s.MulScalar(h, l.alpha[name]), s.AddScalar(rn.T(), 1e-5))
		y = s.Add(y, h)
	}
	return castTo(s, y, outDT)
}

func castTo(s *tensor.Scope, t *tensor.T, dt tensor.DType) *tensor.T {
	if t == nil || t.DType() == dt {
		return t
	}
	return s.To(t, dt)
}

// delta is adapter name's ΔW in the base weight's layout (float32).
func (l *SVDLinear) delta(s *tensor.Scope, name string, transposed bool) *tensor.T {
	a, _ := l.A.Get(name)
	e, _ := l.E.Get(name)
	b, _ := l.B.Get(name)
	rn, _ := l.Ranknum.Get(name)
	d := s.Matmul(b.T(), s.Mul(a.T(), e.T()))
	if transposed {
		d = s.Transpose(d, 0, 1)
	}
	return s.Div(s.MulScalar(d, l.alpha[name]), s.AddScalar(rn.T(), 1e-5))
}

// Merge folds adapters into the base weight, W += ΔW (computed in float32,
// stored in W's dtype); safe refuses a non-finite result.
func (l *SVDLinear) Merge(names []string, safe bool) error {
	w, t, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.A.Get(name); !ok {
			continue
		}
		nw := s.Contiguous(castTo(s, s.Add(castTo(s, w.T(), tensor.Float32), l.delta(s, name, t)), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(nw))
		l.merged = append(l.merged, name)
		s.FreeAll()
	}
	return s.Err()
}

// Unmerge subtracts the merged adapters again, last merged first.
func (l *SVDLinear) Unmerge() error {
	w, t, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		nw := s.Contiguous(castTo(s, s.Sub(castTo(s, w.T(), tensor.Float32), l.delta(s, name, t)), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		w.Set(s.Keep(nw))
		l.merged = l.merged[:len(l.merged)-1]
		s.FreeAll()
	}
	return s.Err()
}

func (l *SVDLinear) BaseLayer() nn.Layer      { return l.Base }
func (l *SVDLinear) Adapters() []string       { return l.A.Keys() }
func (l *SVDLinear) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *SVDLinear) Merged() []string         { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *SVDLinear) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's parameters and allocator state.
func (l *SVDLinear) DeleteAdapter(name string) {
	l.A.Delete(name)
	l.B.Delete(name)
	l.E.Delete(name)
	l.Ranknum.Delete(name)
	l.Dropout.Delete(name)
	delete(l.alpha, name)
	l.resetSensitivity(name)
}

// AdapterState lists the adapter's tensors under PEFT's file names
// (lora_A, lora_B, lora_E; ranknum is not saved).
func (l *SVDLinear) AdapterState(name string) []nn.NamedParam {
	a, ok := l.A.Get(name)
	if !ok {
		return nil
	}
	b, _ := l.B.Get(name)
	e, _ := l.E.Get(name)
	return []nn.NamedParam{{Name: "lora_A", Param: a}, {Name: "lora_B", Param: b}, {Name: "lora_E", Param: e}}
}

// SetTrainable marks the adapter's A, E and B trainable or frozen
// (ranknum never trains).
func (l *SVDLinear) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, d := range []*nn.ParamDict{l.A, l.B, l.E} {
		if p, ok := d.Get(name); ok {
			s.SetRequiresGrad(p.T(), on)
		}
	}
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *SVDLinear) ExtraRepr() string { return "" }
