package adalora

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/gopeft/peft/peft"
)

// PeftType is AdaLoRA's peft_type.
const PeftType peft.PeftType = "ADALORA"

// Config is PEFT's AdaLoraConfig (a LoraConfig with the rank allocator's
// settings). Field names follow PEFT; JSON uses PEFT 0.10's keys and
// defaults, and keys this library does not know are kept from the file
// read, so a newer PEFT's config round-trips. A Config is not safe for
// concurrent use: training writes RankPattern.
type Config struct {
	// InitR is every layer's rank when the adapter is created [12].
	InitR int `json:"init_r"`
	// TargetR is the average rank the allocator ends with [8]: the final
	// budget is TargetR × the number of adapted layers.
	TargetR int `json:"target_r"`
	// Tinit is the number of warm-up steps before ranks are cut [0].
	Tinit int `json:"tinit"`
	// Tfinal is the number of final steps that train the final ranks [0].
	Tfinal int `json:"tfinal"`
	// DeltaT is the interval in steps between two allocations [1].
	DeltaT int `json:"deltaT"`
	// Beta1 and Beta2 smooth the sensitivity and its uncertainty (EMA) [0.85].
	Beta1 float64 `json:"beta1"`
	Beta2 float64 `json:"beta2"`
	// OrthRegWeight weighs the orthogonal regularisation added to the
	// loss [0.5].
	OrthRegWeight float64 `json:"orth_reg_weight"`
	// TotalStep is the number of training steps (needed by the budget
	// schedule; nil in a config only loaded for inference).
	TotalStep *int `json:"total_step"`
	// RankPattern is the allocator's result: for each adapted layer
	// ("<module path>.lora_E") which of its InitR ranks are kept. Training
	// sets it; Save cuts the tensors to it; Load resizes the layers to it.
	RankPattern map[string][]bool `json:"rank_pattern"`
	// R is LoraConfig's r, not used by AdaLoRA (InitR is the rank) [8].
	R int `json:"r"`
	// LoraAlpha is the scale numerator: ΔW = B(A⊙E)·alpha/ranknum [8].
	LoraAlpha float64 `json:"lora_alpha"`
	// LoraDropout is the dropout probability on the adapter's input [0].
	LoraDropout float64 `json:"lora_dropout"`
	// TargetModules are the layers that get an adapter (unset: PEFT's
	// default for the model type, see DefaultTargets).
	TargetModules peft.Targets `json:"target_modules"`
	// ExcludeModules are never targeted (written only when set).
	ExcludeModules peft.Targets `json:"exclude_modules"`
	// FanInFanOut says the base weight is stored [in, out] (GPT-2's
	// Conv1D); injection sets it from the wrapped layers.
	FanInFanOut bool `json:"fan_in_fan_out"`
	// Bias is which biases train and are saved: "none", "all", "lora_only".
	Bias string `json:"bias"`
	// ModulesToSave_ are modules trained and saved whole beside the adapter.
	ModulesToSave_ []string `json:"modules_to_save"`
	// InitLoraWeights (nil: true) starts A and B at N(0, 0.02) and E at
	// zero (current PEFT), so the adapted model equals its base; false
	// leaves them at N(0, 1).
	InitLoraWeights *bool `json:"init_lora_weights"`
	// LayersToTransform and LayersPattern restrict the targets to some
	// layer indices (an int or a list; a string or a list).
	LayersToTransform intList    `json:"layers_to_transform"`
	LayersPattern     stringList `json:"layers_pattern"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw map[string]json.RawMessage // the file as read
}

// NewConfig returns PEFT's defaults with total_step set (the one field
// AdaLoRA's training needs that has no default).
func NewConfig(totalStep int) *Config {
	return &Config{InitR: 12, TargetR: 8, DeltaT: 1, Beta1: 0.85, Beta2: 0.85, OrthRegWeight: 0.5,
		TotalStep: &totalStep, R: 8, LoraAlpha: 8, Bias: "none", Task: peft.CausalLM}
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// BiasMode implements peft.BiasConfig.
func (c *Config) BiasMode() string {
	if c.Bias == "" {
		return "none"
	}
	return c.Bias
}

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Config) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

func (c *Config) initWeights() bool { return c.InitLoraWeights == nil || *c.InitLoraWeights }

// Decode parses adapter_config.json of an AdaLoRA adapter.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig(0)
	c.TotalStep, c.Task = nil, ""
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	for _, k := range []string{"use_dora", "use_rslora"} {
		if v, ok := c.raw[k]; ok && string(v) == "true" {
			return nil, fmt.Errorf("field %q: AdaLoRA does not support it (true)", k)
		}
	}
	if v, ok := c.raw["loftq_config"]; ok && string(v) != "{}" && string(v) != "null" {
		return nil, fmt.Errorf("field \"loftq_config\": AdaLoRA does not support LoftQ")
	}
	if v, ok := c.raw["layer_replication"]; ok && string(v) != "null" {
		return nil, fmt.Errorf("field \"layer_replication\" is not supported")
	}
	return c, c.Validate()
}

// Validate checks the fields' values (PEFT's AdaLoraConfig.__post_init__
// checks, plus those whose violation PEFT only meets later as a crash).
func (c *Config) Validate() error {
	switch {
	case c.InitR < 0:
		return fmt.Errorf("field \"init_r\" must be >= 0, got %d", c.InitR)
	case c.TargetR < 0:
		return fmt.Errorf("field \"target_r\" must be >= 0, got %d", c.TargetR)
	case c.Tinit < 0:
		return fmt.Errorf("field \"tinit\" must be >= 0, got %d", c.Tinit)
	case c.Tfinal < 0:
		return fmt.Errorf("field \"tfinal\" must be >= 0, got %d", c.Tfinal)
	case c.DeltaT <= 0:
		return fmt.Errorf("field \"deltaT\" must be positive, got %d", c.DeltaT)
	case !(c.Beta1 > 0 && c.Beta1 < 1):
		return fmt.Errorf("field \"beta1\" must be in (0, 1), got %v", c.Beta1)
	case !(c.Beta2 > 0 && c.Beta2 < 1):
		return fmt.Errorf("field \"beta2\" must be in (0, 1), got %v", c.Beta2)
	case math.IsNaN(c.OrthRegWeight) || math.IsInf(c.OrthRegWeight, 0) || c.OrthRegWeight < 0:
		return fmt.Errorf("field \"orth_reg_weight\" must be a finite number >= 0, got %v", c.OrthRegWeight)
	case math.IsNaN(c.LoraDropout) || c.LoraDropout < 0 || c.LoraDropout >= 1:
		return fmt.Errorf("field \"lora_dropout\" must be in [0, 1), got %v", c.LoraDropout)
	case math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0):
		return fmt.Errorf("field \"lora_alpha\" must be a finite number, got %v", c.LoraAlpha)
	}
	if c.TotalStep != nil {
		if *c.TotalStep <= 0 {
			return fmt.Errorf("field \"total_step\" must be positive, got %d", *c.TotalStep)
		}
		if c.Tinit >= *c.TotalStep-c.Tfinal {
			return fmt.Errorf("fields \"tinit\"=%d, \"tfinal\"=%d, \"total_step\"=%d leave no budgeting phase (need tinit < total_step - tfinal)", c.Tinit, c.Tfinal, *c.TotalStep)
		}
	}
	switch c.BiasMode() {
	case "none", "all", "lora_only":
	default:
		return fmt.Errorf("field \"bias\": %q is not one of none, all, lora_only", c.Bias)
	}
	for _, p := range []peft.Targets{c.TargetModules, c.ExcludeModules} {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("field \"target_modules\"/\"exclude_modules\": %w", err)
		}
	}
	if c.TargetModules.Regex != "" && (len(c.LayersToTransform) > 0 || len(c.LayersPattern) > 0) {
		return fmt.Errorf("fields \"layers_to_transform\"/\"layers_pattern\" need a list \"target_modules\", not a regex")
	}
	for _, p := range c.LayersPattern {
		if _, err := peft.LayerPatternRegexp(p); err != nil {
			return fmt.Errorf("field \"layers_pattern\": %q is not a valid regex: %w", p, err)
		}
	}
	for _, l := range c.LayersToTransform {
		if l < 0 {
			return fmt.Errorf("field \"layers_to_transform\": negative layer index %d", l)
		}
	}
	for k, mask := range c.RankPattern {
		if !strings.Contains(k, ".lora_E") {
			return fmt.Errorf("field \"rank_pattern\": key %q does not name a lora_E (\"<module>.lora_E\")", k)
		}
		if len(mask) != c.InitR {
			return fmt.Errorf("field \"rank_pattern\": %q has %d entries, init_r is %d", k, len(mask), c.InitR)
		}
	}
	return nil
}

// defaultKeys are the keys PEFT 0.10 writes for an AdaLoraConfig, with defaults.
var defaultKeys = map[string]any{
	"alpha_pattern": map[string]any{}, "auto_mapping": nil, "base_model_name_or_path": nil,
	"beta1": 0.85, "beta2": 0.85, "bias": "none", "deltaT": 1, "fan_in_fan_out": false,
	"inference_mode": true, "init_lora_weights": true, "init_r": 12, "layer_replication": nil,
	"layers_pattern": nil, "layers_to_transform": nil, "loftq_config": map[string]any{},
	"lora_alpha": 8, "lora_dropout": 0.0, "megatron_config": nil, "megatron_core": "megatron.core",
	"modules_to_save": nil, "orth_reg_weight": 0.5, "peft_type": "ADALORA", "r": 8, "rank_pattern": nil,
	"revision": nil, "target_modules": nil, "target_r": 8, "task_type": nil, "tfinal": 0, "tinit": 0,
	"total_step": nil, "use_dora": false, "use_rslora": false,
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
	set("init_r", c.InitR)
	set("target_r", c.TargetR)
	set("tinit", c.Tinit)
	set("tfinal", c.Tfinal)
	set("deltaT", c.DeltaT)
	set("beta1", c.Beta1)
	set("beta2", c.Beta2)
	set("orth_reg_weight", c.OrthRegWeight)
	if c.TotalStep != nil {
		set("total_step", *c.TotalStep)
	} else {
		set("total_step", nil)
	}
	if c.RankPattern != nil {
		set("rank_pattern", c.RankPattern)
	} else {
		set("rank_pattern", nil)
	}
	set("r", c.R)
	set("lora_alpha", number(c.LoraAlpha))
	set("lora_dropout", c.LoraDropout)
	set("target_modules", c.TargetModules)
	if c.ExcludeModules.IsSet() || c.raw["exclude_modules"] != nil {
		set("exclude_modules", c.ExcludeModules)
	}
	set("fan_in_fan_out", c.FanInFanOut)
	set("bias", c.BiasMode())
	if c.ModulesToSave_ != nil {
		set("modules_to_save", c.ModulesToSave_)
	} else {
		set("modules_to_save", nil)
	}
	set("init_lora_weights", c.initWeights())
	set("layers_to_transform", c.LayersToTransform)
	set("layers_pattern", c.LayersPattern)
	if c.Task != "" {
		set("task_type", c.Task)
	}
	if c.BaseModelNameOrPath != "" {
		set("base_model_name_or_path", c.BaseModelNameOrPath)
	}
	if c.Revision != nil {
		set("revision", *c.Revision)
	}
	set("peft_type", string(PeftType))
	set("inference_mode", true)
	return peft.EncodeConfig(out)
}

// KeptRanks is the number of kept ranks per layer in RankPattern, by
// module path (nil when there is no pattern).
func (c *Config) KeptRanks() map[string]int {
	if c.RankPattern == nil {
		return nil
	}
	out := map[string]int{}
	for k, mask := range c.RankPattern {
		n := 0
		for _, on := range mask {
			if on {
				n++
			}
		}
		out[strings.TrimSuffix(k, ".lora_E")] = n
	}
	return out
}

// patternModule is the module path of a rank_pattern key
// ("<path>.lora_E" or, as PEFT keeps it in memory, "<path>.lora_E.<adapter>").
func patternModule(key, adapter string) (string, bool) {
	if p, ok := strings.CutSuffix(key, ".lora_E."+adapter); ok {
		return p, true
	}
	return strings.CutSuffix(key, ".lora_E")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// intList is an int or a list of ints in JSON (layers_to_transform).
type intList []int

func (l intList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]int(l))
}

func (l *intList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one int
	if json.Unmarshal(b, &one) == nil {
		*l = intList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("layers_to_transform: %w", err)
	}
	*l = many
	return nil
}

// stringList is a string or a list of strings in JSON (layers_pattern).
type stringList []string

func (l stringList) MarshalJSON() ([]byte, error) {
	if l == nil {
		return []byte("null"), nil
	}
	return json.Marshal([]string(l))
}

func (l *stringList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("layers_pattern: %w", err)
	}
	*l = many
	return nil
}

// number writes a float as Python does for whole numbers in a config (8, not 8.0).
func number(f float64) json.Number {
	return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
}
