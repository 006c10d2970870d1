package lora_test

import (
	"encoding/json"
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

// LoftQ: the wrapped layers' weights become their 4-bit NF quantisation and
// A, B start at a rank-r fit of the quantisation error.
func ExampleLoftQConfig() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "loftq"},
		LoftQConfig: &lora.LoftQConfig{LoftQBits: 4, LoftQIter: 2}})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	cfg, _ := model.Config(peft.DefaultAdapter)
	js, _ := cfg.MarshalJSON() // adapter_config.json as Save writes it
	var saved map[string]any
	_ = json.Unmarshal(js, &saved)
	fmt.Println(saved["init_lora_weights"], saved["loftq_config"])
	// Output:
	// trainable params: 1,792 || all params: 141,376 || trainable%: 1.2675
	// loftq map[loftq_bits:4 loftq_iter:2]
}
