package hra_test

import (
	"fmt"

	"github.com/gopeft/peft/hra"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// Wrap llama-tiny with HRA (4 reflections per layer, PEFT's default
// targets), then load PEFT's Gram-Schmidt adapter and merge it.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := hra.NewConfig()
	cfg.R = 4
	model, err := hra.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	fmt.Println(cfg.TargetModules.List)
	nn.FreeParams(model)

	base, _ = llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/hra-gs")
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := loaded.Config(peft.DefaultAdapter)
	fmt.Println("apply_GS:", c.(*hra.Config).ApplyGS)
	merged, err := loaded.MergeAndUnload()
	fmt.Println("merged:", err == nil, nn.TypeName(merged))
	nn.FreeParams(merged)
	// Output:
	// trainable params: 1,024 || all params: 140,608 || trainable%: 0.7283
	// [q_proj v_proj]
	// apply_GS: true
	// merged: true LlamaForCausalLM
}
