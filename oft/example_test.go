package oft_test

import (
	"fmt"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/oft"
	"github.com/gopeft/peft/peft"
)

// Wrap llama-tiny with OFT (4 blocks per rotation), then load PEFT's own
// adapter of the same configuration and merge it into the weights.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := oft.NewConfig()
	cfg.R = 4
	cfg.TargetModules = oft.List("q_proj", "v_proj", "down_proj")
	model, err := oft.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	nn.FreeParams(model)

	base, _ = llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/oft")
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := loaded.Config(peft.DefaultAdapter)
	fmt.Println("r:", c.(*oft.Config).R, "coft:", c.(*oft.Config).Coft)
	merged, err := loaded.MergeAndUnload()
	fmt.Println("merged:", err == nil, nn.TypeName(merged))
	nn.FreeParams(merged)
	// Output:
	// trainable params: 4,608 || all params: 144,192 || trainable%: 3.1957
	// r: 4 coft: false
	// merged: true LlamaForCausalLM
}
