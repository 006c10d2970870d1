package llama

import (
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
)

// Dims reports the model's sizes (models.Sized).
func (m *Model) Dims() models.Dims {
	c := m.Config
	return models.Dims{
		HiddenSize:        c.HiddenSize,
		NumLayers:         int64(m.NumLayers()),
		NumAttentionHeads: c.NumAttentionHeads,
		NumKeyValueHeads:  c.NumKeyValueHeads,
		HeadDim:           c.HeadSize(),
		VocabSize:         c.VocabSize,
	}
}

// InputEmbeddings is model.embed_tokens (models.InputEmbedder).
func (m *Model) InputEmbeddings() nn.Layer { return m.Model.EmbedTokens }

var (
	_ models.Sized         = (*Model)(nil)
	_ models.InputEmbedder = (*Model)(nil)
)
