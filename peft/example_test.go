package peft_test

import (
	"fmt"

	_ "github.com/gopeft/peft/lora" // registers LORA with peft.Load
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Load an adapter that Python PEFT saved, switch it off and on, and merge it.
func ExampleLoad() {
	base, err := llama.Load("../../shared/fixtures/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.Load(base, "../../shared/fixtures/hf/adapters/llama-tiny/lora-default")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := model.Config(model.ActiveAdapter())
	fmt.Println(model.ActiveAdapter(), cfg.PeftType(), cfg.TaskType())
	restore := model.DisableAdapters() // base model only
	restore()
	merged, err := model.MergeAndUnload()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(peft.TrainableSummary(merged))
	// Output:
	// default LORA CAUSAL_LM
	// trainable params: 0 || all params: 139,584 || trainable%: 0.0000
}
