package lycoris

import (
	"fmt"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Method is what a LyCORIS method supplies to Layer: the names of its
// per-adapter parameter dictionaries and how an adapter's ΔW is made from
// them. Implementations are stateless values, safe for concurrent use.
type Method interface {
	// Name is the method as messages write it ("LoHa", "LoKr").
	Name() string
	// ParamNames lists the parameter dictionaries in PEFT's
	// adapter_layer_names order ("hada_w1_a", …): the layer's children
	// (beside base_layer) and the adapter's keys in adapter files.
	ParamNames() []string
	// Delta is the adapter's ΔW as [out, in] (Linear's weight layout),
	// multiplied by a.DeltaScale, before rank dropout; param returns the
	// adapter's tensor in a dictionary, or nil when it has none there.
	Delta(s *tensor.Scope, a *Adapter, param func(dict string) *tensor.T) *tensor.T
}

// Adapter is one adapter's settings in a layer (PEFT's per-adapter r,
// alpha, scaling, rank_dropout, module_dropout, rank_dropout_scale).
type Adapter struct {
	R     int
	Alpha float64
	// Scaling is alpha / r (PEFT's scaling).
	Scaling float64
	// DeltaScale is what Delta multiplies ΔW by: Scaling, or 1 for LoKr
	// adapters of PEFT < 0.14, which did not scale the Kronecker product.
	DeltaScale float64
	// RankDropout drops each output row of ΔW with this probability in
	// training; RankDropoutScale divides the kept rows by the kept share
	// (the mask's mean).
	RankDropout      float64
	RankDropoutScale bool
	// ModuleDropout skips the whole adapter with this probability in
	// training (one draw per forward).
	ModuleDropout float64
}

// Layer is PEFT's LycorisLayer around a base nn.Linear: y = base(x) +
// Σ_active x·ΔWᵀ. Its children are base_layer and one ParameterDict per
// name of Method.ParamNames, keyed by adapter, so the parameters' in-memory
// names are PEFT's (q_proj.hada_w1_a.default).
//
// Method packages embed it in their own layer type. Forwards of a Layer
// whose adapters do not change are safe to run concurrently; adding,
// merging, activating or deleting adapters is not.
type Layer struct {
	Base nn.Layer

	method   Method
	dicts    map[string]*nn.ParamDict
	adapters map[string]*Adapter
	names    []string
	active   []string
	disabled bool
	merged   []string
	training bool
}

// NewLayer wraps base for method. Only nn.Linear bases are supported
// (PEFT's LoHa/LoKr have Linear and Conv2d; the library has no Conv2d).
func NewLayer(method Method, base nn.Module, path string) (Layer, error) {
	lin, ok := base.(*nn.Linear)
	if !ok {
		return Layer{}, fmt.Errorf("%s: target module %q is a %s; %s supports Linear layers (PEFT's Conv2d layers do not exist in this library's models, and PEFT has no %s for GPT-2's Conv1D)",
			strings.ToLower(method.Name()), path, nn.TypeName(base), method.Name(), method.Name())
	}
	l := Layer{Base: lin, method: method, dicts: map[string]*nn.ParamDict{}, adapters: map[string]*Adapter{}}
	for _, n := range method.ParamNames() {
		l.dicts[n] = nn.NewParamDict()
	}
	return l, nil
}

// InOut is the base layer's input and output widths.
func (l *Layer) InOut() (in, out int64) {
	sh := l.weight().Shape()
	return sh[1], sh[0]
}

func (l *Layer) weight() *nn.Param { return l.Base.(*nn.Linear).Weight }

// AddAdapter stores adapter name's settings and parameters (dictionary
// name → tensor, which the layer then owns).
func (l *Layer) AddAdapter(name string, a *Adapter, params map[string]*tensor.T) error {
	if _, ok := l.adapters[name]; ok {
		return fmt.Errorf("adapter %q already exists in this layer", name)
	}
	for dict := range params {
		if _, ok := l.dicts[dict]; !ok {
			return fmt.Errorf("%s has no parameter %q", l.method.Name(), dict)
		}
	}
	for _, dict := range l.method.ParamNames() {
		if t, ok := params[dict]; ok {
			l.dicts[dict].Set(name, nn.NewParam(t))
		}
	}
	l.adapters[name] = a
	l.names = append(l.names, name)
	return nil
}

// Adapter returns adapter name's settings.
func (l *Layer) Adapter(name string) (*Adapter, bool) {
	a, ok := l.adapters[name]
	return a, ok
}

// Param returns adapter name's parameter in dictionary dict.
func (l *Layer) Param(dict, name string) (*nn.Param, bool) {
	d, ok := l.dicts[dict]
	if !ok {
		return nil, false
	}
	return d.Get(name)
}

// Children implements nn.Container: base_layer, then the dictionaries.
func (l *Layer) Children() []nn.Child {
	out := []nn.Child{{Name: "base_layer", Module: l.Base}}
	for _, n := range l.method.ParamNames() {
		out = append(out, nn.Child{Name: n, Module: l.dicts[n]})
	}
	return out
}

// SetChild implements nn.Container (only base_layer can be replaced).
func (l *Layer) SetChild(name string, m nn.Module) error {
	if name != "base_layer" {
		return fmt.Errorf("%s layer: child %q cannot be replaced", l.method.Name(), name)
	}
	lin, ok := m.(*nn.Linear)
	if !ok {
		return fmt.Errorf("%s layer: base_layer must be a Linear, not %s", l.method.Name(), nn.TypeName(m))
	}
	l.Base = lin
	return nil
}

// LocalParams implements nn.Container: the layer owns none directly.
func (l *Layer) LocalParams() []nn.NamedParam { return nil }

// SetTraining switches rank and module dropout on or off (nn.SetTraining).
func (l *Layer) SetTraining(on bool) { l.training = on }

// delta is adapter name's ΔW [out, in], with rank dropout when train.
func (l *Layer) delta(s *tensor.Scope, name string, train bool) *tensor.T {
	a := l.adapters[name]
	d := l.method.Delta(s, a, func(dict string) *tensor.T {
		if p, ok := l.dicts[dict].Get(name); ok {
			return p.T()
		}
		return nil
	})
	if d == nil || !train || a.RankDropout == 0 {
		return d
	}
	// PEFT: drop = (rand(out) > p); optionally drop /= drop.mean(); ΔW *= drop[:, None].
	// A mask that dropped every row stays zero here (PEFT divides 0 by 0).
	drop := s.To(s.GtScalar(s.Rand(tensor.Float32, d.Shape()[0]), a.RankDropout), d.DType())
	if a.RankDropoutScale {
		drop = s.Div(drop, s.ClampMin(s.Mean(drop, false, 0), 1e-30))
	}
	return s.Mul(d, s.Unsqueeze(drop, 1))
}

// Delta is adapter name's ΔW [out, in] as merging adds it (no dropout),
// computed in s; nil when the layer has no such adapter.
func (l *Layer) Delta(s *tensor.Scope, name string) *tensor.T {
	if _, ok := l.adapters[name]; !ok {
		return nil
	}
	return l.delta(s, name, false)
}

// Forward implements nn.Layer. The input is cast to the adapters' dtype
// (float32 on any base, PEFT's autocast_adapter_dtype), the updates are
// added in that dtype and the sum is cast back to the base output's dtype.
// In training each adapter is skipped with probability module_dropout and
// its ΔW rows are dropped with probability rank_dropout, as PEFT does.
func (l *Layer) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	y := l.Base.Forward(s, x)
	if peft.CallRows(s) != nil {
		return s.Failf("%s layer: a batch with a different adapter per row is not supported by %s (PEFT's adapter_names is LoRA's)", strings.ToLower(l.method.Name()), l.method.Name())
	}
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if len(l.merged) > 0 {
		if sel := peft.SelectionOf(s); sel != nil && (off || !sameSet(names, l.merged)) {
			return s.Failf("%s layer: adapters %v are merged into the weights; unmerge before choosing other adapters per call", strings.ToLower(l.method.Name()), l.merged)
		}
		return y
	}
	if off || y == nil {
		return y
	}
	outDT := y.DType()
	for _, name := range names {
		a, ok := l.adapters[name]
		if !ok {
			continue
		}
		if l.training && a.ModuleDropout > 0 && !(s.Item(s.Rand(tensor.Float32, 1)) > a.ModuleDropout) {
			continue // PEFT: the adapter runs when torch.rand(1) > module_dropout
		}
		d := l.delta(s, name, l.training)
		if d == nil {
			continue
		}
		y = s.Add(castTo(s, y, d.DType()), s.Linear(castTo(s, x, d.DType()), d, nil))
	}
	return castTo(s, y, outDT)
}

func castTo(s *tensor.Scope, t *tensor.T, dt tensor.DType) *tensor.T {
	if t == nil || t.DType() == dt {
		return t
	}
	return s.To(t, dt)
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	in := map[string]bool{}
	for _, x := range a {
		in[x] = true
	}
	for _, x := range b {
		if !in[x] {
			return false
		}
	}
	return true
}

// Merge folds adapters into the base weight, W ← W + ΔW (computed in the
// adapter's dtype, stored in the weight's); safe refuses a non-finite
// result and leaves the weight as it was. Adapters already merged, or not
// in this layer, are skipped.
func (l *Layer) Merge(names []string, safe bool) error {
	w := l.weight()
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.adapters[name]; !ok || contains(l.merged, name) {
			continue
		}
		d := l.delta(s, name, false)
		if d == nil {
			return fmt.Errorf("%s: adapter %q: %w", l.method.Name(), name, s.Err())
		}
		nw := s.Contiguous(castTo(s, s.Add(castTo(s, w.T(), d.DType()), d), w.DType()))
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
func (l *Layer) Unmerge() error {
	w := l.weight()
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		if _, ok := l.adapters[name]; ok {
			d := l.delta(s, name, false)
			if d == nil {
				return fmt.Errorf("%s: adapter %q: %w", l.method.Name(), name, s.Err())
			}
			nw := s.Contiguous(castTo(s, s.Sub(castTo(s, w.T(), d.DType()), d), w.DType()))
			if err := s.Err(); err != nil {
				return err
			}
			w.Set(s.Keep(nw))
			s.FreeAll()
		}
		l.merged = l.merged[:len(l.merged)-1]
	}
	return s.Err()
}

// BaseLayer implements peft.Tuner.
func (l *Layer) BaseLayer() nn.Layer { return l.Base }

// Adapters lists the layer's adapters in the order they were added.
func (l *Layer) Adapters() []string { return append([]string(nil), l.names...) }

// SetActive chooses the adapters that run (their updates are summed).
func (l *Layer) SetActive(names []string) { l.active = append([]string(nil), names...) }

// Merged lists the merged adapters.
func (l *Layer) Merged() []string { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first
// (PEFT's forward does it under disable_adapter()).
func (l *Layer) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's parameters and settings.
func (l *Layer) DeleteAdapter(name string) {
	if _, ok := l.adapters[name]; !ok {
		return
	}
	for _, d := range l.dicts {
		d.Delete(name)
	}
	delete(l.adapters, name)
	for i, n := range l.names {
		if n == name {
			l.names = append(l.names[:i], l.names[i+1:]...)
			break
		}
	}
}

// AdapterState lists the adapter's tensors under PEFT's file names
// ("hada_w1_a", "lokr_w1", …), in the method's order.
func (l *Layer) AdapterState(name string) []nn.NamedParam {
	var out []nn.NamedParam
	for _, dict := range l.method.ParamNames() {
		if p, ok := l.dicts[dict].Get(name); ok {
			out = append(out, nn.NamedParam{Name: dict, Param: p})
		}
	}
	return out
}

// SetTrainable marks the adapter's parameters trainable or frozen.
func (l *Layer) SetTrainable(name string, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, np := range l.AdapterState(name) {
		s.SetRequiresGrad(np.Param.T(), on)
	}
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *Layer) ExtraRepr() string { return "" }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// KaimingUniform is PyTorch's kaiming_uniform_(a=√5) for a 2-D tensor of
// shape [rows, cols]: U(−1/√cols, 1/√cols) (fan_in = cols), float32.
func KaimingUniform(s *tensor.Scope, rows, cols int64) *tensor.T {
	bound := 1 / sqrt(float64(cols))
	return s.Uniform(tensor.Float32, -bound, bound, rows, cols)
}
