package prefix_test

import (
	"errors"
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/tensor"
)

// Prefix tuning with a projection MLP on a GQA model: the prefix gets the
// key/value heads' geometry, the logits keep the input's length, and the
// adapter cannot be merged.
func ExampleConfig() {
	base, err := llama.Load("../testdata/hf/llama-tiny") // 4 heads, 2 key/value heads
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &prefix.Config{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
		PrefixProjection:     true,
		EncoderHiddenSize:    48,
	}
	model, err := peft.New(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	fmt.Println("token_dim", cfg.TokenDim, "heads", cfg.NumAttentionHeads)

	s := tensor.NoGradScope() // owns the inputs and the outputs
	defer s.Close()
	ids := s.FromInt64([]int64{1, 87, 23}, 1, 3)
	out, err := model.Forward(s, models.Inputs{InputIDs: ids})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.Shape())
	_, err = model.MergeAndUnload()
	fmt.Println("mergeable:", !errors.Is(err, peft.ErrNotMergeable))
	// Output:
	// trainable params: 8,112 || all params: 147,696 || trainable%: 5.4924
	// token_dim 32 heads 2
	// logits [1 3 512]
	// mergeable: false
}
