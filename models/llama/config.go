package llama

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/models"
)

// Config is the part of a HF config.json that the LLaMA family uses
// (LlamaConfig, Qwen2Config, Qwen3Config, MistralConfig, Phi3Config field
// names). Raw keeps every
// field of the file so Save writes back what it read.
type Config struct {
	ModelType             string  `json:"model_type"`
	HiddenSize            int64   `json:"hidden_size"`
	IntermediateSize      int64   `json:"intermediate_size"`
	NumHiddenLayers       int64   `json:"num_hidden_layers"`
	NumAttentionHeads     int64   `json:"num_attention_heads"`
	NumKeyValueHeads      int64   `json:"num_key_value_heads"`
	HeadDim               int64   `json:"head_dim,omitempty"`
	VocabSize             int64   `json:"vocab_size"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	RopeTheta             float64 `json:"rope_theta"`
	MaxPositionEmbeddings int64   `json:"max_position_embeddings"`
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	AttentionBias         bool    `json:"attention_bias"`
	HiddenAct             string  `json:"hidden_act"`
	InitializerRange      float64 `json:"initializer_range"`
	// PartialRotaryFactor is the share of each head that is rotated
	// (Phi-4-mini: 0.75; 0 or absent: all of it).
	PartialRotaryFactor float64 `json:"partial_rotary_factor,omitempty"`
	// SlidingWindow, for Mistral and Phi-3, limits attention to the keys
	// less than this many positions back (0 or null: no limit). Qwen2/Qwen3
	// use it only with use_sliding_window, which is refused.
	SlidingWindow int64  `json:"sliding_window,omitempty"`
	BosTokenID    *int64 `json:"bos_token_id,omitempty"`
	EosTokenID    any    `json:"eos_token_id,omitempty"`
	PadTokenID    *int64 `json:"pad_token_id,omitempty"`

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
		return nil, fmt.Errorf("llama: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses config.json bytes; path is used in errors.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{}
	raw, err := models.DecodeConfig("llama", path, data, c, models.Fields(required...)...)
	if err != nil {
		return nil, err
	}
	c.Raw = raw
	if _, ok := raw["attention_bias"]; !ok && c.ModelType == "qwen2" {
		c.AttentionBias = true // Qwen2 always has q/k/v biases
	}
	if _, ok := raw["tie_word_embeddings"]; !ok && c.ModelType == "qwen2" {
		c.TieWordEmbeddings = false
	}
	if _, ok := raw["rope_theta"]; !ok { // transformers 5 keeps it in rope_parameters
		if rp, ok := raw["rope_parameters"].(map[string]any); ok {
			if th, ok := rp["rope_theta"].(float64); ok {
				c.RopeTheta = th
			}
		}
	}
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("llama: %s: %w", path, err)
	}
	return c, nil
}

func (c *Config) defaults() {
	if c.ModelType == "" {
		c.ModelType = "llama"
	}
	if c.RMSNormEps == 0 && c.ModelType == "phi3" {
		c.RMSNormEps = 1e-5 // Phi3Config's default
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-6
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.MaxPositionEmbeddings == 0 {
		c.MaxPositionEmbeddings = 2048
	}
	if c.HiddenAct == "" {
		c.HiddenAct = "silu"
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = 0.02
	}
}

// Validate checks that the sizes fit together.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"vocab_size", c.VocabSize}} {
		if f.v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", f.name, f.v)
		}
	}
	if c.HeadDim < 0 {
		return fmt.Errorf("field \"head_dim\" must be positive (or absent), got %d", c.HeadDim)
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("field \"sliding_window\" must be positive (or null), got %d", c.SlidingWindow)
	}
	if c.MaxPositionEmbeddings < 0 {
		return fmt.Errorf("field \"max_position_embeddings\" must be positive, got %d", c.MaxPositionEmbeddings)
	}
	if err := models.CheckPositive("rms_norm_eps", c.RMSNormEps); err != nil {
		return err
	}
	if err := models.CheckPositive("rope_theta", c.RopeTheta); err != nil {
		return err
	}
	if c.HeadDim == 0 && c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("field \"hidden_size\" (%d) is not a multiple of \"num_attention_heads\" (%d)", c.HiddenSize, c.NumAttentionHeads)
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return fmt.Errorf("field \"num_attention_heads\" (%d) is not a multiple of \"num_key_value_heads\" (%d)", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	switch c.ModelType {
	case "llama", "qwen2", "qwen3", "mistral", "phi3":
	default:
		return fmt.Errorf("field \"model_type\": %q is not a LLaMA-family model (llama, qwen2, qwen3, mistral, phi3)", c.ModelType)
	}
	if sw, _ := c.Raw["use_sliding_window"].(bool); sw && (c.ModelType == "qwen2" || c.ModelType == "qwen3") {
		return fmt.Errorf("field \"use_sliding_window\": sliding-window attention is not supported")
	}
	for _, f := range []string{"mlp_bias", "lm_head_bias"} {
		if b, _ := c.Raw[f].(bool); b {
			return fmt.Errorf("field %q: biases there are not supported", f)
		}
	}
	if c.HiddenAct != "silu" {
		return fmt.Errorf("field \"hidden_act\": %q is not supported (only \"silu\")", c.HiddenAct)
	}
	if _, err := c.Rope(); err != nil {
		return err
	}
	return nil
}

// Rope is the model's rotary embedding: rope_theta with config.json's
// rope_scaling (or rope_parameters) block, see models.ParseRope.
func (c *Config) Rope() (*models.Rope, error) {
	raw := c.Raw
	if c.PartialRotaryFactor != 0 {
		if _, ok := raw["partial_rotary_factor"]; !ok { // a config built in code
			raw = make(map[string]any, len(c.Raw)+1)
			for k, v := range c.Raw {
				raw[k] = v
			}
			raw["partial_rotary_factor"] = c.PartialRotaryFactor
		}
	}
	return models.ParseRope(raw, c.RopeTheta, c.HeadSize(), c.MaxPositionEmbeddings)
}

// window is the sliding window that applies to this model type (0: none).
func (c *Config) window() int64 {
	if c.ModelType == "mistral" || c.ModelType == "phi3" {
		return c.SlidingWindow
	}
	return 0
}

// HeadSize is the per-head dimension.
func (c *Config) HeadSize() int64 {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	return c.HiddenSize / c.NumAttentionHeads
}

// JSON renders the config for config.json: the fields read (Raw) updated
// with this struct's values.
func (c *Config) JSON() ([]byte, error) {
	out, err := models.ConfigFields(c, c.Raw)
	if err != nil {
		return nil, err
	}
	return models.RenderConfig(out, architecture(c.ModelType))
}

func architecture(modelType string) string {
	switch modelType {
	case "qwen2":
		return "Qwen2ForCausalLM"
	case "qwen3":
		return "Qwen3ForCausalLM"
	case "mistral":
		return "MistralForCausalLM"
	case "phi3":
		return "Phi3ForCausalLM"
	}
	return "LlamaForCausalLM"
}
