package boft_test

import (
	"fmt"

	"github.com/gopeft/peft/boft"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// Wrap llama-tiny with BOFT (blocks of 8, two butterfly factors, PEFT's
// default targets), then load PEFT's adapter and merge it.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := boft.NewConfig()
	cfg.BoftBlockSize, cfg.BoftNButterflyFactor = 8, 2
	model, err := boft.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	nn.FreeParams(model)

	base, _ = llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/boft")
	if err != nil {
		fmt.Println(err)
		return
	}
	loaded.PrintTrainableParameters() // loaded for inference: nothing trains
	merged, err := loaded.MergeAndUnload()
	fmt.Println("merged:", err == nil, nn.TypeName(merged))
	nn.FreeParams(merged)
	// Output:
	// trainable params: 4,288 || all params: 143,872 || trainable%: 2.9804
	// trainable params: 0 || all params: 144,000 || trainable%: 0.0000
	// merged: true LlamaForCausalLM
}
