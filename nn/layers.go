package nn

import (
	"fmt"

	"github.com/gopeft/peft/tensor"
)

// Layer is a module with a single-tensor forward: the base layers, and every
// PEFT layer that wraps one (so injecting a method is replacing a child).
type Layer interface {
	Forward(s *tensor.Scope, x *tensor.T) *tensor.T
}

// Linear is y = x Wᵀ + b with W [out, in] (torch.nn.Linear).
type Linear struct {
	Weight *Param `nn:"weight"`
	Bias   *Param `nn:"bias"`
}

// NewLinear makes a Linear with weights from N(0, std) and a zero bias.
func NewLinear(s *tensor.Scope, in, out int64, bias bool, std float64) *Linear {
	l := &Linear{Weight: newNormal(s, std, out, in)}
	if bias {
		l.Bias = NewParam(s.Keep(s.Zeros(tensor.Float32, out)))
	}
	return l
}

func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	var b *tensor.T
	if l.Bias != nil {
		b = l.Bias.t
	}
	return s.Linear(x, l.Weight.t, b)
}

// InFeatures is the input width.
func (l *Linear) InFeatures() int64 { return l.Weight.Shape()[1] }

// OutFeatures is the output width.
func (l *Linear) OutFeatures() int64 { return l.Weight.Shape()[0] }

func (l *Linear) ExtraRepr() string {
	w := l.Weight.Shape()
	return fmt.Sprintf("in_features=%d, out_features=%d, bias=%s", w[1], w[0], pyBool(l.Bias != nil))
}

// Conv1D is GPT-2's transposed linear: y = x W + b with W [in, out].
type Conv1D struct {
	Weight *Param `nn:"weight"`
	Bias   *Param `nn:"bias"`
}

func (l *Conv1D) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	var b *tensor.T
	if l.Bias != nil {
		b = l.Bias.t
	}
	return s.Conv1D(x, l.Weight.t, b)
}

func (l *Conv1D) ExtraRepr() string {
	w := l.Weight.Shape()
	return fmt.Sprintf("nf=%d, nx=%d", w[1], w[0])
}

// Embedding looks up rows of Weight [num, dim] by id.
type Embedding struct {
	Weight *Param `nn:"weight"`
}

// NewEmbedding makes an Embedding with weights from N(0, std).
func NewEmbedding(s *tensor.Scope, num, dim int64, std float64) *Embedding {
	return &Embedding{Weight: newNormal(s, std, num, dim)}
}

func (e *Embedding) Forward(s *tensor.Scope, ids *tensor.T) *tensor.T {
	return s.Embedding(e.Weight.t, ids)
}

func (e *Embedding) ExtraRepr() string {
	w := e.Weight.Shape()
	return fmt.Sprintf("%d, %d", w[0], w[1])
}

// LayerNorm normalises the last dimension (torch.nn.LayerNorm).
type LayerNorm struct {
	Weight *Param `nn:"weight"`
	Bias   *Param `nn:"bias"`
	Eps    float64
}

// NewLayerNorm makes a LayerNorm with weight 1 and bias 0.
func NewLayerNorm(s *tensor.Scope, dim int64, eps float64) *LayerNorm {
	return &LayerNorm{
		Weight: NewParam(s.Keep(s.Ones(tensor.Float32, dim))),
		Bias:   NewParam(s.Keep(s.Zeros(tensor.Float32, dim))),
		Eps:    eps,
	}
}

func (l *LayerNorm) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	var w, b *tensor.T
	if l.Weight != nil {
		w = l.Weight.t
	}
	if l.Bias != nil {
		b = l.Bias.t
	}
	return s.LayerNorm(x, []int64{x.Size(-1)}, w, b, l.Eps)
}

func (l *LayerNorm) ExtraRepr() string {
	return fmt.Sprintf("(%d,), eps=%g, elementwise_affine=True", l.Weight.Shape()[0], l.Eps)
}

// RMSNorm is LLaMA's RMS normalisation: w · x / sqrt(mean(x²) + eps),
// computed in float32 and cast back to the input dtype, as HF does.
type RMSNorm struct {
	Weight *Param `nn:"weight"`
	Eps    float64
}

// NewRMSNorm makes an RMSNorm with weight 1.
func NewRMSNorm(s *tensor.Scope, dim int64, eps float64) *RMSNorm {
	return &RMSNorm{Weight: NewParam(s.Keep(s.Ones(tensor.Float32, dim))), Eps: eps}
}

func (n *RMSNorm) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	dt := x.DType()
	h := x
	if dt != tensor.Float32 {
		h = s.To(x, tensor.Float32)
	}
	v := s.Mean(s.Pow(h, 2), true, -1)
	h = s.Mul(h, s.Rsqrt(s.AddScalar(v, n.Eps)))
	if dt != tensor.Float32 {
		h = s.To(h, dt)
	}
	return s.Mul(n.Weight.t, h)
}

func (n *RMSNorm) ExtraRepr() string {
	return fmt.Sprintf("(%d,), eps=%g", n.Weight.Shape()[0], n.Eps)
}

// Dropout zeroes activations with probability P while training.
type Dropout struct {
	P     float64
	Train bool
}

func (d *Dropout) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if !d.Train || d.P == 0 {
		return x
	}
	return s.Dropout(x, d.P, true)
}

// SetTraining switches dropout on or off.
func (d *Dropout) SetTraining(on bool) { d.Train = on }

func (d *Dropout) ExtraRepr() string { return fmt.Sprintf("p=%g, inplace=False", d.P) }

// Identity passes its input through (a placeholder layer).
type Identity struct{}

func (Identity) Forward(_ *tensor.Scope, x *tensor.T) *tensor.T { return x }

func newNormal(s *tensor.Scope, std float64, shape ...int64) *Param {
	t := s.Zeros(tensor.Float32, shape...)
	s.Normal(t, 0, std)
	return NewParam(s.Keep(t))
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
