package lora_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Wrap a HF checkpoint with LoRA, save the adapter in PEFT's format and load
// it back onto a fresh base.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	dir, _ := os.MkdirTemp("", "adapter")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir) // any registered method, by peft_type
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := loaded.Config("default")
	fmt.Println(cfg.PeftType(), loaded.Adapters())
	// Output:
	// trainable params: 3,584 || all params: 143,168 || trainable%: 2.5034
	// LORA [default]
}
