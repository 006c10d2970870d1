package nn

import (
	"fmt"

	"github.com/gopeft/peft/tensor"
	"github.com/sugarme/gotch/ts"
)

// Param is a model parameter: a tensor handle that the module tree owns.
// Trainable means requires_grad on the tensor.
type Param struct {
	t *tensor.T
	// logical is the element count packed storage stands for (0: Numel).
	logical int64
}

// NewParam wraps t; the parameter takes ownership.
func NewParam(t *tensor.T) *Param { return &Param{t: t} }

// NewPackedParam wraps packed storage t (e.g. 4-bit codes, two per byte)
// that stands for logical elements; the parameter takes ownership.
// Parameter counts use the logical size, as PEFT counts bitsandbytes'
// Params4bit, and packed parameters are never written to state files.
func NewPackedParam(t *tensor.T, logical int64) *Param { return &Param{t: t, logical: logical} }

// LogicalNumel is the number of weights the parameter stands for: Numel,
// or the unpacked count of packed storage.
func (p *Param) LogicalNumel() int64 {
	if p.logical > 0 {
		return p.logical
	}
	return p.Numel()
}

// Packed reports whether the parameter holds packed storage.
func (p *Param) Packed() bool { return p.logical > 0 }

// T is the parameter's tensor (owned by the parameter: do not free it).
func (p *Param) T() *tensor.T { return p.t }

// Set replaces the parameter's tensor, freeing the old one.
func (p *Param) Set(t *tensor.T) {
	if p.t != nil && p.t != t {
		p.t.Free()
	}
	p.t = t
}

// Free releases the parameter's tensor.
func (p *Param) Free() {
	p.t.Free()
	p.t = nil
}

// Shape is the parameter's shape.
func (p *Param) Shape() []int64 { return p.t.Shape() }

// Numel is the parameter's element count.
func (p *Param) Numel() int64 { return p.t.Numel() }

// DType is the parameter's element type.
func (p *Param) DType() tensor.DType { return p.t.DType() }

// RequiresGrad reports whether the parameter trains.
func (p *Param) RequiresGrad() bool { return p.t.RequiresGrad() }

// Tensor returns a new gotch handle to the parameter's data (no copy).
func (p *Param) Tensor() *ts.Tensor { return p.t.Clone().ToTS() }

// SetRequiresGrad marks every parameter under m trainable or frozen
// (packed parameters cannot train: they stay frozen).
func SetRequiresGrad(m Module, on bool) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, np := range NamedParams(m) {
		if on && np.Param.Packed() {
			continue
		}
		s.SetRequiresGrad(np.Param.t, on)
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("nn: set requires_grad: %w", err)
	}
	return nil
}

// Freeze marks every parameter under m frozen (requires_grad=false).
func Freeze(m Module) error { return SetRequiresGrad(m, false) }

// Unfreeze marks every parameter under m trainable.
func Unfreeze(m Module) error { return SetRequiresGrad(m, true) }

// TrainableParams lists the parameters under m that require grad.
func TrainableParams(m Module) []NamedParam {
	var out []NamedParam
	for _, np := range NamedParams(m) {
		if np.Param.RequiresGrad() {
			out = append(out, np)
		}
	}
	return out
}

// CountParams returns the trainable and total element counts under m
// (packed parameters at their logical size).
func CountParams(m Module) (trainable, total int64) {
	for _, np := range NamedParams(m) {
		n := np.Param.LogicalNumel()
		total += n
		if np.Param.RequiresGrad() {
			trainable += n
		}
	}
	return trainable, total
}

// FreeParams releases every parameter tensor under m, and the buffers of
// modules that hold tensors besides their parameters (BufferFreer), so the
// model is unusable afterwards. Use it when a model is dropped before the
// process ends.
func FreeParams(m Module) {
	for _, np := range NamedParams(m) {
		np.Param.Free()
	}
	_ = Walk(m, func(_ string, mod Module) error {
		if b, ok := mod.(BufferFreer); ok {
			b.FreeBuffers()
		}
		return nil
	})
}

// BufferFreer is implemented by modules that own tensors which are not
// parameters (a 4-bit layer's quantization statistics).
type BufferFreer interface {
	FreeBuffers()
}

// SetTraining switches train/eval mode (dropout) for every module under m
// that has one.
func SetTraining(m Module, on bool) {
	_ = Walk(m, func(_ string, mod Module) error {
		if t, ok := mod.(interface{ SetTraining(bool) }); ok {
			t.SetTraining(on)
		}
		return nil
	})
}

// NoGrad runs fn with autograd off on a pinned thread.
func NoGrad(fn func(s *tensor.Scope) error) error {
	s := tensor.NoGradScope()
	defer s.Close()
	if err := fn(s); err != nil {
		return err
	}
	return s.Err()
}

// ToDevice moves every parameter under m that is not on d to d, keeping
// requires_grad (the moved tensor is a new leaf). A model on the CPU is
// left as it is without a libtorch call per parameter beyond the check.
func ToDevice(m Module, d tensor.Device) error {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range NamedParams(m) {
		t := np.Param.T()
		if !t.Defined() || t.Device() == d {
			continue
		}
		grad := t.RequiresGrad()
		moved := s.Detach(s.ToDevice(t, d))
		if grad {
			s.SetRequiresGrad(moved, true)
		}
		if err := s.Err(); err != nil {
			return fmt.Errorf("nn: move %q to %s: %w", np.Name, d, err)
		}
		np.Param.Set(s.Keep(moved))
	}
	return s.Err()
}

// Placeholder is a float32 parameter of the given shape that holds no
// memory (one element, expanded): the skeleton a loader builds before the
// checkpoint's tensors replace every parameter, so that building a 7B
// model's tree costs nothing. Reading it gives one repeated value.
func Placeholder(s *tensor.Scope, shape ...int64) *Param {
	ones := make([]int64, len(shape))
	for i := range ones {
		ones[i] = 1
	}
	return NewParam(s.Keep(s.Expand(s.Empty(tensor.Float32, ones...), shape...)))
}
