package lntuning

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Layer is PEFT's LNTuningLayer: a trainable copy of the wrapped layer (an
// RMSNorm or LayerNorm, or any single-tensor layer) per adapter, under
// ln_tuning_layers. Forward runs the active adapter's copy; merging swaps
// the copy in as the base layer (and unmerging swaps it back), so a
// merged-and-unloaded model holds the tuned layer. One adapter runs or
// merges at a time, as in PEFT.
//
// A Layer is not safe for concurrent mutation; concurrent forwards are
// safe while its adapters do not change.
type Layer struct {
	Base  nn.Layer       `nn:"base_layer"`
	Tuned *nn.ModuleDict `nn:"ln_tuning_layers"`

	active   []string
	disabled bool
	merged   []string
}

func (*Layer) TypeName() string { return "ln_tuning.LNTuningLayer" }

func newLayer(base nn.Layer) *Layer { return &Layer{Base: base, Tuned: nn.NewModuleDict()} }

// addAdapter is PEFT's update_layer: a deep copy of the base layer.
func (l *Layer) addAdapter(name string) error {
	c, err := nn.DeepCopy(l.Base)
	if err != nil {
		return err
	}
	if _, ok := c.(nn.Layer); !ok {
		return fmt.Errorf("the copy of %s is not a layer", nn.TypeName(l.Base))
	}
	l.Tuned.Set(name, c)
	return nil
}

// tuned is adapter name's copy: in ln_tuning_layers, or the base layer
// while that adapter is merged.
func (l *Layer) tuned(name string) (nn.Layer, bool) {
	if len(l.merged) > 0 && l.merged[0] == name {
		return l.Base, true
	}
	m, ok := l.Tuned.Get(name)
	if !ok {
		return nil, false
	}
	return m.(nn.Layer), true
}

// Forward implements nn.Layer: the active adapter's copy, or the base
// layer when adapters are off, merged, or none of this layer's is active.
func (l *Layer) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off := peft.CallAdapters(s, l.active, l.disabled)
	if off || len(l.merged) > 0 {
		return l.Base.Forward(s, x)
	}
	if peft.CallRows(s) != nil {
		return s.Failf("lntuning: %s cannot run a different adapter per batch row (mixed-adapter batches are not supported by LN tuning layers)", l.TypeName())
	}
	var here []string
	for _, n := range names {
		if _, ok := l.Tuned.Get(n); ok {
			here = append(here, n)
		}
	}
	switch len(here) {
	case 0:
		return l.Base.Forward(s, x)
	case 1:
		c, _ := l.Tuned.Get(here[0])
		return c.(nn.Layer).Forward(s, x)
	}
	return s.Failf("lntuning: trying to run forward with %d active adapters %v, but LN tuning does not allow inference with more than one adapter at a time", len(here), here)
}

// Merge swaps the adapter's copy in as the base layer (one adapter only;
// a merged one is unmerged first, as PEFT does).
func (l *Layer) Merge(names []string, safe bool) error {
	var here []string
	for _, n := range names {
		if _, ok := l.Tuned.Get(n); ok {
			here = append(here, n)
		}
	}
	if len(here) == 0 {
		return nil
	}
	if len(here) > 1 {
		return fmt.Errorf("trying to merge %d adapters %v, but LN tuning does not allow merging more than one adapter at a time: %w", len(here), here, peft.ErrNotMergeable)
	}
	if len(l.merged) > 0 {
		if err := l.Unmerge(); err != nil {
			return err
		}
	}
	name := here[0]
	c, _ := l.Tuned.Get(name)
	if safe {
		s := tensor.NoGradScope()
		defer s.Close()
		for _, np := range nn.NamedParams(c) {
			if err := peft.CheckFinite(s, np.Param.T(), fmt.Sprintf("adapter %q (%s)", name, np.Name)); err != nil {
				return err
			}
		}
	}
	if err := l.Tuned.SetChild(name, l.Base); err != nil {
		return err
	}
	l.Base = c.(nn.Layer)
	l.merged = []string{name}
	return nil
}

// Unmerge swaps the original layer back.
func (l *Layer) Unmerge() error {
	if len(l.merged) == 0 {
		return nil
	}
	name := l.merged[0]
	c, _ := l.Tuned.Get(name)
	if err := l.Tuned.SetChild(name, l.Base); err != nil {
		return err
	}
	l.Base = c.(nn.Layer)
	l.merged = nil
	return nil
}

// BaseLayer is the wrapped layer (the tuned copy while it is merged).
func (l *Layer) BaseLayer() nn.Layer       { return l.Base }
func (l *Layer) Adapters() []string        { return l.Tuned.Keys() }
func (l *Layer) SetActive(names []string)  { l.active = append([]string(nil), names...) }
func (l *Layer) Merged() []string          { return append([]string(nil), l.merged...) }
func (l *Layer) ExtraRepr() string         { return "" }
func (l *Layer) isMerged(name string) bool { return len(l.merged) > 0 && l.merged[0] == name }

// SetDisabled turns the adapters off; a merged layer is unmerged first (as PEFT does).
func (l *Layer) SetDisabled(off bool) {
	if off && len(l.merged) > 0 {
		_ = l.Unmerge()
	}
	l.disabled = off
}

// DeleteAdapter drops an adapter's copy (peft.Model refuses to delete a
// merged adapter).
func (l *Layer) DeleteAdapter(name string) {
	if l.isMerged(name) {
		_ = l.Unmerge()
	}
	if c, ok := l.Tuned.Get(name); ok {
		nn.FreeParams(c)
		l.Tuned.Delete(name)
	}
}

// AdapterState lists the copy's parameters as PEFT saves them:
// "ln_tuning_layers.<param>" (adapter name removed).
func (l *Layer) AdapterState(name string) []nn.NamedParam {
	c, ok := l.tuned(name)
	if !ok {
		return nil
	}
	var out []nn.NamedParam
	for _, np := range nn.NamedParams(c) {
		out = append(out, nn.NamedParam{Name: "ln_tuning_layers." + np.Name, Param: np.Param})
	}
	return out
}

// SetTrainable marks the adapter's copy trainable or frozen.
func (l *Layer) SetTrainable(name string, on bool) error {
	c, ok := l.tuned(name)
	if !ok {
		return nil
	}
	return nn.SetRequiresGrad(c, on)
}
