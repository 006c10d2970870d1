// Package freeze is freeze tuning as LLaMA-Factory does it
// (`finetuning_type: freeze`): train the last N decoder layers (or the
// first N), optionally only some of their sub-modules (mlp, self_attn, …),
// plus extra modules outside the layers (lm_head, embed_tokens, norm, …);
// everything else stays frozen.
//
// In the seed notes' taxonomy freeze tuning is a selective method: it adds
// nothing and trains a chosen part of the model in full (two of 24 layers
// of bloom-1b4-zh is ~8% of its parameters), so it needs no merge —
// MergeAndUnload returns the model with its trained weights, and its Save
// writes the full HF checkpoint that LLaMA-Factory produces.
//
//	model, err := freeze.Wrap(base, &freeze.Config{})                  // LLaMA-Factory's default: the last 2 layers
//	model, err := freeze.Wrap(base, &freeze.Config{TrainableLayers: freeze.Layers(-4),
//	        TrainableModules: []string{"mlp"}, ExtraModules: []string{"lm_head"}})
//
// HF PEFT has no freeze tuning, so the adapter format is this library's
// own, the same shape as package bitfit's: adapter_config.json with
// LLaMA-Factory's argument names
//
//	{"peft_type": "FREEZE", "task_type": "CAUSAL_LM", "freeze_trainable_layers": 2,
//	 "freeze_trainable_modules": ["all"], "freeze_extra_modules": null,
//	 "base_model_name_or_path": ..., "revision": null, "inference_mode": true}
//
// and adapter_model.safetensors with the trained parameters under their
// plain HF names (model.layers.1.mlp.down_proj.weight); a tied lm_head is
// saved as the embedding it shares its weight with. peft.Load reads it
// back.
package freeze

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is freeze tuning's peft_type in adapter_config.json.
const PeftType peft.PeftType = "FREEZE"

func init() { peft.Register(PeftType, Decode) }

// Config chooses what trains, with LLaMA-Factory's FreezeArguments.
type Config struct {
	// TrainableLayers is freeze_trainable_layers: n > 0 trains the last n
	// decoder layers, n < 0 the first |n|, 0 none (only ExtraModules).
	// Unset: 2, LLaMA-Factory's default.
	TrainableLayers *int `json:"freeze_trainable_layers"`
	// TrainableModules is freeze_trainable_modules: the sub-modules of the
	// chosen layers that train, named as they follow the layer index in
	// parameter names ("mlp", "self_attn", "self_attention",
	// "input_layernorm"), or "all" (the default). A comma-separated string
	// is accepted too, as on LLaMA-Factory's command line.
	TrainableModules StringList `json:"freeze_trainable_modules"`
	// ExtraModules is freeze_extra_modules: modules outside the decoder
	// layers that train too ("lm_head", "embed_tokens", "norm", "ln_f",
	// "word_embeddings"), each matching a module's path or a "."-suffix of
	// it. (LLaMA-Factory matches substrings of parameter names, so its
	// "norm" also trains every layer's input_layernorm; here it is only
	// model.norm.)
	ExtraModules StringList `json:"freeze_extra_modules"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw    map[string]json.RawMessage
	layers map[int]bool // resolved by CheckModel
}

// Layers is a helper for TrainableLayers.
func Layers(n int) *int { return &n }

// Wrap freezes base and trains what cfg chooses (adapter "default").
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

func (c *Config) numTrainable() int {
	if c.TrainableLayers == nil {
		return 2
	}
	return *c.TrainableLayers
}

func (c *Config) modules() []string {
	if len(c.TrainableModules) == 0 {
		return []string{"all"}
	}
	return c.TrainableModules
}

// layerOf splits a parameter name at its layer index: "model.layers.3.mlp.up_proj.weight"
// → 3, "mlp". ok is false for parameters outside the layers (the first
// numeric path component that follows another component marks a layer).
func layerOf(name string) (idx int, sub string, ok bool) {
	parts := strings.Split(name, ".")
	for i := 1; i < len(parts)-1; i++ {
		if n, err := strconv.Atoi(parts[i]); err == nil {
			return n, parts[i+1], true
		}
	}
	return 0, "", false
}

// SelectsParam implements peft.SelectiveConfig (after CheckModel resolved the
// layers): a parameter of a chosen layer's chosen sub-module, or of an
// extra module.
func (c *Config) SelectsParam(name string) bool {
	if idx, sub, ok := layerOf(name); ok {
		if !c.layers[idx] {
			return false
		}
		for _, m := range c.modules() {
			if m == "all" || m == sub {
				return true
			}
		}
		return false
	}
	mod := modulePath(name)
	for _, e := range c.ExtraModules {
		if mod == e || strings.HasSuffix(mod, "."+e) {
			return true
		}
	}
	return false
}

// modulePath is the path of the module that owns a parameter.
func modulePath(name string) string {
	if i := strings.LastIndex(name, "."); i >= 0 {
		return name[:i]
	}
	return ""
}

// CheckModel implements peft.ModelChecker: it resolves the layers from the model and
// checks that every name in the configuration exists.
func (c *Config) CheckModel(model nn.Module) error {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	names := nn.NamedParams(model)
	numLayers := 0
	subs, extras := map[string]bool{}, map[string]bool{}
	for _, np := range names {
		if idx, sub, ok := layerOf(np.Name); ok {
			if idx+1 > numLayers {
				numLayers = idx + 1
			}
			subs[sub] = true
			continue
		}
	}
	// modules outside the layers, by path (a tied head too: its parameter
	// is listed under the embedding)
	var outside []string
	_ = nn.Walk(model, func(path string, m nn.Module) error {
		if _, _, inLayer := layerOf(path + ".x"); len(nn.LocalParams(m)) > 0 && path != "" && !inLayer {
			outside = append(outside, path)
			extras[path[strings.LastIndex(path, ".")+1:]] = true
		}
		return nil
	})
	if sz, ok := model.(models.Sized); ok {
		numLayers = int(sz.Dims().NumLayers)
	}
	n := c.numTrainable()
	if n > numLayers || -n > numLayers {
		return fmt.Errorf("freeze: freeze_trainable_layers %d: the model has %d layers", n, numLayers)
	}
	c.layers = map[int]bool{}
	if n > 0 {
		for i := numLayers - n; i < numLayers; i++ {
			c.layers[i] = true
		}
	} else {
		for i := 0; i < -n; i++ {
			c.layers[i] = true
		}
	}
	for _, m := range c.modules() {
		if m != "all" && !subs[m] {
			return fmt.Errorf("freeze: freeze_trainable_modules: %q is not a sub-module of the model's layers (they have %v)", m, keys(subs))
		}
	}
	for _, e := range c.ExtraModules {
		found := false
		for _, p := range outside {
			found = found || p == e || strings.HasSuffix(p, "."+e)
		}
		if !found {
			return fmt.Errorf("freeze: freeze_extra_modules: %q is not a module outside the layers (the model has %v)", e, keys(extras))
		}
	}
	if len(peft.SelectedParams(model, c)) == 0 {
		return fmt.Errorf("freeze: nothing to train (freeze_trainable_layers 0 and no freeze_extra_modules)")
	}
	return nil
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Decode parses adapter_config.json of a freeze-tuning adapter.
func Decode(data []byte) (peft.Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, nil
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
	out["freeze_trainable_layers"] = c.numTrainable()
	out["freeze_trainable_modules"] = c.modules()
	out["freeze_extra_modules"] = c.ExtraModules
	out["base_model_name_or_path"] = nullable(c.BaseModelNameOrPath)
	out["revision"] = c.Revision
	out["inference_mode"] = true
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// StringList is a list of names, read from a JSON list or a
// comma-separated string ("mlp,self_attn"); null is empty.
type StringList []string

func (l StringList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]string(l))
}

func (l *StringList) UnmarshalJSON(b []byte) error {
	*l = nil
	if string(b) == "null" {
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		for _, p := range strings.Split(one, ",") {
			if p = strings.TrimSpace(p); p != "" {
				*l = append(*l, p)
			}
		}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

var _ peft.SelectiveConfig = (*Config)(nil)
