package peft

import (
	"fmt"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// ModulesToSave is PEFT's ModulesToSaveWrapper: a fully trainable copy of a
// layer per adapter (e.g. lm_head, a classifier head) beside the frozen
// original. Forward uses the active adapter's copy; disabled adapters use
// the original. It is saved under the original module's keys.
type ModulesToSave struct {
	Original nn.Layer       `nn:"original_module"`
	Copies   *nn.ModuleDict `nn:"modules_to_save"`

	active   []string
	disabled bool
}

func (w *ModulesToSave) TypeName() string { return "ModulesToSaveWrapper" }

// Forward implements nn.Layer: the copy of the call's first adapter
// (CallAdapters), each row's copy in a mixed batch (CallRows).
func (w *ModulesToSave) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	names, off := CallAdapters(s, w.active, w.disabled)
	if off {
		return w.Original.Forward(s, x)
	}
	if rows := CallRows(s); rows != nil {
		return w.mixedForward(s, x, rows)
	}
	if len(names) > 0 {
		if c, ok := w.Copies.Get(names[0]); ok {
			return c.(nn.Layer).Forward(s, x)
		}
	}
	return w.Original.Forward(s, x)
}

func (w *ModulesToSave) BaseLayer() nn.Layer        { return w.Original }
func (w *ModulesToSave) Adapters() []string         { return w.Copies.Keys() }
func (w *ModulesToSave) SetActive(names []string)   { w.active = append([]string(nil), names...) }
func (w *ModulesToSave) SetDisabled(off bool)       { w.disabled = off }
func (w *ModulesToSave) Merge([]string, bool) error { return nil } // nothing to fold: the copy replaces the original
func (w *ModulesToSave) Unmerge() error             { return nil }
func (w *ModulesToSave) Merged() []string           { return nil }
func (w *ModulesToSave) DeleteAdapter(name string) {
	if c, ok := w.Copies.Get(name); ok {
		nn.FreeParams(c)
		w.Copies.Delete(name)
	}
}

// Unloaded gives back the active adapter's copy (PEFT's merge_and_unload).
func (w *ModulesToSave) Unloaded() nn.Layer {
	if len(w.active) > 0 {
		if c, ok := w.Copies.Get(w.active[0]); ok {
			return c.(nn.Layer)
		}
	}
	return w.Original
}

// AdapterState lists the copy's parameters under the original's local names.
func (w *ModulesToSave) AdapterState(name string) []nn.NamedParam {
	c, ok := w.Copies.Get(name)
	if !ok {
		return nil
	}
	return nn.NamedParams(c)
}

// SetTrainable implements Tuner.
func (w *ModulesToSave) SetTrainable(name string, on bool) error {
	c, ok := w.Copies.Get(name)
	if !ok {
		return nil
	}
	return nn.SetRequiresGrad(c, on)
}

// wrapModulesToSave wraps every layer whose path ends with one of entries
// (PEFT's plain string suffix match) and adds a copy for adapter name.
func wrapModulesToSave(base nn.Module, entries []string, name string) error {
	if len(entries) == 0 {
		return nil
	}
	found := map[string]bool{}
	for _, path := range nn.Paths(base) {
		var hit string
		for _, e := range entries {
			if strings.HasSuffix(path, e) {
				hit = e
			}
		}
		if hit == "" {
			continue
		}
		mod, err := nn.Get(base, path)
		if err != nil {
			return err
		}
		if w, ok := mod.(*ModulesToSave); ok {
			if err := w.addCopy(name); err != nil {
				return fmt.Errorf("peft: modules_to_save %q: %w", path, err)
			}
			found[hit] = true
			continue
		}
		if isInsideWrapper(base, path) {
			continue
		}
		layer, ok := mod.(nn.Layer)
		if !ok {
			return fmt.Errorf("peft: modules_to_save %q: %s is not a single-tensor layer", path, nn.TypeName(mod))
		}
		w := &ModulesToSave{Original: layer, Copies: nn.NewModuleDict()}
		if err := w.addCopy(name); err != nil {
			return fmt.Errorf("peft: modules_to_save %q: %w", path, err)
		}
		if _, err := nn.Replace(base, path, w); err != nil {
			return fmt.Errorf("peft: modules_to_save %q: %w", path, err)
		}
		found[hit] = true
	}
	for _, e := range entries {
		if !found[e] {
			return fmt.Errorf("peft: modules_to_save entry %q matches no module of the model", e)
		}
	}
	return nil
}

func (w *ModulesToSave) addCopy(name string) error {
	c, err := nn.DeepCopy(w.Original)
	if err != nil {
		return err
	}
	w.Copies.Set(name, c)
	return nil
}

// isInsideWrapper reports whether path lies under a ModulesToSave wrapper
// (its original_module or copies are not wrapped again).
func isInsideWrapper(base nn.Module, path string) bool {
	parts := strings.Split(path, ".")
	for i := 1; i < len(parts); i++ {
		m, err := nn.Get(base, strings.Join(parts[:i], "."))
		if err == nil {
			if _, ok := m.(*ModulesToSave); ok {
				return true
			}
		}
	}
	return false
}
