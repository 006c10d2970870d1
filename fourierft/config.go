package fourierft

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"

	"github.com/gopeft/peft/internal/cfgjson"
	"github.com/gopeft/peft/peft"
)

// PeftType is FourierFT's peft_type.
const PeftType peft.PeftType = "FOURIERFT"

// Config is PEFT's FourierFTConfig (PEFT 0.13.2). Field names follow HF's;
// JSON uses PEFT's keys and defaults, and keys this library does not know
// are kept from the file read. A Config is not safe for concurrent use:
// adding it to a model fills its defaults.
type Config struct {
	// NFrequency is the number of learned spectral coefficients per layer
	// [1000; 0 means the default].
	NFrequency int `json:"n_frequency"`
	// Scaling multiplies ΔW [150; 0 means the default].
	Scaling float64 `json:"scaling"`
	// RandomLocSeed seeds torch's CPU generator that picks the coefficients'
	// locations [777]. PEFT does not save the locations: the same seed
	// gives the same ones.
	RandomLocSeed *int64 `json:"random_loc_seed"`
	// FanInFanOut says the base weight is stored [in, out] (GPT-2's
	// Conv1D); injection sets it from the wrapped layers, as PEFT does.
	FanInFanOut bool `json:"fan_in_fan_out"`
	// TargetModules are the Linear/Conv1D layers adapted (unset: PEFT's
	// default for the model_type, see DefaultTargets).
	TargetModules peft.Targets `json:"target_modules"`
	// Bias is "none", "all" or "fourier_only".
	Bias string `json:"bias"`
	// ModulesToSave_ are modules trained and saved whole (PEFT's modules_to_save).
	ModulesToSave_ []string `json:"modules_to_save"`
	// LayersToTransform keeps only modules in these layer indices.
	LayersToTransform cfgjson.IntList `json:"layers_to_transform"`
	// LayersPattern names the module list holding the layers.
	LayersPattern cfgjson.StringList `json:"layers_pattern"`
	// NFrequencyPattern gives some layers another n_frequency: a key is a
	// regex matched against the end of the module path (PEFT's
	// `.*\.<key>$`), or a whole path; the first matching key wins.
	NFrequencyPattern Pattern `json:"n_frequency_pattern"`
	// InitWeights starts the spectrum at zero (ΔW = 0); false, PEFT's
	// default, draws it from N(0, 1).
	InitWeights bool `json:"init_weights"`
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

// BiasMode implements peft.BiasConfig.
func (c *Config) BiasMode() string { return c.bias() }

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// SetFanInFanOut implements peft.FanInFanOutConfig.
func (c *Config) SetFanInFanOut(on bool) { c.FanInFanOut = on }

func (c *Config) nFrequency() int {
	if c.NFrequency == 0 {
		return 1000
	}
	return c.NFrequency
}

func (c *Config) scaling() float64 {
	if c.Scaling == 0 {
		return 150
	}
	return c.Scaling
}

func (c *Config) seed() int64 {
	if c.RandomLocSeed == nil {
		return 777
	}
	return *c.RandomLocSeed
}

func (c *Config) bias() string {
	if c.Bias == "" {
		return "none"
	}
	return c.Bias
}

// Decode parses adapter_config.json of a FourierFT adapter.
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
	if c.NFrequency < 0 {
		return fmt.Errorf("field \"n_frequency\": %d must be positive", c.NFrequency)
	}
	if math.IsNaN(c.Scaling) || math.IsInf(c.Scaling, 0) {
		return fmt.Errorf("field \"scaling\": %g must be finite", c.Scaling)
	}
	if c.seed() < 0 {
		return fmt.Errorf("field \"random_loc_seed\": %d must not be negative", c.seed())
	}
	switch c.bias() {
	case "none", "all", "fourier_only":
	default:
		return fmt.Errorf("field \"bias\": %q must be \"none\", \"all\" or \"fourier_only\"", c.Bias)
	}
	if c.TargetModules.Regex != "" && c.TargetModules.Regex != peft.AllLinear {
		if _, err := regexp.Compile(c.TargetModules.Regex); err != nil {
			return fmt.Errorf("field \"target_modules\": regex %q: %w", c.TargetModules.Regex, err)
		}
		// PEFT's __post_init__
		if len(c.LayersToTransform) > 0 {
			return fmt.Errorf("field \"layers_to_transform\" cannot be used when \"target_modules\" is a str")
		}
		if len(c.LayersPattern) > 0 {
			return fmt.Errorf("field \"layers_pattern\" cannot be used when \"target_modules\" is a str")
		}
	}
	for _, e := range c.NFrequencyPattern {
		if e.N <= 0 {
			return fmt.Errorf("field \"n_frequency_pattern\": %q: n_frequency %d must be positive", e.Key, e.N)
		}
		if _, err := regexp.Compile(`^.*\.` + e.Key + `$`); err != nil {
			return fmt.Errorf("field \"n_frequency_pattern\": key %q: %w", e.Key, err)
		}
	}
	return nil
}

// nFrequencyFor is PEFT's choice of n_frequency for the module at path:
// the first n_frequency_pattern key whose `.*\.<key>$` matches, else an
// entry for the whole path, else n_frequency.
func (c *Config) nFrequencyFor(path string) int {
	for _, e := range c.NFrequencyPattern {
		if re, err := regexp.Compile(`^.*\.` + e.Key + `$`); err == nil && re.MatchString(path) {
			return e.N
		}
	}
	for _, e := range c.NFrequencyPattern {
		if e.Key == path {
			return e.N
		}
	}
	return c.nFrequency()
}

// defaultKeys are the keys PEFT 0.13.2 writes for a FourierFTConfig, with defaults.
var defaultKeys = map[string]any{
	"auto_mapping": nil, "base_model_name_or_path": nil, "bias": "none", "fan_in_fan_out": false,
	"inference_mode": true, "init_weights": false, "layers_pattern": nil, "layers_to_transform": nil,
	"modules_to_save": nil, "n_frequency": 1000, "n_frequency_pattern": map[string]int{}, "peft_type": "FOURIERFT",
	"random_loc_seed": 777, "revision": nil, "scaling": 150.0, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json with PEFT's keys (the file's
// unknown keys kept).
func (c *Config) MarshalJSON() ([]byte, error) {
	ours := map[string]any{
		"n_frequency": c.nFrequency(), "scaling": c.scaling(), "random_loc_seed": c.seed(),
		"fan_in_fan_out": c.FanInFanOut, "target_modules": c.TargetModules, "bias": c.bias(),
		"modules_to_save": c.ModulesToSave_, "layers_to_transform": c.LayersToTransform,
		"layers_pattern": c.LayersPattern, "n_frequency_pattern": c.NFrequencyPattern,
		"init_weights": c.InitWeights, "peft_type": string(PeftType),
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

// PatternEntry is one key of n_frequency_pattern (a plain value, safe for
// concurrent use when not changed).
type PatternEntry struct {
	Key string
	N   int
}

// Pattern is n_frequency_pattern: a JSON object whose key order matters
// (PEFT takes the first matching key), kept in the file's order. It is a
// plain value, safe for concurrent use when not changed.
type Pattern []PatternEntry

// MarshalJSON writes the object in the entries' order ({} when empty).
func (p Pattern) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range p {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(e.Key)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		fmt.Fprintf(&b, ":%d", e.N)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object of integers (null: empty), in order.
func (p *Pattern) UnmarshalJSON(data []byte) error {
	*p = nil
	if string(bytes.TrimSpace(data)) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("n_frequency_pattern: want an object, got %v", tok)
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		var n int
		if err := dec.Decode(&n); err != nil {
			return fmt.Errorf("n_frequency_pattern: %q: %w", kt, err)
		}
		*p = append(*p, PatternEntry{Key: kt.(string), N: n})
	}
	return nil
}
