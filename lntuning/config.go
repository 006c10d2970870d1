package lntuning

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/gopeft/peft/internal/cfgjson"
	"github.com/gopeft/peft/peft"
)

// PeftType is LN tuning's peft_type.
const PeftType peft.PeftType = "LN_TUNING"

// Config is PEFT's LNTuningConfig (PEFT 0.13.2). JSON uses PEFT's keys,
// and keys this library does not know are kept from the file read. A
// Config is not safe for concurrent use: adding it to a model fills its
// defaults.
type Config struct {
	// TargetModules are the normalisation layers tuned (unset: PEFT's
	// default for the model_type, see DefaultTargets).
	TargetModules peft.Targets `json:"target_modules"`
	// ModulesToSave_ are further modules trained and saved whole (a string
	// or a list in the file).
	ModulesToSave_ cfgjson.StringList `json:"modules_to_save"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// Decode parses adapter_config.json of an LN tuning adapter.
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
	if c.TargetModules.Regex != "" && c.TargetModules.Regex != peft.AllLinear {
		if _, err := regexp.Compile(c.TargetModules.Regex); err != nil {
			return fmt.Errorf("field \"target_modules\": regex %q: %w", c.TargetModules.Regex, err)
		}
	}
	if c.TargetModules.Regex == peft.AllLinear {
		return fmt.Errorf("field \"target_modules\": %q selects linear layers; LN tuning tunes normalisation layers", peft.AllLinear)
	}
	return nil
}

// defaultKeys are the keys PEFT 0.13.2 writes for an LNTuningConfig, with defaults.
var defaultKeys = map[string]any{
	"auto_mapping": nil, "base_model_name_or_path": nil, "inference_mode": true, "modules_to_save": nil,
	"peft_type": "LN_TUNING", "revision": nil, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json with PEFT's keys (the file's
// unknown keys kept).
func (c *Config) MarshalJSON() ([]byte, error) {
	ours := map[string]any{"target_modules": c.TargetModules, "modules_to_save": c.ModulesToSave_, "peft_type": string(PeftType)}
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
