// Package bitfit is BitFit (Ben Zaken et al. 2022): fine-tune only the
// model's bias terms — every one, or those of chosen modules (e.g. only the
// attention query_key_value biases) — and freeze everything else.
//
// In the seed notes' taxonomy BitFit is a selective method: it adds no
// parameters, trains a tiny share of the existing ones (BLOOM: 11h biases
// per block plus 2h, 0.04% of bloom-1b4-zh — see BiasParamsFromConfig),
// and needs no merge: the trained biases are the model's own, so
// MergeAndUnload returns the model as it is. LLaMA-family models have no
// biases at all (Qwen2 has q/k/v biases), so BitFit is for BLOOM-, GPT-2-
// and BERT-style models. With task type SEQ_CLS or TOKEN_CLS the
// classifier head trains in full too and is saved with the biases, as in
// the BitFit paper's GLUE experiments (examples/bert-bitfit).
//
//	model, err := bitfit.Wrap(base, &bitfit.Config{})                      // every bias
//	model, err := bitfit.Wrap(base, &bitfit.Config{TargetModules: bitfit.List("query_key_value")})
//
// HF PEFT has no BitFit, so the adapter format is this library's own,
// shaped like PEFT's: adapter_config.json with
//
//	{"peft_type": "BITFIT", "task_type": "CAUSAL_LM", "target_modules": null | [...] | "regex",
//	 "base_model_name_or_path": ..., "revision": null, "inference_mode": true}
//
// (sorted keys, indent 2; unknown keys kept) and adapter_model.safetensors
// holding the trained biases under their plain HF names
// ("transformer.h.0.self_attention.query_key_value.bias", no
// "base_model.model." prefix), so the file also overlays a HF checkpoint
// directly (load_state_dict(..., strict=False) in Python). peft.Load reads
// it back; disabling the adapter leaves the biases as they are, as PEFT
// does for bias="all".
package bitfit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is BitFit's peft_type in adapter_config.json.
const PeftType peft.PeftType = "BITFIT"

func init() { peft.Register(PeftType, Decode) }

// Config chooses the biases that train.
type Config struct {
	// TargetModules chooses the modules whose biases train, with PEFT's
	// matching: a list entry equals a module's path or a "."-suffix of it
	// ("query_key_value", "mlp.dense_4h_to_h"), a string is a regex that
	// must match the whole module path. Unset (null): every bias of the
	// model, LayerNorms included.
	TargetModules Targets `json:"target_modules"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage
}

// Wrap freezes base and trains the chosen biases (adapter "default").
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// SelectsParam implements peft.SelectiveConfig: a bias of a targeted module.
func (c *Config) SelectsParam(name string) bool {
	var module string
	switch {
	case name == "bias":
		module = ""
	case strings.HasSuffix(name, ".bias"):
		module = strings.TrimSuffix(name, ".bias")
	default:
		return false
	}
	if !c.TargetModules.IsSet() {
		return true
	}
	return c.TargetModules.Matches(module)
}

// CheckModel implements peft.ModelChecker. BitFit adds nothing; it checks that the
// configuration chooses at least one bias of the model.
func (c *Config) CheckModel(model nn.Module) error {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("bitfit: %w", err)
	}
	var withBias []string
	n := 0
	for _, np := range nn.NamedParams(model) {
		if np.Name == "bias" || strings.HasSuffix(np.Name, ".bias") {
			mod := strings.TrimSuffix(strings.TrimSuffix(np.Name, "bias"), ".")
			withBias = append(withBias, mod[strings.LastIndex(mod, ".")+1:])
			if c.SelectsParam(np.Name) {
				n++
			}
		}
	}
	if len(withBias) == 0 {
		return fmt.Errorf("bitfit: the model has no bias parameters (LLaMA-family models have none; BitFit needs a model with biases such as BLOOM, GPT-2 or Qwen2)")
	}
	if n == 0 {
		return fmt.Errorf("bitfit: target_modules %s matched no module with a bias; modules with biases are %v", c.TargetModules, distinct(withBias))
	}
	return nil
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if c.TargetModules.Regex != "" {
		if _, err := regexp.Compile(c.TargetModules.Regex); err != nil {
			return fmt.Errorf("field \"target_modules\": regex %q: %w", c.TargetModules.Regex, err)
		}
	}
	return nil
}

// Decode parses adapter_config.json of a BitFit adapter.
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

// MarshalJSON renders adapter_config.json (sorted keys, indent 2,
// inference_mode true; keys of the file read that this version does not
// know are kept).
func (c *Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	for k, v := range c.raw {
		out[k] = v
	}
	out["peft_type"] = string(PeftType)
	out["task_type"] = nullable(string(c.Task))
	out["target_modules"] = c.TargetModules
	out["base_model_name_or_path"] = nullable(c.BaseModelNameOrPath)
	out["revision"] = c.Revision
	out["inference_mode"] = true
	return marshal(out)
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func distinct(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// Targets is target_modules: a list of names, a regex string (full match),
// or unset (null); see peft.Targets.
type Targets = peft.Targets

// List makes list targets.
func List(names ...string) Targets { return peft.TargetList(names...) }

// Regex makes regex targets (matched against the whole module path).
func Regex(pattern string) Targets { return peft.TargetRegex(pattern) }

var _ peft.SelectiveConfig = (*Config)(nil)
