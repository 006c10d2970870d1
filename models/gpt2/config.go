package gpt2

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/models"
)

// Config is the part of a HF config.json that GPT-2 uses (GPT2Config's
// field names). HF's generic names hidden_size, num_hidden_layers,
// num_attention_heads and max_position_embeddings are read as aliases of
// n_embd, n_layer, n_head and n_positions. Raw keeps every field of the
// file so Save writes back what it read.
type Config struct {
	ModelType  string `json:"model_type"`
	VocabSize  int64  `json:"vocab_size"`
	NPositions int64  `json:"n_positions"`
	NEmbd      int64  `json:"n_embd"`
	NLayer     int64  `json:"n_layer"`
	NHead      int64  `json:"n_head"`
	// NInner is the feed-forward width; nil (HF's None) means 4·n_embd.
	NInner *int64 `json:"n_inner"`
	// ActivationFunction is the feed-forward non-linearity: "gelu_new"
	// (GPT-2's tanh approximation, HF's default) or another name of
	// models.Activation.
	ActivationFunction string  `json:"activation_function"`
	ResidPdrop         float64 `json:"resid_pdrop"`
	EmbdPdrop          float64 `json:"embd_pdrop"`
	AttnPdrop          float64 `json:"attn_pdrop"`
	LayerNormEpsilon   float64 `json:"layer_norm_epsilon"`
	InitializerRange   float64 `json:"initializer_range"`
	// ScaleAttnWeights divides the scores by sqrt(head_dim) (true in every
	// released GPT-2).
	ScaleAttnWeights bool `json:"scale_attn_weights"`
	// ScaleAttnByInverseLayerIdx further divides layer i's scores by i+1.
	ScaleAttnByInverseLayerIdx bool `json:"scale_attn_by_inverse_layer_idx"`
	// ReorderAndUpcastAttn computes the scores in float32 (the result is
	// the same in float32 models).
	ReorderAndUpcastAttn bool `json:"reorder_and_upcast_attn"`
	// TieWordEmbeddings shares lm_head's weight with wte. HF's default is
	// true and ParseConfig applies it; a Config built in code must set it.
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
		return nil, fmt.Errorf("gpt2: %w", err)
	}
	return ParseConfig(path, data)
}

// aliases are HF's attribute_map of GPT2Config: generic name → GPT-2 name.
var aliases = [][2]string{
	{"hidden_size", "n_embd"}, {"num_hidden_layers", "n_layer"},
	{"num_attention_heads", "n_head"}, {"max_position_embeddings", "n_positions"},
}

// ParseConfig parses config.json bytes; path is used in errors. Fields
// that are absent get GPT2Config's defaults, except the sizes (n_embd,
// n_layer, n_head, vocab_size), which must be given.
func ParseConfig(path string, data []byte) (*Config, error) {
	var raw, norm map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("gpt2: %s: %w", path, err)
	}
	_ = json.Unmarshal(data, &norm)
	for _, a := range aliases { // a generic name stands in for a missing GPT-2 name
		if _, ok := norm[a[1]]; !ok {
			if v, ok := norm[a[0]]; ok {
				norm[a[1]] = v
			}
		}
	}
	for _, f := range []string{"n_embd", "n_layer", "n_head", "vocab_size"} {
		if _, ok := norm[f]; !ok {
			return nil, fmt.Errorf("gpt2: %s: missing field %q", path, f)
		}
	}
	nd, err := json.Marshal(norm)
	if err != nil {
		return nil, fmt.Errorf("gpt2: %s: %w", path, err)
	}
	// GPT2Config's defaults, overwritten by the file's fields
	c := &Config{NPositions: 1024, ActivationFunction: "gelu_new", ResidPdrop: 0.1, EmbdPdrop: 0.1,
		AttnPdrop: 0.1, LayerNormEpsilon: 1e-5, InitializerRange: 0.02, ScaleAttnWeights: true,
		TieWordEmbeddings: true}
	if err := json.Unmarshal(nd, c); err != nil {
		return nil, fmt.Errorf("gpt2: %s: %w", path, err)
	}
	c.Raw = raw
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("gpt2: %s: %w", path, err)
	}
	return c, nil
}

// defaults fills defaults for fields left at zero by a Config built in code.
func (c *Config) defaults() {
	if c.ModelType == "" {
		c.ModelType = "gpt2"
	}
	if c.NPositions == 0 {
		c.NPositions = 1024
	}
	if c.ActivationFunction == "" {
		c.ActivationFunction = "gelu_new"
	}
	if c.LayerNormEpsilon == 0 {
		c.LayerNormEpsilon = 1e-5
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = 0.02
	}
}

// Validate checks that the sizes fit together and the fields are known.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"n_embd", c.NEmbd}, {"n_layer", c.NLayer}, {"n_head", c.NHead}, {"vocab_size", c.VocabSize}, {"n_positions", c.NPositions}} {
		if f.v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", f.name, f.v)
		}
	}
	if err := models.CheckPositive("layer_norm_epsilon", c.LayerNormEpsilon); err != nil {
		return err
	}
	if c.NEmbd%c.NHead != 0 {
		return fmt.Errorf("field \"n_embd\" (%d) is not a multiple of \"n_head\" (%d)", c.NEmbd, c.NHead)
	}
	if c.NInner != nil && *c.NInner <= 0 {
		return fmt.Errorf("field \"n_inner\" must be positive or null, got %d", *c.NInner)
	}
	if _, ok := models.Activation(c.ActivationFunction); !ok {
		return fmt.Errorf("field \"activation_function\": %q is not supported (%s)", c.ActivationFunction, models.ActivationNames())
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"resid_pdrop", c.ResidPdrop}, {"embd_pdrop", c.EmbdPdrop}, {"attn_pdrop", c.AttnPdrop}} {
		if p.v < 0 || p.v >= 1 {
			return fmt.Errorf("field %q must be in [0, 1), got %g", p.name, p.v)
		}
	}
	return nil
}

// HeadDim is the per-head dimension (n_embd / n_head).
func (c *Config) HeadDim() int64 { return c.NEmbd / c.NHead }

// Inner is the feed-forward width (n_inner, or 4·n_embd).
func (c *Config) Inner() int64 {
	if c.NInner != nil {
		return *c.NInner
	}
	return 4 * c.NEmbd
}

// NumParams is the model's parameter count computed from the config alone
// (a tied lm_head counted once): V·h wte, P·h wpe, 2h for ln_f, and per
// block 4h² + 2·h·i + 9h + i (c_attn 3h²+3h, attn.c_proj h²+h, c_fc h·i+i,
// mlp.c_proj i·h+h, ln_1 and ln_2 4h), plus V·h for an untied lm_head.
func (c *Config) NumParams() int64 {
	h, v, l, i := c.NEmbd, c.VocabSize, c.NLayer, c.Inner()
	n := v*h + c.NPositions*h + 2*h + l*(4*h*h+2*h*i+9*h+i)
	if !c.TieWordEmbeddings {
		n += v * h
	}
	return n
}

// JSON renders the config for config.json: the fields read (Raw) updated
// with this struct's values.
func (c *Config) JSON() ([]byte, error) {
	out, err := models.ConfigFields(c, c.Raw)
	if err != nil {
		return nil, err
	}
	for _, a := range aliases { // keep the generic name when the file used only it
		_, gen := c.Raw[a[0]]
		if _, own := c.Raw[a[1]]; gen && !own {
			out[a[0]] = out[a[1]]
			delete(out, a[1])
		}
	}
	return models.RenderConfig(out, "GPT2LMHeadModel")
}
