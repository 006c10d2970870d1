package vera_test

import (
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/vera"
	"github.com/stretchr/testify/require"
)

// GPT-2's Conv1D layers (weights [in, out], PEFT's fan_in_fan_out): PEFT's
// default target c_attn [64 → 192] and mlp.c_proj [256 → 64] share
// projections of the largest shape; a random adapter merges into the
// transposed weights like its forward.
func TestGPT2Conv1D(t *testing.T) {
	load := func() models.Model { return testutil.Load(t, gpt2.Load, "gpt2-tiny") }
	ids := []int64{3, 14, 15, 92, 65, 35, 89, 79}
	base := load()
	want := testutil.IDsLogits(t, base, ids, 2)
	off := false
	cfg := &vera.Config{R: 8, InitWeights: &off, TargetModules: peft.TargetList("c_attn", "mlp.c_proj")}
	m, err := vera.Wrap(base, cfg)
	require.NoError(t, err)
	require.True(t, cfg.FanInFanOut, "forced to the Conv1D layers' kind")
	st := projections(t, m)
	require.Len(t, st[0], 8*256) // vera_A [r, largest in]
	require.Len(t, st[1], 192*8) // vera_B [largest out, r]
	testutil.RequireMergesLikeForward(t, m, want, ids, 2, load)
}
