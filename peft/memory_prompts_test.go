package peft_test

import (
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// The estimate's trainable counts for adaption prompt and multitask prompt
// tuning equal PEFT's printed counts of the llama-tiny fixtures (514: two
// layers × (4 × 64 + 1); 800: 8 × 64 + 2 × 8 × 2 + 2 × 2 × 64), and
// adaption prompt is refused where PEFT refuses it.
func TestEstimateAdaptionAndMultitaskPrompt(t *testing.T) {
	m, err := peft.ReadModelShape(filepath.Join("..", "testdata", "hf", "llama-tiny"))
	require.NoError(t, err)
	e, err := peft.EstimateMemory(m, peft.MemoryOptions{Method: "adaption-prompt", AdapterLen: 4, AdapterLayers: 2})
	require.NoError(t, err)
	require.EqualValues(t, 514, e.Trainable)
	require.EqualValues(t, 140_098, e.Params)
	e, err = peft.EstimateMemory(m, peft.MemoryOptions{Method: "adaption-prompt", AdapterLen: 4, AdapterLayers: 9})
	require.NoError(t, err)
	require.EqualValues(t, 514, e.Trainable, "at most every layer")
	e, err = peft.EstimateMemory(m, peft.MemoryOptions{Method: "multitask-prompt", NumVirtualTokens: 8, NumTasks: 2, NumRanks: 2})
	require.NoError(t, err)
	require.EqualValues(t, 800, e.Trainable)
	require.EqualValues(t, 140_384, e.Params)

	_, err = peft.EstimateMemory(shape(t, gpt2Small), peft.MemoryOptions{Method: "adaption-prompt"})
	require.ErrorContains(t, err, "llama and mistral")
}

// Multitask prompt tuning's virtual tokens lengthen the sequence as prompt
// tuning's do: the same activations for the same number of tokens.
func TestEstimateMultitaskActivations(t *testing.T) {
	m := shape(t, llama2_7B)
	p, err := peft.EstimateMemory(m, peft.MemoryOptions{Method: "prompt", NumVirtualTokens: 20, Seq: 256})
	require.NoError(t, err)
	mt, err := peft.EstimateMemory(m, peft.MemoryOptions{Method: "multitask-prompt", NumVirtualTokens: 20, Seq: 256, NumTasks: 4, NumRanks: 2})
	require.NoError(t, err)
	require.Equal(t, p.Activations, mt.Activations)
	require.Equal(t, p.Allocator, mt.Allocator)
	require.EqualValues(t, 20*4096+4*20*2+4*2*4096, mt.Trainable)
}
