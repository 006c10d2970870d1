package ia3

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/gopeft/peft/peft"
)

// Config is PEFT's IA3Config. Field names follow HF's; JSON uses PEFT's
// keys and defaults, and keys this library does not know are kept from the
// file read, so a newer PEFT's config round-trips.
type Config struct {
	// TargetModules are the layers that get a learned vector (null: PEFT's
	// default for the model_type, see DefaultTargets).
	TargetModules Targets `json:"target_modules"`
	// ExcludeModules are never targeted (a later PEFT's field; written only
	// when set).
	ExcludeModules Targets `json:"exclude_modules"`
	// FeedforwardModules are the targeted layers whose *input* is scaled
	// (null: PEFT's default for the model_type). A list must be a subset of
	// a list TargetModules.
	FeedforwardModules Targets `json:"feedforward_modules"`
	// FanInFanOut says the base weight is stored [in, out] (GPT-2's
	// Conv1D). Injection sets it from the wrapped layers, as PEFT does.
	FanInFanOut bool `json:"fan_in_fan_out"`
	// ModulesToSave_ are modules (a classifier head, lm_head) trained and
	// saved whole beside the adapter (PEFT's modules_to_save).
	ModulesToSave_ []string `json:"modules_to_save"`
	// InitIA3Weights starts the vectors at ones (nil or true: the wrapped
	// model equals the base) or, false, at N(0, 1).
	InitIA3Weights *bool `json:"init_ia3_weights"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage // the file as read
}

func (c *Config) PeftType() peft.PeftType { return peft.IA3 }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// initOnes reports whether vectors start at 1 (init_ia3_weights, PEFT's
// default) rather than N(0, 1).
func (c *Config) initOnes() bool { return c.InitIA3Weights == nil || *c.InitIA3Weights }

// Decode parses adapter_config.json of an IA3 adapter.
func Decode(data []byte) (peft.Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	for _, p := range []struct {
		name string
		t    Targets
	}{{"target_modules", c.TargetModules}, {"exclude_modules", c.ExcludeModules}, {"feedforward_modules", c.FeedforwardModules}} {
		if p.t.Regex != "" {
			if _, err := regexp.Compile(p.t.Regex); err != nil {
				return fmt.Errorf("field %q: regex %q: %w", p.name, p.t.Regex, err)
			}
		}
	}
	// PEFT: feedforward_modules must be a subset of target_modules when both are lists.
	if c.TargetModules.List != nil && c.FeedforwardModules.List != nil {
		in := map[string]bool{}
		for _, t := range c.TargetModules.List {
			in[t] = true
		}
		for _, f := range c.FeedforwardModules.List {
			if !in[f] {
				return fmt.Errorf("field \"feedforward_modules\": %q is not in \"target_modules\" %q (it must be a subset)", f, c.TargetModules.List)
			}
		}
	}
	return nil
}

// defaultKeys are the keys PEFT 0.10 writes for an IA3Config, with defaults.
var defaultKeys = map[string]any{
	"auto_mapping": nil, "base_model_name_or_path": nil, "fan_in_fan_out": false,
	"feedforward_modules": nil, "inference_mode": true, "init_ia3_weights": true,
	"modules_to_save": nil, "peft_type": "IA3", "revision": nil, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json: PEFT's keys (sorted, indent 2,
// inference_mode true), the file's unknown keys kept, our values on top.
func (c *Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	for k, v := range defaultKeys {
		out[k] = v
	}
	for k, v := range c.raw {
		out[k] = v
	}
	out["target_modules"] = c.TargetModules
	if c.ExcludeModules.IsSet() || c.raw["exclude_modules"] != nil {
		out["exclude_modules"] = c.ExcludeModules
	}
	out["feedforward_modules"] = c.FeedforwardModules
	out["fan_in_fan_out"] = c.FanInFanOut
	out["modules_to_save"] = c.ModulesToSave_
	if c.ModulesToSave_ == nil {
		out["modules_to_save"] = nil
	}
	out["init_ia3_weights"] = c.initOnes()
	if c.Task != "" {
		out["task_type"] = c.Task
	}
	if c.BaseModelNameOrPath != "" {
		out["base_model_name_or_path"] = c.BaseModelNameOrPath
	}
	if c.Revision != nil {
		out["revision"] = *c.Revision
	}
	out["peft_type"] = "IA3"
	out["inference_mode"] = true
	return peft.EncodeConfig(out)
}

// Targets is target_modules / feedforward_modules / exclude_modules: a list
// of names, a regex string (full match), or unset (null); see peft.Targets.
type Targets = peft.Targets

// List makes list targets.
func List(names ...string) Targets { return peft.TargetList(names...) }

// Regex makes regex targets (matched against the whole module path).
func Regex(pattern string) Targets { return peft.TargetRegex(pattern) }

// matchesFeedforward is PEFT's check for feedforward_modules: a regex must
// match the whole path; a list entry is a plain string suffix (no "."
// boundary, as PEFT's `key.endswith(target_key)`).
func matchesFeedforward(t Targets, path string) bool {
	if t.Regex != "" {
		return t.Matches(path)
	}
	for _, n := range t.List {
		if len(path) >= len(n) && path[len(path)-len(n):] == n {
			return true
		}
	}
	return false
}
