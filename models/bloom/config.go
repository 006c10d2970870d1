package bloom

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/models"
)

// Config is the part of a HF config.json that BLOOM uses (BloomConfig's
// field names). HF also accepts n_embed for hidden_size and the generic
// num_hidden_layers / num_attention_heads for n_layer / n_head; all are
// read. Raw keeps every field of the file so Save writes back what it read.
type Config struct {
	ModelType        string  `json:"model_type"`
	HiddenSize       int64   `json:"hidden_size"`
	NLayer           int64   `json:"n_layer"`
	NHead            int64   `json:"n_head"`
	VocabSize        int64   `json:"vocab_size"`
	LayerNormEpsilon float64 `json:"layer_norm_epsilon"`
	InitializerRange float64 `json:"initializer_range"`
	HiddenDropout    float64 `json:"hidden_dropout"`
	AttentionDropout float64 `json:"attention_dropout"`
	// ApplyResidualConnectionPostLayernorm takes the residual from the
	// LayerNorm's output instead of its input (false in every released BLOOM).
	ApplyResidualConnectionPostLayernorm bool `json:"apply_residual_connection_post_layernorm"`
	// PretrainingTP and SlowButExact only change how HF slices the output
	// projections' matmuls (the same sum in another order); they are kept
	// for config.json and otherwise ignored.
	PretrainingTP int64 `json:"pretraining_tp"`
	SlowButExact  bool  `json:"slow_but_exact"`
	// TieWordEmbeddings shares lm_head's weight with word_embeddings. HF's
	// default is true and ParseConfig applies it; a Config built in code
	// must set it (every released BLOOM is tied).
	TieWordEmbeddings bool   `json:"tie_word_embeddings"`
	BosTokenID        *int64 `json:"bos_token_id,omitempty"`
	EosTokenID        any    `json:"eos_token_id,omitempty"`
	PadTokenID        *int64 `json:"pad_token_id,omitempty"`

	// Raw is config.json as read (nil for a config built in code).
	Raw map[string]any `json:"-"`
}

// LoadConfig reads dir/config.json; errors name the file and the field.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bloom: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses config.json bytes; path is used in errors.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{TieWordEmbeddings: true}
	raw, err := models.DecodeConfig("bloom", path, data, c, []string{"hidden_size", "n_embed"},
		[]string{"n_layer", "num_hidden_layers"}, []string{"n_head", "num_attention_heads"}, []string{"vocab_size"})
	if err != nil {
		return nil, err
	}
	var alias struct {
		NEmbed            *int64 `json:"n_embed"`
		NumHiddenLayers   *int64 `json:"num_hidden_layers"`
		NumAttentionHeads *int64 `json:"num_attention_heads"`
	}
	if err := json.Unmarshal(data, &alias); err != nil {
		return nil, fmt.Errorf("bloom: %s: %w", path, err)
	}
	if alias.NEmbed != nil { // BloomConfig: n_embed wins over hidden_size
		c.HiddenSize = *alias.NEmbed
	}
	if _, ok := raw["n_layer"]; !ok && alias.NumHiddenLayers != nil {
		c.NLayer = *alias.NumHiddenLayers
	}
	if _, ok := raw["n_head"]; !ok && alias.NumAttentionHeads != nil {
		c.NHead = *alias.NumAttentionHeads
	}
	c.Raw = raw
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("bloom: %s: %w", path, err)
	}
	return c, nil
}

// defaults fills BloomConfig's defaults for fields left at zero.
func (c *Config) defaults() {
	if c.ModelType == "" {
		c.ModelType = "bloom"
	}
	if c.LayerNormEpsilon == 0 {
		c.LayerNormEpsilon = 1e-5
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = 0.02
	}
	if c.PretrainingTP == 0 {
		c.PretrainingTP = 1
	}
}

// Validate checks that the sizes fit together.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"hidden_size", c.HiddenSize}, {"n_layer", c.NLayer}, {"n_head", c.NHead}, {"vocab_size", c.VocabSize}} {
		if f.v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", f.name, f.v)
		}
	}
	if err := models.CheckPositive("layer_norm_epsilon", c.LayerNormEpsilon); err != nil {
		return err
	}
	if c.HiddenSize%c.NHead != 0 {
		return fmt.Errorf("field \"hidden_size\" (%d) is not a multiple of \"n_head\" (%d)", c.HiddenSize, c.NHead)
	}
	if c.HiddenDropout < 0 || c.HiddenDropout >= 1 || c.AttentionDropout < 0 || c.AttentionDropout >= 1 {
		return fmt.Errorf("fields \"hidden_dropout\"/\"attention_dropout\" must be in [0, 1)")
	}
	return nil
}

// HeadDim is the per-head dimension (hidden_size / n_head).
func (c *Config) HeadDim() int64 { return c.HiddenSize / c.NHead }

// NumParams is the model's parameter count computed from the config alone
// (a tied lm_head counted once, as PyTorch's parameters() does):
// V·h word embeddings, 2h for each of the embedding LayerNorm and ln_f, and
// per block 12h² + 13h (query_key_value 3h²+3h, dense h²+h, dense_h_to_4h
// 4h²+4h, dense_4h_to_h 4h²+h, two LayerNorms 4h), plus V·h for an untied
// lm_head.
func (c *Config) NumParams() int64 {
	h, v, l := c.HiddenSize, c.VocabSize, c.NLayer
	n := v*h + 4*h + l*(12*h*h+13*h)
	if !c.TieWordEmbeddings {
		n += v * h
	}
	return n
}

// NumBiasParams is the number of bias elements computed from the config
// alone (what BitFit trains): per block 11h (LayerNorm biases 2h,
// query_key_value 3h, dense h, dense_h_to_4h 4h, dense_4h_to_h h), plus the
// biases of word_embeddings_layernorm and ln_f (2h).
func (c *Config) NumBiasParams() int64 {
	return (11*c.NLayer + 2) * c.HiddenSize
}

// JSON renders the config for config.json: the fields read (Raw) updated
// with this struct's values.
func (c *Config) JSON() ([]byte, error) {
	out, err := models.ConfigFields(c, c.Raw)
	if err != nil {
		return nil, err
	}
	if _, ok := c.Raw["n_embed"]; ok {
		out["n_embed"] = c.HiddenSize
	}
	return models.RenderConfig(out, "BloomForCausalLM")
}
