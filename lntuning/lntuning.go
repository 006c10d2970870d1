// Package lntuning is LN tuning — tuning only the normalisation layers
// (Zhao et al. 2023, "Tuning LayerNorm in Attention") — as HF PEFT
// 0.13.2's LNTuningConfig and LNTuningLayer implement it: every targeted
// RMSNorm/LayerNorm gets a trainable copy per adapter (PEFT deep-copies
// the layer), the forward runs the copy, and merging swaps the tuned copy
// in for the original (merge_and_unload leaves the tuned norms in the
// model). On LLaMA the default targets are input_layernorm,
// post_attention_layernorm and the final norm: 2·layers + 1 vectors of
// hidden_size numbers.
//
// Saved keys are PEFT's: <module>.ln_tuning_layers.weight (and .bias for
// a LayerNorm).
//
//	model, err := lntuning.Wrap(base, &lntuning.Config{}) // PEFT's defaults for the model type
package lntuning

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.Model, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// DefaultTargets are PEFT's default target_modules per model_type
// (TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING, the families
// this library loads).
var DefaultTargets = map[string][]string{
	"llama": {"input_layernorm", "post_attention_layernorm", "norm"}, "mistral": {"input_layernorm", "post_attention_layernorm", "norm"},
	"gemma":  {"input_layernorm", "post_attention_layernorm", "norm"},
	"gemma2": {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"},
	"qwen2":  {"post_attention_layernorm"},
	"bloom":  {"input_layernorm", "post_attention_layernorm", "ln_f"}, "gpt2": {"ln_1", "ln_2", "ln_f"},
}

// Prepare implements peft.TunerConfig: unset target_modules take PEFT's
// default for the model type (the filled-in value is what Save writes).
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("lntuning: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = peft.TargetList(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("lntuning: %w", err)
	}
	return peft.Targeting{TargetModules: c.TargetModules, ModulesToSave: c.ModulesToSave_}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// the layer becomes an lntuning.Layer holding a copy of it; one already
// there gets another copy for the new adapter.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *Layer
	switch m := t.Module.(type) {
	case *Layer:
		layer = m
	case peft.Tuner:
		return nil, fmt.Errorf("lntuning: target module %q is already a %s adapter layer", t.Path, nn.TypeName(m))
	case nn.Layer:
		layer = newLayer(m)
	default:
		return nil, fmt.Errorf("lntuning: target module %q is a %s, not a single-tensor layer (LN tuning copies RMSNorm/LayerNorm layers)", t.Path, nn.TypeName(t.Module))
	}
	if err := layer.addAdapter(t.Adapter); err != nil {
		return nil, fmt.Errorf("lntuning: %s: %w", t.Path, err)
	}
	return layer, nil
}
