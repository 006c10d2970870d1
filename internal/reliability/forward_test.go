package reliability

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"

	_ "github.com/gopeft/peft/adalora"
	_ "github.com/gopeft/peft/boft"
	_ "github.com/gopeft/peft/fourierft"
	_ "github.com/gopeft/peft/hra"
	_ "github.com/gopeft/peft/ia3"
	_ "github.com/gopeft/peft/lntuning"
	_ "github.com/gopeft/peft/lora"
	_ "github.com/gopeft/peft/oft"
	_ "github.com/gopeft/peft/prefix"
	_ "github.com/gopeft/peft/prompt"
	_ "github.com/gopeft/peft/vera"

	_ "github.com/gopeft/peft/adaptionprompt"
)

// Issue #19 item 2, through the methods: a PEFT model of every kind
// (LoRA, IA3, prompt tuning, P-tuning, prefix tuning) returns an error, not
// a panic, for inputs of inconsistent shapes.
func TestBadInputsThroughEveryMethod(t *testing.T) {
	fx := filepath.Join("..", "..", "testdata", "hf")
	_, err := os.Stat(fx)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	ds := tensor.NewScope() // the inputs (borrowed by every forward)
	defer ds.Close()
	ids := func(v []int64, shape ...int64) *tensor.T { return ds.FromInt64(v, shape...) }
	in := ids([]int64{1, 5, 7, 9, 11, 13}, 2, 3)
	cases := map[string]models.Inputs{
		"mask of another length":     {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1, 1}, 2, 2)},
		"mask of another batch":      {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1}, 1, 3)},
		"mask of one dimension":      {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1, 1, 1, 1}, 6)},
		"input ids of one dimension": {InputIDs: ids([]int64{1, 5, 7}, 3)},
		"labels of another shape":    {InputIDs: in, Labels: ids([]int64{1, 2}, 1, 2)},
		"no input":                   {},
	}
	for _, adapter := range []string{"lora-default", "ia3", "adalora", "prompt-tuning-random", "p-tuning-mlp", "prefix-proj",
		"oft", "boft", "hra", "vera", "fourierft", "ln-tuning", "adaption-prompt", "multitask-prompt-tuning"} {
		t.Run(adapter, func(t *testing.T) {
			base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			defer base.Free()
			m, err := peft.Load(base, filepath.Join(fx, "adapters", "llama-tiny", adapter))
			require.NoError(t, err)
			for what, c := range cases {
				if adapter == "multitask-prompt-tuning" { // well-formed task ids: the other inputs are what fails
					c.TaskIDs = ids([]int64{0, 1}, 2)
				}
				require.NotPanics(t, func() {
					s := tensor.NoGradScope() // a failed forward poisons its scope
					defer s.Close()
					_, err := m.Forward(s, c)
					require.Error(t, err, what)
				}, what)
			}
		})
	}
}
