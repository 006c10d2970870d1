package main

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models/gemma"
	"github.com/gopeft/peft/nn"
	"github.com/stretchr/testify/require"
)

// The scale cases load Gemma folders by model_type and train LoRA on them;
// a decode step of the tied Gemma 3 reads every weight once, the embedding
// in full as lm_head.
func TestScaleCasesGemma(t *testing.T) {
	for _, name := range []string{"gemma2-tiny", "gemma3-tiny"} {
		dir := filepath.Join("..", "testdata", "ref", name)
		res, err := runScaleCase(options{caseName: "train-lora-ckpt", model: dir, dtype: "auto", batch: 1, seq: 16,
			warmup: 0, steps: 2, early: true, fusedLoss: true, threads: 1})
		require.NoError(t, err, name)
		require.Equal(t, map[string]string{"gemma2-tiny": "gemma2", "gemma3-tiny": "gemma3_text"}[name], res["model_type"])
		require.Len(t, res["losses"], 2)
		require.Positive(t, res["trainable"])
	}
	m, err := loadScaleModel(filepath.Join("..", "testdata", "ref", "gemma3-tiny"))
	require.NoError(t, err)
	defer m.Free()
	_, total := nn.CountParams(m)
	g := m.(*gemma.Model)
	require.True(t, g.Config.TieWordEmbeddings)
	// every weight once (the embedding as lm_head), one embedding row per sequence
	require.Equal(t, 4*(total+2*g.Config.HiddenSize), bytesPerStep(m, 2))
}
