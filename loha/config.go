package loha

import (
	"encoding/json"

	"github.com/gopeft/peft/internal/lycoris"
	"github.com/gopeft/peft/peft"
)

// Config is PEFT's LoHaConfig. Field names follow HF's; JSON uses PEFT's
// keys and defaults, and keys this library does not know are kept from the
// file read, so a newer PEFT's config round-trips. A Config is not safe for
// concurrent mutation (Prepare fills defaults in).
type Config struct {
	// R is the rank of each of the two low-rank products; 0 takes PEFT's
	// default 8.
	R int `json:"r"`
	// Alpha scales the update by Alpha/R; 0 in a new config takes PEFT's
	// default 8 (in a config read from a file, 0 stays 0).
	Alpha float64 `json:"alpha"`
	// RankDropout drops each output row of ΔW with this probability in
	// training, the kept rows rescaled by the kept share (PEFT divides the
	// mask by its mean); in [0, 1].
	RankDropout float64 `json:"rank_dropout"`
	// ModuleDropout skips the whole adapter with this probability in
	// training; in [0, 1].
	ModuleDropout float64 `json:"module_dropout"`
	// UseEffectiveConv2d is PEFT's CP decomposition of Conv2d kernels
	// larger than 1×1 (hada_t1/hada_t2). It only applies to Conv2d layers,
	// which no model of this library has: it is read, kept and written,
	// and changes nothing for Linear layers (as in PEFT).
	UseEffectiveConv2d bool `json:"use_effective_conv2d"`
	// TargetModules are the modules to wrap: a list of names matched
	// against the end of the module path, a regex matched against the whole
	// path, or "all-linear". Unset: current PEFT's default for the
	// model_type (LoRA's; PEFT 0.10 had none and required the field).
	TargetModules Targets `json:"target_modules"`
	// ExcludeModules are never wrapped (same matching as TargetModules).
	ExcludeModules Targets `json:"exclude_modules"`
	// InitWeights true (default): hada_w1_a, hada_w1_b, hada_w2_a
	// Kaiming-uniform and hada_w2_b zero, so the wrapped model starts equal
	// to the base; false: all four random (a test setting).
	InitWeights Init `json:"init_weights"`
	// LayersToTransform keeps only the modules in these layer indices
	// (with a list TargetModules).
	LayersToTransform IntList `json:"layers_to_transform"`
	// LayersPattern names the module list holding the layers ("layers",
	// "h") for LayersToTransform.
	LayersPattern StringList `json:"layers_pattern"`
	// RankPattern overrides R for the modules whose path matches a key
	// (a regex matched against the end of the path), first key first.
	RankPattern Pattern `json:"rank_pattern"`
	// AlphaPattern overrides Alpha the same way.
	AlphaPattern Pattern `json:"alpha_pattern"`
	// ModulesToSave_ are modules trained and saved whole beside the
	// adapter (PEFT's modules_to_save).
	ModulesToSave_ []string `json:"modules_to_save"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage // the file as read
}

// Targets is target_modules / exclude_modules (see peft.Targets).
type Targets = peft.Targets

// Init is init_weights: Value "true" (or ""), or "false".
type Init = lycoris.Init

// IntList is an int or a list of ints (layers_to_transform).
type IntList = lycoris.IntList

// StringList is a string or a list of strings (layers_pattern).
type StringList = lycoris.StringList

// Pattern is rank_pattern / alpha_pattern: module regex → value, in order.
type Pattern = lycoris.Pattern

// MakePattern builds a Pattern from key/value pairs in order:
// MakePattern("q_proj", 8, "^model.layers.0.mlp.down_proj", 2).
func MakePattern(pairs ...any) (Pattern, error) { return lycoris.MakePattern(pairs...) }

// List makes list targets.
func List(names ...string) Targets { return peft.TargetList(names...) }

// Regex makes regex targets (matched against the whole module path).
func Regex(pattern string) Targets { return peft.TargetRegex(pattern) }

// NewConfig returns PEFT's defaults (r 8, alpha 8, CAUSAL_LM).
func NewConfig() *Config { return &Config{R: 8, Alpha: 8, Task: peft.CausalLM} }

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// Scaling is alpha / r.
func (c *Config) Scaling(r int, alpha float64) float64 { return alpha / float64(r) }

// Decode parses adapter_config.json of a LoHa adapter.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig()
	c.Task = ""
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	if c.raw == nil {
		c.raw = map[string]json.RawMessage{}
	}
	return c, c.Validate()
}

// Validate checks the fields' values; errors name the field.
func (c *Config) Validate() error {
	cm := c.common()
	return cm.Validate()
}

func (c *Config) common() lycoris.Common {
	return lycoris.Common{
		Method: "LoHa", PeftType: PeftType, R: c.R, Alpha: c.Alpha, RankDropout: c.RankDropout,
		ModuleDropout: c.ModuleDropout, UseEffectiveConv2d: c.UseEffectiveConv2d,
		TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules,
		InitWeights: c.InitWeights, InitChoices: []string{"true", "false"},
		LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern,
		RankPattern: c.RankPattern, AlphaPattern: c.AlphaPattern, ModulesToSave: c.ModulesToSave_,
		Task: c.Task, BaseModelNameOrPath: c.BaseModelNameOrPath, Revision: c.Revision, Raw: c.raw,
	}
}

// fillDefaults puts PEFT's defaults into unset fields of a new config.
func (c *Config) fillDefaults() {
	if c.R == 0 {
		c.R = 8
	}
	if c.Alpha == 0 && c.raw == nil {
		c.Alpha = 8
	}
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if c.RankPattern.Values == nil {
		c.RankPattern.Values = map[string]float64{}
	}
	if c.AlphaPattern.Values == nil {
		c.AlphaPattern.Values = map[string]float64{}
	}
}

// MarshalJSON renders adapter_config.json with the keys PEFT 0.10 writes
// for a LoHaConfig (sorted, indent 2, inference_mode true), the file's
// unknown keys kept and our values on top.
func (c *Config) MarshalJSON() ([]byte, error) {
	cm := c.common()
	if cm.RankPattern.Values == nil {
		cm.RankPattern = Pattern{Values: map[string]float64{}}
	}
	if cm.AlphaPattern.Values == nil {
		cm.AlphaPattern = Pattern{Values: map[string]float64{}}
	}
	return peft.EncodeConfig(cm.JSON(nil))
}
