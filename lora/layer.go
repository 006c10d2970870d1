package lora

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Linear is a LoRA layer around a base nn.Linear, GPT-2 nn.Conv1D or 4-bit
// quant.Linear (QLoRA, see quant.go):
// y = base(x) + Σ_active B(A(dropout(x)))·scaling, with DoRA's magnitude
// rescaling for adapters that use it. Its children are PEFT's
// (base_layer, lora_dropout, lora_A, lora_B, lora_magnitude_vector), each
// a dict keyed by adapter name, so parameter names match PEFT's in-memory
// ones.
type Linear struct {
	Base      nn.Layer       `nn:"base_layer"`
	Dropout   *nn.ModuleDict `nn:"lora_dropout"`
	A         *nn.ModuleDict `nn:"lora_A"`
	B         *nn.ModuleDict `nn:"lora_B"`
	Magnitude *nn.ModuleDict `nn:"lora_magnitude_vector"`

	scaling  map[string]float64
	rank     map[string]int
	active   []string
	disabled bool
	merged   []string
	// doraFactor keeps m/‖W+ΔW‖ of a merged DoRA adapter, for unmerge.
	doraFactor map[string]*tensor.T
	// quantBase is the 4-bit base layer while a merge holds its
	// dequantized copy in Base (quant.go).
	quantBase *quant.Linear
}

// Magnitude is DoRA's learned per-output-row magnitude (PEFT's
// lora_magnitude_vector.<adapter>.weight, saved as lora_magnitude_vector).
type Magnitude struct {
	Weight *nn.Param `nn:"weight"`
}

func (*Linear) TypeName() string    { return "lora.Linear" }
func (*Magnitude) TypeName() string { return "ParameterDict" }

func newLinear(base nn.Layer) *Linear {
	return &Linear{
		Base: base, Dropout: nn.NewModuleDict(), A: nn.NewModuleDict(), B: nn.NewModuleDict(),
		scaling: map[string]float64{}, rank: map[string]int{}, doraFactor: map[string]*tensor.T{},
	}
}

// weight returns the base weight as [out, in] (transposed for Conv1D) and
// whether it was transposed.
func baseWeight(base nn.Layer) (*nn.Param, bool, error) {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Weight, false, nil
	case *nn.Conv1D:
		return b.Weight, true, nil
	}
	return nil, false, fmt.Errorf("LoRA supports Linear and Conv1D layers, not %s", nn.TypeName(base))
}

func baseBias(base nn.Layer) *nn.Param {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Bias
	case *nn.Conv1D:
		return b.Bias
	}
	return nil
}

// inOut returns the layer's input and output widths.
func (l *Linear) inOut() (int64, int64) {
	if in, out, ok := quantInOut(l.Base); ok {
		return in, out
	}
	w, fanInFanOut, _ := baseWeight(l.Base)
	sh := w.Shape()
	if fanInFanOut {
		return sh[0], sh[1]
	}
	return sh[1], sh[0]
}

// addAdapter creates adapter name's parameters (PEFT's update_layer).
func (l *Linear) addAdapter(name string, r int, alpha float64, cfg *Config) error {
	in, out := l.inOut()
	s := tensor.NoGradScope()
	defer s.Close()
	kind, niter, err := parseInit(cfg.InitLoraWeights.Value)
	if err != nil {
		return err
	}
	var a, b *tensor.T
	switch kind {
	case initKaiming: // kaiming_uniform(a=√5): U(±1/√in); B = 0
		bound := 1 / math.Sqrt(float64(in))
		a = s.Uniform(tensor.Float32, -bound, bound, int64(r), in)
		b = s.Zeros(tensor.Float32, out, int64(r))
	case initGaussian:
		a = s.MulScalar(s.Randn(tensor.Float32, int64(r), in), 1/float64(r))
		b = s.Zeros(tensor.Float32, out, int64(r))
	case initFalse: // nn.Linear's own init for both
		ba, bb := 1/math.Sqrt(float64(in)), 1/math.Sqrt(float64(r))
		a = s.Uniform(tensor.Float32, -ba, ba, int64(r), in)
		b = s.Uniform(tensor.Float32, -bb, bb, out, int64(r))
	default: // pissa, olora, loftq: from the base weight, which they rewrite (init.go)
		if a, b, err = l.dataInit(s, kind, niter, r, cfg.Scaling(r, alpha), cfg); err != nil {
			return err
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.A.Set(name, &nn.Linear{Weight: nn.NewParam(s.Keep(a))})
	l.B.Set(name, &nn.Linear{Weight: nn.NewParam(s.Keep(b))})
	if cfg.LoraDropout > 0 {
		l.Dropout.Set(name, &nn.Dropout{P: cfg.LoraDropout})
	} else {
		l.Dropout.Set(name, &nn.Identity{})
	}
	l.rank[name] = r
	l.scaling[name] = cfg.Scaling(r, alpha)
	if cfg.UseDoRA {
		if l.Magnitude == nil {
			l.Magnitude = nn.NewModuleDict()
		}
		m := s.RowNorm(l.effectiveWeight(s, l.baseWeightT(s), name)) // with B = 0: ‖W‖ per row
		l.Magnitude.Set(name, &Magnitude{Weight: nn.NewParam(s.Keep(s.Detach(m)))})
	}
	return s.Err()
}

func (l *Linear) isDoRA(name string) bool {
	if l.Magnitude == nil {
		return false
	}
	_, ok := l.Magnitude.Get(name)
	return ok
}

func (l *Linear) lin(d *nn.ModuleDict, name string) *nn.Linear {
	m, _ := d.Get(name)
	return m.(*nn.Linear)
}

// delta is B·A·scaling as [out, in].
func (l *Linear) delta(s *tensor.Scope, name string) *tensor.T {
	return s.MulScalar(s.Matmul(l.lin(l.B, name).Weight.T(), l.lin(l.A, name).Weight.T()), l.scaling[name])
}

// effectiveWeight is W + ΔW as [out, in] (W transposed for Conv1D).
func (l *Linear) effectiveWeight(s *tensor.Scope, w *tensor.T, name string) *tensor.T {
	_, t, _ := baseWeight(l.Base)
	if t {
		w = s.Transpose(w, 0, 1)
	}
	return s.Add(w, l.delta(s, name))
}

// Forward implements nn.Layer: it runs the adapters of the call in s
// (peft.CallAdapters; per row with peft.CallRows). On a half-precision base with float32
// adapters (PEFT's autocast_adapter_dtype) the input is cast to the
// adapter's dtype, the update is added in that dtype and the sum is cast
// back to the base output's dtype, as PEFT does.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	y := l.Base.Forward(s, x)
	if len(l.merged) > 0 {
		return mergedCall(s, "lora.Linear", l.merged, y)
	}
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off {
		return y
	}
	rows := peft.CallRows(s)
	outDT := y.DType()
	if rows != nil { // a mixed batch (peft.Model.ForwardMixed)
		return castTo(s, l.mixedForward(s, x, y, rows), outDT)
	}
	for _, name := range names {
		if _, ok := l.A.Get(name); !ok {
			continue
		}
		drop, _ := l.Dropout.Get(name)
		a := l.lin(l.A, name)
		xa := drop.(nn.Layer).Forward(s, castTo(s, x, a.Weight.DType()))
		lora := s.MulScalar(l.lin(l.B, name).Forward(s, a.Forward(s, xa)), l.scaling[name])
		if !l.isDoRA(name) {
			y = s.Add(y, lora)
			continue
		}
		// DoRA: y + (g-1)·(x W^T) + g·lora, g = m / stopgrad(‖W + ΔW‖_row)
		_, t, _ := baseWeight(l.Base)
		ng := tensor.NoGradScope()
		norm := ng.Keep(ng.RowNorm(l.effectiveWeight(ng, l.baseWeightT(ng), name)))
		err := ng.Err()
		ng.Close()
		if err != nil {
			return s.Fail(err)
		}
		s.Track(norm)
		mag, _ := l.Magnitude.Get(name)
		g := s.Div(mag.(*Magnitude).Weight.T(), norm)
		wt := castTo(s, l.baseWeightT(s), xa.DType())
		if t {
			wt = s.Transpose(wt, 0, 1)
		}
		baseOut := s.Linear(xa, wt, nil)
		y = s.Add(y, s.Add(s.Mul(s.AddScalar(g, -1), baseOut), s.Mul(g, lora)))
	}
	return castTo(s, y, outDT)
}

// castTo is t in dtype dt (t itself when it has it).
func castTo(s *tensor.Scope, t *tensor.T, dt tensor.DType) *tensor.T {
	if t == nil || t.DType() == dt {
		return t
	}
	return s.To(t, dt)
}

// Merge folds adapters into the base weight: W += ΔW (transposed for
// Conv1D), or DoRA's W' = m/‖W+ΔW‖ ⊙ (W+ΔW).
func (l *Linear) Merge(names []string, safe bool) error {
	if err := l.dequantizeForMerge(names); err != nil { // 4-bit base: merge into a float copy
		return err
	}
	defer l.restoreIfUnmerged()
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
		var nw *tensor.T
		if l.isDoRA(name) {
			eff := l.effectiveWeight(s, w.T(), name)
			mag, _ := l.Magnitude.Get(name)
			factor := s.Div(mag.(*Magnitude).Weight.T(), s.RowNorm(eff))
			nw = s.Mul(s.Unsqueeze(factor, 1), eff)
			if t {
				nw = s.Transpose(nw, 0, 1)
			}
			l.doraFactor[name] = s.Keep(factor)
		} else {
			d := l.delta(s, name)
			if t {
				d = s.Transpose(d, 0, 1)
			}
			nw = s.Add(w.T(), d)
		}
		nw = s.Contiguous(castTo(s, nw, w.DType())) // a bf16 base stays bf16 (PEFT's in-place +=)
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				l.doraFactor[name].Free()
				delete(l.doraFactor, name)
				return err
			}
		}
		w.Set(s.Keep(nw))
		l.merged = append(l.merged, name)
	}
	return s.Err()
}

// Unmerge subtracts merged adapters, last merged first.
func (l *Linear) Unmerge() error {
	if l.restoreQuantBase() { // the untouched 4-bit layer comes back
		return nil
	}
	if len(l.merged) == 0 {
		return nil
	}
	w, t, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		d := l.delta(s, name)
		if t {
			d = s.Transpose(d, 0, 1)
		}
		var nw *tensor.T
		if f, ok := l.doraFactor[name]; ok {
			cur := w.T()
			if t {
				cur = s.Transpose(cur, 0, 1)
			}
			orig := s.Div(cur, s.Unsqueeze(f, 1))
			if t {
				orig = s.Transpose(orig, 0, 1)
			}
			nw = s.Sub(orig, d)
			f.Free()
			delete(l.doraFactor, name)
		} else {
			nw = s.Sub(w.T(), d)
		}
		nw = s.Contiguous(castTo(s, nw, w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		w.Set(s.Keep(nw))
		l.merged = l.merged[:len(l.merged)-1]
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer      { return l.Base }
func (l *Linear) Adapters() []string       { return l.A.Keys() }
func (l *Linear) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *Linear) Merged() []string         { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's parameters.
func (l *Linear) DeleteAdapter(name string) {
	for _, d := range []*nn.ModuleDict{l.A, l.B, l.Magnitude} {
		if d == nil {
			continue
		}
		if m, ok := d.Get(name); ok {
			nn.FreeParams(m)
			d.Delete(name)
		}
	}
	l.Dropout.Delete(name)
	if l.Magnitude != nil && l.Magnitude.Len() == 0 {
		l.Magnitude = nil
	}
	delete(l.scaling, name)
	delete(l.rank, name)
}

// AdapterState lists the adapter's tensors under PEFT's file names.
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	if _, ok := l.A.Get(name); !ok {
		return nil
	}
	out := []nn.NamedParam{
		{Name: "lora_A.weight", Param: l.lin(l.A, name).Weight},
		{Name: "lora_B.weight", Param: l.lin(l.B, name).Weight},
	}
	if l.isDoRA(name) {
		m, _ := l.Magnitude.Get(name)
		out = append(out, nn.NamedParam{Name: "lora_magnitude_vector", Param: m.(*Magnitude).Weight})
	}
	return out
}

// SetTrainable marks the adapter's parameters trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, np := range l.AdapterState(name) {
		s.SetRequiresGrad(np.Param.T(), on)
	}
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
