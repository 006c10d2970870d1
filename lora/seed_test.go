package lora

import (
	"strings"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// peft.SetSeed before wrapping makes LoRA's random init reproducible (as
// torch.manual_seed before get_peft_model); another seed gives other
// weights. libtorch seeds itself from the OS, so without it two wraps in a
// row differ too.
func TestSetSeedMakesInitReproducible(t *testing.T) {
	loraA := func(seed *int64) []float32 {
		if seed != nil {
			peft.SetSeed(*seed)
		}
		base := tinyBase(t)
		defer base.Free()
		m, err := peft.New(base, &Config{R: 4, LoraAlpha: 8, TargetModules: List("q_proj", "v_proj"),
			InitLoraWeights: Init{Value: "false"}}) // A and B both random
		require.NoError(t, err)
		s := tensor.NoGradScope()
		defer s.Close()
		var out []float32
		for _, np := range nn.NamedParams(m) {
			if strings.Contains(np.Name, "lora_") {
				out = append(out, s.Float32s(np.Param.T())...)
			}
		}
		require.NoError(t, s.Err())
		require.NotEmpty(t, out)
		return out
	}
	seven, eight := int64(7), int64(8)
	first := loraA(&seven)
	require.Equal(t, first, loraA(&seven))
	require.NotEqual(t, first, loraA(&eight))
	require.NotEqual(t, loraA(nil), loraA(nil))
}
