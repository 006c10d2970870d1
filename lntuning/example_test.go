package lntuning_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/lntuning"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Tune LLaMA-tiny's normalisation layers (PEFT's defaults for llama), save
// the adapter in PEFT's format, load it back and merge it: the merged
// model holds the tuned norms.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &lntuning.Config{}
	model, err := lntuning.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	fmt.Println(cfg.TargetModules.List)
	dir, _ := os.MkdirTemp("", "lntuning")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	state, _ := model.AdapterStateDict(peft.DefaultAdapter)
	fmt.Println(state[0].Name)
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	merged, err := loaded.MergeAndUnload()
	fmt.Println(merged != nil, err)
	// Output:
	// trainable params: 320 || all params: 139,904 || trainable%: 0.2287
	// [input_layernorm post_attention_layernorm norm]
	// base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight
	// true <nil>
}
