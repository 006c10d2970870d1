package lokr_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/lokr"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Wrap a LLaMA checkpoint with LoKr (W1 decomposed too, widths split by
// 4), save the adapter in PEFT's format and load it back onto a fresh base.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &lokr.Config{R: 2, Alpha: 4, DecomposeBoth: true, DecomposeFactor: 4,
		TargetModules: lokr.List("q_proj", "v_proj", "up_proj")}
	model, err := lokr.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	state, _ := model.AdapterStateDict("default")
	for _, np := range state[:3] {
		fmt.Println(np.Name, np.Param.Shape())
	}
	fmt.Println(lokr.Factorization(128, 4))

	dir, _ := os.MkdirTemp("", "lokr")
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
	fmt.Println(c.PeftType(), c.(*lokr.Config).UnscaledKron)
	// Output:
	// trainable params: 512 || all params: 140,096 || trainable%: 0.3655
	// base_model.model.model.layers.0.mlp.up_proj.lokr_w1 [4 4]
	// base_model.model.model.layers.0.mlp.up_proj.lokr_w2_a [32 2]
	// base_model.model.model.layers.0.mlp.up_proj.lokr_w2_b [2 16]
	// 4 32
	// LOKR false
}
