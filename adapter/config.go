package adapter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/peft"
)

// PeftType is the bottleneck adapters' peft_type in adapter_config.json
// (this library's own: HF PEFT has no bottleneck adapters).
const PeftType peft.PeftType = "BOTTLENECK"

// Config is a bottleneck adapter configuration with AdapterHub's BnConfig
// field names (mh_adapter, output_adapter, reduction_factor,
// non_linearity, init_weights, scaling, leave_out, dropout) plus this
// library's placement and LayerNorm fields. Houlsby() and Pfeiffer() are
// the two presets.
type Config struct {
	// MhAdapter puts an adapter after the attention output projection
	// (o_proj; BLOOM's self_attention.dense), before the residual add.
	MhAdapter bool `json:"mh_adapter"`
	// OutputAdapter puts an adapter after the feed-forward output
	// projection (down_proj; BLOOM's mlp.dense_4h_to_h), before the
	// residual add.
	OutputAdapter bool `json:"output_adapter"`
	// ReductionFactor sets the bottleneck width k = max(1, ⌊hidden/rf⌋).
	ReductionFactor float64 `json:"reduction_factor"`
	// NonLinearity is the activation between the projections: "relu",
	// "swish" (= "silu"), "gelu", "gelu_new" (tanh approximation), "tanh",
	// "sigmoid", "leakyrelu".
	NonLinearity string `json:"non_linearity"`
	// InitWeights is "mam_adapter" (the default here: down-projection
	// kaiming-uniform, up-projection and biases zero, so a new adapter is
	// exactly the identity), "bert" (AdapterHub's default: weights
	// N(0, 0.02), biases zero — near but not exactly the identity) or
	// "houlsby" (weights N(0, 0.01) truncated at ±0.02, biases zero).
	InitWeights string `json:"init_weights"`
	// Scaling multiplies the adapter's output (1.0).
	Scaling float64 `json:"scaling"`
	// LeaveOut lists layer indices that get no adapter.
	LeaveOut []int `json:"leave_out"`
	// Dropout is applied to the adapter's output while training.
	Dropout float64 `json:"dropout"`
	// TrainLayerNorms also trains the decoder layers' norms (input_layernorm,
	// post_attention_layernorm), as Houlsby et al. did: each adapter gets its
	// own copy, saved under the norm's HF name (PEFT's modules_to_save).
	TrainLayerNorms bool `json:"train_layer_norms"`
	// MhAdapterModules / OutputAdapterModules name the layers wrapped for
	// each placement (PEFT's list matching: a path or a "."-suffix of it;
	// a "*" component matches any one component, as in BERT's
	// "layer.*.output.dense"). Unset: DefaultModules for the model type.
	MhAdapterModules []string `json:"mh_adapter_modules"`
	// OutputAdapterModules names the layers wrapped for output_adapter
	// (see MhAdapterModules).
	OutputAdapterModules []string `json:"output_adapter_modules"`
	// ModulesToSave_ are further modules trained in full (PEFT's
	// modules_to_save, e.g. lm_head).
	ModulesToSave_ []string `json:"modules_to_save"`
	// Task is PEFT's task_type (CAUSAL_LM by default).
	Task peft.TaskType `json:"task_type"`
	// BaseModelNameOrPath is the base model the adapter was made for;
	// filled from the base model's path when the adapter is added.
	BaseModelNameOrPath string `json:"base_model_name_or_path"`
	// Revision is the base model's revision on the Hub (kept, not used).
	Revision *string `json:"revision"`

	raw   map[string]json.RawMessage
	norms []string // the layer norms TrainLayerNorms resolved to (Inject)
}

// Houlsby is Houlsby et al. 2019's placement (AdapterHub's double_seq_bn):
// an adapter after the attention output and one after the feed-forward
// output of every layer, swish, reduction factor 16, LayerNorms trained.
func Houlsby() *Config {
	return &Config{MhAdapter: true, OutputAdapter: true, ReductionFactor: 16, NonLinearity: "swish",
		InitWeights: "mam_adapter", Scaling: 1, TrainLayerNorms: true}
}

// Pfeiffer is Pfeiffer et al. 2020's placement (AdapterHub's seq_bn): one
// adapter after the feed-forward output of every layer, relu, reduction
// factor 16.
//
// The adapter's input is the feed-forward output h. AdapterHub's seq_bn
// (original_ln_before=True) feeds the adapter h plus the residual stream
// instead, which a layer wrapping the output projection does not see; the
// AdapterHub export therefore writes original_ln_before=false, the
// configuration that computes what this package does.
func Pfeiffer() *Config {
	return &Config{OutputAdapter: true, ReductionFactor: 16, NonLinearity: "relu",
		InitWeights: "mam_adapter", Scaling: 1}
}

func (c *Config) PeftType() peft.PeftType { return PeftType }
func (c *Config) TaskType() peft.TaskType { return c.Task }

// ModulesToSave implements peft.ModulesToSaveConfig: the layer norms (with
// TrainLayerNorms, resolved by Inject) and ModulesToSave_.
func (c *Config) ModulesToSave() []string {
	out := append([]string(nil), c.ModulesToSave_...)
	return append(out, c.norms...)
}

// BaseModelName is base_model_name_or_path.
func (c *Config) BaseModelName() string { return c.BaseModelNameOrPath }

// SetBaseModelName sets base_model_name_or_path.
func (c *Config) SetBaseModelName(n string) { c.BaseModelNameOrPath = n }

func (c *Config) fillDefaults() {
	if c.ReductionFactor == 0 {
		c.ReductionFactor = 16
	}
	if c.NonLinearity == "" {
		c.NonLinearity = "relu"
	}
	if c.InitWeights == "" {
		c.InitWeights = "mam_adapter"
	}
	if c.Scaling == 0 {
		c.Scaling = 1
	}
	if c.Task == "" {
		c.Task = peft.CausalLM
	}
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if !c.MhAdapter && !c.OutputAdapter {
		return fmt.Errorf("neither \"mh_adapter\" nor \"output_adapter\" is set: the adapter has no place")
	}
	if !(c.ReductionFactor > 0) || math.IsInf(c.ReductionFactor, 0) {
		return fmt.Errorf("field \"reduction_factor\" must be positive, got %v", c.ReductionFactor)
	}
	if _, ok := activations[strings.ToLower(c.NonLinearity)]; !ok {
		return fmt.Errorf("field \"non_linearity\": %q is not supported (%s)", c.NonLinearity, activationNames())
	}
	switch c.InitWeights {
	case "mam_adapter", "bert", "houlsby":
	default:
		return fmt.Errorf("field \"init_weights\": %q is not one of mam_adapter, bert, houlsby", c.InitWeights)
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("field \"dropout\" must be in [0, 1), got %v", c.Dropout)
	}
	return nil
}

// Decode parses adapter_config.json of a bottleneck adapter. Fields of
// AdapterHub's BnConfig that change the computation in ways this package
// does not implement (ln_before, is_parallel, use_gating, phm_layer,
// inv_adapter, learned scaling, …) are refused.
func Decode(data []byte) (peft.Config, error) {
	c := &Config{}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, err
	}
	if v, ok := probe["scaling"]; ok && len(v) > 0 && v[0] == '"' {
		return nil, fmt.Errorf("field \"scaling\": %s is not supported (a number only)", v)
	}
	if err := checkUnsupported(probe); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	c.raw = probe
	c.fillDefaults()
	return c, c.Validate()
}

// unsupported are BnConfig fields and the values this package computes.
var unsupported = map[string]string{
	"ln_before": "false", "ln_after": "false", "is_parallel": "false", "use_gating": "false",
	"phm_layer": "false", "inv_adapter": "null", "cross_adapter": "false", "original_ln_before": "false",
	"adapter_residual_before_ln": "false", "residual_before_ln": "true",
}

func checkUnsupported(probe map[string]json.RawMessage) error {
	for k, want := range unsupported {
		if v, ok := probe[k]; ok && strings.TrimSpace(string(v)) != want {
			return fmt.Errorf("field %q: %s is not supported (this package computes %s)", k, v, want)
		}
	}
	return nil
}

// MarshalJSON renders adapter_config.json (sorted keys, indent 2,
// inference_mode true; keys of the file read that this version does not
// know are kept).
func (c *Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{}
	for k, v := range c.raw {
		out[k] = v
	}
	set := func(k string, v any) { out[k] = v }
	set("peft_type", string(PeftType))
	set("task_type", nullable(string(c.Task)))
	set("mh_adapter", c.MhAdapter)
	set("output_adapter", c.OutputAdapter)
	set("reduction_factor", json.Number(fmt.Sprint(c.ReductionFactor)))
	set("non_linearity", c.NonLinearity)
	set("init_weights", c.InitWeights)
	set("scaling", json.Number(fmt.Sprint(c.Scaling)))
	leave := c.LeaveOut
	if leave == nil {
		leave = []int{}
	}
	set("leave_out", leave)
	set("dropout", c.Dropout)
	set("train_layer_norms", c.TrainLayerNorms)
	set("mh_adapter_modules", c.MhAdapterModules)
	set("output_adapter_modules", c.OutputAdapterModules)
	set("modules_to_save", c.ModulesToSave_)
	set("base_model_name_or_path", nullable(c.BaseModelNameOrPath))
	set("revision", c.Revision)
	set("inference_mode", true)
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
