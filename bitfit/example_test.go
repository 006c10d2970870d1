package bitfit_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/peft"
)

// Train only the attention query_key_value biases of a BLOOM model, then
// save them (plain HF names) and load them back onto a fresh base.
func ExampleWrap() {
	data, _ := os.ReadFile("../testdata/hf/bloom-tiny/config.json")
	all, _ := bitfit.BiasParamsFromConfig(data)
	fmt.Println("biases in the model:", all)

	base, err := bloom.Load("../testdata/hf/bloom-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := bitfit.Wrap(base, &bitfit.Config{TargetModules: bitfit.List("query_key_value")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	dir, _ := os.MkdirTemp("", "bitfit")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := bloom.Load("../testdata/hf/bloom-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := loaded.Config("default")
	fmt.Println(cfg.PeftType())
	// Output:
	// biases in the model: 1536
	// trainable params: 384 || all params: 132,992 || trainable%: 0.2887
	// BITFIT
}
