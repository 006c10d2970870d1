package fourierft_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// peft estimate's FourierFT count from config.json alone equals the
// fixture's trainable parameters (64 frequencies on PEFT's default
// q_proj and v_proj).
func TestEstimateCountsFourierFT(t *testing.T) {
	shape, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny", "config.json"))
	require.NoError(t, err)
	e, err := peft.EstimateMemory(shape, peft.MemoryOptions{Method: "fourierft", NFrequency: 64})
	require.NoError(t, err)
	require.EqualValues(t, 256, e.Trainable)
	// a GPT-2's default target is mlp.c_proj, 1000 frequencies each
	g, err := peft.ReadModelShape(testutil.Fixtures(t, "gpt2-tiny", "config.json"))
	require.NoError(t, err)
	e, err = peft.EstimateMemory(g, peft.MemoryOptions{Method: "fourierft"})
	require.NoError(t, err)
	require.EqualValues(t, g.Layers*1000, e.Trainable)
}
