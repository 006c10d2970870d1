package peft_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/peft"
	"github.com/stretchr/testify/require"
)

// The estimate's LoHa and LoKr counts for llama-tiny's config.json equal
// the trainable counts PEFT printed for the fixtures with the same
// settings.
func TestEstimateLyCORISMatchesPEFT(t *testing.T) {
	m, err := peft.ReadModelShape(testutil.Fixtures(t, "llama-tiny"))
	require.NoError(t, err)
	for _, tc := range []struct {
		fixture string
		o       peft.MemoryOptions
	}{
		{"loha", peft.MemoryOptions{Method: "loha", R: 4, TargetModules: []string{"v_proj", "q_proj", "down_proj"}}},
		{"lokr", peft.MemoryOptions{Method: "lokr", R: 4, TargetModules: []string{"q_proj", "v_proj", "down_proj"}}},
		{"lokr-decompose-both", peft.MemoryOptions{Method: "lokr", R: 2, DecomposeFactor: 4, DecomposeBoth: true,
			TargetModules: []string{"q_proj", "v_proj", "up_proj"}}},
	} {
		line := testutil.OpenExpected(t, "llama-tiny__"+tc.fixture).Meta(t, "print_trainable_parameters")
		count, _, _ := strings.Cut(strings.TrimPrefix(line, "trainable params: "), " ")
		want, err := strconv.ParseInt(strings.ReplaceAll(count, ",", ""), 10, 64)
		require.NoError(t, err)
		e, err := peft.EstimateMemory(m, tc.o)
		require.NoError(t, err, tc.fixture)
		require.Equal(t, want, e.Trainable, tc.fixture)
	}
	// LoHa with PEFT's defaults on Llama-2-7B: q, v (4096 → 4096), r 8: 2·8·8192 per module
	e, err := peft.EstimateMemory(shape(t, llama2_7B), peft.MemoryOptions{Method: "loha"})
	require.NoError(t, err)
	require.Equal(t, int64(32*2*2*8*8192), e.Trainable)
	_, err = peft.EstimateMemory(shape(t, gpt2Small), peft.MemoryOptions{Method: "lokr"})
	require.ErrorContains(t, err, "Conv1D")
}
