// Package fourierft is FourierFT — parameter-efficient fine-tuning with
// the discrete Fourier transform (Gao et al., ICML 2024) — as HF PEFT
// 0.13.2's FourierFTConfig and FourierFT layers implement it: each adapted
// Linear learns n_frequency coefficients of its weight update's 2-D
// spectrum at fixed random locations, and the update is the real part of
// their inverse FFT, times scaling:
//
//	ΔW = Re(ifft2(S)) · scaling,  y = W x + ΔW x
//
// With n_frequency = 1000 a layer trains 1000 numbers whatever its size.
// FourierFT merges into the base weights.
//
// The locations are not saved by PEFT: they are torch.randperm(out·in)
// drawn from a CPU generator seeded with random_loc_seed. This package
// draws them with the same generator in pure Go (internal/torchrand), bit
// for bit, so adapters move between PEFT and this library in both
// directions (Locations gives them).
//
//	model, err := fourierft.Wrap(base, &fourierft.Config{NFrequency: 64, TargetModules: peft.TargetList("q_proj", "v_proj")})
package fourierft

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
// (TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING, the families
// this library loads).
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "phi3": {"qkv_proj"},
	"bloom": {"query_key_value"}, "gpt2": {"mlp.c_proj"}, "bert": {"query", "value"},
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
			return peft.Targeting{}, fmt.Errorf("fourierft: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = peft.TargetList(d...)
	}
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("fourierft: %w", err)
	}
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{TargetModules: c.TargetModules, LayersToTransform: c.LayersToTransform,
		LayersPattern: c.LayersPattern, ModulesToSave: c.ModulesToSave_}, nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// a Linear or Conv1D becomes a fourierft.Linear; one already there gets
// the adapter added.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	case *nn.Linear, *nn.Conv1D:
		var err error
		if layer, err = newLinear(m.(nn.Layer)); err != nil {
			return nil, fmt.Errorf("fourierft: %s: %w", t.Path, err)
		}
	default:
		return nil, fmt.Errorf("fourierft: target module %q is a %s; FourierFT supports Linear and Conv1D layers", t.Path, nn.TypeName(t.Module))
	}
	if err := layer.addAdapter(t.Adapter, c.nFrequencyFor(t.Path), c.scaling(), c.seed(), c.InitWeights); err != nil {
		return nil, fmt.Errorf("fourierft: %s: %w", t.Path, err)
	}
	return layer, nil
}
