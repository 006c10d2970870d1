package fourierft_test

import (
	"testing"

	"github.com/gopeft/peft/fourierft"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/stretchr/testify/require"
)

// GPT-2's Conv1D layers (weights [in, out]): PEFT's default target for
// gpt2, mlp.c_proj [256 → 64], is not square, so the merge must transpose
// ΔW (PEFT 0.13.2 does not; current PEFT does); a random spectrum merges
// like its forward.
func TestGPT2Conv1D(t *testing.T) {
	load := func() models.Model { return testutil.Load(t, gpt2.Load, "gpt2-tiny") }
	ids := []int64{3, 14, 15, 92, 65, 35, 89, 79}
	base := load()
	want := testutil.IDsLogits(t, base, ids, 2)
	cfg := &fourierft.Config{NFrequency: 100}
	m, err := fourierft.Wrap(base, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"mlp.c_proj"}, cfg.TargetModules.List)
	require.True(t, cfg.FanInFanOut)
	testutil.RequireMergesLikeForward(t, m, want, ids, 2, load)
}
