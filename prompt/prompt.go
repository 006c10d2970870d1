// Package prompt is prompt tuning and P-tuning for the library (HF PEFT's
// PromptTuningConfig / PromptEmbedding and PromptEncoderConfig /
// PromptEncoder): num_virtual_tokens learned embeddings — "soft prompts" —
// are prepended to the input embeddings of a frozen model, the attention
// mask gets ones in front and the labels -100 in front, and the logits have
// the virtual positions first.
//
// In the seed notes' taxonomy these are additive methods of the soft-prompt
// kind. Prompt tuning trains only the num_virtual_tokens × hidden_size
// table (8 × 64 = 512 parameters, 0.37% of llama-tiny; 20 × 4096 = 81,920,
// about 0.001%, of a 7B LLaMA); P-tuning reparameterizes the same table
// through an MLP or a bidirectional LSTM + MLP while training, which
// trains more parameters (the encoder) but saves only its output. Neither
// can be merged into the base weights: peft.Model.Merge and MergeAndUnload
// return an error wrapping peft.ErrNotMergeable, and inference keeps the
// P extra positions.
//
//	model, err := peft.New(base, &prompt.TuningConfig{
//		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}})
//	model, err = peft.New(base, &prompt.EncoderConfig{
//		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
//		EncoderReparameterizationType: prompt.LSTM, EncoderHiddenSize: 32})
//
// Adapters are read and written in PEFT's format: adapter_model.safetensors
// holds the single tensor prompt_embeddings [num_virtual_tokens,
// token_dim] — for P-tuning the encoder's output, not its weights — and a
// loaded adapter uses that table directly (PEFT's inference mode).
// TEXT initialisation (prompt_tuning_init_text) needs a Tokenizer.
//
// Multitask prompt tuning (MultitaskConfig, peft_type
// MULTITASK_PROMPT_TUNING) lives here too because it is prompt tuning —
// PEFT derives its config and encoder from prompt tuning's, and it reuses
// the TEXT init — with the shared table scaled per row by the row's task
// matrix: forwards take models.Inputs.TaskIDs, generation
// generate.Input.TaskIDs, and the adapter file holds prefix_task_cols and
// prefix_task_rows beside prompt_embeddings.
package prompt

import (
	"encoding/json"
	"fmt"

	"github.com/gopeft/peft/peft"
)

func init() {
	peft.Register(peft.PromptTuning, DecodeTuning)
	peft.Register(peft.PTuning, DecodeEncoder)
}

// prompt_tuning_init values.
const (
	Random      = "RANDOM"       // N(0, 1), as torch.nn.Embedding
	Text        = "TEXT"         // word embeddings of the tokenised prompt_tuning_init_text
	SampleVocab = "SAMPLE_VOCAB" // word embeddings of token ids drawn uniformly from the vocabulary
)

// encoder_reparameterization_type values.
const (
	MLP  = "MLP"  // Linear → ReLU → Linear → ReLU → Linear
	LSTM = "LSTM" // bidirectional LSTM → Linear → ReLU → Linear
)

// Tokenizer turns text into token ids with the special tokens the model's
// tokenizer adds (HF's tokenizer(text)["input_ids"], BOS included for
// LLaMA).
type Tokenizer interface {
	Encode(text string) ([]int64, error)
}

// TuningConfig is PEFT's PromptTuningConfig (peft_type PROMPT_TUNING).
// Fields derived from the model (token_dim, num_layers, …) are filled when
// the adapter is added.
type TuningConfig struct {
	peft.PromptLearningConfig
	// PromptTuningInit is RANDOM (default), TEXT or SAMPLE_VOCAB.
	PromptTuningInit string `json:"prompt_tuning_init"`
	// PromptTuningInitText is the text whose token embeddings (repeated
	// or cut to num_virtual_tokens) start the prompt with TEXT init.
	PromptTuningInitText string `json:"prompt_tuning_init_text"`
	// TokenizerNameOrPath is recorded for Python PEFT, which requires it
	// with TEXT init (filled from Tokenizer when that has NameOrPath()).
	TokenizerNameOrPath string `json:"tokenizer_name_or_path"`
	// TokenizerKwargs are the keyword arguments Python PEFT passes to
	// AutoTokenizer.from_pretrained for TEXT init (kept, not used here).
	TokenizerKwargs map[string]any `json:"tokenizer_kwargs"`
	// Tokenizer encodes PromptTuningInitText for TEXT init; not saved.
	Tokenizer Tokenizer `json:"-"`

	raw map[string]json.RawMessage // the file as read
}

func (c *TuningConfig) PeftType() peft.PeftType { return peft.PromptTuning }

// DecodeTuning parses adapter_config.json of a PROMPT_TUNING adapter.
func DecodeTuning(data []byte) (peft.Config, error) {
	c := &TuningConfig{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *TuningConfig) validate() error {
	switch c.PromptTuningInit {
	case "", Random, Text, SampleVocab:
	default:
		return fmt.Errorf("field \"prompt_tuning_init\": %q is not one of RANDOM, TEXT, SAMPLE_VOCAB", c.PromptTuningInit)
	}
	if len(c.TokenizerKwargs) > 0 && c.PromptTuningInit != Text {
		return fmt.Errorf("field \"tokenizer_kwargs\" is only valid with prompt_tuning_init TEXT")
	}
	return nil
}

// MarshalJSON renders adapter_config.json with PEFT's keys.
func (c *TuningConfig) MarshalJSON() ([]byte, error) {
	out := map[string]any{
		"prompt_tuning_init": Random, "prompt_tuning_init_text": nil,
		"tokenizer_kwargs": nil, "tokenizer_name_or_path": nil,
	}
	for k, v := range c.raw {
		out[k] = v
	}
	c.JSONFields(out)
	if c.PromptTuningInit != "" {
		out["prompt_tuning_init"] = c.PromptTuningInit
	}
	out["prompt_tuning_init_text"] = nullString(c.PromptTuningInitText)
	out["tokenizer_name_or_path"] = nullString(c.TokenizerNameOrPath)
	if c.TokenizerKwargs != nil {
		out["tokenizer_kwargs"] = c.TokenizerKwargs
	} else {
		out["tokenizer_kwargs"] = nil
	}
	out["peft_type"] = peft.PromptTuning
	return peft.EncodeConfig(out)
}

// EncoderConfig is PEFT's PromptEncoderConfig (peft_type P_TUNING).
type EncoderConfig struct {
	peft.PromptLearningConfig
	// EncoderReparameterizationType is MLP (default) or LSTM.
	EncoderReparameterizationType string `json:"encoder_reparameterization_type"`
	// EncoderHiddenSize is the encoder's width (default token_dim).
	EncoderHiddenSize int `json:"encoder_hidden_size"`
	// EncoderNumLayers is the LSTM's layer count (default 2; the MLP
	// always has 3 Linear layers, as in PEFT).
	EncoderNumLayers int `json:"encoder_num_layers"`
	// EncoderDropout is the dropout probability between the LSTM's layers,
	// while training (default 0).
	EncoderDropout float64 `json:"encoder_dropout"`

	raw map[string]json.RawMessage
}

func (c *EncoderConfig) PeftType() peft.PeftType { return peft.PTuning }

// DecodeEncoder parses adapter_config.json of a P_TUNING adapter.
func DecodeEncoder(data []byte) (peft.Config, error) {
	c := &EncoderConfig{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *EncoderConfig) validate() error {
	switch c.EncoderReparameterizationType {
	case "", MLP, LSTM:
	default:
		return fmt.Errorf("field \"encoder_reparameterization_type\": %q is not one of MLP, LSTM", c.EncoderReparameterizationType)
	}
	if c.EncoderHiddenSize < 0 || c.EncoderNumLayers < 0 {
		return fmt.Errorf("fields \"encoder_hidden_size\" and \"encoder_num_layers\" must not be negative")
	}
	if c.EncoderDropout < 0 || c.EncoderDropout >= 1 {
		return fmt.Errorf("field \"encoder_dropout\" must be in [0, 1), got %g", c.EncoderDropout)
	}
	return nil
}

// MarshalJSON renders adapter_config.json with PEFT's keys.
func (c *EncoderConfig) MarshalJSON() ([]byte, error) {
	out := map[string]any{
		"encoder_reparameterization_type": MLP, "encoder_hidden_size": nil,
		"encoder_num_layers": 2, "encoder_dropout": 0.0,
	}
	for k, v := range c.raw {
		out[k] = v
	}
	c.JSONFields(out)
	if c.EncoderReparameterizationType != "" {
		out["encoder_reparameterization_type"] = c.EncoderReparameterizationType
	}
	if c.EncoderHiddenSize > 0 {
		out["encoder_hidden_size"] = c.EncoderHiddenSize
	} else {
		out["encoder_hidden_size"] = nil
	}
	if c.EncoderNumLayers > 0 {
		out["encoder_num_layers"] = c.EncoderNumLayers
	}
	out["encoder_dropout"] = c.EncoderDropout
	out["peft_type"] = peft.PTuning
	return peft.EncodeConfig(out)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

var (
	_ peft.PromptConfig = (*TuningConfig)(nil)
	_ peft.PromptConfig = (*EncoderConfig)(nil)
)
