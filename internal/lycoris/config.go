// Package lycoris is what PEFT's lycoris_utils shares between LoHa and
// LoKr (packages loha and lokr): the LycorisConfig fields (rank r, alpha
// with scaling alpha/r, rank_dropout, module_dropout, rank_pattern /
// alpha_pattern, targeting) with their validation and JSON, and
// LycorisLayer — a Tuner around a Linear layer whose adapters each add
// x·ΔWᵀ, ΔW computed from the adapter's parameters by the method, with
// rank dropout and module dropout in training, merge and unmerge.
//
// The package is internal: users see its types through the aliases the
// method packages export (loha.Pattern, lokr.Pattern, …).
package lycoris

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// Common holds the fields LoHaConfig and LoKrConfig share (PEFT's
// LycorisConfig and the fields both dataclasses repeat). The method
// packages keep these fields flat in their own Config and hand a Common
// over for the shared checks and JSON. A Common is a plain value, not safe
// for concurrent mutation.
type Common struct {
	Method              string // "LoHa" or "LoKr", for messages
	PeftType            peft.PeftType
	R                   int
	Alpha               float64
	RankDropout         float64
	ModuleDropout       float64
	UseEffectiveConv2d  bool
	TargetModules       peft.Targets
	ExcludeModules      peft.Targets
	InitWeights         Init
	InitChoices         []string // the init_weights values the method accepts ("true", "false", …)
	LayersToTransform   IntList
	LayersPattern       StringList
	RankPattern         Pattern
	AlphaPattern        Pattern
	ModulesToSave       []string
	Task                peft.TaskType
	BaseModelNameOrPath string
	Revision            *string
	Raw                 map[string]json.RawMessage
}

// Validate checks the fields' values; errors name the field.
func (c *Common) Validate() error {
	if c.R <= 0 {
		return fmt.Errorf("field \"r\" must be positive, got %d", c.R)
	}
	if math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) {
		return fmt.Errorf("field \"alpha\" must be a finite number, got %v", c.Alpha)
	}
	for _, d := range []struct {
		field string
		v     float64
	}{{"rank_dropout", c.RankDropout}, {"module_dropout", c.ModuleDropout}} {
		if math.IsNaN(d.v) || d.v < 0 || d.v > 1 {
			return fmt.Errorf("field %q must be in [0, 1], got %v", d.field, d.v)
		}
	}
	ok := false
	for _, v := range c.InitChoices {
		ok = ok || c.InitWeights.value() == v
	}
	if !ok {
		return fmt.Errorf("field \"init_weights\": %s is not supported by %s (%v)", c.InitWeights.value(), c.Method, c.InitChoices)
	}
	for _, t := range []struct {
		field string
		t     peft.Targets
	}{{"target_modules", c.TargetModules}, {"exclude_modules", c.ExcludeModules}} {
		if err := t.t.Validate(); err != nil {
			return fmt.Errorf("field %q: %w", t.field, err)
		}
	}
	if c.TargetModules.Regex != "" && c.TargetModules.Regex != peft.AllLinear && (len(c.LayersToTransform) > 0 || len(c.LayersPattern) > 0) {
		return fmt.Errorf("fields \"layers_to_transform\"/\"layers_pattern\" need a list \"target_modules\", not a regex")
	}
	// current PEFT's __post_init__: a pattern without indices is refused
	if len(c.LayersPattern) > 0 && c.LayersToTransform == nil {
		return fmt.Errorf("field \"layers_pattern\" is set but \"layers_to_transform\" is not (PEFT: when layers_pattern is specified, layers_to_transform must also be specified)")
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
	for _, m := range []struct {
		field string
		p     Pattern
	}{{"rank_pattern", c.RankPattern}, {"alpha_pattern", c.AlphaPattern}} {
		for _, k := range m.p.Keys {
			if _, err := patternRegexp(k); err != nil {
				return fmt.Errorf("field %q: key %q is not a valid regex: %w", m.field, k, err)
			}
			v := m.p.Values[k]
			if math.IsNaN(v) || math.IsInf(v, 0) || (m.field == "rank_pattern" && (v <= 0 || v != math.Trunc(v))) {
				what := "finite number"
				if m.field == "rank_pattern" {
					what = "positive integer"
				}
				return fmt.Errorf("field %q: key %q has value %v (want a %s)", m.field, k, v, what)
			}
		}
	}
	return nil
}

// Targeting is what InjectAdapter needs, after "all-linear" is expanded
// (the caller stores the expanded TargetModules back: Save writes it).
func (c *Common) Targeting(model nn.Module) peft.Targeting {
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{
		TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules,
		LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern,
		ModulesToSave: c.ModulesToSave,
	}
}

// RankAlpha is the rank and alpha of the module at path: rank_pattern and
// alpha_pattern looked up separately, the first key (in the file's order)
// matching the end of the path winning (current PEFT's get_pattern_key;
// PEFT 0.10 looked one key up in both maps, which differs only when a
// module matches a rank key and another alpha key).
func (c *Common) RankAlpha(path string) (int, float64) {
	r, alpha := c.R, c.Alpha
	if v, ok := c.RankPattern.Lookup(path); ok {
		r = int(v)
	}
	if v, ok := c.AlphaPattern.Lookup(path); ok {
		alpha = v
	}
	return r, alpha
}

// JSON is adapter_config.json as PEFT 0.10 writes it for this method:
// defaults holds the method's keys with PEFT's default values; the file's
// unknown keys are kept, the config's values put on top. The method adds
// its own fields to the returned map before peft.EncodeConfig.
func (c *Common) JSON(defaults map[string]any) map[string]any {
	out := map[string]any{
		"alpha": 8, "alpha_pattern": map[string]any{}, "auto_mapping": nil, "base_model_name_or_path": nil,
		"inference_mode": true, "init_weights": true, "layers_pattern": nil, "layers_to_transform": nil,
		"module_dropout": 0.0, "modules_to_save": nil, "r": 8, "rank_dropout": 0.0, "rank_pattern": map[string]any{},
		"revision": nil, "target_modules": nil, "task_type": nil, "use_effective_conv2d": false,
	}
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range c.Raw {
		out[k] = v
	}
	out["r"] = c.R
	out["alpha"] = Number(c.Alpha)
	out["rank_dropout"] = c.RankDropout
	out["module_dropout"] = c.ModuleDropout
	out["use_effective_conv2d"] = c.UseEffectiveConv2d
	out["target_modules"] = c.TargetModules
	if c.ExcludeModules.IsSet() || c.Raw["exclude_modules"] != nil {
		out["exclude_modules"] = c.ExcludeModules
	}
	out["init_weights"] = c.InitWeights
	out["layers_to_transform"] = c.LayersToTransform
	out["layers_pattern"] = c.LayersPattern
	out["rank_pattern"] = c.RankPattern
	out["alpha_pattern"] = c.AlphaPattern
	if c.ModulesToSave != nil {
		out["modules_to_save"] = c.ModulesToSave
	} else {
		out["modules_to_save"] = nil
	}
	if c.Task != "" {
		out["task_type"] = c.Task
	}
	if c.BaseModelNameOrPath != "" {
		out["base_model_name_or_path"] = c.BaseModelNameOrPath
	}
	if c.Revision != nil {
		out["revision"] = *c.Revision
	}
	out["peft_type"] = string(c.PeftType)
	out["inference_mode"] = true
	return out
}

// Number writes integral floats without a fraction (PEFT writes 8, not 8.0).
func Number(f float64) json.Number {
	return json.Number(strconv.FormatFloat(f, 'f', -1, 64))
}

// Init is init_weights: true, false, or (LoKr, PEFT ≥ 0.14) "lycoris".
// Value holds "true", "false" or the string; "" means true. Init,
// IntList and StringList are plain values, safe for concurrent reads.
type Init struct{ Value string }

func (i Init) value() string {
	if i.Value == "" {
		return "true"
	}
	return i.Value
}

// IsTrue reports init_weights true (the default).
func (i Init) IsTrue() bool { return i.value() == "true" }

// MarshalJSON writes true, false or the string.
func (i Init) MarshalJSON() ([]byte, error) {
	switch i.value() {
	case "true", "false":
		return []byte(i.value()), nil
	}
	return json.Marshal(i.Value)
}

// UnmarshalJSON reads a bool or a string.
func (i *Init) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		i.Value = s
		return nil
	}
	var v bool
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("init_weights: want true, false or a string, got %s", b)
	}
	i.Value = strconv.FormatBool(v)
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

// Pattern is rank_pattern / alpha_pattern: a JSON object of module-name
// regex → number that keeps the file's key order (the first matching key
// wins). A Pattern is read-only in use and then safe for concurrent use.
type Pattern struct {
	Keys   []string
	Values map[string]float64
}

// MakePattern builds a Pattern from key/value pairs in order.
func MakePattern(pairs ...any) (Pattern, error) {
	p := Pattern{Values: map[string]float64{}}
	if len(pairs)%2 != 0 {
		return p, fmt.Errorf("pattern: %d arguments, want key/value pairs", len(pairs))
	}
	for i := 0; i < len(pairs); i += 2 {
		k, ok := pairs[i].(string)
		if !ok {
			return p, fmt.Errorf("pattern: key %v is not a string", pairs[i])
		}
		var v float64
		switch x := pairs[i+1].(type) {
		case int:
			v = float64(x)
		case float64:
			v = x
		default:
			return p, fmt.Errorf("pattern: value %v of %q is not a number", pairs[i+1], k)
		}
		if _, dup := p.Values[k]; !dup {
			p.Keys = append(p.Keys, k)
		}
		p.Values[k] = v
	}
	return p, nil
}

func (m Pattern) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range m.Keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		buf.WriteString(string(Number(m.Values[k])))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func (m *Pattern) UnmarshalJSON(b []byte) error {
	*m = Pattern{Values: map[string]float64{}}
	if string(b) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object of name → number, got %s", b)
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
		if _, dup := m.Values[k]; !dup {
			m.Keys = append(m.Keys, k)
		}
		m.Values[k] = v
	}
	return nil
}

// Lookup returns the value of the first key matching the end of the
// module path (PEFT: re.match(rf"(.*\.)?({key})$", path)).
func (m Pattern) Lookup(path string) (float64, bool) {
	for _, k := range m.Keys {
		re, err := patternRegexp(k)
		if err == nil && re.MatchString(path) {
			return m.Values[k], true
		}
	}
	return 0, false
}

func patternRegexp(k string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:.*\.)?(?:` + k + `)$`)
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
