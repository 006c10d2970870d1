package bert

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/gopeft/peft/models"
)

// HF's problem_type values for sequence classification.
const (
	Regression                = "regression"
	SingleLabelClassification = "single_label_classification"
	MultiLabelClassification  = "multi_label_classification"
)

// Config is the part of a HF config.json that BERT uses (BertConfig's field
// names) plus the classification fields of PretrainedConfig (id2label /
// num_labels, problem_type, classifier_dropout). Raw keeps every field of
// the file so Save writes back what it read.
type Config struct {
	ModelType             string  `json:"model_type"`
	VocabSize             int64   `json:"vocab_size"`
	HiddenSize            int64   `json:"hidden_size"`
	NumHiddenLayers       int64   `json:"num_hidden_layers"`
	NumAttentionHeads     int64   `json:"num_attention_heads"`
	IntermediateSize      int64   `json:"intermediate_size"`
	HiddenAct             string  `json:"hidden_act"`
	HiddenDropoutProb     float64 `json:"hidden_dropout_prob"`
	AttentionProbsDropout float64 `json:"attention_probs_dropout_prob"`
	MaxPositionEmbeddings int64   `json:"max_position_embeddings"`
	TypeVocabSize         int64   `json:"type_vocab_size"`
	InitializerRange      float64 `json:"initializer_range"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	PadTokenID            *int64  `json:"pad_token_id,omitempty"`
	// PositionEmbeddingType must be "absolute" (the relative variants are
	// not implemented).
	PositionEmbeddingType string `json:"position_embedding_type"`
	// ClassifierDropout is the heads' dropout; nil (HF's None) uses
	// hidden_dropout_prob.
	ClassifierDropout *float64 `json:"classifier_dropout"`
	// NumLabels is the heads' output width: len(id2label) when config.json
	// has id2label, else num_labels, else 2 (PretrainedConfig's rule).
	NumLabels int64 `json:"num_labels"`
	// ProblemType chooses the sequence-classification loss: "regression"
	// (MSE), "single_label_classification" (cross-entropy),
	// "multi_label_classification" (BCE with logits); empty infers it from
	// NumLabels and the labels' dtype, as HF does.
	ProblemType string `json:"problem_type,omitempty"`

	// Raw is config.json as read (nil for a config built in code).
	Raw map[string]any `json:"-"`
}

// LoadConfig reads dir/config.json; errors name the file and the field.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bert: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses config.json bytes; path is used in errors. Absent
// fields get BertConfig's defaults, except the sizes (hidden_size,
// num_hidden_layers, num_attention_heads, intermediate_size, vocab_size),
// which must be given.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := &Config{HiddenAct: "gelu", HiddenDropoutProb: 0.1, AttentionProbsDropout: 0.1, MaxPositionEmbeddings: 512,
		TypeVocabSize: 2, InitializerRange: 0.02, LayerNormEps: 1e-12, PositionEmbeddingType: "absolute"}
	raw, err := models.DecodeConfig("bert", path, data, c,
		models.Fields("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")...)
	if err != nil {
		return nil, err
	}
	var labels struct {
		ID2Label map[string]string `json:"id2label"`
	}
	if err := json.Unmarshal(data, &labels); err != nil {
		return nil, fmt.Errorf("bert: %s: field \"id2label\": %w", path, err)
	}
	if len(labels.ID2Label) > 0 {
		if _, given := raw["num_labels"]; given && c.NumLabels != int64(len(labels.ID2Label)) {
			return nil, fmt.Errorf("bert: %s: field \"num_labels\" (%d) disagrees with \"id2label\" (%d labels)", path, c.NumLabels, len(labels.ID2Label))
		}
		c.NumLabels = int64(len(labels.ID2Label))
	}
	if _, given := raw["num_labels"]; !given && len(labels.ID2Label) == 0 {
		c.NumLabels = 2
	}
	c.Raw = raw
	c.defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("bert: %s: %w", path, err)
	}
	return c, nil
}

// defaults fills defaults for fields left at zero by a Config built in code.
func (c *Config) defaults() {
	if c.ModelType == "" {
		c.ModelType = "bert"
	}
	if c.HiddenAct == "" {
		c.HiddenAct = "gelu"
	}
	if c.MaxPositionEmbeddings == 0 {
		c.MaxPositionEmbeddings = 512
	}
	if c.TypeVocabSize == 0 {
		c.TypeVocabSize = 2
	}
	if c.InitializerRange == 0 {
		c.InitializerRange = 0.02
	}
	if c.LayerNormEps == 0 {
		c.LayerNormEps = 1e-12
	}
	if c.PositionEmbeddingType == "" {
		c.PositionEmbeddingType = "absolute"
	}
	if c.NumLabels == 0 {
		c.NumLabels = 2
	}
}

// Validate checks that the sizes fit together and the fields are known.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"intermediate_size", c.IntermediateSize}, {"vocab_size", c.VocabSize},
		{"max_position_embeddings", c.MaxPositionEmbeddings}, {"type_vocab_size", c.TypeVocabSize}, {"num_labels", c.NumLabels}} {
		if f.v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", f.name, f.v)
		}
	}
	if err := models.CheckPositive("layer_norm_eps", c.LayerNormEps); err != nil {
		return err
	}
	if c.HiddenSize%c.NumAttentionHeads != 0 {
		return fmt.Errorf("field \"hidden_size\" (%d) is not a multiple of \"num_attention_heads\" (%d)", c.HiddenSize, c.NumAttentionHeads)
	}
	if _, ok := models.Activation(c.HiddenAct); !ok {
		return fmt.Errorf("field \"hidden_act\": %q is not supported (%s)", c.HiddenAct, models.ActivationNames())
	}
	if c.PositionEmbeddingType != "absolute" {
		return fmt.Errorf("field \"position_embedding_type\": %q is not supported (only \"absolute\")", c.PositionEmbeddingType)
	}
	switch c.ProblemType {
	case "", Regression, SingleLabelClassification, MultiLabelClassification:
	default:
		return fmt.Errorf("field \"problem_type\": %q is not one of %q, %q, %q", c.ProblemType, Regression, SingleLabelClassification, MultiLabelClassification)
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"hidden_dropout_prob", c.HiddenDropoutProb}, {"attention_probs_dropout_prob", c.AttentionProbsDropout}, {"classifier_dropout", c.classifierDropout()}} {
		if p.v < 0 || p.v >= 1 {
			return fmt.Errorf("field %q must be in [0, 1), got %g", p.name, p.v)
		}
	}
	return nil
}

// HeadDim is the per-head dimension (hidden_size / num_attention_heads).
func (c *Config) HeadDim() int64 { return c.HiddenSize / c.NumAttentionHeads }

func (c *Config) classifierDropout() float64 {
	if c.ClassifierDropout != nil {
		return *c.ClassifierDropout
	}
	return c.HiddenDropoutProb
}

// NumParams is the encoder's parameter count computed from the config
// alone, with the pooler when pooler is set: embeddings (V + P + T)·h + 2h,
// per layer 4h² + 2·h·i + 9h + i (query, key, value and attention output
// 4h²+4h, intermediate h·i+i, output i·h+h, two LayerNorms 4h), and the
// pooler h² + h. The heads add num_labels·(h + 1).
func (c *Config) NumParams(pooler bool) int64 {
	h, i := c.HiddenSize, c.IntermediateSize
	n := (c.VocabSize+c.MaxPositionEmbeddings+c.TypeVocabSize)*h + 2*h + c.NumHiddenLayers*(4*h*h+2*h*i+9*h+i)
	if pooler {
		n += h*h + h
	}
	return n
}

// NumBiasParams is the number of bias elements of the encoder computed from
// the config alone (what BitFit trains): the embedding LayerNorm h, per
// layer 7h + i (query, key, value, attention output, two LayerNorms,
// output: 7h; intermediate: i), and the pooler h when pooler is set. The
// heads add num_labels.
func (c *Config) NumBiasParams(pooler bool) int64 {
	n := c.HiddenSize + c.NumHiddenLayers*(7*c.HiddenSize+c.IntermediateSize)
	if pooler {
		n += c.HiddenSize
	}
	return n
}

// JSON renders the config for config.json with the given architecture: the
// fields read (Raw) updated with this struct's values. id2label/label2id
// are rewritten when num_labels no longer matches them.
func (c *Config) JSON(architecture string) ([]byte, error) {
	out, err := models.ConfigFields(c, c.Raw)
	if err != nil {
		return nil, err
	}
	if id2, ok := c.Raw["id2label"].(map[string]any); !ok || int64(len(id2)) != c.NumLabels {
		id2label, label2id := map[string]any{}, map[string]any{}
		for i := int64(0); i < c.NumLabels; i++ {
			name := "LABEL_" + strconv.FormatInt(i, 10)
			id2label[strconv.FormatInt(i, 10)] = name
			label2id[name] = i
		}
		out["id2label"], out["label2id"] = id2label, label2id
	}
	delete(out, "num_labels") // HF writes id2label, from which num_labels follows
	if architecture != "" {
		out["architectures"] = []string{architecture}
	}
	return models.RenderConfig(out, "")
}

// Labels lists id2label's names in id order (LABEL_i when the config has
// none).
func (c *Config) Labels() []string {
	out := make([]string, c.NumLabels)
	id2, _ := c.Raw["id2label"].(map[string]any)
	for i := range out {
		out[i] = "LABEL_" + strconv.Itoa(i)
		if v, ok := id2[strconv.Itoa(i)].(string); ok {
			out[i] = v
		}
	}
	return out
}

// architecture is config.json's first architectures entry ("" if none).
func (c *Config) architecture() string {
	if a, ok := c.Raw["architectures"].([]any); ok && len(a) > 0 {
		s, _ := a[0].(string)
		return s
	}
	return ""
}
