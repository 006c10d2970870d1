package bitfit

import (
	"encoding/json"
	"fmt"
)

// BiasParamsFromConfig returns how many bias elements a model has — what
// BitFit with every bias trains — from its HF config.json alone, for the
// families the library loads:
//
//   - bloom: per block the two LayerNorms (2h), query_key_value (3h), dense
//     (h), dense_h_to_4h (4h) and dense_4h_to_h (h) = 11h, plus
//     word_embeddings_layernorm and ln_f (2h): (11·n_layer + 2)·h.
//     Langboat/bloom-1b4-zh (h 2048, 24 layers): 266·2048 = 544,768 of
//     1,303,111,680 parameters (0.0418%).
//   - gpt2: per block ln_1, c_attn (3h), attn.c_proj, ln_2, c_fc (n_inner,
//     default 4h), mlp.c_proj = 7h + n_inner, plus ln_f (h).
//   - bert: the embedding LayerNorm (h), per layer query, key, value,
//     attention output, two LayerNorms and output (7h) plus intermediate
//     (intermediate_size), the pooler (h; not in BertForTokenClassification)
//     and a classification head's num_labels (len(id2label), default 2)
//     when architectures names BertForSequenceClassification or
//     BertForTokenClassification. bert-base-uncased: 102,912 with the
//     pooler (0.094% of 109,482,240), the BitFit paper's setting.
//   - llama, mistral: none, unless attention_bias (q, k, v, o: (H + 2·KV)·d + h
//     per layer) or mlp_bias (gate, up, down: 2·intermediate + h per layer).
//   - qwen2: q, k and v biases, (H + 2·KV)·d per layer.
func BiasParamsFromConfig(configJSON []byte) (int64, error) {
	var c struct {
		ModelType         string         `json:"model_type"`
		HiddenSize        *int64         `json:"hidden_size"`
		NEmbed            *int64         `json:"n_embed"`
		NEmbd             *int64         `json:"n_embd"`
		NLayer            *int64         `json:"n_layer"`
		NumHiddenLayers   *int64         `json:"num_hidden_layers"`
		NHead             *int64         `json:"n_head"`
		NumAttentionHeads *int64         `json:"num_attention_heads"`
		NumKeyValueHeads  *int64         `json:"num_key_value_heads"`
		HeadDim           *int64         `json:"head_dim"`
		IntermediateSize  *int64         `json:"intermediate_size"`
		NInner            *int64         `json:"n_inner"`
		AttentionBias     bool           `json:"attention_bias"`
		MLPBias           bool           `json:"mlp_bias"`
		Architectures     []string       `json:"architectures"`
		ID2Label          map[string]any `json:"id2label"`
		NumLabels         *int64         `json:"num_labels"`
	}
	if err := json.Unmarshal(configJSON, &c); err != nil {
		return 0, fmt.Errorf("bitfit: config.json: %w", err)
	}
	first := func(field string, vs ...*int64) (int64, error) {
		for _, v := range vs {
			if v != nil {
				return *v, nil
			}
		}
		return 0, fmt.Errorf("bitfit: config.json: missing field %q (model_type %q)", field, c.ModelType)
	}
	switch c.ModelType {
	case "bloom":
		h, err := first("hidden_size", c.NEmbed, c.HiddenSize)
		if err != nil {
			return 0, err
		}
		l, err := first("n_layer", c.NLayer, c.NumHiddenLayers)
		if err != nil {
			return 0, err
		}
		return (11*l + 2) * h, nil
	case "gpt2":
		h, err := first("n_embd", c.NEmbd, c.HiddenSize)
		if err != nil {
			return 0, err
		}
		l, err := first("n_layer", c.NLayer, c.NumHiddenLayers)
		if err != nil {
			return 0, err
		}
		inner := 4 * h
		if c.NInner != nil {
			inner = *c.NInner
		}
		return l*(7*h+inner) + h, nil
	case "bert":
		h, err := first("hidden_size", c.HiddenSize)
		if err != nil {
			return 0, err
		}
		l, err := first("num_hidden_layers", c.NumHiddenLayers)
		if err != nil {
			return 0, err
		}
		inter, err := first("intermediate_size", c.IntermediateSize)
		if err != nil {
			return 0, err
		}
		n := h + l*(7*h+inter)
		arch := ""
		if len(c.Architectures) > 0 {
			arch = c.Architectures[0]
		}
		if arch != "BertForTokenClassification" {
			n += h // pooler
		}
		if arch == "BertForSequenceClassification" || arch == "BertForTokenClassification" {
			labels := int64(2)
			if c.NumLabels != nil {
				labels = *c.NumLabels
			}
			if len(c.ID2Label) > 0 {
				labels = int64(len(c.ID2Label))
			}
			n += labels
		}
		return n, nil
	case "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text":
		h, err := first("hidden_size", c.HiddenSize)
		if err != nil {
			return 0, err
		}
		l, err := first("num_hidden_layers", c.NumHiddenLayers)
		if err != nil {
			return 0, err
		}
		heads, err := first("num_attention_heads", c.NumAttentionHeads)
		if err != nil {
			return 0, err
		}
		kv := heads
		if c.NumKeyValueHeads != nil {
			kv = *c.NumKeyValueHeads
		}
		d := h / heads
		if c.ModelType == "gemma2" || c.ModelType == "gemma3_text" {
			d = 256 // transformers' default head_dim for Gemma
		}
		if c.HeadDim != nil {
			d = *c.HeadDim
		}
		var perLayer int64
		if c.ModelType == "qwen2" {
			perLayer = (heads + 2*kv) * d
		} else {
			if c.AttentionBias {
				perLayer += (heads+2*kv)*d + h
			}
			if c.MLPBias {
				i, err := first("intermediate_size", c.IntermediateSize)
				if err != nil {
					return 0, err
				}
				perLayer += 2*i + h
			}
		}
		return l * perLayer, nil
	}
	return 0, fmt.Errorf("bitfit: config.json: model_type %q is not known to BiasParamsFromConfig (bert, bloom, gpt2, llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3_text)", c.ModelType)
}
