package hra

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Linear is PEFT 0.13.2's HRA layer around a base nn.Linear. Each adapter
// owns hra_u [in, r] (PEFT's ParameterDict: in memory
// "<layer>.hra_u.<adapter>", saved as "<layer>.hra_u"). With H the
// adapter's product of reflections (see the package comment):
//
//	y = x (W H)ᵀ + bias,    merged: W ← W H
//
// Several active adapters multiply: W H₁ H₂ …. A Linear is not safe for
// concurrent mutation; concurrent forwards are safe.
type Linear struct {
	Base nn.Layer      `nn:"base_layer"`
	U    *nn.ParamDict `nn:"hra_u"`
	orth.Switches

	gs map[string]bool // apply_GS per adapter
}

func (*Linear) TypeName() string { return "hra.Linear" }

func newLinear(base *nn.Linear) *Linear {
	return &Linear{Base: base, U: nn.NewParamDict(), gs: map[string]bool{}}
}

func (l *Linear) linear() *nn.Linear { return l.Base.(*nn.Linear) }

// addAdapter creates hra_u (PEFT's update_layer): with identity and an
// even r, r/2 Kaiming-uniform (a = √5) columns each repeated twice (the
// reflections cancel: H = I); otherwise r Kaiming-uniform columns (PEFT
// warns that an odd r cannot start at the identity).
func (l *Linear) addAdapter(name string, r int, gs, identity bool) error {
	if r <= 0 {
		return fmt.Errorf("r must be a positive integer, got %d", r)
	}
	in := l.linear().Weight.Shape()[1]
	s := tensor.NoGradScope()
	defer s.Close()
	var v *tensor.T
	if identity && r%2 == 0 {
		half := int64(r / 2)
		bound := 1 / math.Sqrt(float64(half)) // kaiming_uniform_(a=√5): fan_in = r/2
		h := s.Uniform(tensor.Float32, -bound, bound, in, half)
		v = s.Contiguous(s.Reshape(s.Expand(s.Unsqueeze(h, 2), in, half, 2), in, int64(r)))
	} else {
		if identity {
			peft.Warn("hra: the symmetric initialization can NOT be performed when r is odd!")
		}
		bound := 1 / math.Sqrt(float64(r))
		v = s.Uniform(tensor.Float32, -bound, bound, in, int64(r))
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.U.Set(name, nn.NewParam(s.Keep(v)))
	l.gs[name] = gs
	return nil
}

// unit is u with unit columns.
func unit(s *tensor.Scope, u *tensor.T) *tensor.T {
	return s.Div(u, s.Sqrt(s.Sum(s.Mul(u, u), true, 0)))
}

// gramSchmidt orthonormalises u's columns in order (PEFT's apply_GS).
func gramSchmidt(s *tensor.Scope, u *tensor.T) *tensor.T {
	r := u.Size(1)
	cols := make([]*tensor.T, 0, r)
	for i := int64(0); i < r; i++ {
		ui := s.Narrow(u, 1, i, 1)
		for _, w := range cols {
			ui = s.Sub(ui, s.Mul(s.Matmul(s.Transpose(w, 0, 1), ui), w))
		}
		cols = append(cols, unit(s, ui))
	}
	return s.Cat(1, cols...)
}

// delta is adapter name's H [in, in] (PEFT's get_delta_weight); reverse
// multiplies the reflections in reverse order (Hᵀ, for unmerging).
func (l *Linear) delta(s *tensor.Scope, name string, reverse bool) *tensor.T {
	p, _ := l.U.Get(name)
	u := p.T()
	in, r := u.Size(0), u.Size(1)
	eye := orth.Eye(s, in, u.DType(), u)
	if l.gs[name] {
		w := gramSchmidt(s, u)
		return s.Sub(eye, s.MulScalar(s.Matmul(w, s.Transpose(w, 0, 1)), 2))
	}
	un := unit(s, u)
	h := eye
	for k := int64(0); k < r; k++ {
		i := k
		if reverse {
			i = r - 1 - k
		}
		ui := s.Narrow(un, 1, i, 1)
		h = s.Sub(h, s.MulScalar(s.Matmul(s.Matmul(h, ui), s.Transpose(ui, 0, 1)), 2))
	}
	return h
}

// rotateInput is x Hᵀ for adapter name: the reflections applied to the
// rows of x, last first (x ← x - 2(x·u)uᵀ), or x - 2(xU)Uᵀ with apply_GS.
func (l *Linear) rotateInput(s *tensor.Scope, name string, x *tensor.T) *tensor.T {
	p, _ := l.U.Get(name)
	u := p.T()
	if l.gs[name] {
		w := gramSchmidt(s, u)
		return s.Sub(x, s.MulScalar(s.Matmul(s.Matmul(x, w), s.Transpose(w, 0, 1)), 2))
	}
	un := unit(s, u)
	for i := u.Size(1) - 1; i >= 0; i-- {
		ui := s.Narrow(un, 1, i, 1)
		x = s.Sub(x, s.MulScalar(s.Matmul(s.Matmul(x, ui), s.Transpose(ui, 0, 1)), 2))
	}
	return x
}

// Forward implements nn.Layer: base(x Hₖᵀ … H₁ᵀ), the rotations computed
// in the adapters' dtype (float32) and the result cast to x's dtype.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off, ok := l.Call(s, "hra.Linear")
	if !ok {
		return nil
	}
	if off || len(l.MergedAd) > 0 {
		return l.Base.Forward(s, x)
	}
	var run []string
	for _, n := range names {
		if _, ok := l.U.Get(n); ok {
			run = append(run, n)
		}
	}
	if len(run) == 0 || x == nil {
		return l.Base.Forward(s, x)
	}
	dt := x.DType()
	p0, _ := l.U.Get(run[0])
	xr := s.To(x, p0.DType())
	for i := len(run) - 1; i >= 0; i-- {
		xr = l.rotateInput(s, run[i], xr)
	}
	y := l.Base.Forward(s, s.To(xr, l.linear().Weight.DType()))
	return s.To(y, dt)
}

// Merge folds adapters into the base weight, W ← W H, computed in the
// adapter's dtype and stored in the weight's.
func (l *Linear) Merge(names []string, safe bool) error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.U.Get(name); !ok {
			continue
		}
		h := l.delta(s, name, false)
		nw := s.Contiguous(s.To(s.Matmul(s.To(w.T(), h.DType()), h), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(nw))
		l.MergedAd = append(l.MergedAd, name)
	}
	return s.Err()
}

// Unmerge multiplies the merged adapters out again, last merged first:
// W ← W Hᵀ (the reflections in reverse order, as PEFT).
func (l *Linear) Unmerge() error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.MergedAd) > 0 {
		name := l.MergedAd[len(l.MergedAd)-1]
		if _, ok := l.U.Get(name); ok {
			h := l.delta(s, name, true)
			nw := s.Contiguous(s.To(s.Matmul(s.To(w.T(), h.DType()), h), w.DType()))
			if err := s.Err(); err != nil {
				return err
			}
			w.Set(s.Keep(nw))
		}
		l.MergedAd = l.MergedAd[:len(l.MergedAd)-1]
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer { return l.Base }
func (l *Linear) Adapters() []string  { return l.U.Keys() }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.MergedAd) > 0 {
		_ = l.Unmerge()
	}
	l.Disabled = off
}

// DeleteAdapter drops an adapter's vectors.
func (l *Linear) DeleteAdapter(name string) {
	l.U.Delete(name)
	delete(l.gs, name)
}

// AdapterState lists the adapter's tensor under PEFT's file name "hra_u".
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	p, ok := l.U.Get(name)
	if !ok {
		return nil
	}
	return []nn.NamedParam{{Name: "hra_u", Param: p}}
}

// SetTrainable marks the adapter's vectors trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	p, ok := l.U.Get(name)
	if !ok {
		return nil
	}
	return orth.SetRequiresGrad(on, p)
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
