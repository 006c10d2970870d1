package oft

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// settings are one adapter's per-layer values.
type settings struct {
	r             int
	moduleDropout float64
	coft          bool
	eps           float64 // the config's eps; the layer uses eps·b²
	blockShare    bool
}

// Linear is PEFT 0.10's OFT layer around a base nn.Linear. Each adapter
// owns oft_r [r, b, b] (b = ⌈out/r⌉; [1, b, b] with block_share), whose
// Cayley transforms are the diagonal blocks of an orthogonal R [out, out]
// (cut to out when r does not divide it). The rotation acts on the
// output without the bias:
//
//	y = (x Wᵀ) R + bias,    merged: W ← Rᵀ W
//
// Several active adapters apply their rotations one after the other.
// A Linear is not safe for concurrent mutation; concurrent forwards are
// safe unless an adapter uses coft, whose forward writes the projected
// blocks back into the parameter (as PEFT does).
type Linear struct {
	Base nn.Layer      `nn:"base_layer"`
	R    *nn.ParamDict `nn:"oft_r"`
	orth.Switches

	set map[string]settings
}

func (*Linear) TypeName() string { return "oft.Linear" }

func newLinear(base *nn.Linear) *Linear {
	return &Linear{Base: base, R: nn.NewParamDict(), set: map[string]settings{}}
}

func (l *Linear) linear() *nn.Linear { return l.Base.(*nn.Linear) }

// outFeatures is the base layer's output width.
func (l *Linear) outFeatures() int64 { return l.linear().Weight.Shape()[0] }

// blockSize is ⌈out / r⌉.
func (l *Linear) blockSize(r int) int64 {
	out := l.outFeatures()
	return (out + int64(r) - 1) / int64(r)
}

// addAdapter creates oft_r (PEFT's update_layer): zeros (the identity
// rotation) or, with init false, Kaiming-uniform (a = √5).
func (l *Linear) addAdapter(name string, st settings, identity bool) error {
	if st.r <= 0 {
		return fmt.Errorf("r must be a positive integer, got %d", st.r)
	}
	b := l.blockSize(st.r)
	n := int64(st.r)
	if st.blockShare {
		n = 1
	}
	s := tensor.NoGradScope()
	defer s.Close()
	var v *tensor.T
	if identity {
		v = s.Zeros(tensor.Float32, n, b, b)
	} else {
		bound := 1 / math.Sqrt(float64(b*b)) // kaiming_uniform_(a=√5): fan_in = b·b
		v = s.Uniform(tensor.Float32, -bound, bound, n, b, b)
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.R.Set(name, nn.NewParam(s.Keep(v)))
	l.set[name] = st
	return nil
}

// project is COFT's projection of p's blocks onto the ball of radius
// eps·b²/√blocks around zero, written into p (PEFT's _project_batch under
// no_grad, copied into the parameter).
func (l *Linear) project(p *nn.Param, st settings) error {
	s := tensor.NoGradScope()
	defer s.Close()
	t := p.T()
	b := t.Size(1)
	eps := st.eps * float64(b) * float64(b)
	eps = float64(float32(eps) / float32(math.Sqrt(float64(t.Size(0)))))
	norm := s.Sqrt(s.Sum(s.Mul(t, t), true, 1, 2))
	out := s.Where(s.LeScalar(norm, eps), t, s.MulScalar(s.Div(t, norm), eps))
	s.CopyInto(t, out)
	return s.Err()
}

// rotation is adapter name's R [out, out] in the adapter's dtype.
func (l *Linear) rotation(s *tensor.Scope, name string) *tensor.T {
	p, _ := l.R.Get(name)
	st := l.set[name]
	if st.coft {
		if err := l.project(p, st); err != nil {
			return s.Fail(fmt.Errorf("oft: coft projection: %w", err))
		}
	}
	q := orth.Cayley(s, p.T())
	if q == nil {
		return nil
	}
	b := q.Size(1)
	if st.blockShare {
		q = s.Expand(q, int64(st.r), b, b)
	}
	rot := orth.BlockDiag(s, q)
	if out := l.outFeatures(); out != int64(st.r)*b {
		rot = s.Narrow(s.Narrow(rot, 0, 0, out), 1, 0, out)
	}
	return rot
}

// Forward implements nn.Layer: y = (base(x) - bias)·R₁·R₂… + bias, in
// the adapters' dtype (float32), cast back to the base output's dtype.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off, ok := l.Call(s, "oft.Linear")
	if !ok {
		return nil
	}
	if off || len(l.MergedAd) > 0 {
		return l.Base.Forward(s, x)
	}
	var run []string
	for _, n := range names {
		if _, ok := l.R.Get(n); ok {
			run = append(run, n)
		}
	}
	y := l.Base.Forward(s, x)
	if len(run) == 0 || y == nil {
		return y
	}
	dt := y.DType()
	p0, _ := l.R.Get(run[0])
	adt := p0.DType()
	y = s.To(y, adt)
	var bias *tensor.T
	if b := l.linear().Bias; b != nil {
		bias = s.To(b.T(), adt)
		y = s.Sub(y, bias)
	}
	for _, n := range run {
		st := l.set[n]
		// PEFT: the adapter runs when not training or torch.rand(1) > module_dropout
		if l.Training && st.moduleDropout > 0 && s.Item(s.Rand(tensor.Float32, 1)) <= st.moduleDropout {
			continue
		}
		y = s.Matmul(y, l.rotation(s, n))
	}
	if bias != nil {
		y = s.Add(y, bias)
	}
	return s.To(y, dt)
}

// Merge folds adapters into the base weight, W ← Rᵀ W (PEFT:
// (Wᵀ R)ᵀ), computed in float32 and stored in the weight's dtype.
func (l *Linear) Merge(names []string, safe bool) error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.R.Get(name); !ok {
			continue
		}
		rot := l.rotation(s, name)
		nw := s.Contiguous(s.To(s.Transpose(s.Matmul(s.Transpose(s.To(w.T(), rot.DType()), 0, 1), rot), 0, 1), w.DType()))
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

// Unmerge takes the merged rotations out again, last merged first:
// W ← (Wᵀ R⁻¹)ᵀ (PEFT inverts R rather than transposing it).
func (l *Linear) Unmerge() error {
	w := l.linear().Weight
	s := tensor.NoGradScope()
	defer s.Close()
	for len(l.MergedAd) > 0 {
		name := l.MergedAd[len(l.MergedAd)-1]
		if _, ok := l.R.Get(name); ok {
			inv := s.Inverse(l.rotation(s, name))
			nw := s.Contiguous(s.To(s.Transpose(s.Matmul(s.Transpose(s.To(w.T(), inv.DType()), 0, 1), inv), 0, 1), w.DType()))
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
func (l *Linear) Adapters() []string  { return l.R.Keys() }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.MergedAd) > 0 {
		_ = l.Unmerge()
	}
	l.Disabled = off
}

// DeleteAdapter drops an adapter's blocks.
func (l *Linear) DeleteAdapter(name string) {
	l.R.Delete(name)
	delete(l.set, name)
}

// AdapterState lists the adapter's tensor under PEFT's file name "oft_r".
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	p, ok := l.R.Get(name)
	if !ok {
		return nil
	}
	return []nn.NamedParam{{Name: "oft_r", Param: p}}
}

// SetTrainable marks the adapter's blocks trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	p, ok := l.R.Get(name)
	if !ok {
		return nil
	}
	return orth.SetRequiresGrad(on, p)
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
