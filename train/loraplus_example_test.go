package train_test

import (
	"fmt"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/train"
)

// LoRA+'s parameter groups for a LoRA model (what Config.LoraPlusLRRatio
// makes the Trainer use): lora_B trains 16 times faster than lora_A.
func ExampleLoraPlusGroups() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj", "v_proj")})
	if err != nil {
		fmt.Println(err)
		return
	}
	// training with them: train.New(model, train.Config{LR: 1e-3, WeightDecay: 0.01, LoraPlusLRRatio: 16})
	for _, g := range train.LoraPlusGroups(model, model.TrainableParams(), 1e-3, 16, train.DefaultLoraPlusLREmbedding, 0.01) {
		fmt.Printf("%-15s lr %g  weight decay %g  %d tensors\n", g.Name, g.LR, g.WeightDecay, len(g.Params))
	}
	// Output:
	// groupA          lr 0.001  weight decay 0.01  4 tensors
	// embedding       lr 1e-06  weight decay 0.01  0 tensors
	// groupB          lr 0.016  weight decay 0.01  4 tensors
	// groupB_no_decay lr 0.016  weight decay 0  0 tensors
}
