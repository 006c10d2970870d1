package lora

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/gopeft/peft/peft"
)

// Config is PEFT's LoraConfig. Field names follow HF's; JSON uses PEFT's
// keys and defaults, and keys this library does not know are kept from the
// file read so a newer PEFT's config round-trips.
type Config struct {
	// R is the rank r of the update B·A (A is [r, in], B is [out, r]);
	// 0 takes PEFT's default 8.
	R int `json:"r"`
	// LoraAlpha is α: the update is scaled by α/r (α/√r with UseRSLoRA);
	// 0 takes PEFT's default 8.
	LoraAlpha float64 `json:"lora_alpha"`
	// LoraDropout is the dropout probability applied to the layer's input
	// before A, in training only; in [0, 1).
	LoraDropout float64 `json:"lora_dropout"`
	// TargetModules are the modules to wrap: a list of names matched
	// against the end of the module path, a regex matched against the whole
	// path, or "all-linear" (every Linear/Conv1D but the output layer).
	// Unset: PEFT's default for the model_type (DefaultTargets).
	TargetModules Targets `json:"target_modules"`
	// ExcludeModules are never wrapped, even when TargetModules selects
	// them (same matching as TargetModules).
	ExcludeModules Targets `json:"exclude_modules"`
	// FanInFanOut says the base weight is stored [in, out] (GPT-2's
	// Conv1D). Injection sets it from the wrapped layers, as PEFT does.
	FanInFanOut bool `json:"fan_in_fan_out"`
	// Bias says which biases train and are saved with the adapter:
	// "none" (default), "all" (every bias of the model), "lora_only" (the
	// biases of the wrapped layers).
	Bias string `json:"bias"`
	// UseRSLoRA scales by α/√r instead of α/r (rank-stabilized LoRA).
	UseRSLoRA bool `json:"use_rslora"`
	// UseDoRA adds DoRA's learned magnitude per output row (weight-
	// decomposed LoRA); not on embeddings.
	UseDoRA bool `json:"use_dora"`
	// ModulesToSave_ are modules (a classifier head, lm_head) trained and
	// saved whole beside the adapter, named by the end of their path
	// (PEFT's modules_to_save; the underscore leaves ModulesToSave to the
	// method that returns it).
	ModulesToSave_ []string `json:"modules_to_save"`
	// InitLoraWeights chooses A's initialisation: true (Kaiming-uniform A,
	// zero B: the wrapped model starts equal to the base), "gaussian"
	// (normal A scaled by 1/r, zero B), false (random A and B: a test
	// setting), or one of the inits that read the base weight and rewrite
	// it (see init.go): "pissa" (principal singular vectors; the base
	// becomes the residual), "pissa_niter_<N>" (the same by randomized SVD
	// with N subspace iterations), "olora" (QR) or "loftq" (quantised base
	// plus a low-rank correction, with LoftQConfig).
	InitLoraWeights Init `json:"init_lora_weights"`
	// LoftQConfig is loftq_config, LoftQ's settings for init_lora_weights
	// "loftq"; nil (PEFT's {}) means 4 bits and 1 iteration.
	LoftQConfig *LoftQConfig `json:"loftq_config"`
	// LayersToTransform keeps only the modules in these layer indices (with
	// a list TargetModules).
	LayersToTransform IntList `json:"layers_to_transform"`
	// LayersPattern names the module list holding the layers ("layers",
	// "h") for LayersToTransform; empty: any "<name>.<index>." in the path.
	LayersPattern StringList `json:"layers_pattern"`
	// RankPattern overrides R for the modules whose path matches a key
	// (a regex matched against the end of the path), in the keys' order.
	RankPattern OrderedMap `json:"rank_pattern"`
	// AlphaPattern overrides LoraAlpha the same way.
	AlphaPattern OrderedMap `json:"alpha_pattern"`
	// Task is PEFT's task_type (CAUSAL_LM by default; SEQ_CLS and
	// TOKEN_CLS train and save the classifier head too).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage // the file as read
}

// NewConfig returns PEFT's defaults (r 8, alpha 8, task CAUSAL_LM).
func NewConfig() *Config {
	return &Config{R: 8, LoraAlpha: 8, Bias: "none", InitLoraWeights: Init{Value: "true"}, Task: peft.CausalLM}
}

func (c *Config) PeftType() peft.PeftType { return peft.LoRA }
func (c *Config) TaskType() peft.TaskType { return c.Task }
func (c *Config) BiasMode() string {
	if c.Bias == "" {
		return "none"
	}
	return c.Bias
}
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// Scaling is lora_alpha / r, or lora_alpha / √r with rsLoRA.
func (c *Config) Scaling(r int, alpha float64) float64 {
	if c.UseRSLoRA {
		return alpha / sqrt(float64(r))
	}
	return alpha / float64(r)
}

// Decode parses adapter_config.json of a LoRA adapter.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig()
	c.Task = ""
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	if v, ok := c.raw["lora_bias"]; ok && string(v) == "true" {
		return nil, fmt.Errorf("field \"lora_bias\": true is not supported")
	}
	if v, ok := c.raw["layer_replication"]; ok && string(v) != "null" {
		return nil, fmt.Errorf("field \"layer_replication\" is not supported")
	}
	return c, c.Validate()
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if c.R <= 0 {
		return fmt.Errorf("field \"r\" must be positive, got %d", c.R)
	}
	switch c.BiasMode() {
	case "none", "all", "lora_only":
	default:
		return fmt.Errorf("field \"bias\": %q is not one of none, all, lora_only", c.Bias)
	}
	kind, _, err := parseInit(c.InitLoraWeights.Value)
	if err != nil {
		return err
	}
	if kind == initLoftQ { // PEFT reads loftq_config for this init only
		if err := c.LoftQConfig.validate(); err != nil {
			return err
		}
	}
	if c.TargetModules.Regex != "" && (len(c.LayersToTransform) > 0 || len(c.LayersPattern) > 0) {
		return fmt.Errorf("fields \"layers_to_transform\"/\"layers_pattern\" need a list \"target_modules\", not a regex")
	}
	for _, p := range []Targets{c.TargetModules, c.ExcludeModules} {
		if err := p.Validate(); err != nil {
			return err
		}
	}
	// layers_pattern is a regex (PEFT puts it unescaped into
	// rf".*\.{layer_pattern}\.(\d+)\."); a bad one is refused here
	for _, p := range c.LayersPattern {
		if _, err := peft.LayerPatternRegexp(p); err != nil {
			return fmt.Errorf("field \"layers_pattern\": %q is not a valid regex: %w", p, err)
		}
	}
	for _, m := range []struct {
		field string
		om    OrderedMap
	}{{"rank_pattern", c.RankPattern}, {"alpha_pattern", c.AlphaPattern}} {
		for _, k := range m.om.Keys {
			if _, err := patternRegexp(k); err != nil {
				return fmt.Errorf("field %q: key %q is not a valid regex: %w", m.field, k, err)
			}
			v := m.om.Values[k]
			if math.IsNaN(v) || math.IsInf(v, 0) || (m.field == "rank_pattern" && (v <= 0 || v != math.Trunc(v))) {
				return fmt.Errorf("field %q: key %q has value %v (want a positive %s)", m.field, k, v, map[bool]string{true: "integer", false: "number"}[m.field == "rank_pattern"])
			}
		}
	}
	if math.IsNaN(c.LoraDropout) || c.LoraDropout < 0 || c.LoraDropout >= 1 {
		return fmt.Errorf("field \"lora_dropout\" must be in [0, 1), got %v", c.LoraDropout)
	}
	if math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0) {
		return fmt.Errorf("field \"lora_alpha\" must be a finite number, got %v", c.LoraAlpha)
	}
	for _, l := range c.LayersToTransform {
		if l < 0 {
			return fmt.Errorf("field \"layers_to_transform\": negative layer index %d", l)
		}
	}
	return nil
}

// patternRegexp is PEFT's match of a rank_pattern/alpha_pattern key
// (re.match(rf"(.*\.)?({key})$", name)).
func patternRegexp(k string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:.*\.)?(?:` + k + `)$`)
}

// defaultKeys are the keys PEFT 0.10 writes for a LoraConfig, with defaults.
var defaultKeys = map[string]any{
	"alpha_pattern": map[string]any{}, "auto_mapping": nil, "base_model_name_or_path": nil,
	"bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
	"layer_replication": nil, "layers_pattern": nil, "layers_to_transform": nil, "loftq_config": map[string]any{},
	"lora_alpha": 8, "lora_dropout": 0.0, "megatron_config": nil, "megatron_core": "megatron.core",
	"modules_to_save": nil, "peft_type": "LORA", "r": 8, "rank_pattern": map[string]any{}, "revision": nil,
	"target_modules": nil, "task_type": nil, "use_dora": false, "use_rslora": false,
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
	set := func(k string, v any) { out[k] = v }
	set("r", c.R)
	set("lora_alpha", number(c.LoraAlpha))
	set("lora_dropout", c.LoraDropout)
	set("target_modules", c.TargetModules)
	if c.ExcludeModules.IsSet() || c.raw["exclude_modules"] != nil {
		set("exclude_modules", c.ExcludeModules)
	}
	set("fan_in_fan_out", c.FanInFanOut)
	set("bias", c.BiasMode())
	set("use_rslora", c.UseRSLoRA)
	set("use_dora", c.UseDoRA)
	if c.ModulesToSave_ != nil {
		set("modules_to_save", c.ModulesToSave_)
	} else {
		set("modules_to_save", nil)
	}
	set("init_lora_weights", c.InitLoraWeights)
	if c.LoftQConfig != nil {
		set("loftq_config", c.LoftQConfig)
	} else {
		set("loftq_config", map[string]any{})
	}
	set("layers_to_transform", c.LayersToTransform)
	set("layers_pattern", c.LayersPattern)
	set("rank_pattern", c.RankPattern)
	set("alpha_pattern", c.AlphaPattern)
	if c.Task != "" {
		set("task_type", c.Task)
	}
	if c.BaseModelNameOrPath != "" {
		set("base_model_name_or_path", c.BaseModelNameOrPath)
	}
	if c.Revision != nil {
		set("revision", *c.Revision)
	}
	set("peft_type", "LORA")
	set("inference_mode", true)
	return peft.EncodeConfig(out)
}

// number writes integral floats without a fraction (PEFT writes 16, not 16.0).
func number(f float64) json.Number {
	return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
}

// Targets is target_modules / exclude_modules: a list of names (exact or
// "."-suffix match), a regex string (full match), or unset (null); see
// peft.Targets.
type Targets = peft.Targets

// List makes list targets.
func List(names ...string) Targets { return peft.TargetList(names...) }

// Regex makes regex targets (matched against the whole module path).
func Regex(pattern string) Targets { return peft.TargetRegex(pattern) }

// Init is init_lora_weights: true, false or a string ("gaussian", "pissa",
// "pissa_niter_<N>", "olora", "loftq"); Value holds the JSON boolean's text
// ("true", "false") or the string.
type Init struct{ Value string }

func (i Init) MarshalJSON() ([]byte, error) {
	switch i.Value {
	case "", "true":
		return []byte("true"), nil
	case "false":
		return []byte("false"), nil
	}
	return json.Marshal(i.Value)
}

func (i *Init) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		i.Value = s
		return nil
	}
	i.Value = string(b)
	return nil
}

// IntList is an int or a list of ints (layers_to_transform).
type IntList []int

func (l IntList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]int(l))
}

func (l *IntList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one int
	if json.Unmarshal(b, &one) == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// StringList is a string or a list of strings (layers_pattern).
type StringList []string

func (l StringList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]string(l))
}

func (l *StringList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// OrderedMap is a JSON object of pattern → number that keeps the file's key
// order (rank_pattern / alpha_pattern: the first matching key wins).
type OrderedMap struct {
	Keys   []string
	Values map[string]float64
}

func (m OrderedMap) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range m.Keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		buf.WriteString(string(number(m.Values[k])))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func (m *OrderedMap) UnmarshalJSON(b []byte) error {
	*m = OrderedMap{Values: map[string]float64{}}
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return err
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		var v float64
		if err := dec.Decode(&v); err != nil {
			return err
		}
		k := kt.(string)
		m.Keys = append(m.Keys, k)
		m.Values[k] = v
	}
	return nil
}

// Lookup returns the value of the first pattern matching module name
// (PEFT: re.match(rf"(.*\.)?({key})$", name)).
func (m OrderedMap) Lookup(name string) (float64, bool) {
	for _, k := range m.Keys {
		re, err := patternRegexp(k)
		if err == nil && re.MatchString(name) {
			return m.Values[k], true
		}
	}
	return 0, false
}

// LoftQConfig is PEFT's LoftQConfig (loftq_config): the quantisation bits
// (2, 4 or 8; 0 means 4) and the number of alternating
// quantise/low-rank iterations (0 means 1) of init_lora_weights "loftq".
// Fields left 0 are not written, as PEFT writes the dict it was given.
// A plain value: safe for concurrent reads.
type LoftQConfig struct {
	LoftQBits int `json:"loftq_bits"`
	LoftQIter int `json:"loftq_iter"`
}

func (c *LoftQConfig) MarshalJSON() ([]byte, error) {
	out := map[string]int{}
	if c.LoftQBits != 0 {
		out["loftq_bits"] = c.LoftQBits
	}
	if c.LoftQIter != 0 {
		out["loftq_iter"] = c.LoftQIter
	}
	return json.Marshal(out)
}

// bitsIter is the bits and iterations with PEFT's defaults (4, 1).
func (c *LoftQConfig) bitsIter() (bits, iter int) {
	bits, iter = 4, 1
	if c != nil && c.LoftQBits != 0 {
		bits = c.LoftQBits
	}
	if c != nil && c.LoftQIter != 0 {
		iter = c.LoftQIter
	}
	return bits, iter
}

func (c *LoftQConfig) validate() error {
	bits, iter := c.bitsIter()
	switch bits {
	case 2, 4, 8:
	default:
		return fmt.Errorf("field \"loftq_config\": loftq_bits must be 2, 4 or 8, got %d", bits)
	}
	if iter <= 0 {
		return fmt.Errorf("field \"loftq_config\": loftq_iter must be positive, got %d", iter)
	}
	return nil
}
