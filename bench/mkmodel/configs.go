package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// configs are the config.json files of the models the scale benchmark
// imitates, field for field as the Hub serves them (torch_dtype is set to
// the dtype written; Llama-2-7b-hf's own checkpoint is float16).
var configs = map[string]func() map[string]any{
	// Qwen/Qwen2.5-0.5B
	"qwen2.5-0.5b": func() map[string]any {
		return map[string]any{
			"architectures":           []string{"Qwen2ForCausalLM"},
			"attention_dropout":       0.0,
			"bos_token_id":            151643,
			"eos_token_id":            151643,
			"hidden_act":              "silu",
			"hidden_size":             896,
			"initializer_range":       0.02,
			"intermediate_size":       4864,
			"max_position_embeddings": 32768,
			"max_window_layers":       24,
			"model_type":              "qwen2",
			"num_attention_heads":     14,
			"num_hidden_layers":       24,
			"num_key_value_heads":     2,
			"rms_norm_eps":            1e-06,
			"rope_theta":              1000000.0,
			"sliding_window":          32768,
			"tie_word_embeddings":     true,
			"torch_dtype":             "bfloat16",
			"transformers_version":    "4.40.1",
			"use_cache":               true,
			"use_mrope":               false,
			"use_sliding_window":      false,
			"vocab_size":              151936,
		}
	},
	// meta-llama/Llama-2-7b-hf
	"llama-2-7b": func() map[string]any {
		return map[string]any{
			"architectures":           []string{"LlamaForCausalLM"},
			"bos_token_id":            1,
			"eos_token_id":            2,
			"hidden_act":              "silu",
			"hidden_size":             4096,
			"initializer_range":       0.02,
			"intermediate_size":       11008,
			"max_position_embeddings": 4096,
			"model_type":              "llama",
			"num_attention_heads":     32,
			"num_hidden_layers":       32,
			"num_key_value_heads":     32,
			"pretraining_tp":          1,
			"rms_norm_eps":            1e-05,
			"rope_scaling":            nil,
			"tie_word_embeddings":     false,
			"torch_dtype":             "bfloat16",
			"transformers_version":    "4.31.0.dev0",
			"use_cache":               true,
			"vocab_size":              32000,
		}
	},
	// google/gemma-3-1b-it (also testdata/ref/gemma-3-1b/config.json): 26
	// layers, every sixth global, tied embeddings by default
	"gemma-3-1b": func() map[string]any {
		return map[string]any{
			"architectures":           []string{"Gemma3ForCausalLM"},
			"attention_bias":          false,
			"attention_dropout":       0.0,
			"attn_logit_softcapping":  nil,
			"bos_token_id":            2,
			"cache_implementation":    "hybrid",
			"eos_token_id":            []int{1, 106},
			"final_logit_softcapping": nil,
			"head_dim":                256,
			"hidden_activation":       "gelu_pytorch_tanh",
			"hidden_size":             1152,
			"initializer_range":       0.02,
			"intermediate_size":       6912,
			"max_position_embeddings": 32768,
			"model_type":              "gemma3_text",
			"num_attention_heads":     4,
			"num_hidden_layers":       26,
			"num_key_value_heads":     1,
			"pad_token_id":            0,
			"query_pre_attn_scalar":   256,
			"rms_norm_eps":            1e-06,
			"rope_local_base_freq":    10000,
			"rope_scaling":            nil,
			"rope_theta":              1000000,
			"sliding_window":          512,
			"sliding_window_pattern":  6,
			"torch_dtype":             "bfloat16",
			"transformers_version":    "4.50.0.dev0",
			"use_cache":               true,
			"vocab_size":              262144,
		}
	},
	// Small folders of the same layouts, for tests and quick checks.
	"tiny-gemma3": func() map[string]any {
		return map[string]any{
			"architectures": []string{"Gemma3ForCausalLM"}, "model_type": "gemma3_text",
			"bos_token_id": 2, "eos_token_id": 1, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 64,
			"head_dim": 16, "initializer_range": 0.02, "intermediate_size": 128, "max_position_embeddings": 1024,
			"num_attention_heads": 4, "num_hidden_layers": 6, "num_key_value_heads": 1, "query_pre_attn_scalar": 16,
			"rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "sliding_window": 8,
			"sliding_window_pattern": 6, "torch_dtype": "bfloat16", "vocab_size": 512,
		}
	},
	"tiny-qwen2": func() map[string]any {
		return map[string]any{
			"architectures": []string{"Qwen2ForCausalLM"}, "model_type": "qwen2",
			"bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 64,
			"initializer_range": 0.02, "intermediate_size": 176, "max_position_embeddings": 1024,
			"num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
			"rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
			"torch_dtype": "bfloat16", "vocab_size": 512,
		}
	},
	"tiny-llama": func() map[string]any {
		return map[string]any{
			"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
			"bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 64,
			"initializer_range": 0.02, "intermediate_size": 176, "max_position_embeddings": 1024,
			"num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4,
			"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
			"torch_dtype": "bfloat16", "vocab_size": 512,
		}
	},
}

// ConfigNames lists the built-in configs.
func ConfigNames() []string {
	return []string{"qwen2.5-0.5b", "llama-2-7b", "gemma-3-1b", "tiny-qwen2", "tiny-llama", "tiny-gemma3"}
}

// LookupConfig returns a built-in config by name, or reads a config.json
// file when name is a path.
func LookupConfig(name string) (map[string]any, error) {
	if f, ok := configs[strings.ToLower(name)]; ok {
		return f(), nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("-config %q: not one of %v and not a readable config.json: %w", name, ConfigNames(), err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}
