// Package orth holds what PEFT's orthogonal fine-tuning methods (packages
// oft, boft and hra) share: the Cayley transform and block-diagonal
// assembly of rotation blocks, the config fields every one of them has,
// and the bookkeeping of a layer's adapters (active, disabled, merged,
// training). It is internal: the methods' public API is in their packages.
package orth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Cayley maps a batch of square matrices data [b, n, n] to orthogonal
// ones: with S = (data - dataᵀ)/2 (the skew-symmetric part),
// Q = (I - S)(I + S)⁻¹, as PEFT's _cayley_batch (OFT 0.10 through
// torch.inverse, BOFT through linalg.solve; the same matrix). Autograd
// flows through it.
func Cayley(s *tensor.Scope, data *tensor.T) *tensor.T {
	if data == nil {
		return s.Failf("orth: cayley of a nil tensor")
	}
	n := data.Size(1)
	skew := s.MulScalar(s.Sub(data, s.Transpose(data, 1, 2)), 0.5)
	prev := s.SetDevice(data.Device())
	eye := s.To(s.Eye(tensor.Float32, n), data.DType())
	s.SetDevice(prev)
	return s.Matmul(s.Sub(eye, skew), s.Inverse(s.Add(eye, skew)))
}

// BlockDiag assembles blocks [D, H, H] into the block-diagonal [D·H, D·H]
// matrix (torch.block_diag of the blocks), differentiably.
func BlockDiag(s *tensor.Scope, blocks *tensor.T) *tensor.T {
	if blocks == nil {
		return s.Failf("orth: block_diag of a nil tensor")
	}
	d, h := blocks.Size(0), blocks.Size(1)
	prev := s.SetDevice(blocks.Device())
	eye := s.View(s.To(s.Eye(tensor.Float32, d), blocks.DType()), d, 1, d, 1)
	s.SetDevice(prev)
	return s.Reshape(s.Mul(s.Unsqueeze(blocks, 2), eye), d*h, d*h)
}

// Eye is the n×n identity in dt on like's device.
func Eye(s *tensor.Scope, n int64, dt tensor.DType, like *tensor.T) *tensor.T {
	if like != nil {
		prev := s.SetDevice(like.Device())
		defer s.SetDevice(prev)
	}
	return s.To(s.Eye(tensor.Float32, n), dt)
}

// LinearOf returns base as the nn.Linear the orthogonal methods wrap (PEFT
// implements them for Linear and Conv2d only: no Conv1D, no 4-bit layer).
func LinearOf(method, path string, base nn.Module) (*nn.Linear, error) {
	l, ok := base.(*nn.Linear)
	if !ok {
		return nil, fmt.Errorf("%s: target module %q is a %s; %s supports Linear layers only", method, path, nn.TypeName(base), method)
	}
	return l, nil
}

// DefaultTargets are PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
// for the model types of this library: BOFT's and HRA's default
// target_modules (OFT 0.10 has no default).
var DefaultTargets = map[string][]string{
	"llama": {"q_proj", "v_proj"}, "mistral": {"q_proj", "v_proj"}, "qwen2": {"q_proj", "v_proj"}, "qwen3": {"q_proj", "v_proj"},
	"gpt2": {"c_attn"}, "bloom": {"query_key_value"}, "bert": {"query", "value"},
	"gemma": {"q_proj", "v_proj"}, "gemma2": {"q_proj", "v_proj"}, "gemma3_text": {"q_proj", "v_proj"},
}

// Common are the fields every orthogonal method's config has, under PEFT's
// JSON names. Not safe for concurrent mutation.
type Common struct {
	// TargetModules are the modules to wrap: names matched against the end
	// of the module path, a regex matched against the whole path, or
	// "all-linear".
	TargetModules peft.Targets `json:"target_modules"`
	// ExcludeModules are never wrapped (a later PEFT's field; written only
	// when set).
	ExcludeModules peft.Targets `json:"exclude_modules"`
	// LayersToTransform keeps only the modules in these layer indices.
	LayersToTransform IntList `json:"layers_to_transform"`
	// LayersPattern names the module list holding the layers ("layers").
	LayersPattern StringList `json:"layers_pattern"`
	// ModulesToSave_ are modules trained and saved whole beside the adapter.
	ModulesToSave_ []string `json:"modules_to_save"`
	// InitWeights (nil or true) starts the adapter at the identity
	// rotation, so the wrapped model equals its base; false starts it
	// random (a test setting, as in PEFT).
	InitWeights *bool `json:"init_weights"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	// Raw is the file as read: keys this library does not know are written
	// back unchanged.
	Raw map[string]json.RawMessage `json:"-"`
}

func (c *Common) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig.
func (c *Common) ModulesToSave() []string { return c.ModulesToSave_ }

// BaseModelName is base_model_name_or_path.
func (c *Common) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Common) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

// Identity reports whether adapters start at the identity (init_weights).
func (c *Common) Identity() bool { return c.InitWeights == nil || *c.InitWeights }

// ValidateCommon checks the shared fields.
func (c *Common) ValidateCommon() error {
	if c.TargetModules.Regex != "" && c.TargetModules.Regex != peft.AllLinear && (len(c.LayersToTransform) > 0 || len(c.LayersPattern) > 0) {
		return fmt.Errorf("fields \"layers_to_transform\"/\"layers_pattern\" need a list \"target_modules\", not a regex")
	}
	for _, p := range []struct {
		field string
		t     peft.Targets
	}{{"target_modules", c.TargetModules}, {"exclude_modules", c.ExcludeModules}} {
		if err := p.t.Validate(); err != nil {
			return fmt.Errorf("field %q: %w", p.field, err)
		}
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
	return nil
}

// Targeting is the peft.Targeting of the shared fields ("all-linear"
// expanded against model, the value Save then writes).
func (c *Common) Targeting(model nn.Module) peft.Targeting {
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
	c.TargetModules = peft.ExpandAllLinear(model, c.TargetModules)
	return peft.Targeting{
		TargetModules: c.TargetModules, ExcludeModules: c.ExcludeModules,
		LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern,
		ModulesToSave: c.ModulesToSave_,
	}
}

// Marshal renders adapter_config.json: defaults (the keys the method's
// PEFT version writes), the file's keys on top, then the shared fields and
// the method's own values (own), with peft_type and inference_mode set.
func (c *Common) Marshal(peftType peft.PeftType, defaults, own map[string]any) ([]byte, error) {
	out := map[string]any{}
	for k, v := range defaults {
		out[k] = v
	}
	for k, v := range c.Raw {
		out[k] = v
	}
	out["target_modules"] = c.TargetModules
	if c.ExcludeModules.IsSet() || c.Raw["exclude_modules"] != nil {
		out["exclude_modules"] = c.ExcludeModules
	}
	out["layers_to_transform"] = c.LayersToTransform
	if len(c.LayersPattern) == 1 {
		out["layers_pattern"] = c.LayersPattern[0]
	} else {
		out["layers_pattern"] = c.LayersPattern
	}
	if c.ModulesToSave_ == nil {
		out["modules_to_save"] = nil
	} else {
		out["modules_to_save"] = c.ModulesToSave_
	}
	out["init_weights"] = c.Identity()
	if c.Task != "" {
		out["task_type"] = c.Task
	}
	if c.BaseModelNameOrPath != "" {
		out["base_model_name_or_path"] = c.BaseModelNameOrPath
	}
	if c.Revision != nil {
		out["revision"] = *c.Revision
	}
	for k, v := range own {
		out[k] = v
	}
	out["peft_type"] = string(peftType)
	out["inference_mode"] = true
	return peft.EncodeConfig(out)
}

// Decode fills cfg (a method's config embedding Common) from data and keeps
// the raw keys.
func Decode(data []byte, cfg any, common *Common) error {
	if err := json.Unmarshal(data, cfg); err != nil {
		return err
	}
	return json.Unmarshal(data, &common.Raw)
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
		return fmt.Errorf("layers_to_transform: %w", err)
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
		return fmt.Errorf("layers_pattern: %w", err)
	}
	*l = many
	return nil
}

// Pattern is a JSON object of module pattern → number that keeps the
// file's key order (LyCORIS-style rank_pattern / alpha_pattern: the first
// key matching a module path wins).
type Pattern struct {
	Keys   []string
	Values map[string]float64
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
		v := m.Values[k]
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			buf.WriteString(strconv.FormatInt(int64(v), 10))
		} else {
			buf.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		}
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
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want a JSON object, got %s", b)
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return err
		}
		var v float64
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("key %v: %w", kt, err)
		}
		k := kt.(string)
		m.Keys = append(m.Keys, k)
		m.Values[k] = v
	}
	return nil
}

// patternRegexp is PEFT's re.match(rf"(.*\.)?{key}$", path).
func patternRegexp(k string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:(?:.*\.)?` + k + `$)`)
}

// Validate checks every key is a regex and every value a positive integer.
func (m Pattern) Validate(field string) error {
	for _, k := range m.Keys {
		if _, err := patternRegexp(k); err != nil {
			return fmt.Errorf("field %q: key %q is not a valid regex: %w", field, k, err)
		}
		v := m.Values[k]
		if math.IsNaN(v) || v <= 0 || v != math.Trunc(v) {
			return fmt.Errorf("field %q: key %q has value %v (want a positive integer)", field, k, v)
		}
	}
	return nil
}

// Lookup returns the value of the first key matching module path.
func (m Pattern) Lookup(path string) (float64, bool) {
	for _, k := range m.Keys {
		re, err := patternRegexp(k)
		if err == nil && re.MatchString(path) {
			return m.Values[k], true
		}
	}
	return 0, false
}

// Switches is a layer's adapter bookkeeping: the active adapters, the
// disabled flag, the merged adapters (in merge order) and training mode.
// Not safe for concurrent mutation.
type Switches struct {
	Active   []string
	Disabled bool
	MergedAd []string
	Training bool
}

// SetActive implements peft.Tuner.
func (w *Switches) SetActive(names []string) { w.Active = append([]string(nil), names...) }

// Merged implements peft.Tuner.
func (w *Switches) Merged() []string { return append([]string(nil), w.MergedAd...) }

// SetTraining implements nn's training switch (dropout runs in training only).
func (w *Switches) SetTraining(on bool) { w.Training = on }

// Call is the adapters the call in s runs (peft.CallAdapters), and an
// error when the call wants a different adapter per row, which the
// orthogonal layers (they rotate the weight) cannot do.
func (w *Switches) Call(s *tensor.Scope, typeName string) (names []string, off bool, ok bool) {
	if peft.CallRows(s) != nil {
		s.Failf("%s: a different adapter per batch row (mixed-adapter batch) is not supported", typeName)
		return nil, true, false
	}
	names, off = peft.CallAdapters(s, w.Active, w.Disabled)
	return names, off, true
}

// SetRequiresGrad marks params trainable or frozen.
func SetRequiresGrad(on bool, params ...*nn.Param) error {
	s := tensor.NewScope()
	defer s.Close()
	for _, p := range params {
		if p != nil {
			s.SetRequiresGrad(p.T(), on)
		}
	}
	return s.Err()
}
