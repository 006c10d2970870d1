package hra

import (
	"fmt"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is HRA's peft_type.
const PeftType peft.PeftType = "HRA"

// Config is PEFT's HRAConfig (0.13.2). Field names follow HF's; JSON uses
// PEFT's keys and defaults, and keys this library does not know are kept
// from the file read. Not safe for concurrent mutation.
type Config struct {
	orth.Common
	// R is the number of Householder reflections per layer [8]; an even r
	// lets the default init start at the identity.
	R int `json:"r"`
	// ApplyGS orthogonalises the reflection vectors (Gram-Schmidt) so that
	// the product becomes I - 2UUᵀ.
	ApplyGS bool `json:"apply_GS"`
	// Bias says which biases train and are saved with the adapter: "none"
	// (default), "all" or "hra_only" (the biases of the wrapped layers).
	Bias string `json:"bias"`
}

// NewConfig returns PEFT's defaults (r 8, bias "none", task CAUSAL_LM).
func NewConfig() *Config {
	c := &Config{R: 8, Bias: "none"}
	c.Task = peft.CausalLM
	return c
}

func (c *Config) PeftType() peft.PeftType { return PeftType }

// BiasMode implements peft.BiasConfig.
func (c *Config) BiasMode() string {
	if c.Bias == "" {
		return "none"
	}
	return c.Bias
}

// Decode parses adapter_config.json of an HRA adapter.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig()
	c.Task = ""
	if err := orth.Decode(data, c, &c.Common); err != nil {
		return nil, fmt.Errorf("hra: adapter_config.json: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("hra: adapter_config.json: %w", err)
	}
	return c, nil
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if c.R <= 0 {
		return fmt.Errorf("field \"r\" must be a positive integer, got %d", c.R)
	}
	switch c.BiasMode() {
	case "none", "all", "hra_only":
	default:
		return fmt.Errorf("field \"bias\": %q is not one of none, all, hra_only", c.Bias)
	}
	return c.ValidateCommon()
}

// defaultKeys are the keys PEFT 0.13.2 writes for an HRAConfig, with defaults.
var defaultKeys = map[string]any{
	"apply_GS": false, "auto_mapping": nil, "base_model_name_or_path": nil, "bias": "none",
	"inference_mode": true, "init_weights": true, "layers_pattern": nil, "layers_to_transform": nil,
	"modules_to_save": nil, "peft_type": "HRA", "r": 8, "revision": nil, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json: PEFT 0.13.2's keys, the file's
// unknown keys kept, our values on top.
func (c *Config) MarshalJSON() ([]byte, error) {
	return c.Marshal(PeftType, defaultKeys, map[string]any{"r": c.R, "apply_GS": c.ApplyGS, "bias": c.BiasMode()})
}

// Prepare implements peft.TunerConfig: unset target_modules takes PEFT's
// default for the model type (LoRA's mapping), "all-linear" is expanded.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("hra: %w", err)
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := orth.DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("hra: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	return c.Targeting(model), nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// a Linear becomes an hra.Linear; an hra.Linear already there gets the
// adapter added.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	default:
		base, err := orth.LinearOf("hra", t.Path, t.Module)
		if err != nil {
			return nil, err
		}
		layer = newLinear(base)
	}
	if err := layer.addAdapter(t.Adapter, c.R, c.ApplyGS, c.Identity()); err != nil {
		return nil, fmt.Errorf("hra: %s: %w", t.Path, err)
	}
	return layer, nil
}
