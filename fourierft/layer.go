package fourierft

import (
	"fmt"

	"github.com/gopeft/peft/internal/torchrand"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Linear is PEFT's FourierFT layer around a base nn.Linear or GPT-2
// nn.Conv1D. Each adapter learns n_frequency spectral coefficients
// (fourierft_spectrum) at fixed random locations of the [out, in]
// frequency plane; the weight update is
//
//	ΔW = Re(ifft2(S)) · scaling,  S[rows[k], cols[k]] = spectrum[k], 0 elsewhere
//
// and y = base(x) + x ΔWᵀ. Several active adapters add their updates. The
// locations are torch.randperm(out·in, generator seeded with
// random_loc_seed)[:n_frequency], drawn here with the same generator
// (internal/torchrand), so a saved adapter loads to PEFT's locations.
//
// A Linear is not safe for concurrent mutation; concurrent forwards are
// safe while its adapters do not change.
type Linear struct {
	Base     nn.Layer      `nn:"base_layer"`
	Spectrum *nn.ParamDict `nn:"fourierft_spectrum"`

	indices  map[string][]int64 // flat row·in + col locations, per adapter
	scale    map[string]float64
	in, out  int64
	conv     bool
	active   []string
	disabled bool
	merged   []string
}

func (*Linear) TypeName() string { return "fourierft.FourierFTLinear" }

// baseWeight returns the base weight and whether it is stored [in, out].
func baseWeight(base nn.Layer) (*nn.Param, bool, error) {
	switch b := base.(type) {
	case *nn.Linear:
		return b.Weight, false, nil
	case *nn.Conv1D:
		return b.Weight, true, nil
	}
	return nil, false, fmt.Errorf("FourierFT supports Linear and Conv1D layers, not %s", nn.TypeName(base))
}

func newLinear(base nn.Layer) (*Linear, error) {
	w, conv, err := baseWeight(base)
	if err != nil {
		return nil, err
	}
	sh := w.Shape()
	out, in := sh[0], sh[1]
	if conv {
		out, in = in, out
	}
	return &Linear{Base: base, Spectrum: nn.NewParamDict(), indices: map[string][]int64{}, scale: map[string]float64{},
		in: in, out: out, conv: conv}, nil
}

// Locations returns the spectral locations of torch.randperm(out·in,
// generator=torch.Generator().manual_seed(seed))[:n] as PEFT's
// FourierFTLayer.update_layer computes them: rows (flat // in) and
// columns (flat % in).
func Locations(seed int64, out, in int64, n int) (rows, cols []int64) {
	perm := torchrand.New(uint64(seed)).Randperm(out * in)[:n]
	rows, cols = make([]int64, n), make([]int64, n)
	for i, p := range perm {
		rows[i], cols[i] = p/in, p%in
	}
	return rows, cols
}

// addAdapter is PEFT's update_layer.
func (l *Linear) addAdapter(name string, n int, scaling float64, seed int64, zeros bool) error {
	if n <= 0 {
		return fmt.Errorf("n_frequency should be a positive integer, not %d", n)
	}
	if int64(n) > l.in*l.out {
		return fmt.Errorf("n_frequency %d is more than the layer's %d × %d = %d weights", n, l.out, l.in, l.in*l.out)
	}
	perm := torchrand.New(uint64(seed)).Randperm(l.out * l.in)[:n]
	s := tensor.NoGradScope()
	defer s.Close()
	var sp *tensor.T
	if zeros {
		sp = s.Zeros(tensor.Float32, int64(n))
	} else {
		sp = s.Randn(tensor.Float32, int64(n))
	}
	if err := s.Err(); err != nil {
		return err
	}
	l.Spectrum.Set(name, nn.NewParam(s.Keep(sp)))
	l.indices[name] = perm
	l.scale[name] = scaling
	return nil
}

// Indices returns adapter name's spectral locations as rows and columns of
// the [out, in] plane (PEFT's layer.indices[name]), or nils.
func (l *Linear) Indices(name string) (rows, cols []int64) {
	flat, ok := l.indices[name]
	if !ok {
		return nil, nil
	}
	rows, cols = make([]int64, len(flat)), make([]int64, len(flat))
	for i, p := range flat {
		rows[i], cols[i] = p/l.in, p%l.in
	}
	return rows, cols
}

// delta is adapter name's ΔW [out, in] (the spectrum's dtype); autograd
// flows to the spectrum.
func (l *Linear) delta(s *tensor.Scope, name string) *tensor.T {
	p, _ := l.Spectrum.Get(name)
	sp := p.T()
	prev := s.SetDevice(sp.Device())
	idx := s.FromInt64(l.indices[name], int64(len(l.indices[name])))
	dense := s.Zeros(sp.DType(), l.out*l.in)
	s.SetDevice(prev)
	dense = s.Reshape(s.IndexAdd(dense, 0, idx, sp), l.out, l.in)
	return s.MulScalar(s.Ifft2Real(dense), l.scale[name])
}

// DeltaWeight returns adapter name's ΔW in the base weight's layout
// (float32, [out, in] or Conv1D's [in, out]); the caller owns it.
func (l *Linear) DeltaWeight(name string) (*tensor.T, error) {
	if _, ok := l.Spectrum.Get(name); !ok {
		return nil, fmt.Errorf("fourierft: no adapter %q in this layer (have %v)", name, l.Adapters())
	}
	s := tensor.NoGradScope()
	defer s.Close()
	d := l.delta(s, name)
	if l.conv {
		d = s.Transpose(d, 0, 1)
	}
	d = s.Contiguous(d)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Keep(d), nil
}

// Forward implements nn.Layer: y = base(x) + x ΔWᵀ per active adapter,
// computed in the spectrum's dtype (float32) and cast back to x's dtype,
// as PEFT does.
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off || len(l.merged) > 0 {
		return l.Base.Forward(s, x)
	}
	if peft.CallRows(s) != nil {
		return s.Failf("fourierft: %s cannot run a different adapter per batch row (mixed-adapter batches are not supported by FourierFT layers)", l.TypeName())
	}
	y := l.Base.Forward(s, x)
	dt := x.DType()
	for _, name := range names {
		if _, ok := l.Spectrum.Get(name); !ok {
			continue
		}
		d := l.delta(s, name)
		y = s.Add(s.To(y, d.DType()), s.Linear(s.To(x, d.DType()), d, nil))
	}
	if y != nil && y.DType() != dt {
		y = s.To(y, dt)
	}
	return y
}

// Merge folds adapters into the base weight: W += ΔW (transposed for
// Conv1D, which PEFT 0.13.2 does not do), in float32, stored in W's dtype.
func (l *Linear) Merge(names []string, safe bool) error {
	return l.fold(names, safe, 1)
}

// Unmerge subtracts every merged adapter again, last merged first.
func (l *Linear) Unmerge() error {
	for len(l.merged) > 0 {
		name := l.merged[len(l.merged)-1]
		l.merged = l.merged[:len(l.merged)-1]
		if err := l.fold([]string{name}, false, -1); err != nil {
			l.merged = append(l.merged, name)
			return err
		}
	}
	return nil
}

func (l *Linear) fold(names []string, safe bool, sign float64) error {
	w, _, err := baseWeight(l.Base)
	if err != nil {
		return err
	}
	s := tensor.NoGradScope()
	defer s.Close()
	for _, name := range names {
		if _, ok := l.Spectrum.Get(name); !ok {
			continue
		}
		d := l.delta(s, name)
		if l.conv {
			d = s.Transpose(d, 0, 1)
		}
		nw := s.Contiguous(s.To(s.Add(s.To(w.T(), tensor.Float32), s.MulScalar(d, sign)), w.DType()))
		if err := s.Err(); err != nil {
			return err
		}
		if safe {
			if err := peft.CheckFinite(s, nw, fmt.Sprintf("adapter %q", name)); err != nil {
				return err
			}
		}
		w.Set(s.Keep(nw))
		if sign > 0 {
			l.merged = append(l.merged, name)
		}
	}
	return s.Err()
}

func (l *Linear) BaseLayer() nn.Layer      { return l.Base }
func (l *Linear) Adapters() []string       { return l.Spectrum.Keys() }
func (l *Linear) SetActive(names []string) { l.active = append([]string(nil), names...) }
func (l *Linear) Merged() []string         { return append([]string(nil), l.merged...) }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Linear) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's spectrum and locations.
func (l *Linear) DeleteAdapter(name string) {
	if p, ok := l.Spectrum.Get(name); ok {
		p.Free()
		l.Spectrum.Delete(name)
	}
	delete(l.indices, name)
	delete(l.scale, name)
}

// AdapterState lists the adapter's spectrum under PEFT's file name (the
// locations are not saved: they come from random_loc_seed).
func (l *Linear) AdapterState(name string) []nn.NamedParam {
	p, ok := l.Spectrum.Get(name)
	if !ok {
		return nil
	}
	return []nn.NamedParam{{Name: "fourierft_spectrum", Param: p}}
}

// SetTrainable marks the adapter's spectrum trainable or frozen.
func (l *Linear) SetTrainable(name string, on bool) error {
	p, ok := l.Spectrum.Get(name)
	if !ok {
		return nil
	}
	s := tensor.NewScope()
	defer s.Close()
	s.SetRequiresGrad(p.T(), on)
	return s.Err()
}

// ExtraRepr is empty: the children print themselves.
func (l *Linear) ExtraRepr() string { return "" }
