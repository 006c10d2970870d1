package loha_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/loha"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Wrap a LLaMA checkpoint with LoHa, save the adapter in PEFT's format,
// load it back onto a fresh base and merge it into the weights.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &loha.Config{R: 4, Alpha: 8, TargetModules: loha.List("q_proj", "v_proj", "down_proj")}
	model, err := loha.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	state, _ := model.AdapterStateDict("default")
	for _, np := range state[:4] {
		fmt.Println(np.Name, np.Param.Shape())
	}

	dir, _ := os.MkdirTemp("", "loha")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	c, _ := loaded.Config("default")
	fmt.Println(c.PeftType(), loaded.ActiveAdapters())
	merged, err := loaded.MergeAndUnload()
	fmt.Println(merged != nil, err)
	// Output:
	// trainable params: 6,656 || all params: 146,240 || trainable%: 4.5514
	// base_model.model.model.layers.0.mlp.down_proj.hada_w1_a [64 4]
	// base_model.model.model.layers.0.mlp.down_proj.hada_w1_b [4 128]
	// base_model.model.model.layers.0.mlp.down_proj.hada_w2_a [64 4]
	// base_model.model.model.layers.0.mlp.down_proj.hada_w2_b [4 128]
	// LOHA [default]
	// true <nil>
}
