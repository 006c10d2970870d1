package adapter

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Layer wraps an output projection (o_proj, down_proj, BLOOM's dense and
// dense_4h_to_h) with bottleneck adapters, one per adapter name:
//
//	h = base(x);  y = h + scaling · up(act(down(h)))
//
// so the adapter sits after the projection and before the model's
// residual add. Several active adapters run one after the other (AdapterHub's
// Stack).
type Layer struct {
	Base        nn.Layer       `nn:"base_layer"`
	Bottlenecks *nn.ModuleDict `nn:"adapters"`

	active   []string
	disabled bool
	training bool
}

// Bottleneck is one adapter: AdapterHub's Adapter module with its
// parameter names (adapter_down.0 is the down-projection, adapter_down.1
// the activation, adapter_up the up-projection).
type Bottleneck struct {
	AdapterDown *Down      `nn:"adapter_down"`
	AdapterUp   *nn.Linear `nn:"adapter_up"`

	scaling float64
	dropout float64
}

// Down is adapter_down: Linear(hidden, k) then the activation.
type Down struct {
	Linear *nn.Linear  `nn:"0"`
	Act    *Activation `nn:"1"`
}

// Activation is the bottleneck's non-linearity.
type Activation struct{ Name string }

func (*Layer) TypeName() string        { return "adapter.Layer" }
func (*Bottleneck) TypeName() string   { return "Adapter" }
func (*Down) TypeName() string         { return "Sequential" }
func (a *Activation) TypeName() string { return "Activation_Function_Class" }
func (a *Activation) ExtraRepr() string {
	return a.Name
}

var activations = map[string]func(s *tensor.Scope, x *tensor.T) *tensor.T{
	"relu":      func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Relu(x) },
	"swish":     func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Silu(x) },
	"silu":      func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Silu(x) },
	"gelu":      func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "none") },
	"gelu_new":  func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Gelu(x, "tanh") },
	"tanh":      func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Tanh(x) },
	"sigmoid":   func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Sigmoid(x) },
	"leakyrelu": func(s *tensor.Scope, x *tensor.T) *tensor.T { return s.LeakyRelu(x) },
}

func activationNames() string {
	var names []string
	for k := range activations {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Forward implements nn.Layer.
func (a *Activation) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	f, ok := activations[strings.ToLower(a.Name)]
	if !ok {
		return s.Failf("adapter: unknown non_linearity %q", a.Name)
	}
	return f(s, x)
}

// forward is the adapter with its residual skip: h + scaling·up(act(down(h))).
func (b *Bottleneck) forward(s *tensor.Scope, h *tensor.T, training bool) *tensor.T {
	if dt := b.AdapterUp.Weight.DType(); h != nil && h.DType() != dt {
		// float32 adapter on a half-precision base: compute in the
		// adapter's dtype, hand the base's dtype on
		return s.To(b.forward(s, s.To(h, dt), training), h.DType())
	}
	z := b.AdapterDown.Act.Forward(s, b.AdapterDown.Linear.Forward(s, h))
	up := b.AdapterUp.Forward(s, z)
	if b.scaling != 1 {
		up = s.MulScalar(up, b.scaling)
	}
	if training && b.dropout > 0 {
		up = s.Dropout(up, b.dropout, true)
	}
	return s.Add(up, h)
}

// newBottleneck makes an adapter for width d with bottleneck k.
func newBottleneck(d, k int64, cfg *Config) (*Bottleneck, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	var down, up *tensor.T
	switch cfg.InitWeights {
	case "mam_adapter": // kaiming_uniform(a=√5) = U(±1/√d); up zero
		bound := 1 / math.Sqrt(float64(d))
		down = s.Uniform(tensor.Float32, -bound, bound, k, d)
		up = s.Zeros(tensor.Float32, d, k)
	case "bert":
		down = s.MulScalar(s.Randn(tensor.Float32, k, d), 0.02)
		up = s.MulScalar(s.Randn(tensor.Float32, d, k), 0.02)
	case "houlsby": // N(0, 0.01) truncated at ±2σ: redraw until inside
		down = truncNormal(s, 0.01, k, d)
		up = truncNormal(s, 0.01, d, k)
	default:
		return nil, fmt.Errorf("init_weights %q", cfg.InitWeights)
	}
	b := &Bottleneck{
		AdapterDown: &Down{
			Linear: &nn.Linear{Weight: nn.NewParam(s.Keep(down)), Bias: nn.NewParam(s.Keep(s.Zeros(tensor.Float32, k)))},
			Act:    &Activation{Name: cfg.NonLinearity},
		},
		AdapterUp: &nn.Linear{Weight: nn.NewParam(s.Keep(up)), Bias: nn.NewParam(s.Keep(s.Zeros(tensor.Float32, d)))},
		scaling:   cfg.Scaling,
		dropout:   cfg.Dropout,
	}
	return b, s.Err()
}

// truncNormal draws N(0, std²) truncated at ±2·std (resampling the
// values outside, as torch's trunc_normal_ effectively does).
func truncNormal(s *tensor.Scope, std float64, shape ...int64) *tensor.T {
	x := s.MulScalar(s.Randn(tensor.Float32, shape...), std)
	for i := 0; i < 100; i++ {
		out := s.GtScalar(s.Abs(x), 2*std)
		if s.Item(s.Sum(s.To(out, tensor.Float32), false)) == 0 {
			break
		}
		x = s.Where(out, s.MulScalar(s.Randn(tensor.Float32, shape...), std), x)
	}
	return x
}

func (l *Layer) bottleneck(name string) (*Bottleneck, bool) {
	m, ok := l.Bottlenecks.Get(name)
	if !ok {
		return nil, false
	}
	return m.(*Bottleneck), true
}

// Forward implements nn.Layer.
func (l *Layer) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	h := l.Base.Forward(s, x)
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off {
		return h
	}
	if peft.CallRows(s) != nil {
		return s.Failf("adapter.Layer: bottleneck adapters cannot run a different adapter per row (mixed batch)")
	}
	for _, name := range names {
		if b, ok := l.bottleneck(name); ok {
			h = b.forward(s, h, l.training)
		}
	}
	return h
}

// SetTraining switches the adapters' dropout on or off.
func (l *Layer) SetTraining(on bool) { l.training = on }

func (l *Layer) BaseLayer() nn.Layer      { return l.Base }
func (l *Layer) Adapters() []string       { return l.Bottlenecks.Keys() }
func (l *Layer) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *Layer) SetDisabled(off bool)     { l.disabled = off }
func (l *Layer) Merged() []string         { return nil }
func (l *Layer) Unmerge() error           { return nil }

// Merge refuses: a bottleneck adapter is a non-linear module, not a weight
// delta. The error wraps peft.ErrNotMergeable.
func (l *Layer) Merge(names []string, _ bool) error {
	if len(names) == 0 {
		return nil
	}
	return fmt.Errorf("bottleneck adapter %q is %w: it adds a non-linear module (down-projection, activation, up-projection) that cannot be folded into the base weights; keep the adapter, or Unload for the base model", names[0], peft.ErrNotMergeable)
}

// DeleteAdapter drops an adapter's parameters.
func (l *Layer) DeleteAdapter(name string) {
	if m, ok := l.Bottlenecks.Get(name); ok {
		nn.FreeParams(m)
		l.Bottlenecks.Delete(name)
	}
}

// AdapterState lists the adapter's tensors under their local names
// (adapter name removed): adapter_down.0.weight, adapter_down.0.bias,
// adapter_up.weight, adapter_up.bias.
func (l *Layer) AdapterState(name string) []nn.NamedParam {
	m, ok := l.Bottlenecks.Get(name)
	if !ok {
		return nil
	}
	return nn.NamedParams(m)
}

// SetTrainable marks the adapter's parameters trainable or frozen.
func (l *Layer) SetTrainable(name string, on bool) error {
	m, ok := l.Bottlenecks.Get(name)
	if !ok {
		return nil
	}
	return nn.SetRequiresGrad(m, on)
}

// ExtraRepr is empty: the children print themselves.
func (l *Layer) ExtraRepr() string { return "" }
