package boft

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is BOFT's peft_type.
const PeftType peft.PeftType = "BOFT"

// Config is PEFT's BOFTConfig (0.13.2). Field names follow HF's; JSON uses
// PEFT's keys and defaults, and keys this library does not know are kept
// from the file read. Not safe for concurrent mutation.
type Config struct {
	orth.Common
	// BoftBlockSize is the size of each orthogonal block [4]; set exactly
	// one of BoftBlockSize and BoftBlockNum (size × number = in_features).
	BoftBlockSize int `json:"boft_block_size"`
	// BoftBlockNum is the number of blocks per layer [0].
	BoftBlockNum int `json:"boft_block_num"`
	// BoftNButterflyFactor is the number of butterfly factors [1]: 1 is
	// plain block-diagonal OFT; each further factor doubles the reach of
	// the blocks through a butterfly permutation.
	BoftNButterflyFactor int `json:"boft_n_butterfly_factor"`
	// BoftDropout is the multiplicative dropout probability: in training
	// that share of the blocks of one random factor is replaced by the
	// identity, in [0, 1].
	BoftDropout float64 `json:"boft_dropout"`
	// FanInFanOut says the base weight is stored [in, out]; BOFT wraps
	// Linear layers only, so injection sets it to false (as PEFT does).
	FanInFanOut bool `json:"fan_in_fan_out"`
	// Bias says which biases train and are saved with the adapter: "none"
	// (default), "all" or "boft_only" (the biases of the wrapped layers).
	Bias string `json:"bias"`
}

// NewConfig returns PEFT's defaults (block size 4, one butterfly factor,
// bias "none", task CAUSAL_LM).
func NewConfig() *Config {
	c := &Config{BoftBlockSize: 4, BoftNButterflyFactor: 1, Bias: "none"}
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

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

// Decode parses adapter_config.json of a BOFT adapter.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig()
	c.Task = ""
	if err := orth.Decode(data, c, &c.Common); err != nil {
		return nil, fmt.Errorf("boft: adapter_config.json: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("boft: adapter_config.json: %w", err)
	}
	return c, nil
}

// Validate checks the fields' values (PEFT's BOFTConfig.__post_init__ and
// what update_layer checks without the layer).
func (c *Config) Validate() error {
	if c.BoftBlockSize < 0 || c.BoftBlockNum < 0 {
		return fmt.Errorf("fields \"boft_block_size\" (%d) and \"boft_block_num\" (%d) must be >= 0", c.BoftBlockSize, c.BoftBlockNum)
	}
	if (c.BoftBlockSize != 0) == (c.BoftBlockNum != 0) {
		return fmt.Errorf("fields \"boft_block_size\" (%d) and \"boft_block_num\": (%d) set exactly one of them "+
			"(boft_block_size × boft_block_num = in_features)", c.BoftBlockSize, c.BoftBlockNum)
	}
	if c.BoftNButterflyFactor < 1 {
		return fmt.Errorf("field \"boft_n_butterfly_factor\" must be a positive integer, got %d", c.BoftNButterflyFactor)
	}
	if math.IsNaN(c.BoftDropout) || c.BoftDropout < 0 || c.BoftDropout > 1 {
		return fmt.Errorf("field \"boft_dropout\" must be in [0, 1], got %v", c.BoftDropout)
	}
	switch c.BiasMode() {
	case "none", "all", "boft_only":
	default:
		return fmt.Errorf("field \"bias\": %q is not one of none, all, boft_only", c.Bias)
	}
	return c.ValidateCommon()
}

// defaultKeys are the keys PEFT 0.13.2 writes for a BOFTConfig, with defaults.
var defaultKeys = map[string]any{
	"auto_mapping": nil, "base_model_name_or_path": nil, "bias": "none", "boft_block_num": 0, "boft_block_size": 4,
	"boft_dropout": 0.0, "boft_n_butterfly_factor": 1, "fan_in_fan_out": false, "inference_mode": true,
	"init_weights": true, "layers_pattern": nil, "layers_to_transform": nil, "modules_to_save": nil,
	"peft_type": "BOFT", "revision": nil, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json: PEFT 0.13.2's keys, the file's
// unknown keys kept, our values on top.
func (c *Config) MarshalJSON() ([]byte, error) {
	return c.Marshal(PeftType, defaultKeys, map[string]any{
		"boft_block_size": c.BoftBlockSize, "boft_block_num": c.BoftBlockNum,
		"boft_n_butterfly_factor": c.BoftNButterflyFactor, "boft_dropout": c.BoftDropout,
		"fan_in_fan_out": c.FanInFanOut, "bias": c.BiasMode(),
	})
}

// Prepare implements peft.TunerConfig: unset target_modules takes PEFT's
// default for the model type (LoRA's mapping), "all-linear" is expanded.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("boft: %w", err)
	}
	if !c.TargetModules.IsSet() {
		mt := peft.ModelType(model)
		d, ok := orth.DefaultTargets[mt]
		if !ok {
			return peft.Targeting{}, fmt.Errorf("boft: no target_modules given and no default for model_type %q", mt)
		}
		c.TargetModules = List(d...)
	}
	return c.Targeting(model), nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// a Linear becomes a boft.Linear; a boft.Linear already there gets the
// adapter added. The layer's in_features must fit the block settings.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	default:
		base, err := orth.LinearOf("boft", t.Path, t.Module)
		if err != nil {
			return nil, err
		}
		layer = newLinear(base)
	}
	st, err := layout(layer.inFeatures(), c.BoftBlockSize, c.BoftBlockNum, c.BoftNButterflyFactor)
	if err != nil {
		return nil, fmt.Errorf("boft: %s: %w", t.Path, err)
	}
	st.dropout = c.BoftDropout
	if err := layer.addAdapter(t.Adapter, st, c.Identity()); err != nil {
		return nil, fmt.Errorf("boft: %s: %w", t.Path, err)
	}
	return layer, nil
}
