package adaptionprompt

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is adaption prompt's peft_type.
const PeftType peft.PeftType = "ADAPTION_PROMPT"

// DefaultTarget is PEFT's target_modules for LLaMA and Mistral: the
// attention module of each decoder layer.
const DefaultTarget = "self_attn"

// supported are the model types PEFT 0.10's TRANSFORMERS_MODEL_CONFIG
// knows (LLaMA's layout; models/llama serves both).
var supported = map[string]bool{"llama": true, "mistral": true}

// Config is PEFT's AdaptionPromptConfig (peft_type ADAPTION_PROMPT). JSON
// uses PEFT's keys; keys this library does not know are kept from the
// file read. A Config is a plain value: not safe for concurrent mutation
// (adding an adapter fills target_modules).
type Config struct {
	// TargetModules names the attention modules to wrap: every module
	// whose path ends with it (PEFT's name.endswith) is a candidate, and
	// the last AdapterLayers of them get adaption prompts ("" : PEFT's
	// default for the model type, "self_attn").
	TargetModules string `json:"target_modules"`
	// AdapterLen is the number of adaption prompt tokens per layer.
	AdapterLen int `json:"adapter_len"`
	// AdapterLayers is how many of the top decoder layers get prompts.
	AdapterLayers int `json:"adapter_layers"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage // the file as read
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// Decode parses adapter_config.json of an ADAPTION_PROMPT adapter.
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

// Validate checks the fields' values (PEFT has no defaults for adapter_len
// and adapter_layers: both are required).
func (c *Config) Validate() error {
	if c.AdapterLen <= 0 {
		return fmt.Errorf("field \"adapter_len\" must be a positive number of prompt tokens, got %d", c.AdapterLen)
	}
	if c.AdapterLayers <= 0 {
		return fmt.Errorf("field \"adapter_layers\" must be a positive number of layers, got %d", c.AdapterLayers)
	}
	if strings.ContainsAny(c.TargetModules, " \t") {
		return fmt.Errorf("field \"target_modules\": %q is not a module name", c.TargetModules)
	}
	return nil
}

// MarshalJSON renders adapter_config.json as PEFT 0.10 writes it (sorted
// keys, indent 2, inference_mode true), the file's unknown keys kept.
func (c *Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{"auto_mapping": nil, "revision": nil, "base_model_name_or_path": nil, "task_type": nil}
	for k, v := range c.raw {
		out[k] = v
	}
	if c.TargetModules != "" {
		out["target_modules"] = c.TargetModules
	} else {
		out["target_modules"] = nil
	}
	out["adapter_len"] = c.AdapterLen
	out["adapter_layers"] = c.AdapterLayers
	if c.Task != "" {
		out["task_type"] = c.Task
	}
	if c.BaseModelNameOrPath != "" {
		out["base_model_name_or_path"] = c.BaseModelNameOrPath
	}
	if c.Revision != nil {
		out["revision"] = *c.Revision
	}
	out["peft_type"] = PeftType
	out["inference_mode"] = true
	return peft.EncodeConfig(out)
}

// Prepare implements peft.TunerConfig (PEFT's prepare_config and the
// choice of parents in AdaptionPromptModel.add_adapter): it checks the
// model type, fills target_modules, and targets the last adapter_layers
// modules whose path ends with target_modules.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("adaption prompt: %w", err)
	}
	mt := ""
	if t, ok := model.(interface{ ModelType() string }); ok {
		mt = t.ModelType()
	}
	if !supported[mt] {
		return peft.Targeting{}, fmt.Errorf("adaption prompt: unsupported model type %q (PEFT's adaption prompt supports llama and mistral)", mt)
	}
	if c.TargetModules == "" {
		c.TargetModules = DefaultTarget
	}
	var paths []string
	for _, p := range nn.Paths(model) {
		if strings.HasSuffix(p, c.TargetModules) && !insideAdapted(model, p) {
			paths = append(paths, p)
		}
	}
	if len(paths) < c.AdapterLayers {
		return peft.Targeting{}, fmt.Errorf("adaption prompt: Config specifies more adapter layers '%d' than the model has '%d' (field \"adapter_layers\"; modules ending with target_modules %q: %d)",
			c.AdapterLayers, len(paths), c.TargetModules, len(paths))
	}
	paths = paths[len(paths)-c.AdapterLayers:]
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = regexp.QuoteMeta(p)
	}
	return peft.Targeting{TargetModules: peft.TargetRegex(strings.Join(quoted, "|"))}, nil
}

// insideAdapted reports whether path is below one of this method's
// wrappers (its wrapped module), which is not a candidate itself.
func insideAdapted(model nn.Module, path string) bool {
	for i := strings.LastIndex(path, "."); i > 0; i = strings.LastIndex(path[:i], ".") {
		if m, err := nn.Get(model, path[:i]); err == nil {
			if _, ok := m.(*Attention); ok {
				return true
			}
		}
	}
	return false
}

var _ peft.TunerConfig = (*Config)(nil)
