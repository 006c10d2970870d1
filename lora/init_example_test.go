package lora_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// PiSSA: the adapter starts from W's principal singular vectors and the
// base keeps the residual. After training, SaveConverted writes a plain
// LoRA that applies to the original base model.
func ExampleSaveConverted() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "pissa"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	dir, _ := os.MkdirTemp("", "pissa")
	defer os.RemoveAll(dir)
	initial := filepath.Join(dir, "initial")
	if err := model.Save(initial); err != nil { // the adapter as initialised, before training
		fmt.Println(err)
		return
	}
	// ... train the model ...
	out := filepath.Join(dir, "lora")
	if err := lora.SaveConverted(model, out, peft.DefaultAdapter, initial); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny") // the original weights
	loaded, err := peft.Load(fresh, out)
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := loaded.Config(peft.DefaultAdapter)
	cfg := c.(*lora.Config)
	fmt.Println(cfg.R, cfg.LoraAlpha, cfg.InitLoraWeights.Value)
	// Output:
	// 8 16 true
}
