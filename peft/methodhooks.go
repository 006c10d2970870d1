package peft

import (
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Optional hooks of a method's config, for methods whose adapters do more
// than hold tensors (AdaLoRA: layers resized to a saved rank pattern, cut
// tensors on save, an orthogonal regulariser in the loss, rank allocation
// after every optimizer step). Model calls them; peft never knows the
// method. Like TunerConfig, implementations need not be safe for
// concurrent use.

// LoadPreparer is implemented by configs whose layers take their shapes
// from the saved adapter: Load and LoadAdapter call PrepareLoad after the
// adapter's layers are created from the config and before the file's
// tensors are copied in (PEFT's resize_modules_by_rank_pattern in
// set_peft_model_state_dict).
type LoadPreparer interface {
	PrepareLoad(model nn.Module, adapter string) error
}

// StateFilter is implemented by configs whose saved tensors differ from
// the layers' (PEFT's resize_state_dict_by_rank_pattern): SaveAdapter
// passes the tensors it is about to write, under their file keys, and
// writes what SaveTensors returns.
type StateFilter interface {
	SaveTensors(adapter string, ts []safetensors.Tensor) ([]safetensors.Tensor, error)
}

// LossTermer is implemented by configs that add a term to the model's
// loss whenever it computes one (AdaLoRA's orthogonal regularisation in
// AdaLoraModel.forward): ForwardT adds LossTerm of every active adapter to
// Output.Loss. The term belongs to s; nil adds nothing.
type LossTermer interface {
	LossTerm(s *tensor.Scope, model nn.Module, adapter string) *tensor.T
}

// StepConfig is implemented by configs of methods that act after every
// optimizer step, with the gradients still there (AdaLoRA's
// update_and_allocate). step is PEFT's global_step: 0 after the first
// optimizer step.
type StepConfig interface {
	AfterOptimizerStep(model nn.Module, adapter string, step int) error
}

// AfterOptimizerStep runs the StepConfig hook of every active adapter
// that has one. train.Trainer calls it after each optimizer step and
// before the gradients are zeroed (train.StepHook); a hand-written loop
// calls it at the same point, as PEFT's docs say for update_and_allocate.
func (m *Model) AfterOptimizerStep(step int) error {
	m.mu.Lock() // it changes layers (AdaLoRA's masks): a model change
	defer m.mu.Unlock()
	for _, name := range m.active {
		if h, ok := m.configs[name].(StepConfig); ok {
			if err := h.AfterOptimizerStep(m.BaseModel.Model, name, step); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasLossTerm reports whether an active adapter adds to the loss.
func (m *Model) hasLossTerm() bool {
	for _, name := range m.active {
		if _, ok := m.configs[name].(LossTermer); ok {
			return true
		}
	}
	return false
}

// addLossTerms adds the active adapters' loss terms to out.Loss.
func (m *Model) addLossTerms(s *tensor.Scope, out *models.Output) {
	if out == nil || out.Loss == nil {
		return
	}
	for _, name := range m.active {
		if h, ok := m.configs[name].(LossTermer); ok {
			if t := h.LossTerm(s, m.BaseModel.Model, name); t != nil {
				out.Loss = s.Add(out.Loss, t)
			}
		}
	}
}
