package gemma

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/models"
)

// Layer types of config.json's layer_types.
const (
	SlidingAttention = "sliding_attention" // local: attends to the last sliding_window positions
	FullAttention    = "full_attention"    // global: attends to every earlier position
)

// Config is the part of a HF config.json that the Gemma family uses
// (Gemma2Config, Gemma3TextConfig field names). Raw keeps every field of
// the file so Save writes back what it read. Absent fields take
// transformers' defaults for the model_type. A Config is not safe for
// concurrent mutation; a loaded model only reads it.
type Config struct {
	ModelType             string   `json:"model_type"`
	HiddenSize            int64    `json:"hidden_size"`
	IntermediateSize      int64    `json:"intermediate_size"`
	NumHiddenLayers       int64    `json:"num_hidden_layers"`
	NumAttentionHeads     int64    `json:"num_attention_heads"`
	NumKeyValueHeads      int64    `json:"num_key_value_heads"`
	HeadDim               int64    `json:"head_dim"`
	VocabSize             int64    `json:"vocab_size"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	MaxPositionEmbeddings int64    `json:"max_position_embeddings"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	AttentionBias         bool     `json:"attention_bias"`
	HiddenActivation      string   `json:"hidden_activation"`
	InitializerRange      float64  `json:"initializer_range"`
	QueryPreAttnScalar    float64  `json:"query_pre_attn_scalar"`
	SlidingWindow         int64    `json:"sliding_window"`
	AttnLogitSoftcapping  *float64 `json:"attn_logit_softcapping"`
	FinalLogitSoftcapping *float64 `json:"final_logit_softcapping"`
	// LayerTypes is each layer's attention, SlidingAttention or
	// FullAttention. Absent from config.json, it follows transformers:
	// Gemma 2 alternates (even layers local), Gemma 3 makes every
	// sliding_window_pattern-th layer global (5 local : 1 global).
	LayerTypes []string `json:"layer_types,omitempty"`
	// Gemma 3 only: the rope base of the local layers (global layers use
	// RopeTheta and RopeScaling).
	RopeLocalBaseFreq float64 `json:"rope_local_base_freq,omitempty"`
	// RopeScaling is the global layers' rope scaling (any rope_type that
	// models.ParseRope reads; Gemma 3's 4B and larger use "linear").
	RopeScaling map[string]any `json:"rope_scaling,omitempty"`
	BosTokenID  *int64         `json:"bos_token_id,omitempty"`
	EosTokenID  any            `json:"eos_token_id,omitempty"`
	PadTokenID  *int64         `json:"pad_token_id,omitempty"`

	// Raw is config.json as read (nil for a config built in code).
	Raw map[string]any `json:"-"`
}

// required are the fields a config.json must have.
var required = []string{"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"}

// LoadConfig reads dir/config.json; errors name the file and the field.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gemma: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses config.json bytes; path is used in errors.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{}
	raw, err := models.DecodeConfig("gemma", path, data, c, models.Fields(required...)...)
	if err != nil {
		return nil, err
	}
	c.Raw = raw
	// transformers' class defaults where the file is silent
	if _, ok := raw["tie_word_embeddings"]; !ok {
		c.TieWordEmbeddings = true
	}
	if _, ok := raw["attn_logit_softcapping"]; !ok && c.ModelType == "gemma2" {
		c.AttnLogitSoftcapping = ptr(50.0)
	}
	if _, ok := raw["final_logit_softcapping"]; !ok && c.ModelType == "gemma2" {
		c.FinalLogitSoftcapping = ptr(30.0)
	}
	if err := c.readRopeParameters(raw["rope_parameters"]); err != nil {
		return nil, fmt.Errorf("gemma: %s: %w", path, err)
	}
	if len(c.LayerTypes) == 0 && c.ModelType == "gemma3_text" {
		pattern := int64(6)
		if v, ok := raw["sliding_window_pattern"].(float64); ok {
			pattern = int64(v)
		}
		if pattern <= 0 {
			return nil, fmt.Errorf("gemma: %s: field \"sliding_window_pattern\" must be positive, got %d", path, pattern)
		}
		c.LayerTypes = gemma3LayerTypes(c.NumHiddenLayers, pattern)
	}
	if b, ok := raw["use_bidirectional_attention"].(bool); ok && b {
		return nil, fmt.Errorf("gemma: %s: field \"use_bidirectional_attention\": bidirectional (embedding) models are not supported", path)
	}
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("gemma: %s: %w", path, err)
	}
	return c, nil
}

func ptr(v float64) *float64 { return &v }

// readRopeParameters reads transformers 5's rope_parameters: one dict
// (Gemma 2) or one per layer type (Gemma 3), into the older fields.
func (c *Config) readRopeParameters(v any) error {
	rp, ok := v.(map[string]any)
	if !ok || len(rp) == 0 {
		return nil
	}
	theta := func(d map[string]any) float64 { f, _ := d["rope_theta"].(float64); return f }
	full, hasFull := rp[FullAttention].(map[string]any)
	local, hasLocal := rp[SlidingAttention].(map[string]any)
	if !hasFull && !hasLocal {
		full = rp
	}
	if full != nil {
		if t := theta(full); t > 0 {
			c.RopeTheta = t
		}
		if rt, _ := full["rope_type"].(string); rt != "" && rt != "default" {
			c.RopeScaling = full
		}
	}
	if local != nil {
		if t := theta(local); t > 0 {
			c.RopeLocalBaseFreq = t
		}
		if rt, _ := local["rope_type"].(string); rt != "" && rt != "default" {
			return fmt.Errorf("field \"rope_parameters\": rope_type %q on the sliding layers is not supported", rt)
		}
	}
	return nil
}

// gemma3LayerTypes is Gemma3TextConfig's default: every pattern-th layer
// global, the others local.
func gemma3LayerTypes(n, pattern int64) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = SlidingAttention
		if (int64(i)+1)%pattern == 0 {
			t[i] = FullAttention
		}
	}
	return t
}

func (c *Config) defaults() {
	if c.ModelType == "" {
		c.ModelType = "gemma2"
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 {
		c.HeadDim = 256
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-6
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
		if c.ModelType == "gemma3_text" {
			c.RopeTheta = 1e6
		}
	}
	if c.RopeLocalBaseFreq == 0 && c.ModelType == "gemma3_text" {
		c.RopeLocalBaseFreq = 10000
	}
	if c.MaxPositionEmbeddings == 0 {
		c.MaxPositionEmbeddings = 8192
		if c.ModelType == "gemma3_text" {
			c.MaxPositionEmbeddings = 131072
		}
	}
	if c.HiddenActivation == "" {
		c.HiddenActivation = "gelu_pytorch_tanh"
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = 0.02
	}
	if c.QueryPreAttnScalar == 0 {
		c.QueryPreAttnScalar = 256
	}
	if c.SlidingWindow == 0 {
		c.SlidingWindow = 4096
	}
	if len(c.LayerTypes) == 0 {
		if c.ModelType == "gemma3_text" {
			c.LayerTypes = gemma3LayerTypes(c.NumHiddenLayers, 6)
		} else {
			c.LayerTypes = make([]string, c.NumHiddenLayers)
			for i := range c.LayerTypes {
				c.LayerTypes[i] = FullAttention
				if i%2 == 0 {
					c.LayerTypes[i] = SlidingAttention
				}
			}
		}
	}
}

// Validate checks that the sizes fit together.
func (c *Config) Validate() error {
	if c.ModelType != "gemma2" && c.ModelType != "gemma3_text" {
		return fmt.Errorf("field \"model_type\": %q is not a Gemma text model (gemma2, gemma3_text)", c.ModelType)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"vocab_size", c.VocabSize},
		{"head_dim", c.HeadDim}, {"sliding_window", c.SlidingWindow}} {
		if f.v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", f.name, f.v)
		}
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("field \"head_dim\" must be even (rotary halves), got %d", c.HeadDim)
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return fmt.Errorf("field \"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"rms_norm_eps", c.RMSNormEps}, {"rope_theta", c.RopeTheta}, {"query_pre_attn_scalar", c.QueryPreAttnScalar}} {
		if err := models.CheckPositive(f.name, f.v); err != nil {
			return err
		}
	}
	if c.ModelType == "gemma3_text" {
		if err := models.CheckPositive("rope_local_base_freq", c.RopeLocalBaseFreq); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"attn_logit_softcapping", c.AttnLogitSoftcapping}, {"final_logit_softcapping", c.FinalLogitSoftcapping}} {
		if f.v != nil {
			if err := models.CheckPositive(f.name, *f.v); err != nil {
				return err
			}
		}
	}
	if _, ok := models.Activation(c.HiddenActivation); !ok {
		return fmt.Errorf("field \"hidden_activation\": %q is not supported (known: %s)", c.HiddenActivation, models.ActivationNames())
	}
	if int64(len(c.LayerTypes)) != c.NumHiddenLayers {
		return fmt.Errorf("field \"layer_types\" has %d entries, \"num_hidden_layers\" is %d", len(c.LayerTypes), c.NumHiddenLayers)
	}
	for i, t := range c.LayerTypes {
		if t != SlidingAttention && t != FullAttention {
			return fmt.Errorf("field \"layer_types\"[%d]: %q is not %q or %q", i, t, SlidingAttention, FullAttention)
		}
	}
	if _, _, err := c.Ropes(); err != nil {
		return err
	}
	return nil
}

// Ropes returns the rotary embeddings of the global layers (rope_theta
// with rope_scaling, any rope_type of models.RopeTypes) and of the local
// ones (Gemma 3: rope_local_base_freq, unscaled; Gemma 2: the global one).
func (c *Config) Ropes() (global, local *models.Rope, err error) {
	if len(c.RopeScaling) > 0 {
		global, err = models.ParseRopeBlock("rope_scaling", c.RopeScaling, c.Raw, c.RopeTheta, c.HeadDim, c.MaxPositionEmbeddings)
		if err != nil {
			return nil, nil, err
		}
	} else {
		global = models.NewRope(c.RopeTheta, c.HeadDim)
		global.MaxPositions = c.MaxPositionEmbeddings
	}
	local = global
	if c.ModelType == "gemma3_text" {
		local = models.NewRope(c.RopeLocalBaseFreq, c.HeadDim)
		local.MaxPositions = c.MaxPositionEmbeddings
	}
	return global, local, nil
}

// JSON renders the config for config.json: the fields read (Raw) updated
// with this struct's values.
func (c *Config) JSON() ([]byte, error) {
	out, err := models.ConfigFields(c, c.Raw)
	if err != nil {
		return nil, err
	}
	if c.ModelType != "gemma3_text" { // Gemma 2 has no local rope base
		delete(out, "rope_local_base_freq")
	}
	return models.RenderConfig(out, architecture(c.ModelType))
}

func architecture(modelType string) string {
	if modelType == "gemma3_text" {
		return "Gemma3ForCausalLM"
	}
	return "Gemma2ForCausalLM"
}
