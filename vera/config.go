package vera

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"

	"github.com/gopeft/peft/internal/cfgjson"
	"github.com/gopeft/peft/peft"
)

// PeftType is VeRA's peft_type.
const PeftType peft.PeftType = "VERA"

// Config is PEFT's VeraConfig (PEFT 0.13.2). Field names follow HF's; JSON
// uses PEFT's keys and defaults, and keys this library does not know are
// kept from the file read. A Config is not safe for concurrent use: adding
// it to a model fills its defaults and makes its projections.
type Config struct {
	// R is VeRA's rank, the inner size of the shared projections [256].
	R int `json:"r"`
	// TargetModules are the Linear/Conv1D layers adapted (unset: PEFT's
	// default for the model_type, see DefaultTargets).
	TargetModules peft.Targets `json:"target_modules"`
	// ProjectionPRNGKey seeds torch's CPU generator that draws vera_A and
	// vera_B (kaiming-uniform) [0]; the same key gives the same
	// projections as PEFT.
	ProjectionPRNGKey int64 `json:"projection_prng_key"`
	// SaveProjection writes vera_A/vera_B into the adapter file [true];
	// false: they are drawn again from ProjectionPRNGKey on load.
	SaveProjection *bool `json:"save_projection"`
	// VeraDropout is the dropout on the layer input of the VeRA branch [0].
	VeraDropout float64 `json:"vera_dropout"`
	// DInitial is the initial value of every vera_lambda_d [0.1].
	DInitial *float64 `json:"d_initial"`
	// FanInFanOut says the base weight is stored [in, out] (GPT-2's
	// Conv1D); injection sets it from the wrapped layers, as PEFT does.
	FanInFanOut bool `json:"fan_in_fan_out"`
	// Bias is "none", "all" or "vera_only": which biases train and are saved.
	Bias string `json:"bias"`
	// ModulesToSave_ are modules trained and saved whole (PEFT's modules_to_save).
	ModulesToSave_ []string `json:"modules_to_save"`
	// InitWeights starts lambda_b at 0 and lambda_d at DInitial (nil or
	// true: the wrapped model equals the base); false keeps lambda_b at 1
	// and lambda_d ~ N(0, 1).
	InitWeights *bool `json:"init_weights"`
	// LayersToTransform keeps only modules in these layer indices.
	LayersToTransform cfgjson.IntList `json:"layers_to_transform"`
	// LayersPattern names the module list holding the layers.
	LayersPattern cfgjson.StringList `json:"layers_pattern"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw  map[string]json.RawMessage
	proj *projections // the adapter's shared projections, made by Prepare
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BiasMode implements peft.BiasConfig.
func (c *Config) BiasMode() string { return c.bias() }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

func (c *Config) rank() int {
	if c.R == 0 {
		return 256
	}
	return c.R
}

func (c *Config) saveProjection() bool { return c.SaveProjection == nil || *c.SaveProjection }
func (c *Config) initWeights() bool    { return c.InitWeights == nil || *c.InitWeights }

func (c *Config) dInitial() float64 {
	if c.DInitial == nil {
		return 0.1
	}
	return *c.DInitial
}

func (c *Config) bias() string {
	if c.Bias == "" {
		return "none"
	}
	return c.Bias
}

// Decode parses adapter_config.json of a VeRA adapter.
func Decode(data []byte) (peft.Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	raw, err := cfgjson.Raw(data)
	if err != nil {
		return nil, err
	}
	c.raw = raw
	return c, c.Validate()
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if c.R < 0 {
		return fmt.Errorf("field \"r\": %d must be positive", c.R)
	}
	if c.VeraDropout < 0 || c.VeraDropout >= 1 || math.IsNaN(c.VeraDropout) {
		return fmt.Errorf("field \"vera_dropout\": %g must be in [0, 1)", c.VeraDropout)
	}
	if d := c.dInitial(); math.IsNaN(d) || math.IsInf(d, 0) {
		return fmt.Errorf("field \"d_initial\": %g must be finite", d)
	}
	switch c.bias() {
	case "none", "all", "vera_only":
	default:
		return fmt.Errorf("field \"bias\": %q must be \"none\", \"all\" or \"vera_only\"", c.Bias)
	}
	if c.TargetModules.Regex != "" && c.TargetModules.Regex != peft.AllLinear {
		if _, err := regexp.Compile(c.TargetModules.Regex); err != nil {
			return fmt.Errorf("field \"target_modules\": regex %q: %w", c.TargetModules.Regex, err)
		}
	}
	for _, l := range c.LayersToTransform {
		if l < 0 {
			return fmt.Errorf("field \"layers_to_transform\": layer index %d is negative", l)
		}
	}
	return nil
}

// defaultKeys are the keys PEFT 0.13.2 writes for a VeraConfig, with defaults.
var defaultKeys = map[string]any{
	"auto_mapping": nil, "base_model_name_or_path": nil, "bias": "none", "d_initial": 0.1,
	"fan_in_fan_out": false, "inference_mode": true, "init_weights": true, "layers_pattern": nil,
	"layers_to_transform": nil, "modules_to_save": nil, "peft_type": "VERA", "projection_prng_key": 0,
	"r": 256, "revision": nil, "save_projection": true, "target_modules": nil, "task_type": nil,
	"vera_dropout": 0.0,
}

// MarshalJSON renders adapter_config.json with PEFT's keys (the file's
// unknown keys kept).
func (c *Config) MarshalJSON() ([]byte, error) {
	ours := map[string]any{
		"r": c.rank(), "target_modules": c.TargetModules, "projection_prng_key": c.ProjectionPRNGKey,
		"save_projection": c.saveProjection(), "vera_dropout": c.VeraDropout, "d_initial": c.dInitial(),
		"fan_in_fan_out": c.FanInFanOut, "bias": c.bias(), "modules_to_save": c.ModulesToSave_,
		"init_weights": c.initWeights(), "layers_to_transform": c.LayersToTransform,
		"layers_pattern": c.LayersPattern, "peft_type": string(PeftType),
	}
	if c.ModulesToSave_ == nil {
		ours["modules_to_save"] = nil
	}
	if c.Task != "" {
		ours["task_type"] = c.Task
	}
	if c.BaseModelNameOrPath != "" {
		ours["base_model_name_or_path"] = c.BaseModelNameOrPath
	}
	if c.Revision != nil {
		ours["revision"] = *c.Revision
	}
	return cfgjson.Encode(defaultKeys, c.raw, ours)
}
