package peft

import (
	"fmt"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func TestFormatTrainableIsPEFTs(t *testing.T) {
	// the line PEFT prints for Llama-2-7B with LoRA r=8 on q_proj,v_proj
	require.Equal(t, "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622",
		FormatTrainable(4194304, 6742609920))
	require.Equal(t, "trainable params: 0 || all params: 0 || trainable%: 0.0000", FormatTrainable(0, 0))
	require.Equal(t, "999", Commas(999))
	require.Equal(t, "1,000", Commas(1000))
	require.Equal(t, "-12,345", Commas(-12345))
}

type tiny struct {
	A *nn.Linear `nn:"a"`
	B *nn.Linear `nn:"b"`
}

func TestTrainableSummaryCountsRequiresGrad(t *testing.T) {
	s := tensor.NewScope()
	m := &tiny{A: nn.NewLinear(s, 4, 3, true, 0.1), B: nn.NewLinear(s, 3, 2, false, 0.1)}
	s.Close()
	defer nn.FreeParams(m)
	require.NoError(t, nn.Freeze(m))
	require.NoError(t, nn.Unfreeze(m.B))
	// a: 4*3+3 = 15 frozen, b: 3*2 = 6 trainable
	require.Equal(t, fmt.Sprintf("trainable params: 6 || all params: 21 || trainable%%: %.4f", 100*6.0/21), TrainableSummary(m))
}
