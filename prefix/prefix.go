// Package prefix is prefix tuning for the library (HF PEFT's
// PrefixTuningConfig and PrefixEncoder; without projection it is
// P-tuning v2): every attention layer of a frozen model gets
// num_virtual_tokens learned keys and values in front of the real ones.
// The prefix keys are never rotated, the attention mask gets ones for
// them, and the real tokens take positions P…P+L−1 — HF's behaviour with a
// pre-filled cache. The logits keep the caller's length.
//
// In the seed notes' taxonomy it is an additive method of the soft-prompt
// kind. It trains num_virtual_tokens × num_layers·2·token_dim values
// (8 × 2·2·32 = 1,024 parameters on llama-tiny, 0.73%; about 0.1% of a 7B
// model with 30 virtual tokens), or, with prefix_projection, a smaller
// table passed through a Linear → Tanh → Linear MLP while training. It
// cannot be merged into the base weights: peft.Model.Merge and
// MergeAndUnload return an error wrapping peft.ErrNotMergeable.
//
//	model, err := peft.New(base, &prefix.Config{
//		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
//		PrefixProjection: true, EncoderHiddenSize: 48})
//
// Adapters are read and written in PEFT's format: adapter_model.safetensors
// holds the single tensor prompt_embeddings [num_virtual_tokens,
// num_layers·2·token_dim] (projected values when prefix_projection is
// set; the MLP is not saved); for layer l the keys are block 2l and the
// values block 2l+1, each [num_attention_heads, token_dim /
// num_attention_heads]. With grouped-query attention the prefix has the
// model's key/value heads: new adapters get token_dim = head_dim ×
// num_key_value_heads and num_attention_heads = num_key_value_heads, as
// current PEFT writes them; files are read as given and checked against
// the model.
package prefix

import (
	"encoding/json"
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

func init() { peft.Register(peft.PrefixTuning, Decode) }

// Config is PEFT's PrefixTuningConfig (peft_type PREFIX_TUNING). Fields
// derived from the model (token_dim, num_layers, num_attention_heads,
// encoder_hidden_size) are filled when the adapter is added.
type Config struct {
	peft.PromptLearningConfig
	// EncoderHiddenSize is the projection MLP's width (default token_dim).
	EncoderHiddenSize int `json:"encoder_hidden_size"`
	// PrefixProjection trains the prefix through Linear → Tanh → Linear.
	PrefixProjection bool `json:"prefix_projection"`
	// InitWeights is "" (N(0, 1)) or "zero" (zero prefix, or a zero last
	// projection layer). Written to the file only when set: PEFT 0.10
	// does not know the key.
	InitWeights string `json:"init_weights"`

	raw map[string]json.RawMessage // the file as read
}

func (c *Config) PeftType() peft.PeftType { return peft.PrefixTuning }

// PrefixShape implements peft.PrefixConfig.
func (c *Config) PrefixShape() (numLayers, numHeads, headDim int64) {
	h := int64(c.NumAttentionHeads)
	if h == 0 {
		return int64(c.NumLayers), 0, 0
	}
	return int64(c.NumLayers), h, int64(c.TokenDim) / h
}

// Decode parses adapter_config.json of a PREFIX_TUNING adapter.
func Decode(data []byte) (peft.Config, error) {
	c := &Config{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	switch c.InitWeights {
	case "", "zero":
	default:
		return fmt.Errorf("field \"init_weights\": %q is not supported (null or \"zero\")", c.InitWeights)
	}
	if c.EncoderHiddenSize < 0 {
		return fmt.Errorf("field \"encoder_hidden_size\" must not be negative")
	}
	return nil
}

// MarshalJSON renders adapter_config.json with PEFT's keys.
func (c *Config) MarshalJSON() ([]byte, error) {
	out := map[string]any{"encoder_hidden_size": nil, "prefix_projection": false}
	for k, v := range c.raw {
		out[k] = v
	}
	c.JSONFields(out)
	if c.EncoderHiddenSize > 0 {
		out["encoder_hidden_size"] = c.EncoderHiddenSize
	} else {
		out["encoder_hidden_size"] = nil
	}
	out["prefix_projection"] = c.PrefixProjection
	if c.InitWeights != "" {
		out["init_weights"] = c.InitWeights
	}
	out["peft_type"] = peft.PrefixTuning
	return peft.EncodeConfig(out)
}

// Encoder is PEFT's PrefixEncoder: the table
// (prompt_encoder.<adapter>.embedding.weight), passed through transform
// when prefix_projection trains. A loaded adapter has the table only,
// [P, num_layers·2·token_dim].
type Encoder struct {
	Embedding *nn.Embedding  `nn:"embedding"`
	Transform *nn.Sequential `nn:"transform"`
}

func (*Encoder) TypeName() string { return "PrefixEncoder" }

// Prompt implements peft.PromptEncoder: the flat prefix
// [P, num_layers·2·token_dim].
func (e *Encoder) Prompt(s *tensor.Scope) *tensor.T {
	if e.Transform == nil {
		return e.Embedding.Weight.T()
	}
	return e.Transform.Forward(s, e.Embedding.Weight.T())
}

// Table implements peft.PromptEncoder.
func (e *Encoder) Table() *nn.Param {
	if e.Transform == nil {
		return e.Embedding.Weight
	}
	return nil
}

// NewPromptEncoder implements peft.PromptConfig. For a new adapter it fills
// num_layers, token_dim, num_attention_heads and encoder_hidden_size as
// current PEFT does (key/value geometry under GQA); for a loaded one
// (inference) it reads them as given. Either way the prefix must fit the
// model's layers, key/value heads and head size.
func (c *Config) NewPromptEncoder(base models.CausalLM, inference bool) (peft.PromptEncoder, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("prefix: %w", err)
	}
	given := c.TokenDim != 0 || c.NumAttentionHeads != 0
	d, err := c.Prepare(base)
	if err != nil {
		return nil, fmt.Errorf("prefix: %w", err)
	}
	if !inference && d.NumKeyValueHeads > 0 { // PEFT's GQA rule (#1901)
		if given {
			c.TokenDim = c.TokenDim / c.NumAttentionHeads * int(d.NumKeyValueHeads)
		} else {
			c.TokenDim = int(d.HeadDim * d.NumKeyValueHeads)
		}
		c.NumAttentionHeads = int(d.NumKeyValueHeads)
	}
	if err := c.fits(d); err != nil {
		return nil, err
	}
	if c.EncoderHiddenSize == 0 {
		c.EncoderHiddenSize = c.TokenDim
	}
	p, td := c.VirtualTokens(), int64(c.TokenDim)
	width := int64(c.NumLayers) * 2 * td
	s := tensor.NoGradScope()
	defer s.Close()
	table := func(cols int64) *nn.Embedding {
		var w *tensor.T
		if inference || (c.InitWeights == "zero" && !c.PrefixProjection) {
			w = s.Zeros(tensor.Float32, p, cols)
		} else {
			w = s.Randn(tensor.Float32, p, cols)
		}
		return &nn.Embedding{Weight: nn.NewParam(s.Keep(w))}
	}
	var enc *Encoder
	if c.PrefixProjection && !inference {
		h := int64(c.EncoderHiddenSize)
		last := nn.NewLinearTorch(s, h, width, true)
		if c.InitWeights == "zero" {
			s.Zero(last.Weight.T())
			s.Zero(last.Bias.T())
		}
		enc = &Encoder{Embedding: table(td), Transform: nn.NewSequential(nn.NewLinearTorch(s, td, h, true), nn.Tanh{}, last)}
	} else {
		enc = &Encoder{Embedding: table(width)}
	}
	if err := s.Err(); err != nil {
		nn.FreeParams(enc)
		return nil, fmt.Errorf("prefix: init: %w", err)
	}
	return enc, nil
}

// fits checks the prefix geometry against the model.
func (c *Config) fits(d models.Dims) error {
	switch {
	case int64(c.NumLayers) != d.NumLayers:
		return fmt.Errorf("prefix: num_layers %d does not match the model's %d layers (an adapter made for another model?)", c.NumLayers, d.NumLayers)
	case int64(c.NumAttentionHeads) != d.NumKeyValueHeads:
		return fmt.Errorf("prefix: num_attention_heads %d does not match the model's %d key/value heads (with grouped-query attention the prefix has num_key_value_heads heads)", c.NumAttentionHeads, d.NumKeyValueHeads)
	case c.NumAttentionHeads <= 0 || c.TokenDim%c.NumAttentionHeads != 0 || int64(c.TokenDim/c.NumAttentionHeads) != d.HeadDim:
		return fmt.Errorf("prefix: token_dim %d over %d heads does not give the model's head size %d (token_dim must be head_dim × num_key_value_heads = %d)", c.TokenDim, c.NumAttentionHeads, d.HeadDim, d.HeadDim*d.NumKeyValueHeads)
	}
	return nil
}

var _ peft.PrefixConfig = (*Config)(nil)
