package vera

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// projections are an adapter's shared frozen matrices, vera_A [r, maxIn]
// and vera_B [maxOut, r]: every layer of the adapter holds the same value
// and uses its top-left [r, in] / [out, r] corner. They are not parameters
// of the module tree (PEFT keeps them as buffers): they are not counted,
// never train, and are saved once as base_model.vera_A / vera_B (when
// save_projection). users counts the layers holding them; the last one to
// let go frees them.
type projections struct {
	A, B  *nn.Param
	save  bool
	users int
}

func (p *projections) release() {
	p.users--
	if p.users == 0 {
		p.A.Free()
		p.B.Free()
	}
}

// Linear is PEFT's VeRA layer around a base nn.Linear or GPT-2 nn.Conv1D:
//
//	y = base(x) + λ_b ⊙ (B[:out] · (λ_d ⊙ (A[:, :in] · dropout(x))))
//
// with per-layer trainable vectors vera_lambda_b [out] and vera_lambda_d
// [r] and the adapter's shared frozen projections A, B. Several active
// adapters add their updates. It merges: W += (λ_b ⊙ B[:out]) · (λ_d ⊙ A[:, :in]).
//
// A Linear is not safe for concurrent mutation; concurrent forwards are
// safe while its adapters do not change.
type Linear struct {
	Base    nn.Layer       `nn:"base_layer"`
	Dropout *nn.ModuleDict `nn:"vera_dropout"`
	LambdaB *nn.ParamDict  `nn:"vera_lambda_b"`
	LambdaD *nn.ParamDict  `nn:"vera_lambda_d"`

	proj     map[string]*projections
	in, out  int64
	conv     bool // Conv1D: the base weight is [in, out]
	active   []string
	disabled bool
	merged   []string
}

func (*Linear) TypeName() string { return "vera.Linear" }

// baseWeight returns the base weight and whether it is stored [in, out].
func baseWeight(base nn.Layer) (*nn.Param, bool, error) {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Weight, false, nil
	case *nn.Conv1D:
		return b.Weight, true, nil
	}
	return nil, false, fmt.Errorf("VeRA supports Linear and Conv1D layers, not %s", nn.TypeName(base))
}

// layerShape is a Linear/Conv1D layer's [out, in].
func layerShape(base nn.Layer) (out, in int64, err error) {
	w, conv, err := baseWeight(base)
	if err != nil {
		return 0, 0, err
	}
	sh := w.Shape()
	if conv {
		return sh[1], sh[0], nil
	}
	return sh[0], sh[1], nil
}

func newLinear(base nn.Layer) (*Linear, error) {
	out, in, err := layerShape(base)
	if err != nil {
		return nil, err
	}
	_, conv, _ := baseWeight(base)
	return &Linear{Base: base, Dropout: nn.NewModuleDict(), LambdaB: nn.NewParamDict(), LambdaD: nn.NewParamDict(),
		proj: map[string]*projections{}, in: in, out: out, conv: conv}, nil
}

// addAdapter is PEFT's update_layer: λ_b = 0 and λ_d = d_initial (init),
// or λ_b = 1 and λ_d ~ N(0, 1).
func (l *Linear) addAdapter(name string, c *Config, p *projections) error {
	r := int64(c.rank())
	if a := p.A.Shape(); a[0] < r || a[1] < l.in {
		return fmt.Errorf("vera_A has shape %v; [%d, %d] or larger is needed", a, r, l.in)
	}
	if b := p.B.Shape(); b[0] < l.out || b[1] < r {
		return fmt.Errorf("vera_B has shape %v; [%d, %d] or larger is needed", b, l.out, r)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	var lb, ld *tensor.T
	if c.initWeights() {
		lb = s.Zeros(tensor.Float32, l.out)
		ld = s.Full(tensor.Float32, c.dInitial(), r)
	} else {
		lb = s.Ones(tensor.Float32, l.out)
		ld = s.Randn(tensor.Float32, r)
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.LambdaB.Set(name, nn.NewParam(s.Keep(lb)))
	l.LambdaD.Set(name, nn.NewParam(s.Keep(ld)))
	if c.VeraDropout > 0 {
		l.Dropout.Set(name, &nn.Dropout{P: c.VeraDropout})
	} else {
		l.Dropout.Set(name, &nn.Identity{})
	}
	p.users++
	l.proj[name] = p
	return nil
}

// factors are adapter name's λ_b [out, 1], λ_d [r, 1] and the corners of
// its projections, A [r, in] and B [out, r].
func (l *Linear) factors(s *tensor.Scope, name string) (lb, ld, a, b *tensor.T) {
	pb, _ := l.LambdaB.Get(name)
	pd, _ := l.LambdaD.Get(name)
	p := l.proj[name]
	r := pd.Shape()[0]
	a = s.Narrow(s.Narrow(p.A.T(), 0, 0, r), 1, 0, l.in)
	b = s.Narrow(s.Narrow(p.B.T(), 0, 0, l.out), 1, 0, r)
	return pb.T(), pd.T(), a, b
}

// Forward implements nn.Layer. The branch computes in the adapter's dtype
// (float32) and the sum is cast back to the input's dtype, as PEFT does.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off || len(l.merged) > 0 {
		return l.Base.Forward(s, x)
	}
	if peft.CallRows(s) != nil {
		return s.Failf("vera: %s cannot run a different adapter per batch row (mixed-adapter batches are not supported by VeRA layers)", l.TypeName())
	}
	y := l.Base.Forward(s, x)
	dt := x.DType()
	for _, name := range names {
		if _, ok := l.LambdaB.Get(name); !ok {
			continue
		}
		lb, ld, a, b := l.factors(s, name)
		drop, _ := l.Dropout.Get(name)
		xa := drop.(nn.Layer).Forward(s, s.To(x, ld.DType()))
		h := s.Mul(s.Linear(xa, a, nil), ld)
		h = s.Mul(s.Linear(h, b, nil), lb)
		y = s.Add(s.To(y, h.DType()), h)
	}
	if y != nil && y.DType() != dt {
		y = s.To(y, dt)
	}
	return y
}

// delta is ΔW of adapter name in the base weight's layout, float32:
// (λ_b ⊙ B) · (λ_d ⊙ A), transposed for Conv1D.
func (l *Linear) delta(s *tensor.Scope, name string) *tensor.T {
	lb, ld, a, b := l.factors(s, name)
	d := s.Matmul(s.Mul(b, s.Unsqueeze(lb, -1)), s.Mul(a, s.Unsqueeze(ld, -1)))
	if l.conv {
		d = s.Transpose(d, 0, 1)
	}
	return d
}

// DeltaWeight returns adapter name's ΔW in the base weight's layout
// (float32, [out, in] or Conv1D's [in, out]); the caller owns it.
func (l *Linear) DeltaWeight(name string) (*tensor.T, error) {
	if _, ok := l.LambdaB.Get(name); !ok {
		return nil, fmt.Errorf("vera: no adapter %q in this layer (have %v)", name, l.Adapters())
	}
	s := tensor.NoGradScope()
	defer s.Close()
	d := s.Contiguous(l.delta(s, name))
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Keep(d), nil
}

// Merge folds adapters into the base weight: W += ΔW, computed in float32
// and stored in W's dtype.
func (l *Linear) Merge(names []string, safe bool) error {
	w, _, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.LambdaB.Get(name); !ok {
			continue
		}
		nw := s.To(s.Add(s.To(w.T(), tensor.Float32), l.delta(s, name)), w.DType())
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(s.Contiguous(nw)))
		l.merged = append(l.merged, name)
	}
	return s.Err()
}

// Unmerge subtracts every merged adapter again, last merged first.
func (l *Linear) Unmerge() error {
	w, _, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		nw := s.Contiguous(s.To(s.Sub(s.To(w.T(), tensor.Float32), l.delta(s, name)), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		w.Set(s.Keep(nw))
		l.merged = l.merged[:len(l.merged)-1]
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer      { return l.Base }
func (l *Linear) Adapters() []string       { return l.LambdaB.Keys() }
func (l *Linear) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *Linear) Merged() []string         { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's vectors (and its projections when no
// other layer holds them).
func (l *Linear) DeleteAdapter(name string) {
	for _, d := range []*nn.ParamDict{l.LambdaB, l.LambdaD} {
		if p, ok := d.Get(name); ok {
			p.Free()
			d.Delete(name)
		}
	}
	l.Dropout.Delete(name)
	if p, ok := l.proj[name]; ok {
		p.release()
		delete(l.proj, name)
	}
}

// FreeBuffers implements nn.BufferFreer: the layer lets go of its
// adapters' shared projections (freed with the last layer holding them).
func (l *Linear) FreeBuffers() {
	for name, p := range l.proj {
		p.release()
		delete(l.proj, name)
	}
}

// AdapterState lists the adapter's vectors under PEFT's file names.
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	pb, ok := l.LambdaB.Get(name)
	if !ok {
		return nil
	}
	pd, _ := l.LambdaD.Get(name)
	return []nn.NamedParam{{Name: "vera_lambda_b", Param: pb}, {Name: "vera_lambda_d", Param: pd}}
}

// SharedAdapterState implements peft.SharedStater: the adapter's
// projections, saved as base_model.vera_A / vera_B when save_projection
// is set (otherwise they are drawn again from projection_prng_key).
func (l *Linear) SharedAdapterState(name string) []nn.NamedParam {
	p, ok := l.proj[name]
	if !ok || !p.save {
		return nil
	}
	return []nn.NamedParam{{Name: "vera_A", Param: p.A}, {Name: "vera_B", Param: p.B}}
}

// SetTrainable marks the adapter's vectors trainable or frozen (the
// projections never train).
func (l *Linear) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, d := range []*nn.ParamDict{l.LambdaB, l.LambdaD} {
		if p, ok := d.Get(name); ok {
			s.SetRequiresGrad(p.T(), on)
		}
	}
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
