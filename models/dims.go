package models

import "github.com/gopeft/peft/nn"

// Dims are the sizes of a model that prompt-learning methods size their
// parameters by (HF config.json's hidden_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, head_dim and vocab_size).
type Dims struct {
	HiddenSize        int64
	NumLayers         int64
	NumAttentionHeads int64
	NumKeyValueHeads  int64 // equal to NumAttentionHeads without GQA
	HeadDim           int64
	VocabSize         int64
}

// Sized is implemented by models that report their Dims.
type Sized interface {
	Dims() Dims
}

// InputEmbedder is implemented by models whose input embedding layer can
// be reached (HF's get_input_embeddings): prompt tuning embeds input_ids
// with it and initialises virtual tokens from its rows.
type InputEmbedder interface {
	InputEmbeddings() nn.Layer
}
