package vera_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// peft estimate's VeRA count from config.json alone equals the fixture's
// trainable parameters (r 16 on q_proj and v_proj), and its weights hold
// the shared projections besides.
func TestEstimateCountsVeRA(t *testing.T) {
	shape, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny", "config.json"))
	require.NoError(t, err)
	e, err := peft.EstimateMemory(shape, peft.MemoryOptions{Method: "vera", R: 16, TargetModules: []string{"q_proj", "v_proj"}})
	require.NoError(t, err)
	require.EqualValues(t, 256, e.Trainable)
	full, err := peft.EstimateMemory(shape, peft.MemoryOptions{Method: "full"})
	require.NoError(t, err)
	require.Equal(t, full.Weights+256*4+16*(64+64)*4, e.Weights)
}
