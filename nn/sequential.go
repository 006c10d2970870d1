package nn

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/tensor"
)

// Sequential runs its layers one after the other (torch.nn.Sequential).
// Children are named "0", "1", … as in PyTorch, so a parameter of the third
// layer is "2.weight" — layers without parameters (ReLU, Tanh) keep their
// index, as they do in PyTorch's state dicts.
type Sequential struct {
	ModuleList
}

// NewSequential makes a Sequential of layers.
func NewSequential(layers ...Layer) *Sequential {
	items := make([]Module, len(layers))
	for i, l := range layers {
		items[i] = l
	}
	return &Sequential{ModuleList{Items: items}}
}

// Forward implements Layer.
func (q *Sequential) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	for i, m := range q.Items {
		l, ok := m.(Layer)
		if !ok {
			return s.Failf("nn: Sequential item %d (%s) is not a layer", i, TypeName(m))
		}
		x = l.Forward(s, x)
	}
	return x
}

// SetChild implements Container; items must stay layers.
func (q *Sequential) SetChild(name string, m Module) error {
	if _, ok := m.(Layer); !ok {
		return fmt.Errorf("%s is not a layer", TypeName(m))
	}
	return q.ModuleList.SetChild(name, m)
}

// TypeName names the module as PyTorch prints it.
func (q *Sequential) TypeName() string { return "Sequential" }

// ReLU is max(x, 0) (torch.nn.ReLU).
type ReLU struct{}

func (ReLU) Forward(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Relu(x) }

// Tanh is tanh(x) (torch.nn.Tanh).
type Tanh struct{}

func (Tanh) Forward(s *tensor.Scope, x *tensor.T) *tensor.T { return s.Tanh(x) }

// NewLinearTorch makes a Linear with PyTorch's default initialisation of
// torch.nn.Linear: weight (kaiming-uniform with a=√5) and bias both from
// U(-1/√in, 1/√in).
func NewLinearTorch(s *tensor.Scope, in, out int64, bias bool) *Linear {
	bound := 1 / math.Sqrt(float64(in))
	l := &Linear{Weight: NewParam(s.Keep(s.Uniform(tensor.Float32, -bound, bound, out, in)))}
	if bias {
		l.Bias = NewParam(s.Keep(s.Uniform(tensor.Float32, -bound, bound, out)))
	}
	return l
}
