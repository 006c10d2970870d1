package peft

import (
	"github.com/gopeft/peft/nn"
)

// Tuner is a layer that carries one or more named adapters of a method
// around a base layer (LoRA's Linear, IA3's Linear, modules_to_save's
// wrapper). Injecting a method replaces a child of the model with a Tuner;
// unloading puts BaseLayer back. PeftModel drives every Tuner through this
// interface and never needs to know the method.
//
// Forward runs the adapters of the call (CallAdapters: the call's
// Selection, else the layer's own active list), never per-call state kept
// in the layer, so concurrent forwards with different selections are
// independent; a Tuner that cannot run a different adapter per row fails
// the scope when CallRows is set (or implements RowChecker when it can).
// The setters (SetActive, SetDisabled, Merge, DeleteAdapter…) are not safe
// against running forwards by themselves: peft.Model calls them under its
// write lock.
type Tuner interface {
	nn.Layer
	// BaseLayer is the wrapped original layer.
	BaseLayer() nn.Layer
	// Adapters lists the adapter names this layer has, in insertion order.
	Adapters() []string
	// SetActive chooses the adapters that run in forward (several are summed).
	SetActive(names []string)
	// SetDisabled turns every adapter off (base output only) or back on.
	SetDisabled(off bool)
	// DeleteAdapter drops an adapter's parameters.
	DeleteAdapter(name string)
	// Merge folds the named adapters into the base weights; safe refuses
	// non-finite results and leaves the weights untouched.
	Merge(names []string, safe bool) error
	// Unmerge subtracts every merged adapter again, last merged first.
	Unmerge() error
	// Merged lists the adapters currently merged.
	Merged() []string
	// AdapterState lists an adapter's parameters under the local names PEFT
	// writes to adapter_model.safetensors (adapter name removed), e.g.
	// "lora_A.weight", "lora_magnitude_vector".
	AdapterState(name string) []nn.NamedParam
	// SetTrainable marks an adapter's parameters trainable or frozen.
	SetTrainable(name string, on bool) error
}

// tuners lists every Tuner under m with its path, outermost first; it does
// not descend into a Tuner.
func tuners(m nn.Module) []pathTuner {
	var out []pathTuner
	var visit func(path string, mod nn.Module)
	visit = func(path string, mod nn.Module) {
		if t, ok := mod.(Tuner); ok {
			out = append(out, pathTuner{path, t})
			return
		}
		for _, c := range nn.Children(mod) {
			p := c.Name
			if path != "" {
				p = path + "." + c.Name
			}
			visit(p, c.Module)
		}
	}
	visit("", m)
	return out
}

type pathTuner struct {
	path  string
	tuner Tuner
}
